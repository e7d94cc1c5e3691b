// An independent oracle for decision tables: what the policy data says about a request,
// computed in TypeScript from the spec (policy/paths.ts), never from the Rego under test.
import { matchPath, normalizePath, type PathPattern } from '../../policy/paths.ts';
import { HTTP_METHODS, type PolicySpec } from '../../policy/spec.ts';
import { IDENTITY_HEADERS } from '../../agentd/src/contract.ts';

/** A concrete path that a pattern matches (`*` -> a segment, `**` -> two more segments). */
export function instantiate(p: PathPattern, deeper = false): string {
  const segs = p.segments.map((s) => (s === '*' ? 'x1' : s));
  if (p.prefix && deeper) segs.push('deep', 'er');
  return '/' + segs.join('/');
}

export interface Expected {
  readonly allowed: boolean;
  readonly status: number;
  readonly reason?: string;
  /** On an allowed gateway request: exactly the headers OPA hands agentd (the caller's identity). */
  readonly headers?: Readonly<Record<string, string>>;
}

export function expectGateway(spec: PolicySpec, clientId: string, method: string, path: string): Expected {
  const client = spec.clients.find((c) => c.id === clientId);
  if (!client) return { allowed: false, status: 401, reason: 'invalid_api_key' };
  if (!client.enabled) return { allowed: false, status: 403, reason: 'disabled_api_key' };
  const n = normalizePath(path);
  if (!n.ok) return { allowed: false, status: 400, reason: 'invalid_path' };
  const rules = spec.roles[client.role]!.rules.filter((r) => r.paths.some((p) => matchPath(p, n.segments)));
  if (rules.length === 0) return { allowed: false, status: 403, reason: 'forbidden_route' };
  if (!rules.some((r) => (r.methods as readonly string[]).includes(method))) return { allowed: false, status: 403, reason: 'method_not_allowed' };
  const role = spec.roles[client.role]!;
  return {
    allowed: true,
    status: 200,
    headers: {
      [IDENTITY_HEADERS.clientId]: client.id,
      [IDENTITY_HEADERS.clientRole]: client.role,
      [IDENTITY_HEADERS.clientScope]: role.scope,
      [IDENTITY_HEADERS.sandboxTiers]: [...role.sandboxTiers].sort().join(','),
    },
  };
}

/** The sandbox side of an egress request: its token's exp claim and what the registry says. */
export interface SandboxState {
  /** The token's `exp` claim as sent (undefined: absent). */
  readonly exp: unknown;
  /** Whether OPA has the registry of active sandboxes (data.sandboxes.active is an object). */
  readonly registryLoaded: boolean;
  /** Whether the token's sandbox is in the registry. */
  readonly active: boolean;
}

export const LIVE_SANDBOX = (nowSeconds = Math.floor(Date.now() / 1000)): SandboxState => ({ exp: nowSeconds + 600, registryLoaded: true, active: true });

export function expectEgress(spec: PolicySpec, tier: string, service: string, method: string, path: string, sandbox: SandboxState = LIVE_SANDBOX()): Expected {
  // Who is calling, then whether that sandbox is alive, then what and how it calls.
  if (typeof sandbox.exp !== 'number') return { allowed: false, status: 401, reason: 'token_without_expiry' };
  if (sandbox.exp * 1000 <= Date.now()) return { allowed: false, status: 401, reason: 'token_expired' };
  if (!sandbox.registryLoaded) return { allowed: false, status: 503, reason: 'sandbox_registry_unavailable' };
  if (!sandbox.active) return { allowed: false, status: 401, reason: 'sandbox_not_active' };
  const s = spec.egressServices[service];
  if (!s) return { allowed: false, status: 404, reason: 'unknown_service' };
  const t = spec.sandboxTiers[tier];
  if (!t) return { allowed: false, status: 403, reason: 'unknown_tier' };
  if (!t.services.includes(service)) return { allowed: false, status: 403, reason: 'service_not_allowed' };
  const n = normalizePath(path);
  if (!n.ok) return { allowed: false, status: 400, reason: 'invalid_path' };
  if (!(s.allowedMethods as readonly string[]).includes(method)) return { allowed: false, status: 403, reason: 'method_not_allowed' };
  if (!s.allowedPaths.some((p) => matchPath(p, n.segments))) return { allowed: false, status: 403, reason: 'path_not_allowed' };
  return { allowed: true, status: 200 };
}

/** Every route the roles mention (exact and deeper instances), plus routes no role grants. */
export function gatewayRoutes(spec: PolicySpec): string[] {
  const out = new Set<string>(['/api/v1/admin/keys', '/metrics', '/api/v2/status', '/api/v1/sandboxes/x1/intents/../../../../admin']);
  for (const role of Object.values(spec.roles)) {
    for (const rule of role.rules)
      for (const p of rule.paths) {
        out.add(instantiate(p));
        out.add(instantiate(p, true));
      }
  }
  return [...out].sort();
}

/** For a service: each allowed pattern instantiated, deeper variants, and paths outside with tricks. */
export function egressPaths(spec: PolicySpec, service: string): string[] {
  const s = spec.egressServices[service]!;
  const out = new Set<string>();
  for (const p of s.allowedPaths) {
    out.add(instantiate(p));
    out.add(instantiate(p, true));
    out.add(instantiate(p) + '?q=/../../admin');
    out.add(instantiate(p) + '/../../../outside');
  }
  out.add('/definitely/not/allowed');
  out.add('/%2e%2e/etc/passwd');
  return [...out].sort();
}

export const METHODS = HTTP_METHODS;
