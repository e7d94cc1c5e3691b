// The route index of the bundle (policy/bundle.ts, compileRoutes) against the pattern semantics
// of policy/paths.ts (matchPath), through a lookup written as gateway.rego and egress.rego do
// it; and the identity headers the bundle renders into each key's entry.
import { describe, expect, it } from 'vitest';
import { BUNDLE_DATA_PATH, buildBundle, compileRoutes, sha256Hex, type Routes } from '../../policy/bundle.ts';
import { matchPath, parsePathPattern, type PathPattern } from '../../policy/paths.ts';
import { loadPolicySpec, type PolicySpec } from '../../policy/spec.ts';
import { IDENTITY_HEADERS } from '../../agentd/src/contract.ts';

const pattern = (s: string) => parsePathPattern(s) as PathPattern;

/** What gateway.rego reads from a role's routes (method_allowed, route_matched): the method sets of the matching entries. */
function lookup(routes: Routes, segments: readonly string[]): Readonly<Record<string, true>>[] {
  const key = (keep: readonly number[]) => keep.map((i) => segments[i]).join('/');
  const hit = (g: Routes['prefix'][number] | Routes['exact'][number][number]) => (Object.hasOwn(g.keys, key(g.keep)) ? [g.keys[key(g.keep)]!] : []);
  return [...(routes.exact[segments.length] ?? []).flatMap(hit), ...routes.prefix.filter((g) => g.min <= segments.length).flatMap(hit)];
}

/** A seeded generator (mulberry32): the same cases on every run. */
function random(seed: number) {
  const next = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}

describe('the route index (compileRoutes)', () => {
  it('matches exactly the paths the patterns match, with the methods of the rules that match (seeded random roles)', () => {
    const { next, pick } = random(7);
    const words = ['a', 'b', 'c', 'api', 'v1', '__proto__', 'constructor', 'x.y'];
    const methods = ['GET', 'POST', 'PUT', 'DELETE'];
    let matched = 0;
    let unmatched = 0;
    for (let role = 0; role < 200; role++) {
      const rules = Array.from({ length: 1 + Math.floor(next() * 4) }, () => ({
        methods: methods.filter(() => next() < 0.4),
        paths: [
          ...new Set(
            Array.from({ length: 1 + Math.floor(next() * 3) }, () => {
              const segs = Array.from({ length: Math.floor(next() * 4) }, () => (next() < 0.3 ? '*' : pick(words)));
              return next() < 0.3 ? `/${[...segs, '**'].join('/')}` : `/${segs.join('/')}`;
            }),
          ),
        ].map(pattern),
      }));
      const routes = compileRoutes(rules);
      for (let p = 0; p < 60; p++) {
        const segments = Array.from({ length: Math.floor(next() * 6) }, () => pick([...words, 'z']));
        const found = lookup(routes, segments);
        const granting = rules.filter((r) => r.paths.some((q) => matchPath(q, segments)));
        expect(found.length > 0, `${JSON.stringify(rules)} ${segments.join('/')}`).toBe(granting.length > 0);
        for (const m of methods) expect(found.some((f) => f[m] === true)).toBe(granting.some((r) => r.methods.includes(m)));
        if (found.length > 0) matched++;
        else unmatched++;
      }
    }
    expect(matched).toBeGreaterThan(1000);
    expect(unmatched).toBeGreaterThan(1000);
  });

  it('groups patterns by shape, merges the methods of one pattern, and keeps a pattern without methods', () => {
    const routes = compileRoutes([
      { methods: ['GET'], paths: [pattern('/api/v1/**'), pattern('/a/*/c'), pattern('/'), pattern('/__proto__')] },
      { methods: ['POST'], paths: [pattern('/a/*/c'), pattern('/b/*/d'), pattern('/*')] },
      { methods: [], paths: [pattern('/e/**')] },
    ]);
    expect(routes).toEqual({
      exact: [
        [{ keep: [], keys: { '': { GET: true } } }],
        [
          { keep: [0], keys: { ['__proto__']: { GET: true } } },
          { keep: [], keys: { '': { POST: true } } },
        ],
        [],
        [{ keep: [0, 2], keys: { 'a/c': { GET: true, POST: true }, 'b/d': { POST: true } } }],
      ],
      prefix: [
        { min: 1, keep: [0], keys: { e: {} } },
        { min: 2, keep: [0, 1], keys: { 'api/v1': { GET: true } } },
      ],
    });
    expect(Object.hasOwn(routes.exact[1]![0]!.keys, '__proto__')).toBe(true);
    expect(lookup(routes, ['e', 'f'])).toEqual([{}]);
  });

  it('is the same data whatever order the rules and patterns come in', () => {
    const a = compileRoutes([
      { methods: ['GET'], paths: [pattern('/x/*'), pattern('/y/**')] },
      { methods: ['POST'], paths: [pattern('/z')] },
    ]);
    const b = compileRoutes([
      { methods: ['POST'], paths: [pattern('/z')] },
      { methods: ['GET'], paths: [pattern('/y/**'), pattern('/x/*')] },
    ]);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });
});

describe('the identity headers rendered into each key', () => {
  const shipped = loadPolicySpec(new URL('../../policy/data', import.meta.url).pathname);
  const spec: PolicySpec = {
    ...shipped,
    roles: {
      ...shipped.roles,
      // A scope other than "all" never widens; tiers in any order are sorted (as Rego sorts strings).
      odd: { description: '', rules: shipped.roles['reader']!.rules, sandboxTiers: ['standard', 'default', 'Zed', 'é'], scope: 'ALL' as never },
    },
    clients: [...shipped.clients, { id: 'odd', description: '', role: 'odd', rateLimitTier: 'default', enabled: true }],
  };
  const hashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(`key-${c.id}`)]));
  hashes['ci'] = [{ hash: sha256Hex('key-ci') } as never, { hash: sha256Hex('key-ci-old'), notAfter: '2999-01-01T00:00:00Z' } as never] as never;
  const data = JSON.parse(buildBundle(spec, hashes).files[BUNDLE_DATA_PATH]!) as {
    gateway: { keys: Record<string, { id: string; upstream_headers: Record<string, string> }> };
  };
  const headersOf = (key: string) => data.gateway.keys[sha256Hex(key)]!.upstream_headers;

  it('carries id, role, scope and sorted tiers of every client, on each of its keys', () => {
    for (const c of spec.clients) {
      const role = spec.roles[c.role]!;
      expect(headersOf(`key-${c.id}`)).toEqual({
        [IDENTITY_HEADERS.clientId]: c.id,
        [IDENTITY_HEADERS.clientRole]: c.role,
        [IDENTITY_HEADERS.clientScope]: role.scope === 'all' ? 'all' : 'own',
        [IDENTITY_HEADERS.sandboxTiers]: [...role.sandboxTiers].sort().join(','),
      });
    }
    expect(headersOf('key-ci-old')).toEqual(headersOf('key-ci'));
  });

  it('narrows an odd scope to own and sorts tiers by UTF-8 bytes', () => {
    expect(headersOf('key-odd')[IDENTITY_HEADERS.clientScope]).toBe('own');
    expect(headersOf('key-odd')[IDENTITY_HEADERS.sandboxTiers]).toBe('Zed,default,standard,é');
    expect(headersOf('key-dashboard')[IDENTITY_HEADERS.sandboxTiers]).toBe('');
  });
});
