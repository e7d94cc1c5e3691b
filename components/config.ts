// Stack configuration (stacks/Pulumi.<stack>.yaml, namespace `agentd`): parsed and validated
// into a typed object before any resource is declared, so a typo or a bad value stops
// `pulumi preview` with the key, the problem and the `pulumi config set` that fixes it.
// Pure: takes the raw config map (pulumi.runtime.allConfig()), no Pulumi calls.

import { parseServiceUrl } from '../policy/url.ts';
import type { Upstream } from './render/envoy/egress.ts';

export type TargetKind = 'docker' | 'kubernetes';
export type ImageMode = 'local' | 'upstream';
export type Exposure = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

export interface StackConfig {
  /** Where the platform runs. */
  readonly target: TargetKind;
  readonly gateway: {
    /** Port the gateway listens on (and, on Docker, is published at). */
    readonly port: number;
    /** Host address the Docker target publishes the gateway on (loopback by default). */
    readonly bindAddress: string;
    readonly maxRequestBytes: number;
    readonly upstreamTimeoutSeconds: number;
    /** Kubernetes Service type of the gateway. */
    readonly exposure: Exposure;
    readonly replicas: number;
    /**
     * Where the gateway's certificate comes from, if it speaks TLS: `config` (the secret stack
     * config GATEWAY_TLS_CONFIG.certificate and .privateKey) or `secret` (an existing Kubernetes
     * TLS Secret, e.g. cert-manager's). With TLS the gateway serves only TLS.
     */
    readonly tls: { readonly source: 'config' } | { readonly source: 'secret'; readonly secretName: string } | undefined;
    /** Accept a gateway exposed beyond loopback without TLS (off: such a stack is refused). */
    readonly allowPlaintext: boolean;
  };
  readonly egress: {
    /** Per-service upstream overrides (e.g. a stand-in or a corporate proxy), by service id. */
    readonly upstreams: Readonly<Record<string, Upstream>>;
    /** PEM CA certificates upstream TLS is verified against (default: the image's CA bundle). */
    readonly caCertificates?: string;
    readonly replicas: number;
  };
  readonly images: {
    /** `local`: images built here by scripts/images.ts (build/images.json); `upstream`: registry images. */
    readonly mode: ImageMode;
    readonly envoy?: string;
    readonly opa?: string;
    readonly agentd?: string;
    readonly ratelimit?: string;
    readonly redis?: string;
  };
  readonly rateLimits: RateLimitsConfig;
  readonly agentd: {
    readonly logLevel: string;
    readonly defaultTtlSeconds: number;
    readonly maxTtlSeconds: number;
    /** Intents and ended sandboxes older than this are purged (0: kept forever). */
    readonly retentionDays: number;
    /** At most this many intent records per sandbox, the oldest purged first (0: no cap). */
    readonly retentionIntentsPerSandbox: number;
    /** At most this many active sandboxes per API client. */
    readonly maxActiveSandboxesPerClient: number;
  };
  readonly docker: {
    /** Existing Docker networks the egress proxy joins besides its own (e.g. to reach a stand-in). */
    readonly egressNetworks: readonly string[];
  };
  readonly kubernetes: {
    readonly namespace: string;
    /** Write manifests to this directory instead of applying them (GitOps). */
    readonly renderYamlTo?: string;
    /** With renderYamlTo: also write Secrets (plaintext in the files). Off by default. */
    readonly renderSecrets: boolean;
    /** Do not wait for workloads to become ready (API servers without nodes, e.g. tests). */
    readonly skipAwait: boolean;
    /**
     * Private destinations the egress proxy may reach besides the internet (an upstream
     * overridden to an in-cluster service or a private address), each opened by its
     * NetworkPolicy on one port: the Kubernetes counterpart of `docker.egressNetworks`.
     */
    readonly egressPeers: readonly EgressPeer[];
  };
  readonly monitoring: {
    readonly enabled: boolean;
    /** Docker: host ports (on the gateway's bind address) of Grafana and Prometheus. */
    readonly grafanaPort: number;
    readonly prometheusPort: number;
  };
  /** API key rotations by client id (`npm run key -- rotate CLIENT` writes them); a client not listed has its first key. */
  readonly keys: Readonly<Record<string, KeyRotation>>;
}

