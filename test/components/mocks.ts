// Pulumi mocks shared by the component tests: every resource is recorded with its inputs;
// RandomPassword gets a deterministic result.
import * as pulumi from '@pulumi/pulumi';
import type { ImageSet } from '../../components/images.ts';

export interface Created {
  type: string;
  name: string;
  inputs: any;
}

export function installMocks(): Created[] {
  const created: Created[] = [];
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        created.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state =
          args.type === 'random:index/randomPassword:RandomPassword'
            ? { ...args.inputs, result: `mock${args.name.replace(/\W/g, '')}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`.slice(0, 40) }
            : args.inputs;
        return { id: `${args.name}-id`, state };
      },
      call: (args) => args.inputs,
    },
    'agentd-platform',
    'test',
    false,
  );
  return created;
}

export const testImages: ImageSet = {
  envoy: { ref: 'local/envoy:1', binary: ['envoy'], probe: (u) => ['probe', u] },
  opa: { ref: 'local/opa:1', binary: ['opa'], probe: (u) => ['probe', u] },
  agentd: { ref: 'local/agentd:1', binary: ['node', '/app/agentd.mjs'], probe: () => ['node', '/app/agentd.mjs', 'healthcheck'] },
  ratelimit: { ref: 'local/ratelimit:1', binary: ['ratelimit'], probe: (u) => ['probe', u], waitFor: (h, p) => ['wait', h, String(p)] },
  redis: { ref: 'local/redis:1', binary: ['redis-server'], probe: (u) => ['probe', u] },
};

export const value = <T>(o: pulumi.Output<T>): Promise<T> =>
  new Promise((resolve) =>
    o.apply((v) => {
      resolve(v);
      return v;
    }),
  );
export const isSecret = (o: pulumi.Output<unknown>): Promise<boolean> => (o as any).isSecret as Promise<boolean>;

/** Mocks see secret inputs as {<sig key>: <secret sig>, value}. */
const SIG_KEY = '4dabf18193072939515e22adb298388d';
const SECRET_SIG = '1b47061264138c4ac30d75fd1eb44270';
export const isSecretValue = (v: any): boolean => Boolean(v && typeof v === 'object' && v[SIG_KEY] === SECRET_SIG);
export const unwrap = (v: any): any => (isSecretValue(v) ? unwrap(v.value) : v);
