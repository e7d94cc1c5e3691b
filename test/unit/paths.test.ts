import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { matchPath, NORMAL_FORM, NORMAL_FORM_SOURCE, normalizePath, parsePathPattern, type PathPattern } from '../../policy/paths.ts';

const pattern = (s: string) => parsePathPattern(s) as PathPattern;
const segs = (p: string) => {
  const n = normalizePath(p);
  if (!n.ok) throw new Error(`not ok: ${p}`);
  return n.segments;
};

describe('path normalisation (the same cases as paths_test.rego)', () => {
  it.each([
    ['/api/v1/status', '/api/v1/status'],
    ['/', '/'],
    ['/get?x=/admin', '/get'],
    ['//api///v1//status/', '/api/v1/status'],
    ['/api/v1/./sandboxes/../status', '/api/v1/status'],
    ['/a/b/c/../../d', '/a/d'],
    ['/api/v1/%73tatus', '/api/v1/status'],
    ['/api/v1/%2e%2e/v1/status', '/api/v1/status'],
    ['/a+b', '/a+b'],
  ])('%s -> %s', (raw, want) => {
    expect(normalizePath(raw)).toMatchObject({ ok: true, path: want });
  });

  it.each(['/..', '/a/../../etc', '/api%2fv1', '/api%5cv1', '/api\\v1', '/api/%zz', '/api/%0a', 'relative', ''])('refuses %s', (raw) => {
    expect(normalizePath(raw).ok).toBe(false);
  });
});

describe('path patterns', () => {
  it('exact, one segment, and prefix-and-below', () => {
    expect(matchPath(pattern('/v1/messages'), segs('/v1/messages'))).toBe(true);
    expect(matchPath(pattern('/v1/messages'), segs('/v1/messages/x'))).toBe(false);
    expect(matchPath(pattern('/status/*'), segs('/status/418'))).toBe(true);
    expect(matchPath(pattern('/status/*'), segs('/status'))).toBe(false);
    expect(matchPath(pattern('/repos/**'), segs('/repos'))).toBe(true);
    expect(matchPath(pattern('/repos/**'), segs('/repos/a/b/c'))).toBe(true);
    expect(matchPath(pattern('/repos/**'), segs('/reposx'))).toBe(false);
  });
});

describe('paths in normal form (the Rego splits them instead of normalising them: paths.rego, segments)', () => {
  it('the pattern is the one paths.rego spells', () => {
    const rego = readFileSync(fileURLToPath(new URL('../../policy/rego/agentd/lib/paths.rego', import.meta.url)), 'utf8');
    expect(rego).toContain(`regex.match(\`${NORMAL_FORM_SOURCE}\`, raw)`);
  });

  // The same lists as paths_test.rego.
  it.each([
    '/api/v1/status',
    '/a',
    '/agentd.v1.Agentd/Health',
    '/a+b/;c/d=e,f',
    '/a:b@c/~d_e-f',
    "/a!$&'()*+,;=:@-._~",
    '/v1/chat/completions',
    '/x/y./z..',
    '/A/B/*',
  ])('%s is in normal form: normalisation gives it back', (p) => {
    expect(NORMAL_FORM.test(p)).toBe(true);
    expect(normalizePath(p)).toEqual({ ok: true, path: p, segments: p.slice(1).split('/') });
  });

  it.each([
    '/',
    '//api///v1//status/',
    '/api/v1/status/',
    '/api/v1/./status',
    '/api/v1/sandboxes/../status',
    '/.well-known/x',
    '/a/.b',
    '/a/..b',
    '/api/v1/%73tatus',
    '/api/v1/%2e%2e/v1/status',
    '/api/v1/status?x=/admin',
    '/api/v1/status#frag',
    '/a b',
    '/%2Bb',
    '/é',
    '/a\\b',
    '/api%2fv1',
    '/..',
    '/a/../../etc',
    '/api/%zz',
    '/api/%0a',
    'relative/path',
    '',
  ])('%j is not', (p) => {
    expect(NORMAL_FORM.test(p)).toBe(false);
  });

  it('for any string: in normal form means normalisation is the identity (seeded random strings)', () => {
    let seed = 20261130;
    const next = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
    const good = [..."aB0.+;=*~-_:@!$&'(),"];
    const bad = ['%', '%2e', '%2f', '%41', ' ', '?', '#', '\\', 'é', '\u0001', '/'];
    let inForm = 0;
    for (let i = 0; i < 20000; i++) {
      const segment = () => Array.from({ length: Math.floor(next() * 4) }, () => (next() < 0.9 ? pick(good) : pick(bad))).join('');
      const p = (next() < 0.95 ? '/' : '') + Array.from({ length: 1 + Math.floor(next() * 4) }, segment).join('/');
      if (!NORMAL_FORM.test(p)) continue;
      inForm++;
      expect(normalizePath(p), p).toEqual({ ok: true, path: p, segments: p.slice(1).split('/') });
    }
    expect(inForm).toBeGreaterThan(2000);
  });
});
