// The house reads one way: no import cycle between folders (a folder and its subfolders count
// as one), and nothing outside test/ imports from test/ (tooling and benchmarks use
// scripts/local, the local stack the tests use too).
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const SKIP = new Set(['node_modules', 'build', 'dist', '.git', '.pulumi-state', 'golden']);

function listTs(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    if (SKIP.has(n) || n.startsWith('.')) return [];
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listTs(p) : /\.(ts|mts)$/.test(n) && !n.endsWith('.d.ts') ? [p] : [];
  });
}

/** Relative module specifiers a file imports or re-exports (static and dynamic, type-only included). */
function relativeImports(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  return [...src.matchAll(/(?:^|[\s;])(?:import|export)\b[^'";]*?from\s*'([^']+)'|\bimport\s*(?:\(\s*)?'([^']+)'/gm)]
    .map((m) => (m[1] ?? m[2])!)
    .filter((s) => s.startsWith('.'))
    .map((s) => resolve(dirname(file), s));
}

const files = listTs(REPO_ROOT);
const edges = files.flatMap((f) => relativeImports(f).map((to) => ({ from: f, to })));
const rel = (p: string) => relative(REPO_ROOT, p) || '.';
const inTest = (p: string) => rel(p).startsWith('test/');

describe('imports', () => {
  it('reads the tree', () => {
    expect(files.length).toBeGreaterThan(150);
    expect(edges.length).toBeGreaterThan(300);
    const missing = edges.filter((e) => !existsSync(e.to)).map((e) => `${rel(e.from)} -> ${rel(e.to)}`);
    expect(missing).toEqual([]);
  });

  it('nothing outside test/ imports from test/', () => {
    const bad = edges.filter((e) => !inTest(e.from) && inTest(e.to)).map((e) => `${rel(e.from)} -> ${rel(e.to)}`);
    expect(bad).toEqual([]);
  });

  it('no import cycle between folders', () => {
    const graph = new Map<string, Set<string>>();
    const why = new Map<string, string>();
    for (const e of edges) {
      const a = rel(dirname(e.from));
      const b = rel(dirname(e.to));
      // A folder and the folders inside it are one package (agentd/src and its core/, http/):
      // their mutual imports are its own layering, not a cycle between folders.
      if (a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`)) continue;
      if (!graph.has(a)) graph.set(a, new Set());
      graph.get(a)!.add(b);
      why.set(`${a}|${b}`, `${rel(e.from)} imports ${rel(e.to)}`);
    }
    expect(graph.size).toBeGreaterThan(10);
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (d: string, path: string[]) => {
      if (state.get(d) === 'done') return;
      if (state.get(d) === 'open') {
        const loop = [...path.slice(path.indexOf(d)), d];
        cycles.push(
          loop
            .slice(1)
            .map((x, i) => why.get(`${loop[i]}|${x}`))
            .join('; '),
        );
        return;
      }
      state.set(d, 'open');
      for (const next of graph.get(d) ?? []) visit(next, [...path, d]);
      state.set(d, 'done');
    };
    for (const d of graph.keys()) visit(d, []);
    expect(cycles).toEqual([]);
  });
});
