// The rendered Prometheus config and alert rules, checked by the real promtool: config and
// rules are valid, and every alert has a unit test that fires it and one that leaves it quiet.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALERT_NAMES, renderAlertRules } from '../../components/render/monitoring/alerts.ts';
import { renderMonitoringFiles } from '../../components/render/overlay/index.ts';
import { PROMETHEUS_CONFIG_FILE, PROMETHEUS_RULES_FILE } from '../../components/render/monitoring/prometheus.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { run, toolPath } from '../../scripts/local/tools.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { alertCases, promtoolTests } from './alert-cases.ts';
import { dockerMonitoringInput, kubernetesMonitoringInput } from './support.ts';

const spec = shippedSpec();
const rules = renderAlertRules(spec);
let promtool: string;
let dir: string;

const writeWorkload = (name: string, files: Readonly<Record<string, string | Buffer>>) => {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const [p, c] of Object.entries(files)) writeFileSync(join(d, p), c);
  return d;
};

beforeAll(() => {
  promtool = toolPath('promtool');
  dir = mkdtempSync(join(tmpdir(), 'agentd-promtool-'));
});

describe('promtool check', () => {
  for (const [name, input] of [
    ['docker', dockerMonitoringInput],
    ['kubernetes', kubernetesMonitoringInput],
  ] as const) {
    it(`accepts the ${name} config with the rules file beside it`, () => {
      const d = writeWorkload(name, renderMonitoringFiles(spec, input).prometheus.files);
      const r = run(promtool, ['check', 'config', join(d, PROMETHEUS_CONFIG_FILE)]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/SUCCESS/);
      // check config also checks the rule files it names: the alerts were found and parsed.
      expect(r.stdout).toContain(`SUCCESS: ${ALERT_NAMES.length} rules found`);
    });
  }

  it('accepts the alert rules, with no lint finding', () => {
    const d = writeWorkload('rules', { [PROMETHEUS_RULES_FILE]: toYaml(rules) });
    const r = run(promtool, ['check', 'rules', '--lint=all', '--lint-fatal', join(d, PROMETHEUS_RULES_FILE)]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${ALERT_NAMES.length} rules found`);
  });

  it('refuses a broken config (the check is not a rubber stamp)', () => {
    const d = writeWorkload('broken', { [PROMETHEUS_CONFIG_FILE]: 'global:\n  scrape_interval: 1x\n' });
    expect(run(promtool, ['check', 'config', join(d, PROMETHEUS_CONFIG_FILE)]).code).not.toBe(0);
  });
});

describe('promtool test rules', () => {
  it('has a firing and a quiet case for every alert, and only for alerts that exist', () => {
    const cases = alertCases(spec);
    expect(Object.keys(cases).sort()).toEqual([...ALERT_NAMES].sort());
    expect(rules.groups.flatMap((g) => g.rules.map((r) => r.alert)).sort()).toEqual([...ALERT_NAMES].sort());
    for (const name of ALERT_NAMES) {
      expect(cases[name].fires.alerts.length, name).toBeGreaterThan(0);
      expect(cases[name].quiet.alerts, name).toEqual([]);
      // A quiet case with no traffic would prove nothing.
      expect(cases[name].quiet.series.length, name).toBeGreaterThan(0);
    }
  });

  it('every alert fires on its firing series and stays quiet on its quiet series', () => {
    const d = writeWorkload('unit', {
      [PROMETHEUS_RULES_FILE]: toYaml(rules),
      'alerts.test.yml': toYaml(promtoolTests(spec, rules, PROMETHEUS_RULES_FILE)),
    });
    const r = run(promtool, ['test', 'rules', join(d, 'alerts.test.yml')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });

  it('fails when the expectations are flipped, for every case', () => {
    // Expect silence where an alert should fire, and an alert where there should be none.
    const flipped = promtoolTests(spec, rules, PROMETHEUS_RULES_FILE, (_name, kind, c) => (kind === 'fires' ? { ...c, alerts: [] } : { ...c, alerts: [{}] }));
    const d = writeWorkload('flipped', { [PROMETHEUS_RULES_FILE]: toYaml(rules), 'alerts.test.yml': toYaml(flipped) });
    const r = run(promtool, ['test', 'rules', join(d, 'alerts.test.yml')]);
    expect(r.code).not.toBe(0);
    const out = r.stdout + r.stderr;
    for (const name of ALERT_NAMES) {
      for (const kind of ['fires', 'quiet']) expect(out, `${name} ${kind}`).toContain(`${name} ${kind}`);
    }
  });
});
