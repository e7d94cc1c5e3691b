// The decision diff of a policy change (`npm run policy -- diff`): which requests to ask OPA
// about, what changed between the answers for the old and the new policy, and how to say it.
// Pure: the answers come from the caller (scripts/local/policy-diff.ts asks two real OPAs), so
// the comparison and its wording are tested with hand-made answers.
//
// Only access counts as a change: a request allowed on one side and refused on the other, the
// identity OPA hands agentd with an allowed request (role, scope, sandbox tiers), and the limits
// an allowed caller meets. A refusal whose reason changes (forbidden_route -> method_not_allowed)
// is still a refusal and is not listed.

import { roleRoutes, servicePaths } from './probes.ts';
import { HTTP_METHODS, type HttpMethod, type PolicySpec, type RateLimitTier } from './spec.ts';

/** A gateway route asked about besides the roles' own: no shipped role grants it. */
export const ROUTE_OUTSIDE_ROLES = '/not-granted-by-any-role';
/** An egress path asked about besides the allowlists' own: no shipped service allows it. */
export const PATH_OUTSIDE_ALLOWLISTS = '/outside-every-allowlist';

export interface GatewayProbe {
  readonly kind: 'gateway';
  readonly client: string;
  readonly method: HttpMethod;
  readonly path: string;
}

export interface EgressProbe {
  readonly kind: 'egress';
  /** The sandbox tier (sandbox-tiers.yaml) of the calling sandbox. */
  readonly tier: string;
  readonly service: string;
  readonly method: HttpMethod;
  readonly path: string;
}

export type Probe = GatewayProbe | EgressProbe;

/** The key of a probe in a {@link PolicySide}'s answers. */
export function probeKey(p: Probe): string {
  return p.kind === 'gateway' ? JSON.stringify([p.kind, p.client, p.method, p.path]) : JSON.stringify([p.kind, p.tier, p.service, p.method, p.path]);
}

const union = (a: Iterable<string>, b: Iterable<string>): string[] => [...new Set([...a, ...b])].sort();

/**
 * The requests to ask both OPAs: every client (of either side) x every route either side's
 * roles name, plus one no role names, x every method; every sandbox tier x every service x every
 * path of the service's allowlists on either side, plus one outside them, x every method. The
 * same list for both sides, so that a pattern only one side has is asked of both. In the order
 * the changes are listed: by client (tier, service), path, then method, so that the methods of a
 * path read together.
 */
export function probesOf(base: PolicySpec, head: PolicySpec): Probe[] {
  const clients = union(
    base.clients.map((c) => c.id),
    head.clients.map((c) => c.id),
  );
  const routes = union([...roleRoutes(base), ...roleRoutes(head)], [ROUTE_OUTSIDE_ROLES]);
  const gateway = clients.flatMap((client) => routes.flatMap((path) => HTTP_METHODS.map((method): Probe => ({ kind: 'gateway', client, method, path }))));
  const tiers = union(Object.keys(base.sandboxTiers), Object.keys(head.sandboxTiers));
  const services = union(Object.keys(base.egressServices), Object.keys(head.egressServices));
  const pathsOf = (service: string) =>
    union(
      [PATH_OUTSIDE_ALLOWLISTS],
      [base, head].flatMap((spec) => (spec.egressServices[service] ? servicePaths(spec.egressServices[service]) : [])),
    );
  const egress = tiers.flatMap((tier) =>
    services.flatMap((service) => pathsOf(service).flatMap((path) => HTTP_METHODS.map((method): Probe => ({ kind: 'egress', tier, service, method, path })))),
  );
  return [...gateway, ...egress];
}

/** What a gateway client is to agentd once allowed: the identity headers OPA sets. */
export interface ClientIdentity {
  readonly role: string;
  readonly scope: string;
  /** Sorted, comma-separated; '' for none (as in the header). */
  readonly sandboxTiers: string;
}

/** OPA's answer to one probe, reduced to what is compared. */
export interface Decision {
  readonly allowed: boolean;
  /** The error code in a refusal's body (e.g. forbidden_route); null when allowed. */
  readonly reason: string | null;
  /** An allowed gateway request: the identity OPA hands agentd. */
  readonly identity?: ClientIdentity;
  /** An allowed gateway request: the rate-limit tier in OPA's metadata (it picks the client's Envoy bucket). */
  readonly rateLimitTier?: string;
}

