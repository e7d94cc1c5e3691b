// Synthetic policy data of a chosen size, written as the YAML files a user would write and
// validated by the real parser (parsePolicySpec), with API keys and their SHA-256 as a deploy
// would produce them. Deterministic: the same size gives the same spec and keys.
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import { sha256Hex, type KeyHashes } from '../../policy/bundle.ts';
import { parsePolicySpec, type PolicySources, type PolicySpec } from '../../policy/spec.ts';

export interface SyntheticSize {
  readonly clients: number;
  readonly services: number;
}

export interface SyntheticPolicy {
  readonly sources: PolicySources;
  readonly spec: PolicySpec;
  /** Plaintext API keys by client id (benchmark only). */
  readonly apiKeys: Readonly<Record<string, string>>;
  readonly keyHashes: KeyHashes;
  readonly clientIds: readonly string[];
  readonly serviceIds: readonly string[];
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');
const ROLES = ['admin', 'operator', 'reader'] as const;
const TIERS = ['default', 'standard', 'premium', 'unlimited'] as const;

/** The YAML sources: roles and tiers as shipped, N clients, M services, sandbox tiers over them. */
function syntheticSources(size: SyntheticSize): PolicySources {
  const w = String(Math.max(size.clients, size.services)).length;
  const serviceIds = Array.from({ length: size.services }, (_, i) => `svc-${pad(i + 1, w)}`);
  const clients = Array.from({ length: size.clients }, (_, i) => ({
    id: `client-${pad(i + 1, w)}`,
    description: `synthetic client ${i + 1}`,
    role: ROLES[i % ROLES.length],
    rate_limit_tier: TIERS[i % TIERS.length],
    // One in fifty is disabled, as in a real key list that keeps retired keys.
    enabled: i % 50 !== 49,
  }));
  const services = Object.fromEntries(
    serviceIds.map((id, i) => [
      id,
      {
        display_name: `Synthetic service ${i + 1}`,
        base_url: `https://${id}.example.com`,
        allowed_methods: ['GET', 'POST', 'PATCH'],
        allowed_paths: ['/v1/items', '/v1/items/*', '/v1/items/*/history', '/repos/**', '/search/**'],
        credential: { secret: `${id}-token`, header: 'Authorization', prefix: 'Bearer ' },
        timeout_seconds: 30,
      },
    ]),
  );
  return {
    clients: stringify({ clients }),
    roles: stringify({
      roles: {
        admin: {
          description: 'everything',
          rules: [
            { methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], paths: ['/api/v1/**'] },
            { methods: ['POST'], paths: ['/agentd.v1.Agentd/*'] },
          ],
        },
        operator: {
          description: 'sandboxes and intents',
          rules: [
            { methods: ['GET', 'HEAD'], paths: ['/api/v1/status', '/api/v1/sandboxes', '/api/v1/sandboxes/**'] },
            { methods: ['POST'], paths: ['/api/v1/sandboxes', '/api/v1/sandboxes/*/intents'] },
            {
              methods: ['POST'],
              paths: ['/agentd.v1.Agentd/Health', '/agentd.v1.Agentd/Status', '/agentd.v1.Agentd/CreateSandbox', '/agentd.v1.Agentd/ExecuteIntent'],
            },
          ],
        },
        reader: {
          description: 'reads',
          rules: [
            { methods: ['GET', 'HEAD'], paths: ['/api/v1/status', '/api/v1/sandboxes', '/api/v1/sandboxes/**'] },
            { methods: ['POST'], paths: ['/agentd.v1.Agentd/Health', '/agentd.v1.Agentd/Status', '/agentd.v1.Agentd/ListSandboxes'] },
          ],
        },
      },
    }),
    rateLimitTiers: stringify({
      tiers: {
        default: { requests_per_minute: 60, requests_per_hour: 1800 },
        standard: { requests_per_minute: 120, requests_per_hour: 3600 },
        premium: { requests_per_minute: 600, requests_per_hour: 18000 },
        unlimited: { unlimited: true },
      },
    }),
    egressServices: stringify({ services }),
    sandboxTiers: stringify({
      tiers: {
        default: { services: [], requests_per_minute: 0 },
        restricted: { services: serviceIds.slice(0, 1), requests_per_minute: 10 },
        standard: { services: serviceIds.slice(0, Math.ceil(serviceIds.length / 2)), requests_per_minute: 60 },
        admin: { services: 'all', requests_per_minute: 1000 },
      },
    }),
  };
}

/** A deterministic API key per client (benchmark only: real keys come from @pulumi/random). */
const keyOf = (id: string) => `agk_${createHash('sha256').update(`bench:${id}`).digest('base64url').slice(0, 32)}`;

export function syntheticPolicy(size: SyntheticSize): SyntheticPolicy {
  const sources = syntheticSources(size);
  const spec = parsePolicySpec(sources, `synthetic(${size.clients} clients, ${size.services} services)`);
  const apiKeys = Object.fromEntries(spec.clients.map((c) => [c.id, keyOf(c.id)]));
  const keyHashes = Object.fromEntries(Object.entries(apiKeys).map(([id, k]) => [id, sha256Hex(k)]));
  return {
    sources,
    spec,
    apiKeys,
    keyHashes,
    clientIds: spec.clients.map((c) => c.id),
    serviceIds: Object.keys(spec.egressServices),
  };
}