export type RateLimitMode = 'local' | 'global';
export type WhenLimiterUnavailable = 'allow' | 'deny';

/** How the proxies count: in each replica (local) or in one shared store (global). */
export interface RateLimitsConfig {
  /**
   * `local`: token buckets inside each proxy replica (a key gets its tier from every replica);
   * `global`: Envoy's rate-limit service backed by Redis, shared by every replica, which also
   * enforces the LLM token budgets.
   */
  readonly mode: RateLimitMode;
  /** Local mode with more than one proxy replica: the per-replica meaning is accepted on purpose. */
  readonly perReplica: boolean;
  /**
   * Global mode: what each proxy does while the rate-limit service (or its Redis) cannot answer.
   * `allow`: requests pass unlimited; `deny`: they are refused with 503 `rate_limit_unavailable`.
   */
  readonly whenUnavailable: { readonly gateway: WhenLimiterUnavailable; readonly egress: WhenLimiterUnavailable };
}

/** Local limits, and in global mode: the gateway stays up while the limiter is down (keys are still checked), the egress proxy refuses (budgets are money). */
export const DEFAULT_RATE_LIMITS: RateLimitsConfig = { mode: 'local', perReplica: false, whenUnavailable: { gateway: 'allow', egress: 'deny' } };

/** Where a client's API key stands: which generation is current, and until when the one before it still works. */
export interface KeyRotation {
  /** The current key's generation (1: the key the client got first); each rotation adds one. */
  readonly generation: number;
  /** RFC 3339 instant until which the previous generation's key is still accepted (the grace period); absent once it is retired. */
  readonly previousValidUntil?: string;
}

/** An RFC 3339 instant with a time zone, as `npm run key -- rotate` writes it. */
export const isRfc3339 = (s: string): boolean => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(s) && !Number.isNaN(Date.parse(s));

export class StackConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid stack configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'StackConfigError';
    this.problems = problems;
  }
}

/**
 * The gateway's certificate and key as secret stack config (PEM), in their own namespace:
 * `pulumi config set --secret gateway:tlsCertificate "$(cat cert.pem)"` (likewise tlsPrivateKey).
 */
export const GATEWAY_TLS_CONFIG = { namespace: 'gateway', certificate: 'tlsCertificate', privateKey: 'tlsPrivateKey' } as const;

/**
 * What a preview should say about the stack's rate limits, or undefined: per-replica limits
 * accepted on purpose, and token budgets that local mode counts but cannot enforce.
 */
export function rateLimitWarnings(config: Pick<StackConfig, 'rateLimits' | 'gateway' | 'egress'>, tokenBudgets: boolean): string[] {
  if (config.rateLimits.mode === 'global') return [];
  const out: string[] = [];
  if (config.rateLimits.perReplica && (config.gateway.replicas > 1 || config.egress.replicas > 1)) {
    out.push(
      `rate limits are per replica (agentd:rateLimits.perReplica): with ${config.gateway.replicas} gateway and ${config.egress.replicas} egress replicas a key gets up to ${config.gateway.replicas} times its tier and a sandbox up to ${config.egress.replicas} times its budget`,
    );
  }
  if (tokenBudgets) {
    out.push(
      'the LLM token budgets of policy/data/sandbox-tiers.yaml are counted (metrics) but not enforced: enforcing them needs agentd:rateLimits.mode global',
    );
  }
  return out;
}

/** Whether the stack publishes the gateway beyond this machine's loopback. */
export function exposedBeyondLoopback(target: TargetKind, gateway: Pick<StackConfig['gateway'], 'bindAddress' | 'exposure'>): string | undefined {
  if (target === 'docker') return gateway.bindAddress.startsWith('127.') ? undefined : `agentd:gateway.bindAddress is ${gateway.bindAddress}`;
  return gateway.exposure === 'ClusterIP' ? undefined : `agentd:gateway.exposure is ${gateway.exposure}`;
}