/** One side of the comparison: its spec and OPA's answer to every probe (by {@link probeKey}). */
export interface PolicySide {
  readonly spec: PolicySpec;
  readonly decisions: ReadonlyMap<string, Decision>;
}

/**
 * What a change is about: `access` (one request's decision), `presence` (a client or sandbox
 * tier that only one side has), the client identity fields, or a limit.
 */
export type ChangeAspect = 'access' | 'presence' | 'role' | 'scope' | 'sandbox tiers' | 'rate-limit tier' | 'requests per minute' | 'requests per hour';

export interface DecisionChange {
  readonly kind: 'gateway' | 'egress' | 'limit';
  /** Whose decision: `client ci`, `tier standard` (a sandbox tier) or `rate-limit tier premium`. */
  readonly subject: string;
  readonly aspect: ChangeAspect;
  /** The egress service (egress requests and sandbox tiers' per-service limits); else null. */
  readonly service: string | null;
  readonly method: HttpMethod | null;
  readonly path: string | null;
  /** `allow`/`deny` for access, `absent`/`present` for presence, else the value (e.g. `300/min`). */
  readonly before: string;
  readonly after: string;
  /** The refusal's error code on each side (access only). */
  readonly reasons: { readonly before: string | null; readonly after: string | null };
  /** Presence: the requests allowed on the side that has the subject. */
  readonly allowed?: readonly AllowedRequest[];
}

export interface AllowedRequest {
  /** The egress service; null for a gateway request. */
  readonly service: string | null;
  readonly method: HttpMethod;
  readonly path: string;
}

function decisionOf(side: PolicySide, probe: Probe): Decision {
  const d = side.decisions.get(probeKey(probe));
  if (!d) throw new Error(`no answer for ${probeKey(probe)}`);
  return d;
}

const NO_REASONS = { before: null, after: null } as const;

function change(fields: Omit<DecisionChange, 'service' | 'method' | 'path' | 'reasons'> & Partial<DecisionChange>): DecisionChange {
  return { service: null, method: null, path: null, reasons: NO_REASONS, ...fields };
}

function accessChange(subject: string, probe: Probe, before: Decision, after: Decision): DecisionChange {
  return change({
    kind: probe.kind,
    subject,
    aspect: 'access',
    service: probe.kind === 'egress' ? probe.service : null,
    method: probe.method,
    path: probe.path,
    before: before.allowed ? 'allow' : 'deny',
    after: after.allowed ? 'allow' : 'deny',
    reasons: { before: before.reason, after: after.reason },
  });
}

function presenceChange(kind: 'gateway' | 'egress', subject: string, added: boolean, allowed: AllowedRequest[]): DecisionChange {
  return change({ kind, subject, aspect: 'presence', before: added ? 'absent' : 'present', after: added ? 'present' : 'absent', allowed });
}

const requestOf = (p: Probe): AllowedRequest => ({ service: p.kind === 'egress' ? p.service : null, method: p.method, path: p.path });

/** Changes of one subject (a client, a sandbox tier) over its probes. */
function subjectChanges(
  kind: 'gateway' | 'egress',
  subject: string,
  presence: { base: boolean; head: boolean },
  probes: readonly Probe[],
  base: PolicySide,
  head: PolicySide,
): DecisionChange[] {
  if (!presence.base || !presence.head) {
    const side = presence.head ? head : base;
    return [presenceChange(kind, subject, presence.head, probes.filter((p) => decisionOf(side, p).allowed).map(requestOf))];
  }
  return probes.flatMap((p) => {
    const before = decisionOf(base, p);
    const after = decisionOf(head, p);
    return before.allowed === after.allowed ? [] : [accessChange(subject, p, before, after)];
  });
}

const perMinute = (n: number | null) => (n === null ? 'unlimited' : `${n}/min`);
const perHour = (n: number | null) => (n === null ? 'unlimited' : `${n}/h`);
const limitsOf = (t: RateLimitTier) => `${perMinute(t.requestsPerMinute)}, ${perHour(t.requestsPerHour)}`;

