// Path patterns and path normalisation, shared by validation, the bundle (which ships patterns
// pre-split so that Rego compares segments, never globs) and `npm run policy -- explain`.
// The Rego in policy/rego/agentd/lib/paths.rego implements the same normalisation; the policy
// tests hold the two to the same cases.

/** A parsed path pattern: `/a/*\/b` is segments [a, *, b]; a trailing `**` sets `prefix`. */
export interface PathPattern {
  /** The pattern as written in the policy data. */
  readonly source: string;
  /** Literal segments, or `*` for exactly one (non-empty) segment. */
  readonly segments: readonly string[];
  /** True when the pattern ended in `/**`: it also matches everything below the segments. */
  readonly prefix: boolean;
}

const SEGMENT = /^[A-Za-z0-9._~!$&'()+,;=:@-]+$/;

/**
 * Parses a pattern, or returns the reason it is invalid (phrased so it can follow "pattern X: ").
 */
export function parsePathPattern(source: string): PathPattern | { error: string } {
  if (!source.startsWith('/')) return { error: 'must start with "/"' };
  if (/[?#]/.test(source)) return { error: 'must not contain a query or fragment ("?", "#"): queries are never matched' };
  if (source.includes('%')) return { error: 'must not be percent-encoded: write the decoded path' };
  if (source === '/') return { source, segments: [], prefix: false };
  const parts = source.slice(1).split('/');
  let prefix = false;
  if (parts[parts.length - 1] === '**') {
    prefix = true;
    parts.pop();
  }
  for (const [i, part] of parts.entries()) {
    if (part === '') return { error: 'has an empty segment ("//" or a trailing "/")' };
    if (part === '**') return { error: '"**" may only be the last segment ("/prefix/**")' };
    if (part === '.' || part === '..') return { error: `has a "${part}" segment` };
    if (part === '*') continue;
    if (part.includes('*')) return { error: `segment ${i + 1} ("${part}") mixes "*" with text: use "*" alone for one segment` };
    if (!SEGMENT.test(part)) return { error: `segment ${i + 1} ("${part}") has characters not allowed in a path` };
  }
  return { source, segments: parts, prefix };
}

/** Whether a normalised path (as from {@link normalizePath}) matches the pattern. */
export function matchPath(pattern: PathPattern, segments: readonly string[]): boolean {
  const n = pattern.segments.length;
  if (pattern.prefix ? segments.length < n : segments.length !== n) return false;
  return pattern.segments.every((p, i) => (p === '*' ? segments[i] !== '' : p === segments[i]));
}

/**
 * A path already in normal form: "/"-led segments of RFC 3986 pchars without "%", none empty and
 * none starting with "." (so no "." or ".."). {@link normalizePath} gives such a path back
 * unchanged, so the Rego (paths.rego, `segments`) splits it instead of normalising it; the same
 * pattern, spelt there too (the tests check both spellings agree).
 */
export const NORMAL_FORM_SOURCE = "^(/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)+$";
export const NORMAL_FORM = new RegExp(NORMAL_FORM_SOURCE);

export type NormalizedPath = { ok: true; path: string; segments: string[] } | { ok: false; reason: string };

/**
 * What the policy does to a request path before matching: drop the query and fragment, refuse
 * encoded slashes and backslashes (they would change the segment structure after decoding),
 * percent-decode, merge `//`, resolve `.` and `..` (refusing to climb above the root).
 */
export function normalizePath(raw: string): NormalizedPath {
  const cut = raw.search(/[?#]/);
  const path = cut === -1 ? raw : raw.slice(0, cut);
  if (!path.startsWith('/')) return { ok: false, reason: 'invalid_path' };
  if (/%(2f|5c)/i.test(path) || path.includes('\\')) return { ok: false, reason: 'invalid_path' };
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return { ok: false, reason: 'invalid_path' };
  }
  if (/[\u0000-\u001f\u007f]/.test(decoded)) return { ok: false, reason: 'invalid_path' };
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return { ok: false, reason: 'invalid_path' };
      out.pop();
      continue;
    }
    out.push(seg);
  }
  return { ok: true, path: '/' + out.join('/'), segments: out };
}
