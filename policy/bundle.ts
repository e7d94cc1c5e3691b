// The OPA bundle: the Rego of policy/rego plus one data.json rendered from the spec, packed as
// a deterministic tar.gz (sorted entries, zero timestamps and owners), so an unchanged spec
// gives byte-identical bytes and the same revision. Pure: no Pulumi, no clock, no randomness.

import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { PolicySpec } from './spec.ts';
import type { PathPattern } from './paths.ts';
import { IDENTITY_HEADERS, REGISTRY_BUNDLE_ROOT } from '../agentd/src/contract.ts';

/** Where the bundle's data lands in OPA: `data.agentd.config`. */
export const BUNDLE_DATA_PATH = 'agentd/config/data.json';
/**
 * The bundle owns everything under `data.agentd`, and nothing else. OPA refuses to activate two
 * bundles whose roots overlap: the sandbox registry bundle that agentd serves owns
 * `data.sandboxes` (REGISTRY_BUNDLE_ROOT), so the two must stay disjoint (checked below).
 */
export const BUNDLE_ROOTS = ['agentd'] as const;

/** Whether one bundle root lies inside the other (OPA's overlap rule: path prefixes by segment). */
export function rootsOverlap(a: string, b: string): boolean {
  const sa = a.split('/').filter(Boolean);
  const sb = b.split('/').filter(Boolean);
  const n = Math.min(sa.length, sb.length);
  return sa.slice(0, n).every((s, i) => s === sb[i]);
}

/** The rule OPA's Envoy plugin queries. */
export const AUTHZ_DECISION_PATH = 'agentd/envoy/authz/result';
/**
 * Every part of the plugin's input document the Rego under policy/rego reads, each path as its
 * keys. With the decision cache on, OPA evaluates the policy on exactly these (and keys the cache
 * by them), so a rule that reads anything else sees it absent: the decision tables
 * (test/policy/opa.test.ts) then fail. Grow this list with the Rego.
 */
export const AUTHZ_INPUT_PATHS: readonly (readonly string[])[] = [
  ['attributes', 'contextExtensions'],
  ['attributes', 'request', 'http', 'method'],
  ['attributes', 'request', 'http', 'path'],
  ['attributes', 'request', 'http', 'headers', 'x-api-key'],
  ['attributes', 'request', 'http', 'headers', 'authorization'],
  ['attributes', 'metadataContext', 'filterMetadata', 'envoy.filters.http.jwt_authn'],
];
/** The rule that masks decision logs: outside the bundle (policy/mask/log.rego), see MASK_POLICY_FILE. */
export const DECISION_LOG_MASK_PATH = '/system/log/mask';
/** The masking policy, loaded by OPA from its own file so it works without a bundle. */
export const MASK_POLICY_FILE = fileURLToPath(new URL('./mask/log.rego', import.meta.url));

const REGO_DIR = fileURLToPath(new URL('./rego', import.meta.url));

/**
 * SHA-256 of each client's API key, by client id. Produced at deploy time from secrets. During a
 * key rotation a client has two: the current key, and the previous one with the instant (RFC
 * 3339) its grace period ends; both are the same client for roles and rate limits.
 */
export type KeyHashes = Readonly<Record<string, string | readonly ClientKeyHash[]>>;

export interface ClientKeyHash {
  readonly hash: string;
  /** The key stops working at this instant (a rotated-away key); absent: no end. */
  readonly notAfter?: string;
}

