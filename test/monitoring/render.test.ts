// The monitoring renderers as pure functions: names taken from the right places, PromQL and
// Alloy syntax escaped, output deterministic, and every file compared with its golden copy.
import { describe, expect, it } from 'vitest';
import { METRICS_PATH } from '../../agentd/src/contract.ts';
import { renderGatewayConfig } from '../../components/render/envoy/gateway.ts';
import { renderEgressConfig } from '../../components/render/envoy/egress.ts';
import { renderAlertRules } from '../../components/render/monitoring/alerts.ts';
import { renderMonitoringFiles, type RenderedMonitoring } from '../../components/render/overlay/index.ts';
import { SCRAPE_PATHS, renderPrometheusConfig } from '../../components/render/monitoring/prometheus.ts';
import { eq, histogramQuantile, oneOf, promString, regexOneOf, selector } from '../../components/render/monitoring/promql.ts';
import { attr, block, comment, obj, ref, riverString, toRiver } from '../../components/render/monitoring/river.ts';
import { ENVOY_STATS_PATH, PROXIES, SERVICE_CLUSTER } from '../../components/render/monitoring/sources.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { egressInput, gatewayInput, shippedSpec } from '../../scripts/local/fixtures.ts';
import { goldenDir } from '../support/golden.ts';
import { promtoolTests } from './alert-cases.ts';
import { dockerMonitoringInput, kubernetesMonitoringInput } from './support.ts';

const spec = shippedSpec();

/** Every stat_prefix of the HTTP connection managers of a rendered Envoy config, by listener. */
function hcmPrefixes(bootstrap: {
  static_resources: { listeners: readonly { name: string; filter_chains: readonly { filters: readonly { typed_config: Record<string, unknown> }[] }[] }[] };
}) {
  return bootstrap.static_resources.listeners.flatMap((l) =>
    l.filter_chains.flatMap((c) => c.filters.map((f) => ({ listener: l.name, prefix: String(f.typed_config['stat_prefix']) }))),
  );
}

const fullMatch = (regex: string, s: string) => new RegExp(`^(?:${regex})$`).test(s);

describe('names come from the renderers and the contract', () => {
  it('scrapes Envoy on the stats listener path, agentd on the contract path', () => {
    expect(ENVOY_STATS_PATH).toBe('/stats/prometheus');
    expect(SCRAPE_PATHS).toEqual({ gateway: ENVOY_STATS_PATH, egress: ENVOY_STATS_PATH, opa: '/metrics', agentd: METRICS_PATH });
  });

  it("the gateway selector matches its traffic listener (plain or TLS), never the stats listener's", () => {
    const tls = renderGatewayConfig(spec, { ...gatewayInput, tls: { sdsFile: '/etc/agentd/gateway/sds/tls.sds.json' } });
    const prefixes = [...hcmPrefixes(tls as never), ...hcmPrefixes(renderGatewayConfig(spec, gatewayInput) as never)];
    const traffic = prefixes.filter((p) => !p.listener.endsWith('_stats'));
    expect(traffic.length).toBe(2);
    for (const p of traffic) expect(fullMatch(PROXIES.gateway.hcmPrefixRegex, p.prefix), p.prefix).toBe(true);
    for (const p of prefixes.filter((x) => x.listener.endsWith('_stats'))) expect(fullMatch(PROXIES.gateway.hcmPrefixRegex, p.prefix), p.prefix).toBe(false);
    const egress = hcmPrefixes(renderEgressConfig(spec, egressInput) as never);
    for (const p of egress) expect(fullMatch(PROXIES.egress.hcmPrefixRegex, p.prefix), p.prefix).toBe(!p.listener.endsWith('_stats'));
  });

  it('recovers every service id from its Envoy cluster name', () => {
    for (const id of Object.keys(spec.egressServices)) {
      const m = new RegExp(`^${SERVICE_CLUSTER.idRegex}$`).exec(SERVICE_CLUSTER.name(id));
      expect(m?.[1]).toBe(id);
    }
  });

  it('alert annotations interpolate only labels the expression keeps', () => {
    for (const r of renderAlertRules(spec).groups.flatMap((g) => g.rules)) {
      for (const text of Object.values(r.annotations)) {
        // Nothing but {{ $labels.x }}: no $value, no functions (the promtool cases expand these).
        const templates = text.match(/\{\{[^}]*\}\}/g) ?? [];
        for (const t of templates) {
          const label = /^\{\{ \$labels\.([a-z_]+) \}\}$/.exec(t)?.[1];
          expect(label, `${r.alert}: ${t}`).toBeTruthy();
          // Kept by a grouping, added by label_replace, or an `up{...} == 0` that keeps all labels.
          const grouped = [...r.expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()));
          const kept = grouped.includes(label!) || r.expr.includes(`"${label}"`) || r.expr.startsWith('up{');
          expect(kept, `${r.alert}: ${label}`).toBe(true);
        }
      }
    }
  });
});