/** The stack `npm run up` deploys by default, and the only one the public passphrase may protect. */
export const DEV_STACK = 'dev';
/** The passphrase of the local development stack when the user sets none. Public: dev only. */
export const LOCAL_PASSPHRASE = 'agentd-local-development';

/** A stack other than dev encrypted with the public development passphrase: its secrets are not secret. */
export function publicPassphraseProblem(stack: string, passphrase: string | undefined): string | undefined {
  if (stack === DEV_STACK || passphrase !== LOCAL_PASSPHRASE) return undefined;
  return `stack ${stack} is encrypted with the public development passphrase "${LOCAL_PASSPHRASE}", which is for the ${DEV_STACK} stack only; set a passphrase of your own (PULUMI_CONFIG_PASSPHRASE_FILE or PULUMI_CONFIG_PASSPHRASE, then pulumi stack change-secrets-provider passphrase --stack ${stack}) or another secrets provider`;
}

const KEYS = ['target', 'gateway', 'egress', 'images', 'agentd', 'docker', 'kubernetes', 'monitoring', 'keys', 'rateLimits'] as const;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

/**
 * Parses the raw config map (`{"agentd:target": "docker", "agentd:gateway": "{...json...}"}`).
 * Keys of other namespaces are ignored here (egress credentials live in `egress:*`).
 */
/** A private destination of the egress proxy: pods of a namespace (optionally by label), or an address range. */
export type EgressPeer =
  | { readonly namespace: string; readonly podLabels?: Readonly<Record<string, string>>; readonly port: number }
  | { readonly cidr: string; readonly port: number };

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** agentd:kubernetes.egressPeers, or the problems that name what is wrong with it. Pure. */
function parseEgressPeers(raw: unknown, fix: string): { peers: EgressPeer[]; problems: string[] } {
  const where = 'agentd:kubernetes.egressPeers';
  if (raw === undefined) return { peers: [], problems: [] };
  if (!Array.isArray(raw)) return { peers: [], problems: [`${where} must be a list (fix: ${fix})`] };
  const peers: EgressPeer[] = [];
  const problems: string[] = [];
  raw.forEach((p: unknown, i) => {
    const at = `${where}[${i}]`;
    if (p === null || typeof p !== 'object' || Array.isArray(p)) {
      problems.push(`${at} must be an object with namespace (and podLabels) or cidr, and port (fix: ${fix})`);
      return;
    }
    const o = p as Record<string, unknown>;
    const unknown = Object.keys(o).filter((k) => !['namespace', 'podLabels', 'cidr', 'port'].includes(k));
    if (unknown.length > 0) problems.push(`${at}.${unknown[0]} is not a known field; known: namespace, podLabels, cidr, port`);
    const port = typeof o['port'] === 'string' && /^\d+$/.test(o['port']) ? Number(o['port']) : o['port'];
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      problems.push(`${at}.port must be a port number from 1 to 65535, not ${JSON.stringify(o['port'])}`);
      return;
    }
    if ((o['namespace'] === undefined) === (o['cidr'] === undefined)) {
      problems.push(`${at} must have exactly one of namespace (pods of a namespace) or cidr (an address range) (fix: ${fix})`);
      return;
    }
    if (o['cidr'] !== undefined) {
      const c = o['cidr'];
      const m = typeof c === 'string' ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(c) : null;
      if (!m || m.slice(1, 5).some((x) => Number(x) > 255) || Number(m[5]) > 32) {
        problems.push(`${at}.cidr must be an IPv4 range like 10.1.2.0/24, not ${JSON.stringify(c)}`);
        return;
      }
      peers.push({ cidr: c as string, port });
      return;
    }
    const ns = o['namespace'];
    if (typeof ns !== 'string' || !NAMESPACE_NAME.test(ns)) {
      problems.push(`${at}.namespace must be a Kubernetes namespace name, not ${JSON.stringify(ns)}`);
      return;
    }
    const labels = o['podLabels'];
    if (labels !== undefined) {
      const ok =
        labels !== null &&
        typeof labels === 'object' &&
        !Array.isArray(labels) &&
        Object.entries(labels).every(([k, v]) => LABEL_KEY.test(k) && typeof v === 'string' && LABEL_VALUE.test(v));
      if (!ok) {
        problems.push(`${at}.podLabels must map label keys to label values, like {"app": "llm-gateway"}, not ${JSON.stringify(labels)}`);
        return;
      }
      peers.push({ namespace: ns, podLabels: labels as Record<string, string>, port });
      return;
    }
    peers.push({ namespace: ns, port });
  });
  return { peers, problems };
}