function gatewayChanges(probes: readonly GatewayProbe[], base: PolicySide, head: PolicySide): { access: DecisionChange[]; limits: DecisionChange[] } {
  const access: DecisionChange[] = [];
  const limits: DecisionChange[] = [];
  const clients = union(
    base.spec.clients.map((c) => c.id),
    head.spec.clients.map((c) => c.id),
  );
  for (const id of clients) {
    const subject = `client ${id}`;
    const own = probes.filter((p) => p.client === id);
    const presence = { base: base.spec.clients.some((c) => c.id === id), head: head.spec.clients.some((c) => c.id === id) };
    access.push(...subjectChanges('gateway', subject, presence, own, base, head));
    // Identity and rate-limit tier are the client's, the same on every allowed request: one
    // allowed answer per side tells them. A client refused everything on a side has neither.
    const before = own.map((p) => decisionOf(base, p)).find((d) => d.allowed);
    const after = own.map((p) => decisionOf(head, p)).find((d) => d.allowed);
    if (before && after) {
      const fields: [ChangeAspect, string | undefined, string | undefined][] = [
        ['role', before.identity?.role, after.identity?.role],
        ['scope', before.identity?.scope, after.identity?.scope],
        ['sandbox tiers', before.identity?.sandboxTiers, after.identity?.sandboxTiers],
      ];
      for (const [aspect, b, a] of fields) {
        if (b !== a) access.push(change({ kind: 'gateway', subject, aspect, before: b ?? '', after: a ?? '' }));
      }
    }
    // The limit a client meets: its tier's, where it is allowed anything ('none' where not).
    const limitOf = (side: PolicySide, allowed: Decision | undefined) => {
      const tier = allowed?.rateLimitTier;
      const limits = tier === undefined ? undefined : side.spec.rateLimitTiers[tier];
      return limits ? `${tier} (${limitsOf(limits)})` : (tier ?? 'none');
    };
    const limitBefore = limitOf(base, before);
    const limitAfter = limitOf(head, after);
    if (limitBefore !== limitAfter) limits.push(change({ kind: 'limit', subject, aspect: 'rate-limit tier', before: limitBefore, after: limitAfter }));
  }
  return { access, limits };
}

function egressChanges(probes: readonly EgressProbe[], base: PolicySide, head: PolicySide): { access: DecisionChange[]; limits: DecisionChange[] } {
  const access: DecisionChange[] = [];
  const limits: DecisionChange[] = [];
  for (const tier of union(Object.keys(base.spec.sandboxTiers), Object.keys(head.spec.sandboxTiers))) {
    const subject = `tier ${tier}`;
    const own = probes.filter((p) => p.tier === tier);
    const presence = { base: tier in base.spec.sandboxTiers, head: tier in head.spec.sandboxTiers };
    access.push(...subjectChanges('egress', subject, presence, own, base, head));
    // A sandbox's budget per service is its tier's requests per minute, on the services OPA lets
    // it call at all (Envoy's bucket is picked by the tier OPA's answer names).
    for (const service of new Set(own.map((p) => p.service))) {
      const budget = (side: PolicySide) => {
        const rpm = side.spec.sandboxTiers[tier]?.requestsPerMinute;
        return rpm !== undefined && own.some((p) => p.service === service && decisionOf(side, p).allowed) ? perMinute(rpm) : 'not granted';
      };
      const before = budget(base);
      const after = budget(head);
      if (before !== after) limits.push(change({ kind: 'limit', subject, aspect: 'requests per minute', service, before, after }));
    }
  }
  return { access, limits };
}

/** The rate-limit tiers of clients, as the specs define them (the numbers live in Envoy's config, not in OPA). */
function rateLimitTierChanges(base: PolicySpec, head: PolicySpec): DecisionChange[] {
  const out: DecisionChange[] = [];
  for (const id of union(Object.keys(base.rateLimitTiers), Object.keys(head.rateLimitTiers))) {
    const subject = `rate-limit tier ${id}`;
    const b = base.rateLimitTiers[id];
    const a = head.rateLimitTiers[id];
    if (!b || !a) {
      out.push(change({ kind: 'limit', subject, aspect: 'presence', before: b ? limitsOf(b) : 'absent', after: a ? limitsOf(a) : 'absent' }));
      continue;
    }
    if (b.requestsPerMinute !== a.requestsPerMinute) {
      out.push(
        change({ kind: 'limit', subject, aspect: 'requests per minute', before: perMinute(b.requestsPerMinute), after: perMinute(a.requestsPerMinute) }),
      );
    }
    if (b.requestsPerHour !== a.requestsPerHour) {
      out.push(change({ kind: 'limit', subject, aspect: 'requests per hour', before: perHour(b.requestsPerHour), after: perHour(a.requestsPerHour) }));
    }
  }
  return out;
}