export interface Bundle {
  /** The tar.gz bytes. */
  readonly bytes: Buffer;
  /** Content hash of every file in the bundle; also the manifest's revision. */
  readonly revision: string;
  /** The files, by path inside the bundle (for tests and `npm run render`). */
  readonly files: Readonly<Record<string, string>>;
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The Rego sources shipped in the bundle: every .rego under policy/rego (or `dir`, e.g. policy/rego
 * at another commit) except tests.
 */
export function readRegoSources(dir = REGO_DIR): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.rego') && !name.endsWith('_test.rego')) out[relative(dir, p).split(sep).join('/')] = readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

const compilePatterns = (patterns: readonly PathPattern[]) => patterns.map((p) => ({ source: p.source, segments: [...p.segments], prefix: p.prefix }));
const methodSet = (methods: readonly string[]) => Object.fromEntries(methods.map((m) => [m, true as const]));
/** Rego's order of strings (by UTF-8 bytes), which JavaScript's default sort (UTF-16) is not for every string. */
const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Patterns of the same shape: the same positions hold literals (`keep`), the others `*`. */
export interface RouteGroup {
  /** Positions (0-based) of the literal segments, ascending. */
  readonly keep: readonly number[];
  /** Per pattern of the group: its literal segments joined by "/", to the methods it grants. */
  readonly keys: Readonly<Record<string, Readonly<Record<string, true>>>>;
}

/**
 * Path patterns compiled for lookup, so that the Rego never loops over patterns: a path of n
 * segments can only match the exact patterns of n segments (`exact[n]`, an array indexed by
 * segment count) and the prefix (`/**`) patterns of at most n segments before the `/**`
 * (`prefix`, each group with that count as `min`). Within a group, a path matches a pattern iff
 * its segments at `keep`, joined by "/", are the pattern's key: a normalised path has no empty
 * segment (all a `*` refuses) and no "/" inside one, so the join is unambiguous. The patterns
 * of a group with the same key share the entry, with the union of their methods; an entry
 * still matches with no method at all (method_not_allowed, not forbidden_route).
 */
export interface Routes {
  readonly exact: readonly (readonly RouteGroup[])[];
  readonly prefix: readonly (RouteGroup & { readonly min: number })[];
}

export function compileRoutes(grants: readonly { readonly methods: readonly string[]; readonly paths: readonly PathPattern[] }[]): Routes {
  // Maps, not objects: a segment may be spelt `__proto__` or `constructor`.
  const groups = new Map<string, { prefix: boolean; n: number; keep: number[]; keys: Map<string, Set<string>> }>();
  for (const { methods, paths } of grants) {
    for (const p of paths) {
      const keep = p.segments.flatMap((s, i) => (s === '*' ? [] : [i]));
      const id = JSON.stringify([p.prefix, p.segments.length, keep]);
      const g = groups.get(id) ?? { prefix: p.prefix, n: p.segments.length, keep, keys: new Map<string, Set<string>>() };
      groups.set(id, g);
      const key = keep.map((i) => p.segments[i]).join('/');
      const merged = g.keys.get(key) ?? new Set<string>();
      g.keys.set(key, merged);
      for (const m of methods) merged.add(m);
    }
  }
  const group = (g: { keep: number[]; keys: Map<string, Set<string>> }): RouteGroup => ({
    keep: g.keep,
    keys: Object.fromEntries([...g.keys].map(([k, ms]) => [k, methodSet([...ms].sort())])),
  });
  // In a fixed order, so that the same patterns give the same data whatever order they come in.
  const sorted = [...groups.keys()].sort().map((id) => groups.get(id)!);
  const exact: RouteGroup[][] = [];
  for (const g of sorted.filter((g) => !g.prefix)) {
    while (exact.length <= g.n) exact.push([]);
    exact[g.n]!.push(group(g));
  }
  return { exact, prefix: sorted.filter((g) => g.prefix).map((g) => ({ min: g.n, ...group(g) })) };
}

/**
 * The identity headers OPA hands agentd with an allowed request of a client (agentd's
 * contract), rendered per key so that a decision copies them instead of assembling them: id,
 * role, scope (only an explicit `all` widens it; anything else is `own`) and the sandbox tiers
 * its role may create (sorted as Rego sorts strings, comma-separated, "" for none).
 */
function identityHeaders(
  client: { readonly id: string; readonly role: string },
  role: { readonly scope?: string; readonly sandboxTiers?: readonly string[] } | undefined,
) {
  return {
    [IDENTITY_HEADERS.clientId]: client.id,
    [IDENTITY_HEADERS.clientRole]: client.role,
    [IDENTITY_HEADERS.clientScope]: role?.scope === 'all' ? 'all' : 'own',
    [IDENTITY_HEADERS.sandboxTiers]: [...(role?.sandboxTiers ?? [])].sort(byBytes).join(','),
  };
}

/**
 * The data document OPA serves under data.agentd.config. Keys are indexed by their hash so a
 * decision costs one lookup whatever the number of clients; enabled and disabled keys live in
 * the same entry, so a disabled key can never be outvoted by another one.
 */
function renderPolicyData(spec: PolicySpec, keyHashes: KeyHashes): object {
  const problems: string[] = [];
  const keys: Record<string, object> = {};
  for (const c of spec.clients) {
    const given = keyHashes[c.id];
    if (given === undefined || (typeof given !== 'string' && given.length === 0)) {
      problems.push(`client "${c.id}" has no key hash`);
      continue;
    }
    for (const { hash: h, notAfter } of typeof given === 'string' ? [{ hash: given }] : given) {
      if (!/^[0-9a-f]{64}$/.test(h)) {
        problems.push(`client "${c.id}": key hash must be 64 lowercase hex digits (SHA-256), not a key`);
        continue;
      }
      if (keys[h]) {
        problems.push(`client "${c.id}" has the same key as another client`);
        continue;
      }
      if (notAfter !== undefined && Number.isNaN(Date.parse(notAfter))) {
        problems.push(`client "${c.id}": a key's end ${JSON.stringify(notAfter)} is not an RFC 3339 instant`);
        continue;
      }
      keys[h] = {
        id: c.id,
        role: c.role,
        tier: c.rateLimitTier,
        enabled: c.enabled,
        ...(notAfter !== undefined ? { not_after: notAfter } : {}),
        upstream_headers: identityHeaders(c, spec.roles[c.role]),
      };
    }
  }
  for (const id of Object.keys(keyHashes)) {
    if (!spec.clients.some((c) => c.id === id)) problems.push(`key hash given for unknown client "${id}"`);
  }
  if (problems.length > 0) throw new Error(`cannot build the policy bundle: ${problems.join('; ')}`);
  return {
    gateway: {
      keys,
      // The Rego reads a key's upstream_headers, a role's routes and a service's methods and
      // routes. The rest stays for other readers: `npm run policy -- diff` builds its base side
      // from this data and an older commit's Rego (which matched `patterns` and assembled the
      // identity headers from the names below, `scope` and `sandbox_tiers`); the policy pack
      // reads the services' `methods` and `patterns`.
      identity_headers: {
        client_id: IDENTITY_HEADERS.clientId,
        client_role: IDENTITY_HEADERS.clientRole,
        client_scope: IDENTITY_HEADERS.clientScope,
        sandbox_tiers: IDENTITY_HEADERS.sandboxTiers,
      },
      roles: Object.fromEntries(
        Object.entries(spec.roles).map(([id, r]) => [
          id,
          {
            rules: r.rules.map((rule) => ({ methods: methodSet(rule.methods), patterns: compilePatterns(rule.paths) })),
            routes: compileRoutes(r.rules),
            scope: r.scope,
            sandbox_tiers: [...r.sandboxTiers],
          },
        ]),
      ),
    },
    egress: {
      services: Object.fromEntries(
        Object.values(spec.egressServices).map((s) => [
          s.id,
          {
            methods: methodSet(s.allowedMethods),
            patterns: compilePatterns(s.allowedPaths),
            routes: compileRoutes([{ methods: s.allowedMethods, paths: s.allowedPaths }]),
          },
        ]),
      ),
      tiers: Object.fromEntries(
        Object.values(spec.sandboxTiers).map((t) => [
          t.id,
          { services: Object.fromEntries(t.services.map((s) => [s, true])), requests_per_minute: t.requestsPerMinute },
        ]),
      ),
    },
  };
}

/** JSON with object keys sorted at every level: the same data always gives the same bytes. */
export function stableJson(value: unknown, indent = 0): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify(sort(value), null, indent);
}

