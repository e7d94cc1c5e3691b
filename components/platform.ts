import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import * as random from '@pulumi/random';
import { sha256Hex, type ClientKeyHash } from '../policy/bundle.ts';
import { bundleSignerFromPem, bundleSignerFromSeed } from '../policy/signing.ts';
import type { PolicySpec } from '../policy/spec.ts';
import type { StackConfig } from './config.ts';
import { imageFor, type ImageSet } from './images.ts';
import { WORKLOADS } from './layout.ts';
import { MONITORING_PORTS, MONITORING_WORKLOADS } from './render/overlay/index.ts';
import { planPlatform, renderPlanBundle } from './render/plan.ts';
import { jwksDocument } from './render/platform.ts';
import type { SecretRef } from './render/types.ts';
import type { Placement, Target } from './target.ts';
import { resolveWorkload } from './workload.ts';

export interface PlatformArgs {
  /** The validated policy spec (policy/data). */
  readonly spec: PolicySpec;
  /** The validated stack config. */
  readonly config: StackConfig;
  /** Images for each workload. */
  readonly images: ImageSet;
  /** Where everything runs. */
  readonly target: Target;
  /** Configured egress credentials (Pulumi secrets), by service id. */
  readonly credentials: Readonly<Record<string, pulumi.Output<string>>>;
  /** The gateway's certificate chain and private key (PEM, Pulumi secrets), when TLS comes from stack config. */
  readonly gatewayTls?: { readonly certificate: pulumi.Output<string>; readonly privateKey: pulumi.Output<string> };
  /**
   * The policy bundle's signing key (PEM, ECDSA P-256, a Pulumi secret), when the stack gives
   * its own (`policy:signingKey`); without it the Platform derives one from a generated seed.
   */
  readonly policySigningKey?: pulumi.Output<string>;
}

/**
 * The component each workload's resources are children of. Its type token is part of every
 * child's URN: these stay as they were when each service was a component of its own, so an
 * upgrade changes no URN and replaces nothing.
 */
const COMPONENT_TYPES: Readonly<Record<string, string>> = {
  [WORKLOADS.gateway]: 'agentd:gateway:Gateway',
  [WORKLOADS.egress]: 'agentd:egress:Egress',
  [WORKLOADS.opa]: 'agentd:policy:PolicyEngine',
  [WORKLOADS.bundles]: 'agentd:policy:BundleServer',
  [WORKLOADS.agentd]: 'agentd:agentd:Agentd',
  [WORKLOADS.ratelimit]: 'agentd:ratelimit:RateLimitService',
  [WORKLOADS.redis]: 'agentd:ratelimit:Redis',
};
const MONITORING_TYPE = 'agentd:monitoring:Monitoring';

/** A group of resources in the tree: one service's, or the monitoring overlay's. */
class WorkloadGroup extends pulumi.ComponentResource {
  constructor(type: string, name: string, opts: pulumi.ComponentResourceOptions) {
    super(type, name, {}, opts);
  }

  /** Its outputs, once the target has deployed its workloads. */
  settle(outputs: pulumi.Inputs): void {
    this.registerOutputs(outputs);
  }
}

/** The resource of a client's key of one generation; the first keeps the name keys always had (its URN). */
export const keyResourceName = (platform: string, client: string, generation: number) =>
  generation === 1 ? `${platform}-key-${client}` : `${platform}-key-${client}-g${generation}`;

/** A JWKS with one HS256 key; the key id is derived from the key, so a new key is a new kid. */
function jwksFor(secret: string): string {
  const k = Buffer.from(secret, 'utf8').toString('base64url');
  const kid = createHash('sha256').update(secret).digest('hex').slice(0, 12);
  return jwksDocument(kid, k);
}

/**
 * The whole platform: API keys and the token key (generated), the plan (every workload with its
 * files, from the spec and the stack config), deployed on the target in one call.
 */
