// OPA (with the Envoy ext_authz gRPC plugin) as a child process serving a built bundle, and a
// client that calls it exactly as Envoy does: ext_authz v3 Check over gRPC.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { OPA_BUNDLE_FILE, opaRuntimeEnv, renderOpaConfig } from '../../components/render/opa.ts';
import { MASK_POLICY_FILE } from '../../policy/bundle.ts';
import { OPA_CONFIG_FILE } from '../../components/render/platform.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { ManagedProcess, answers, freePort } from './processes.ts';
import { REPO_ROOT, toolPath } from '../support/tools.ts';

export interface RunningOpa {
  readonly process: ManagedProcess;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly dir: string;
}

/** Writes config and bundle into `dir` and starts OPA; ready once the bundle is active. */
export async function startOpa(dir: string, bundle: Buffer, ports?: { grpc: number; http: number }): Promise<RunningOpa> {
  mkdirSync(dir, { recursive: true });
  const grpcPort = ports?.grpc ?? (await freePort());
  const httpPort = ports?.http ?? (await freePort());
  writeFileSync(join(dir, OPA_BUNDLE_FILE), bundle);
  writeFileSync(
    join(dir, OPA_CONFIG_FILE),
    toYaml(renderOpaConfig({ grpc: { host: '127.0.0.1', port: grpcPort }, bundlePath: join(dir, OPA_BUNDLE_FILE) })),
  );
  const proc = new ManagedProcess(
    {
      name: 'opa',
      command: toolPath('opa'),
      args: ['run', '--server', '--addr', `127.0.0.1:${httpPort}`, '--config-file', join(dir, OPA_CONFIG_FILE), '--log-format', 'json', MASK_POLICY_FILE],
      ready: () => answers(`http://127.0.0.1:${httpPort}/health?bundles`),
      env: opaRuntimeEnv(),
    },
    join(dir, 'opa.log'),
  );
  await proc.start();
  return { process: proc, grpcPort, httpPort, dir };
}

const packageDefinition = protoLoader.loadSync(join(REPO_ROOT, 'policy/proto/ext_authz.proto'), {
  keepCase: true,
  longs: Number,
  defaults: false,
  oneofs: true,
});
const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
};

type StructValue = { nullValue?: 0; numberValue?: number; stringValue?: string; boolValue?: boolean; structValue?: Struct; listValue?: { values: StructValue[] } };
type Struct = { fields: Record<string, StructValue> };

export function toStruct(obj: Record<string, unknown>): Struct {
  const val = (v: unknown): StructValue => {
    if (v === null || v === undefined) return { nullValue: 0 };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'string') return { stringValue: v };
    if (typeof v === 'boolean') return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(val) } };
    return { structValue: toStruct(v as Record<string, unknown>) };
  };
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, val(v)])) };
}

export function fromStruct(s: Struct | undefined | null): Record<string, unknown> {
  const val = (v: StructValue): unknown => {
    if (v.structValue) return fromStruct(v.structValue);
    if (v.listValue) return (v.listValue.values ?? []).map(val);
    if (v.stringValue !== undefined) return v.stringValue;
    if (v.numberValue !== undefined) return v.numberValue;
    if (v.boolValue !== undefined) return v.boolValue;
    return null;
  };
  return Object.fromEntries(Object.entries(s?.fields ?? {}).map(([k, v]) => [k, val(v)]));
}

/** A request as Envoy describes it to ext_authz. */
export interface AuthzRequest {
  readonly contextExtensions?: Record<string, string>;
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly host?: string;
  /** Verified JWT claims, as jwt_authn puts them under payload_in_metadata. */
  readonly jwtClaims?: Record<string, unknown>;
}

export interface AuthzAnswer {
  readonly allowed: boolean;
  readonly status: number;
  readonly body?: { error?: { code?: string; message?: string } };
  readonly headers: Record<string, string>;
  readonly headersToRemove: string[];
  readonly dynamicMetadata: Record<string, unknown>;
}

export class ExtAuthzClient {
  private readonly client: grpc.Client & { Check: Function };
  constructor(port: number) {
    this.client = new proto.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as never;
  }

  check(req: AuthzRequest): Promise<AuthzAnswer> {
    const request = {
      attributes: {
        request: { http: { method: req.method, path: req.path, headers: { ':path': req.path, ':method': req.method, ...(req.headers ?? {}) }, host: req.host ?? 'gateway', scheme: 'http', protocol: 'HTTP/1.1' } },
        context_extensions: req.contextExtensions ?? {},
        ...(req.jwtClaims ? { metadata_context: { filter_metadata: { 'envoy.filters.http.jwt_authn': toStruct({ sandbox: req.jwtClaims }) } } } : {}),
      },
    };
    return new Promise((resolve, reject) => {
      this.client.Check(request, { deadline: Date.now() + 5000 }, (err: Error | null, res: any) => {
        if (err) return reject(err);
        const headerMap = (opts: any[] | undefined) => Object.fromEntries((opts ?? []).map((o) => [o.header.key, o.header.value]));
        if (res.ok_response) {
          resolve({
            allowed: (res.status?.code ?? 0) === 0,
            status: 200,
            headers: headerMap(res.ok_response.headers),
            headersToRemove: res.ok_response.headers_to_remove ?? [],
            dynamicMetadata: fromStruct(res.dynamic_metadata),
          });
        } else {
          const d = res.denied_response ?? {};
          let body: AuthzAnswer['body'];
          try {
            body = d.body ? JSON.parse(d.body) : undefined;
          } catch {
            body = undefined;
          }
          resolve({
            allowed: false,
            status: d.status?.code ?? 403,
            body,
            headers: headerMap(d.headers),
            headersToRemove: [],
            dynamicMetadata: fromStruct(res.dynamic_metadata),
          });
        }
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