/** Builds the bundle from the spec, the key hashes and the Rego sources. */
export function buildBundle(spec: PolicySpec, keyHashes: KeyHashes, rego: Readonly<Record<string, string>> = readRegoSources()): Bundle {
  if (BUNDLE_ROOTS.some((r) => rootsOverlap(r, REGISTRY_BUNDLE_ROOT))) {
    throw new Error(
      `the policy bundle roots (${BUNDLE_ROOTS.join(', ')}) overlap the sandbox registry's root ${REGISTRY_BUNDLE_ROOT}: OPA would refuse one of the two bundles`,
    );
  }
  const content: Record<string, string> = { [BUNDLE_DATA_PATH]: stableJson(renderPolicyData(spec, keyHashes)) + '\n' };
  for (const [p, text] of Object.entries(rego)) {
    // OPA refuses a bundle with files outside its roots; say which file, not just "invalid".
    if (!BUNDLE_ROOTS.some((r) => p.startsWith(`${r}/`))) throw new Error(`policy/rego/${p} lies outside the bundle roots (${BUNDLE_ROOTS.join(', ')})`);
    content[p] = text;
  }
  const revision = sha256Hex(
    Object.keys(content)
      .sort()
      .map((p) => `${p}\0${sha256Hex(content[p]!)}\n`)
      .join(''),
  ).slice(0, 20);
  const manifest = stableJson({ revision, roots: [...BUNDLE_ROOTS], rego_version: 1 }) + '\n';
  const files: Record<string, string> = { '.manifest': manifest, ...content };
  return { bytes: tarGz(files), revision, files };
}

/** A POSIX ustar archive of regular files, gzipped, with every variable field zeroed. */
export function tarGz(files: Readonly<Record<string, string>>): Buffer {
  const blocks: Buffer[] = [];
  for (const name of Object.keys(files).sort()) {
    const data = Buffer.from(files[name]!, 'utf8');
    if (Buffer.byteLength(name) > 100) throw new Error(`bundle path too long for tar: ${name}`);
    const h = Buffer.alloc(512);
    h.write(name, 0, 'utf8');
    h.write('0000644\0', 100); // mode
    h.write('0000000\0', 108); // uid
    h.write('0000000\0', 116); // gid
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124); // size
    h.write('00000000000\0', 136); // mtime: 0
    h.write('        ', 148); // checksum placeholder
    h.write('0', 156); // regular file
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks), { level: 9 });
}