export function parseStackConfig(raw: Readonly<Record<string, string>>, stack = 'dev'): StackConfig {
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (!k.startsWith('agentd:')) continue;
    const key = k.slice('agentd:'.length);
    if (key.includes('.') && (KEYS as readonly string[]).includes(key.split('.')[0]!)) {
      problems.push(
        `agentd:${key} is a nested setting set without --path; set it with: pulumi config rm agentd:${key} --stack ${stack} && pulumi config set --path 'agentd:${key}' VALUE --stack ${stack}`,
      );
      continue;
    }
    if (!(KEYS as readonly string[]).includes(key)) {
      problems.push(
        `agentd:${key} is not a known setting; known: ${KEYS.map((x) => `agentd:${x}`).join(', ')} (remove it with: pulumi config rm agentd:${key} --stack ${stack})`,
      );
      continue;
    }
    values[key] = parseValue(v);
  }
  const set = (path: string, example: string) => `pulumi config set --path 'agentd:${path}' ${example} --stack ${stack}`;

  const obj = (key: string, allowed: readonly string[]): Record<string, unknown> => {
    const v = values[key];
    if (v === undefined) return {};
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      problems.push(`agentd:${key} must be an object (set its fields with: ${set(`${key}.<field>`, 'VALUE')})`);
      return {};
    }
    for (const f of Object.keys(v)) {
      if (!allowed.includes(f)) problems.push(`agentd:${key}.${f} is not a known field; known: ${allowed.join(', ')}`);
    }
    return v as Record<string, unknown>;
  };
  const int = (o: Record<string, unknown>, key: string, field: string, def: number, min: number, max: number): number => {
    const v = o[field];
    if (v === undefined) return def;
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      problems.push(
        `agentd:${key}.${field} must be a whole number from ${min} to ${max}, not ${JSON.stringify(v)} (fix: ${set(`${key}.${field}`, String(def))})`,
      );
      return def;
    }
    return n;
  };
  const str = (o: Record<string, unknown>, key: string, field: string, def: string, ok: (s: string) => boolean, what: string): string => {
    const v = o[field];
    if (v === undefined) return def;
    if (typeof v !== 'string' || !ok(v)) {
      problems.push(`agentd:${key}.${field} must be ${what}, not ${JSON.stringify(v)} (fix: ${set(`${key}.${field}`, def || 'VALUE')})`);
      return def;
    }
    return v;
  };
  const bool = (o: Record<string, unknown>, key: string, field: string, def: boolean): boolean => {
    const v = o[field];
    if (v === undefined) return def;
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    problems.push(`agentd:${key}.${field} must be true or false, not ${JSON.stringify(v)} (fix: ${set(`${key}.${field}`, String(def))})`);
    return def;
  };

  const targetRaw = values['target'] ?? 'docker';
  if (targetRaw !== 'docker' && targetRaw !== 'kubernetes') {
    problems.push(
      `agentd:target must be docker or kubernetes, not ${JSON.stringify(targetRaw)} (fix: pulumi config set agentd:target docker --stack ${stack})`,
    );
  }
  const target: TargetKind = targetRaw === 'kubernetes' ? 'kubernetes' : 'docker';

  const g = obj('gateway', ['port', 'bindAddress', 'maxRequestBytes', 'upstreamTimeoutSeconds', 'exposure', 'replicas', 'tls', 'allowPlaintext']);
  const tlsRaw = g['tls'];
  let secretName: string | undefined;
  if (tlsRaw !== undefined) {
    if (tlsRaw === null || typeof tlsRaw !== 'object' || Array.isArray(tlsRaw)) {
      problems.push(`agentd:gateway.tls must be an object (fix: ${set('gateway.tls.secretName', 'agentd-gateway-tls')})`);
    } else {
      const t = tlsRaw as Record<string, unknown>;
      for (const f of Object.keys(t)) {
        if (f !== 'secretName')
          problems.push(
            `agentd:gateway.tls.${f} is not a known field; known: secretName (the certificate itself is secret config: pulumi config set --secret ${GATEWAY_TLS_CONFIG.namespace}:${GATEWAY_TLS_CONFIG.certificate} "$(cat cert.pem)" --stack ${stack})`,
          );
      }
      secretName =
        str(
          t,
          'gateway.tls',
          'secretName',
          '',
          (s) => /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(s),
          'the name of a Kubernetes TLS Secret in the stack namespace',
        ) || undefined;
    }
  }
  const ns = GATEWAY_TLS_CONFIG.namespace;
  const pem = (field: string, marker: RegExp, what: string): boolean => {
    const v = raw[`${ns}:${field}`];
    if (v === undefined) return false;
    if (!marker.test(v))
      problems.push(`${ns}:${field} must be ${what} in PEM (fix: pulumi config set --secret ${ns}:${field} "$(cat FILE.pem)" --stack ${stack})`);
    return true;
  };
  const hasCert = pem(GATEWAY_TLS_CONFIG.certificate, /-----BEGIN CERTIFICATE-----/, 'a certificate chain');
  const hasKey = pem(GATEWAY_TLS_CONFIG.privateKey, /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, 'a private key');
  if (hasCert !== hasKey) {
    const missing = hasCert ? GATEWAY_TLS_CONFIG.privateKey : GATEWAY_TLS_CONFIG.certificate;
    problems.push(
      `the gateway's TLS needs both ${ns}:${GATEWAY_TLS_CONFIG.certificate} and ${ns}:${GATEWAY_TLS_CONFIG.privateKey}; ${ns}:${missing} is not set (fix: pulumi config set --secret ${ns}:${missing} "$(cat FILE.pem)" --stack ${stack})`,
    );
  }
  if (hasCert && secretName !== undefined) {
    problems.push(
      `the gateway's certificate is given twice: as ${ns}:${GATEWAY_TLS_CONFIG.certificate} and as agentd:gateway.tls.secretName; keep one (pulumi config rm --path agentd:gateway.tls --stack ${stack})`,
    );
  }
  const tls = secretName !== undefined ? { source: 'secret' as const, secretName } : hasCert && hasKey ? { source: 'config' as const } : undefined;
  const gateway = {
    port: int(g, 'gateway', 'port', 8080, 1, 65535),
    bindAddress: str(g, 'gateway', 'bindAddress', '127.0.0.1', isIp, 'an IPv4 address such as 127.0.0.1 (or 0.0.0.0 to publish on every interface)'),
    maxRequestBytes: int(g, 'gateway', 'maxRequestBytes', 1 << 20, 1024, 64 << 20),
    upstreamTimeoutSeconds: int(g, 'gateway', 'upstreamTimeoutSeconds', 120, 1, 3600),
    exposure: str(
      g,
      'gateway',
      'exposure',
      'ClusterIP',
      (s) => ['ClusterIP', 'NodePort', 'LoadBalancer'].includes(s),
      'ClusterIP, NodePort or LoadBalancer',
    ) as Exposure,
    replicas: int(g, 'gateway', 'replicas', 1, 1, 100),
    tls,
    allowPlaintext: bool(g, 'gateway', 'allowPlaintext', false),
  };

  const e = obj('egress', ['upstreams', 'caCertificates', 'replicas']);
  const upstreams: Record<string, Upstream> = {};
  const ups = e['upstreams'];
  if (ups !== undefined) {
    if (ups === null || typeof ups !== 'object' || Array.isArray(ups)) {
      problems.push(`agentd:egress.upstreams must map service ids to URLs (fix: ${set('egress.upstreams.httpbin', 'https://standin:8443')})`);
    } else {
      for (const [svc, url] of Object.entries(ups)) {
        const u = typeof url === 'string' ? parseUpstream(url) : undefined;
        if (!u) problems.push(`agentd:egress.upstreams.${svc} must be a URL like https://host:port (no path), not ${JSON.stringify(url)}`);
        else upstreams[svc] = u;
      }
    }
  }
  const ca = e['caCertificates'];
  if (ca !== undefined && (typeof ca !== 'string' || !ca.includes('-----BEGIN CERTIFICATE-----'))) {
    problems.push(
      `agentd:egress.caCertificates must be PEM certificates (fix: pulumi config set --path agentd:egress.caCertificates "$(cat ca.pem)" --stack ${stack})`,
    );
  }
  const egress = {
    upstreams,
    ...(typeof ca === 'string' && ca.includes('BEGIN CERTIFICATE') ? { caCertificates: ca } : {}),
    replicas: int(e, 'egress', 'replicas', 1, 1, 100),
  };

  const i = obj('images', ['mode', 'envoy', 'opa', 'agentd', 'ratelimit', 'redis']);
  const image = (f: string) =>
    i[f] === undefined ? undefined : str(i, 'images', f, '', (s) => /^[\w.\-/:@]+$/.test(s), 'an image reference such as registry/name:tag');
  const images = {
    mode: str(i, 'images', 'mode', 'upstream', (s) => s === 'local' || s === 'upstream', 'local or upstream') as ImageMode,
    ...optional('envoy', image('envoy')),
    ...optional('opa', image('opa')),
    ...optional('agentd', image('agentd')),
    ...optional('ratelimit', image('ratelimit')),
    ...optional('redis', image('redis')),
  };

  const r = obj('rateLimits', ['mode', 'perReplica', 'whenUnavailable']);
  const wRaw = r['whenUnavailable'] ?? {};
  const w: Record<string, unknown> = wRaw !== null && typeof wRaw === 'object' && !Array.isArray(wRaw) ? (wRaw as Record<string, unknown>) : {};
  if (w !== wRaw) problems.push(`agentd:rateLimits.whenUnavailable must be an object (fix: ${set('rateLimits.whenUnavailable.egress', 'deny')})`);
  for (const f of Object.keys(w))
    if (f !== 'gateway' && f !== 'egress') problems.push(`agentd:rateLimits.whenUnavailable.${f} is not a known field; known: gateway, egress`);
  const allowOrDeny = (s: string) => s === 'allow' || s === 'deny';
  const rateLimits: RateLimitsConfig = {
    mode: str(r, 'rateLimits', 'mode', DEFAULT_RATE_LIMITS.mode, (s) => s === 'local' || s === 'global', 'local or global') as RateLimitMode,
    perReplica: bool(r, 'rateLimits', 'perReplica', DEFAULT_RATE_LIMITS.perReplica),
    whenUnavailable: {
      gateway: str(
        w,
        'rateLimits.whenUnavailable',
        'gateway',
        DEFAULT_RATE_LIMITS.whenUnavailable.gateway,
        allowOrDeny,
        'allow or deny',
      ) as WhenLimiterUnavailable,
      egress: str(
        w,
        'rateLimits.whenUnavailable',
        'egress',
        DEFAULT_RATE_LIMITS.whenUnavailable.egress,
        allowOrDeny,
        'allow or deny',
      ) as WhenLimiterUnavailable,
    },
  };

  const a = obj('agentd', ['logLevel', 'defaultTtlSeconds', 'maxTtlSeconds', 'retentionDays', 'retentionIntentsPerSandbox', 'maxActiveSandboxesPerClient']);
  const agentd = {
    logLevel: str(a, 'agentd', 'logLevel', 'info', (s) => LOG_LEVELS.includes(s), LOG_LEVELS.join(', ')),
    defaultTtlSeconds: int(a, 'agentd', 'defaultTtlSeconds', 3600, 60, 30 * 86400),
    maxTtlSeconds: int(a, 'agentd', 'maxTtlSeconds', 86400, 60, 365 * 86400),
    retentionDays: int(a, 'agentd', 'retentionDays', 30, 0, 3650),
    retentionIntentsPerSandbox: int(a, 'agentd', 'retentionIntentsPerSandbox', 1000, 0, 1_000_000),
    maxActiveSandboxesPerClient: int(a, 'agentd', 'maxActiveSandboxesPerClient', 100, 1, 100_000),
  };
  if (agentd.defaultTtlSeconds > agentd.maxTtlSeconds)
    problems.push('agentd:agentd.defaultTtlSeconds is above agentd:agentd.maxTtlSeconds; lower the default or raise the maximum');

  const d = obj('docker', ['egressNetworks']);
  const nets = d['egressNetworks'] ?? [];
  if (!Array.isArray(nets) || !nets.every((n) => typeof n === 'string' && /^[\w.-]+$/.test(n))) {
    problems.push(`agentd:docker.egressNetworks must be a list of Docker network names (fix: ${set('docker.egressNetworks[0]', 'my-network')})`);
  }

  const k = obj('kubernetes', ['namespace', 'renderYamlTo', 'renderSecrets', 'skipAwait', 'egressPeers']);
  const egressPeers = parseEgressPeers(k['egressPeers'], `${set('kubernetes.egressPeers[0]', `'{"namespace": "llm-gateway", "port": 8443}'`)}`);
  problems.push(...egressPeers.problems);
  const kubernetes = {
    namespace: str(
      k,
      'kubernetes',
      'namespace',
      'agentd',
      (s) => /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(s),
      'a Kubernetes namespace name (lowercase, digits, -)',
    ),
    ...optional(
      'renderYamlTo',
      k['renderYamlTo'] === undefined ? undefined : str(k, 'kubernetes', 'renderYamlTo', '', (s) => s.length > 0, 'a directory path'),
    ),
    renderSecrets: bool(k, 'kubernetes', 'renderSecrets', false),
    skipAwait: bool(k, 'kubernetes', 'skipAwait', false),
    egressPeers: egressPeers.peers,
  };

  const m = obj('monitoring', ['enabled', 'grafanaPort', 'prometheusPort']);
  const monitoring = {
    enabled: bool(m, 'monitoring', 'enabled', false),
    grafanaPort: int(m, 'monitoring', 'grafanaPort', 3000, 1, 65535),
    prometheusPort: int(m, 'monitoring', 'prometheusPort', 9090, 1, 65535),
  };

  const keys: Record<string, KeyRotation> = {};
  const rawKeys = values['keys'];
  if (rawKeys !== undefined && (rawKeys === null || typeof rawKeys !== 'object' || Array.isArray(rawKeys))) {
    problems.push(`agentd:keys must be an object of clients (npm run key -- rotate CLIENT writes it)`);
  } else {
    for (const [client, v] of Object.entries((rawKeys ?? {}) as Record<string, unknown>)) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        problems.push(`agentd:keys.${client} must be an object with generation and, during a rotation, previousValidUntil`);
        continue;
      }
      const o = v as Record<string, unknown>;
      for (const f of Object.keys(o))
        if (!['generation', 'previousValidUntil'].includes(f))
          problems.push(`agentd:keys.${client}.${f} is not a known field; known: generation, previousValidUntil`);
      const generation = int(o, `keys.${client}`, 'generation', 1, 1, 1_000_000);
      const until = o['previousValidUntil'];
      if (until !== undefined && (typeof until !== 'string' || !isRfc3339(until))) {
        problems.push(
          `agentd:keys.${client}.previousValidUntil must be an RFC 3339 instant such as 2026-12-01T12:00:00Z, not ${JSON.stringify(until)} (fix: ${set(`keys.${client}.previousValidUntil`, '2026-12-01T12:00:00Z')})`,
        );
      } else if (until !== undefined && generation < 2) {
        problems.push(
          `agentd:keys.${client}.previousValidUntil needs a previous key, but generation is ${generation} (fix: pulumi config rm --path 'agentd:keys.${client}.previousValidUntil' --stack ${stack})`,
        );
      }
      keys[client] = { generation, ...(typeof until === 'string' && isRfc3339(until) && generation >= 2 ? { previousValidUntil: until } : {}) };
    }
  }

  if (target === 'docker' && gateway.tls?.source === 'secret') {
    problems.push(
      `agentd:gateway.tls.secretName names a Kubernetes Secret, but this stack's target is docker; give the certificate as secret config instead (pulumi config set --secret ${ns}:${GATEWAY_TLS_CONFIG.certificate} "$(cat cert.pem)" --stack ${stack}, likewise ${ns}:${GATEWAY_TLS_CONFIG.privateKey})`,
    );
  }
  const exposed = exposedBeyondLoopback(target, gateway);
  if (exposed && !gateway.tls && !gateway.allowPlaintext) {
    problems.push(
      `${exposed}, so the gateway is reachable beyond this machine, but it has no TLS: API keys would cross the network in plaintext. ` +
        `Give it a certificate (pulumi config set --secret ${ns}:${GATEWAY_TLS_CONFIG.certificate} "$(cat cert.pem)" --stack ${stack} and ${ns}:${GATEWAY_TLS_CONFIG.privateKey}` +
        `${target === 'kubernetes' ? `, or name an existing TLS Secret: ${set('gateway.tls.secretName', 'agentd-gateway-tls')}` : ''}), ` +
        `or accept plaintext on purpose: ${set('gateway.allowPlaintext', 'true')}`,
    );
  }
  const replicated = [
    gateway.replicas > 1 ? `agentd:gateway.replicas is ${gateway.replicas}` : '',
    egress.replicas > 1 ? `agentd:egress.replicas is ${egress.replicas}` : '',
  ]
    .filter(Boolean)
    .join(' and ');
  if (rateLimits.mode === 'local' && replicated && !rateLimits.perReplica) {
    problems.push(
      `${replicated}, but rate limits are local: each replica would give a key its whole tier and a sandbox its whole budget. ` +
        `Share the limits between replicas: ${set('rateLimits.mode', 'global')}; or accept per-replica limits on purpose: ${set('rateLimits.perReplica', 'true')}`,
    );
  }
  if (problems.length > 0) throw new StackConfigError(problems);
  return {
    target,
    gateway,
    egress,
    images,
    rateLimits,
    agentd,
    docker: { egressNetworks: Array.isArray(nets) ? (nets as string[]) : [] },
    kubernetes,
    monitoring,
    keys,
  };
}