describe('PromQL builder', () => {
  it('quotes and escapes label values', () => {
    expect(selector('m', [eq('a', 'x"y\\z\n')])).toBe('m{a="x\\"y\\\\z\\n"}');
    expect(promString('plain')).toBe('"plain"');
  });

  it('escapes regex metacharacters in alternations', () => {
    expect(regexOneOf(['a.b', 'c|d', 'e'])).toBe('a\\.b|c\\|d|e');
    expect(selector('m', [oneOf('l', ['x+y'])])).toBe('m{l=~"x\\\\+y"}');
  });

  it('refuses invalid names, windows and quantiles', () => {
    expect(() => selector('bad-name')).toThrow();
    expect(() => selector('m', [eq('bad-label', 'x')])).toThrow();
    expect(() => histogramQuantile(1.5, 'm_bucket', [], '5m')).toThrow();
    expect(() => histogramQuantile(0.5, 'm', [], '5m')).toThrow(/bucket/);
    expect(() => regexOneOf([])).toThrow();
  });
});

describe('Alloy syntax builder', () => {
  it('escapes strings', () => {
    expect(riverString('a"b\\c\nd\te\u0001')).toBe('"a\\"b\\\\c\\nd\\te\\u0001"');
    expect(riverString('ünï')).toBe('"ünï"');
  });

  it('refuses invalid identifiers, labels and references', () => {
    expect(() => attr('bad-name', 1)).toThrow();
    expect(() => block('loki.write', [], 'bad label')).toThrow();
    expect(() => block('1bad', [])).toThrow();
    expect(() => ref('a.b-c')).toThrow();
    expect(() => comment('two\nlines')).toThrow();
    expect(() => toRiver([attr('x', Number.NaN)])).toThrow();
  });

  it('lays out blocks, aligned attributes and multi-line objects with trailing commas', () => {
    const text = toRiver([
      comment('why'),
      block('a.b', [attr('x', 'v'), attr('longer', [1, true, null]), attr('o', obj({ k: 'v', 'not.ident': ref('c.d.e') })), block('inner', [])], 'lbl'),
    ]);
    expect(text).toBe(
      [
        '// why',
        'a.b "lbl" {',
        '  x      = "v"',
        '  longer = [1, true, null]',
        '  o      = {',
        '    k           = "v",',
        '    "not.ident" = c.d.e,',
        '  }',
        '',
        '  inner {}',
        '}',
        '',
      ].join('\n'),
    );
  });
});

describe('Prometheus config', () => {
  it('lists several endpoints of one job, brackets IPv6 hosts, sorts external labels', () => {
    const cfg = renderPrometheusConfig({
      targets: {
        gateway: [
          { host: 'a', port: 1 },
          { host: '::1', port: 2 },
        ],
        egress: { host: 'e', port: 3 },
        opa: { host: 'o', port: 4 },
        agentd: { host: 'd', port: 5 },
      },
      externalLabels: { z: '1', a: '2' },
    });
    expect(cfg.scrape_configs[0]!.static_configs[0]!.targets).toEqual(['a:1', '[::1]:2']);
    expect(Object.keys(cfg.global.external_labels!)).toEqual(['a', 'z']);
    expect(() => renderPrometheusConfig({ targets: cfg as never, scrapeIntervalSeconds: 0 })).toThrow();
  });
});

/** Every file of a rendering, by `<workload>/<path>` (secret files excluded: they are inputs). */
function plainFiles(r: RenderedMonitoring): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [workload, w] of Object.entries(r)) {
    for (const [p, c] of Object.entries(w.files)) out[`${workload}/${p}`] = String(c);
  }
  return out;
}

describe('output', () => {
  it('is deterministic: the same input gives the same bytes', () => {
    for (const input of [dockerMonitoringInput, kubernetesMonitoringInput]) {
      const a = renderMonitoringFiles(shippedSpec(), input);
      const b = renderMonitoringFiles(shippedSpec(), structuredClone(input));
      expect(plainFiles(b)).toEqual(plainFiles(a));
      expect(b.grafana.secretFiles).toEqual(a.grafana.secretFiles);
      expect([b.prometheus.args, b.loki.args, b.alloy.args, b.grafana.env]).toEqual([a.prometheus.args, a.loki.args, a.alloy.args, a.grafana.env]);
    }
  });

  it('matches the golden files (UPDATE_GOLDEN=1 rewrites them locally, refused in CI; review the diff)', () => {
    const expected: Record<string, string> = {};
    const docker = plainFiles(renderMonitoringFiles(spec, dockerMonitoringInput));
    const kubernetes = plainFiles(renderMonitoringFiles(spec, kubernetesMonitoringInput));
    for (const [p, c] of Object.entries(docker)) expected[`docker/${p}`] = c;
    // Dashboards and rules depend on the spec only: the Kubernetes golden set holds what differs.
    const specOnly = (p: string) => p.startsWith('grafana/dashboards/') || p === 'prometheus/alerts.yml';
    for (const [p, c] of Object.entries(kubernetes)) {
      if (specOnly(p)) expect(c, p).toBe(docker[p]);
      else expected[`kubernetes/${p}`] = c;
    }
    const rules = renderAlertRules(spec);
    expected['promtool/alerts.test.yml'] = toYaml(promtoolTests(spec, rules, 'alerts.yml'));
    // test/golden/monitoring as a whole: a golden file nothing renders any more is stale; a
    // rendered file without one is unreviewed.
    goldenDir('monitoring', expected);
  });
});
