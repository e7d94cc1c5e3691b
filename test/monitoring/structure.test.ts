// The shape of the monitoring renderers' imports, by folder: the plan (components/render/monitoring:
// sources, queries, Prometheus, rules, Loki, Alloy) imports neither Grafana nor the overlay;
// grafana/ (the Grafana workload and its dashboards, a leaf renderer of the plan) imports the
// plan but never the overlay; the overlay (components/render/overlay) composes both. The
// dashboards are reached through their one entry point, and only they use the Foundation SDK.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const PLAN = join(REPO_ROOT, 'components/render/monitoring');
const GRAFANA = join(REPO_ROOT, 'grafana');
const DASHBOARDS = join(GRAFANA, 'dashboards');
const OVERLAY = join(REPO_ROOT, 'components/render/overlay');
const SDK = '@grafana/grafana-foundation-sdk';

function listTs(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listTs(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Every module specifier a file imports or re-exports (static and dynamic, type-only included). */
function specifiers(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  return [...src.matchAll(/(?:^|[\s;])(?:import|export)\b[^'";]*?from\s*'([^']+)'|\bimport\s*(?:\(\s*)?'([^']+)'/gm)].map((m) => (m[1] ?? m[2])!);
}

const files = [PLAN, GRAFANA, OVERLAY].flatMap(listTs);
/** Imports of each file: relative ones resolved to absolute paths, packages as written. */
const imports = new Map(files.map((f) => [f, specifiers(f).map((s) => (s.startsWith('.') ? resolve(dirname(f), s) : s))]));
const rel = (p: string) => relative(REPO_ROOT, p);
const under = (dir: string) => (p: string) => p.startsWith(`${dir}/`);

describe('monitoring renderer structure', () => {
  it('finds the modules and their imports', () => {
    expect(files.filter(under(PLAN)).length).toBeGreaterThan(8);
    expect(files.filter(under(DASHBOARDS)).length).toBeGreaterThan(5);
    expect(files.filter(under(OVERLAY)).length).toBeGreaterThan(0);
    for (const [f, deps] of imports) for (const d of deps) if (d.startsWith('/')) expect(existsSync(d), `${rel(f)} imports ${rel(d)}`).toBe(true);
  });

  it('the plan imports neither grafana/ nor the overlay', () => {
    let checked = 0;
    for (const [f, deps] of imports) {
      if (!under(PLAN)(f)) continue;
      checked++;
      for (const d of deps) expect(under(GRAFANA)(d) || under(OVERLAY)(d), `${rel(f)} imports ${rel(d)}`).toBe(false);
    }
    expect(checked).toBeGreaterThan(8);
  });

  it('grafana/ uses the plan and never the overlay that calls it', () => {
    let plan = 0;
    for (const [f, deps] of imports) {
      if (!under(GRAFANA)(f)) continue;
      for (const d of deps) expect(under(OVERLAY)(d), `${rel(f)} imports ${rel(d)}`).toBe(false);
      plan += deps.filter(under(PLAN)).length;
    }
    expect(plan).toBeGreaterThan(0);
  });

  it('reaches the dashboards through their one entry point, from the Grafana workload only', () => {
    const callers: string[] = [];
    for (const [f, deps] of imports) {
      if (under(DASHBOARDS)(f)) continue;
      for (const d of deps.filter(under(DASHBOARDS))) {
        expect(rel(d), rel(f)).toBe('grafana/dashboards/index.ts');
        callers.push(rel(f));
      }
    }
    expect(callers).toEqual(['grafana/index.ts']);
  });

  it('only the dashboards use the Grafana Foundation SDK', () => {
    const users = [...imports].filter(([, deps]) => deps.some((d) => d === SDK || d.startsWith(`${SDK}/`))).map(([f]) => f);
    expect(users.length).toBeGreaterThan(0);
    for (const f of users) expect(under(DASHBOARDS)(f), rel(f)).toBe(true);
  });

  it('no module imports itself through others', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].map(rel).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const d of imports.get(f) ?? []) if (imports.has(d)) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
