import { describe, expect, it } from 'vitest';
import { matchPath, normalizePath, parsePathPattern, type PathPattern } from '../../policy/paths.ts';

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
