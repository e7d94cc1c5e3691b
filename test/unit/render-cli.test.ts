// `npm run render`: every file a stack deploys, written to read and diff, monitoring included
// when the stack turns it on; never a secret file.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

function filesUnder(root: string, dir = root): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(root, p) : [relative(root, p)];
  });
}

const render = (stack: string) => {
  const out = mkdtempSync(join(tmpdir(), `agentd-render-${stack}-`));
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/render.ts'), '--stack', stack, '--out', out], { cwd: REPO_ROOT, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { out, files: filesUnder(out).sort() };
};

describe('npm run render', () => {
  it('writes the plan, the proxies, OPA, the bundle server and, for a stack with monitoring (staging), Prometheus, Loki, Alloy and Grafana with its dashboards', () => {
    const { out, files } = render('staging');
    for (const f of [
      'plan.json',
      'gateway/envoy.yaml',
      'gateway/live/lds.yaml',
      'gateway/live/sds/agentd-token.sds.json',
      'egress/live/cds.yaml',
      'egress/envoy.yaml',
      'opa/config.yaml',
      'bundles/envoy.yaml',
      'bundles/agentd-bundle.tar.gz',
    ])
      expect(files).toContain(f);
    for (const f of ['prometheus/prometheus.yml', 'prometheus/alerts.yml', 'loki/config.yaml', 'alloy/config.alloy', 'grafana/grafana.ini'])
      expect(files).toContain(f);
    expect(files.filter((f) => /^grafana\/dashboards\/.*\.json$/.test(f))).toHaveLength(5);
    // Kubernetes addresses in the rendering, and no secret file.
    expect(readFileSync(join(out, 'prometheus/prometheus.yml'), 'utf8')).toContain('agentd.agentd-staging.svc.cluster.local:9464');
    expect(files.filter((f) => /password|token$|\.credential$|jwks/.test(f))).toEqual([]);
  });

  it('writes no monitoring files for a stack without monitoring (dev)', () => {
    const { files } = render('dev');
    expect(files.filter((f) => f.startsWith('gateway/')).length).toBeGreaterThan(0);
    expect(files.filter((f) => /^(prometheus|loki|alloy|grafana)\//.test(f))).toEqual([]);
  });
});
