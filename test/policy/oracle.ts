// An independent oracle for decision tables: what the policy data says about a request,
// computed in TypeScript from the spec (policy/paths.ts), never from the Rego under test.
import { matchPath, normalizePath } from '../../policy/paths.ts';
import { HTTP_METHODS, type PolicySpec } from '../../policy/spec.ts';
import { roleRoutes, servicePaths } from '../../policy/probes.ts';
import { IDENTITY_HEADERS } from '../../agentd/src/contract.ts';

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
  const ungranted = ['/api/v1/admin/keys', '/metrics', '/api/v2/status', '/api/v1/sandboxes/x1/intents/../../../../admin'];
  return [...new Set([...roleRoutes(spec), ...ungranted])].sort();
}

/** For a service: each allowed pattern instantiated, deeper variants, and paths outside with tricks. */
export function egressPaths(spec: PolicySpec, service: string): string[] {
  const allowed = servicePaths(spec.egressServices[service]!);
  const tricks = allowed.flatMap((p) => [p + '?q=/../../admin', p + '/../../../outside']);
  return [...new Set([...allowed, ...tricks, '/definitely/not/allowed', '/%2e%2e/etc/passwd'])].sort();
}

export const METHODS = HTTP_METHODS;