/** Every change between the two sides' answers to `probes` (as from {@link probesOf}): gateway, then egress, then limits. */
export function compareDecisions(probes: readonly Probe[], base: PolicySide, head: PolicySide): DecisionChange[] {
  const gateway = gatewayChanges(
    probes.filter((p) => p.kind === 'gateway'),
    base,
    head,
  );
  const egress = egressChanges(
    probes.filter((p) => p.kind === 'egress'),
    base,
    head,
  );
  return [...gateway.access, ...egress.access, ...gateway.limits, ...egress.limits, ...rateLimitTierChanges(base.spec, head.spec)];
}

const decisionText = (allowed: string, reason: string | null) => (allowed === 'allow' ? 'allow' : `deny (${reason ?? 'no reason given'})`);

/**
 * The allowed requests in one phrase, paths grouped by the methods allowed on them, per service:
 * `GET HEAD on /a, /b; POST on /c` (gateway), `openai GET POST on /v1/models; ...` (egress).
 */
function summarise(requests: readonly AllowedRequest[]): string {
  if (requests.length === 0) return 'nothing';
  const methodsByPlace = new Map<string, { service: string | null; path: string; methods: string[] }>();
  for (const r of requests) {
    const place = JSON.stringify([r.service, r.path]);
    const entry = methodsByPlace.get(place) ?? { service: r.service, path: r.path, methods: [] };
    entry.methods.push(r.method);
    methodsByPlace.set(place, entry);
  }
  const groups = new Map<string, string[]>();
  for (const { service, path, methods } of methodsByPlace.values()) {
    const key = [service, ...methods].filter((w) => w !== null).join(' ');
    groups.set(key, [...(groups.get(key) ?? []), path]);
  }
  return [...groups].map(([methods, paths]) => `${methods} on ${paths.join(', ')}`).join('; ');
}

/** One change as a line, e.g. `client ci: POST /api/v1/sandboxes/x1/intents allow -> deny (method_not_allowed)`. */
export function formatChange(c: DecisionChange): string {
  switch (c.aspect) {
    case 'access':
      if (c.kind === 'egress') {
        const what = c.after === 'allow' ? 'newly allowed' : `no longer allowed (${c.reasons.after ?? 'no reason given'})`;
        return `${c.subject}: ${c.service} ${c.method} ${c.path} ${what}`;
      }
      return `${c.subject}: ${c.method} ${c.path} ${decisionText(c.before, c.reasons.before)} -> ${decisionText(c.after, c.reasons.after)}`;
    case 'presence':
      if (c.kind === 'limit') return c.after === 'absent' ? `${c.subject}: removed (was ${c.before})` : `${c.subject}: added (${c.after})`;
      return c.after === 'present'
        ? `${c.subject}: added, allows ${summarise(c.allowed ?? [])}`
        : `${c.subject}: removed, allowed ${summarise(c.allowed ?? [])}`;
    case 'role':
    case 'scope':
    case 'sandbox tiers':
      return `${c.subject}: ${c.aspect} ${c.before || 'none'} -> ${c.after || 'none'}`;
    case 'rate-limit tier':
      return `${c.subject}: rate limit ${c.before} -> ${c.after}`;
    case 'requests per minute':
    case 'requests per hour':
      return `${c.subject}: ${c.service ? `${c.service} ` : ''}${c.before} -> ${c.after}`;
  }
}

/** The whole report: one line per change, or `no decision changes`. */
export function formatChanges(changes: readonly DecisionChange[]): string {
  return changes.length === 0 ? 'no decision changes' : changes.map(formatChange).join('\n');
}