export class Platform extends pulumi.ComponentResource {
  /** Where API clients call the gateway (HTTP). */
  readonly gatewayUrl: pulumi.Output<string>;
  /** host:port for gRPC clients (through the gateway: TLS when the gateway has a certificate, else plaintext HTTP/2). */
  readonly grpcEndpoint: pulumi.Output<string>;
  /** Kubernetes with NodePort exposure: the gateway's node port (reach it on any node's address). */
  readonly gatewayNodePort?: pulumi.Output<number>;
  /** API keys by client id: a secret. */
  readonly apiKeys: pulumi.Output<Record<string, string>>;
  /** The policy bundle's content hash. */
  readonly policyRevision: pulumi.Output<string>;
  /** Content hash of each of the platform's services' files (monitoring aside). */
  readonly contentHashes: pulumi.Output<Record<string, string>>;
  /** The monitoring overlay, when the stack enables it: Grafana's and Prometheus' URLs and Grafana's admin password (a secret). */
  readonly monitoring?: {
    readonly grafanaUrl: pulumi.Output<string>;
    readonly prometheusUrl: pulumi.Output<string>;
    readonly grafanaAdminPassword: pulumi.Output<string>;
  };

  constructor(name: string, args: PlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:platform:Platform', name, {}, opts);
    const { spec, config, images, target } = args;

    // One key per client and generation (`npm run key -- rotate` adds one); during a rotation's
    // grace period the previous generation's key stays, as the same client, until its end.
    const keyOf = (id: string, generation: number) =>
      new random.RandomPassword(keyResourceName(name, id, generation), { length: 40, special: false }, { parent: this }).result.apply((v) => `agk_${v}`);
    const keys = spec.clients.map((c) => {
      const rotation = config.keys[c.id];
      const generation = rotation?.generation ?? 1;
      const previous = rotation?.previousValidUntil ? { key: keyOf(c.id, generation - 1), notAfter: rotation.previousValidUntil } : undefined;
      return { id: c.id, current: keyOf(c.id, generation), previous };
    });
    this.apiKeys = pulumi.secret(pulumi.all(keys.map((k) => k.current)).apply((values) => Object.fromEntries(keys.map((k, i) => [k.id, values[i]!]))));
    // Hashes of random 40-character keys reveal nothing; only they reach OPA.
    const keyHashes = pulumi.unsecret(
      pulumi.all(keys.map((k) => pulumi.all([k.current, k.previous?.key ?? '']))).apply((values) =>
        Object.fromEntries(
          keys.map((k, i) => {
            const [current, previous] = values[i]!;
            const hashes: ClientKeyHash[] = [{ hash: sha256Hex(current) }];
            if (k.previous) hashes.push({ hash: sha256Hex(previous), notAfter: k.previous.notAfter });
            return [k.id, hashes];
          }),
        ),
      ),
    );

    const tokenKey = new random.RandomPassword(`${name}-token-key`, { length: 64, special: false }, { parent: this });
    // Per-deploy tokens that let agentd tell its two callers from anything else on the network.
    const secretToken = (id: string) => pulumi.secret(new random.RandomPassword(`${name}-${id}`, { length: 48, special: false }, { parent: this }).result);
    // The policy bundle's signing key: the stack's own, or derived from a generated seed
    // (policy/signing.ts). Either stays the same from one deploy to the next, so an unchanged
    // policy keeps its signed bytes; a new key changes OPA's key file, so OPA restarts with it.
    const bundleSigner = args.policySigningKey
      ? args.policySigningKey.apply((pem) => bundleSignerFromPem(pem, 'policy:signingKey'))
      : new random.RandomPassword(`${name}-policy-signing-seed`, { length: 64, special: false }, { parent: this }).result.apply(bundleSignerFromSeed);
    const generated: Record<string, pulumi.Output<string>> = {
      jwks: pulumi.secret(tokenKey.result.apply(jwksFor)),
      'policy-verification-key': bundleSigner.apply((s) => s.publicKeyPem),
      'gateway-token': secretToken('gateway-token'),
      'registry-token': secretToken('registry-token'),
    };

    const plan = planPlatform(spec, config, target.capabilities, Object.keys(args.credentials));
    const groups: Record<string, WorkloadGroup> = {};
    const place = (workload: string): Placement => {
      const type = COMPONENT_TYPES[workload];
      const group = type ? `${name}-${workload}` : `${name}-monitoring`;
      groups[group] ??= new WorkloadGroup(type ?? MONITORING_TYPE, group, { parent: this });
      return { parent: groups[group], baseName: type ? group : `${group}-${workload}` };
    };
    if (config.monitoring.enabled) {
      const monitoring = place(MONITORING_WORKLOADS[0]).parent;
      generated['grafana-admin-password'] = pulumi.secret(
        new random.RandomPassword(`${name}-monitoring-grafana-admin`, { length: 32, special: false }, { parent: monitoring }).result,
      );
    }
    const secret = (ref: SecretRef): pulumi.Output<string> => {
      const value =
        'generated' in ref
          ? generated[ref.generated]
          : 'credential' in ref
            ? args.credentials[ref.credential]
            : ref.gatewayTls === 'certificate'
              ? args.gatewayTls?.certificate
              : args.gatewayTls?.privateKey;
      if (!value) throw new Error(`the plan needs the secret ${JSON.stringify(ref)}, which the Platform was not given`);
      return pulumi.secret(value);
    };

    // Only the bundle server's files depend on the generated keys: they are rendered inside that
    // output, every other file is a plain value, so a new client changes the bundle server's
    // files in `pulumi preview` and nothing else (OPA takes the new bundle from it, unrestarted).
    // The signed bundle holds key hashes and a signature, neither of them secret.
    const bundle = pulumi.unsecret(pulumi.all([keyHashes, bundleSigner]).apply(([hashes, signer]) => renderPlanBundle(plan, spec, hashes, signer)));
    this.policyRevision = bundle.apply((b) => b.policyRevision);
    const workloads = plan.workloads.map((w) =>
      resolveWorkload(w, imageFor(images, w.image), secret, w.name === plan.bundleServer.workload ? bundle.apply((b) => b.files) : w.files),
    );
    const deployed = target.deploy(workloads, plan.network, place);

    const gateway = deployed[WORKLOADS.gateway]!;
    const scheme = config.gateway.tls ? 'https' : 'http';
    // A published workload has an endpoint; an unpublished one (monitoring on Kubernetes) is reached inside the platform.
    const endpointOf = (w: string, port: number) => {
      const inside = target.capabilities.address(w, port);
      return deployed[w]!.endpoint ?? pulumi.output(`${inside.host}:${inside.port}`);
    };
    this.grpcEndpoint = endpointOf(WORKLOADS.gateway, config.gateway.port);
    this.gatewayUrl = this.grpcEndpoint.apply((e) => `${scheme}://${e}`);
    if (gateway.nodePort) this.gatewayNodePort = gateway.nodePort;
    const core = [WORKLOADS.gateway, WORKLOADS.egress, WORKLOADS.opa, WORKLOADS.bundles, WORKLOADS.agentd];
    this.contentHashes = pulumi.all(Object.fromEntries(core.map((w) => [w, deployed[w]!.hash])));
    for (const w of core) groups[`${name}-${w}`]!.settle({ contentHash: deployed[w]!.hash });
    if (config.monitoring.enabled) {
      this.monitoring = {
        grafanaUrl: endpointOf('grafana', MONITORING_PORTS.grafana).apply((e) => `http://${e}`),
        prometheusUrl: endpointOf('prometheus', MONITORING_PORTS.prometheus).apply((e) => `http://${e}`),
        grafanaAdminPassword: generated['grafana-admin-password']!,
      };
      groups[`${name}-monitoring`]!.settle(this.monitoring);
    }
    this.registerOutputs({
      gatewayUrl: this.gatewayUrl,
      grpcEndpoint: this.grpcEndpoint,
      apiKeys: this.apiKeys,
      policyRevision: this.policyRevision,
      contentHashes: this.contentHashes,
      ...(this.gatewayNodePort ? { gatewayNodePort: this.gatewayNodePort } : {}),
      ...(this.monitoring ? { grafanaUrl: this.monitoring.grafanaUrl, prometheusUrl: this.monitoring.prometheusUrl } : {}),
    });
  }
}