function optional<K extends string, V>(key: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: V };
}

function parseValue(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

const isIp = (s: string) => /^(\d{1,3})(\.\d{1,3}){3}$/.test(s) && s.split('.').every((p) => Number(p) <= 255);

function parseUpstream(url: string): Upstream | undefined {
  const u = parseServiceUrl(url);
  return 'problem' in u ? undefined : u;
}

/** Checks the config names services and clients that exist; the spec is only known after it is loaded. */
export function checkAgainstSpec(config: StackConfig, spec: { readonly serviceIds: readonly string[]; readonly clientIds: readonly string[] }): void {
  const problems = [
    ...Object.keys(config.egress.upstreams)
      .filter((s) => !spec.serviceIds.includes(s))
      .map((s) => `agentd:egress.upstreams.${s} names no egress service; known: ${spec.serviceIds.join(', ')} (policy/data/egress-services.yaml)`),
    ...Object.keys(config.keys)
      .filter((c) => !spec.clientIds.includes(c))
      .map((c) => `agentd:keys.${c} names no client; known: ${spec.clientIds.join(', ')} (policy/data/clients.yaml)`),
  ];
  if (problems.length > 0) throw new StackConfigError(problems);
}

/** What checkAgainstSpec needs of a policy spec. */
export const specIds = (spec: { readonly egressServices: Readonly<Record<string, unknown>>; readonly clients: readonly { readonly id: string }[] }) => ({
  serviceIds: Object.keys(spec.egressServices),
  clientIds: spec.clients.map((c) => c.id),
});
