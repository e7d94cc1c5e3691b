// Concrete requests that exercise path patterns: what the decision tables (test/policy) and the
// decision diff (`npm run policy -- diff`) send to OPA. A pattern is a set of paths; one instance
// of each pattern (and of what lies below a `/**` pattern) is enough to see every rule decide,
// because OPA matches segment by segment and treats every value of a `*` segment alike.
import type { PathPattern } from './paths.ts';
import type { EgressService, PolicySpec } from './spec.ts';

/** A concrete path that a pattern matches (`*` -> a segment, `**` -> two more segments). */
export function instantiate(p: PathPattern, deeper = false): string {
  const segs = p.segments.map((s) => (s === '*' ? 'x1' : s));
  if (p.prefix && deeper) segs.push('deep', 'er');
  return '/' + segs.join('/');
}

/** Each pattern instantiated, and also one level deeper (for `/**` patterns that is a second path). */
function instancesOf(patterns: readonly PathPattern[]): Set<string> {
  const out = new Set<string>();
  for (const p of patterns) {
    out.add(instantiate(p));
    out.add(instantiate(p, true));
  }
  return out;
}

/** Every route some role's rules name, as concrete paths, sorted. */
export function roleRoutes(spec: PolicySpec): string[] {
  return [...instancesOf(Object.values(spec.roles).flatMap((role) => role.rules.flatMap((rule) => rule.paths)))].sort();
}

/** The concrete paths of a service's allowlist, sorted. */
export function servicePaths(service: EgressService): string[] {
  return [...instancesOf(service.allowedPaths)].sort();
}
