// Loki, Alloy and Grafana cannot run here (their code is AGPL and is not built on these
// machines), so their rendered configs are checked for structure: what each must and must not
// contain, and that the pieces refer to each other correctly.
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { BASE_LOG_FIELDS } from '../../components/render/envoy/common.ts';
import { renderEgressConfig } from '../../components/render/envoy/egress.ts';
import { LOG_LABELS, LOG_LEVELS, LOG_SERVICES, renderAlloyConfig, type AlloyRenderInput } from '../../components/render/monitoring/alloy.ts';
import { renderMonitoringFiles, type RenderedMonitoring } from '../../components/render/overlay/index.ts';
import { LOKI_CONFIG_FILE } from '../../components/render/monitoring/loki.ts';
import type { RiverBlock, RiverStatement, RiverValue } from '../../components/render/monitoring/river.ts';
import { GRAFANA_ADMIN_PASSWORD_FILE, GRAFANA_FILES } from '../../grafana/index.ts';
import { ACCESS_LOG, dashboardQueries, panelQueries, renderDashboards, type Dashboard } from '../../grafana/dashboards/index.ts';
import { egressInput, shippedSpec } from '../../scripts/local/fixtures.ts';
import { ADMIN_PASSWORD, dockerMonitoringInput, kubernetesMonitoringInput } from './support.ts';

const spec = shippedSpec();
const inputs = { docker: dockerMonitoringInput, kubernetes: kubernetesMonitoringInput } as const;
const rendered: Record<keyof typeof inputs, RenderedMonitoring> = {
  docker: renderMonitoringFiles(spec, dockerMonitoringInput),
  kubernetes: renderMonitoringFiles(spec, kubernetesMonitoringInput),
};
const text = (v: string | Buffer | undefined) => {
  if (v === undefined) throw new Error('missing file');
  return String(v);
};

/** grafana.ini as sections of key/value (Grafana's INI: `[section]`, `key = value`). */
function parseIni(s: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = '';
  for (const line of s.split('\n')) {
    const h = /^\[([^\]]+)\]$/.exec(line);
    if (h) out[(section = h[1]!)] = {};
    else if (line.trim()) {
      const m = /^([a-z_]+) = (.*)$/.exec(line);
      if (!m) throw new Error(`not an INI line: ${line}`);
      out[section]![m[1]!] = m[2]!;
    }
  }
  return out;
}

describe('Grafana', () => {
  const files = rendered.docker.grafana.files;
  const dashboards = Object.entries(files).filter(([p]) => p.startsWith(`${GRAFANA_FILES.dashboardsDir}/`));
  const provisioned = parseYaml(text(files[GRAFANA_FILES.datasources])) as { datasources: { uid: string; type: string; url: string }[] };

  it('provisions Prometheus and Loki at the given endpoints, with fixed uids', () => {
    expect(provisioned.datasources.map((d) => [d.uid, d.type, d.url])).toEqual([
      ['prometheus', 'prometheus', 'http://prometheus:9090'],
      ['loki', 'loki', 'http://loki:3100'],
    ]);
  });

  it('writes every dashboard as valid JSON with unique panel ids, unique uids and a grid that fits', () => {
    expect(dashboards.map(([p]) => p).sort()).toEqual(['agentd', 'egress', 'gateway', 'opa', 'overview'].map((n) => `dashboards/${n}.json`));
    const uids = new Set<string>();
    for (const [p, content] of dashboards) {
      const d = JSON.parse(String(content)) as Dashboard;
      expect(d.uid, p).toBeTruthy();
      expect(uids.has(d.uid!), p).toBe(false);
      uids.add(d.uid!);
      const panels = d.panels ?? [];
      expect(panels.length, p).toBeGreaterThan(0);
      const ids = panels.map((x) => x.id);
      for (const id of ids) expect(id, p).toBeGreaterThan(0);
      expect(new Set(ids).size, p).toBe(ids.length);
      // No two panels overlap, none leaves the 24 columns.
      const cells = new Set<string>();
      for (const panel of panels) {
        const g = panel.gridPos!;
        expect(g, `${p} ${panel.title}`).toBeDefined();
        expect(g.x + g.w, `${p} ${panel.title}`).toBeLessThanOrEqual(24);
        for (let x = g.x; x < g.x + g.w; x++)
          for (let y = g.y; y < g.y + g.h; y++) {
            expect(cells.has(`${x},${y}`), `${p} ${panel.title} overlaps at ${x},${y}`).toBe(false);
            cells.add(`${x},${y}`);
          }
      }
    }
  });

  it("every panel's and query's datasource is provisioned, and every query has a unique refId in its panel", () => {
    const uids = new Set(provisioned.datasources.map((d) => `${d.type}/${d.uid}`));
    for (const [p, content] of dashboards) {
      const d = JSON.parse(String(content)) as Dashboard;
      for (const panel of (d.panels ?? []).filter((x) => x.type !== 'row')) {
        expect(panel.datasource, `${p} ${panel.title}`).toBeDefined();
        expect(uids.has(`${panel.datasource!.type}/${panel.datasource!.uid}`), `${p} ${panel.title}`).toBe(true);
        const targets = panelQueries(panel);
        const refIds = targets.map((t) => t.refId);
        expect(refIds.length, `${p} ${panel.title}`).toBeGreaterThan(0);
        expect(new Set(refIds).size).toBe(refIds.length);
        for (const t of targets) expect(t.datasource, `${p} ${panel.title}`).toEqual(panel.datasource);
      }
    }
  });

  it('has a row of panels per egress service and a panel per sandbox tier, from the spec', () => {
    const egress = renderDashboards(spec)['egress']!;
    const titles = (egress.panels ?? []).map((x) => x.title);
    for (const s of Object.values(spec.egressServices)) {
      expect(titles).toContain(`Service: ${s.displayName} (${s.id})`);
      for (const suffix of ['requests by status class', 'upstream latency', 'errors', 'authorization', 'as agentd sees it'])
        expect(titles).toContain(`${s.id}: ${suffix}`);
    }
    for (const t of Object.keys(spec.sandboxTiers)) expect(titles).toContain(`Tier ${t}: requests by status`);
  });

  it('log queries select only the shipped labels and parse fields the access logs have', () => {
    // The egress access log's JSON fields, as rendered.
    const accessLog = JSON.stringify(renderEgressConfig(spec, egressInput));
    for (const f of Object.values(ACCESS_LOG)) expect(accessLog, f).toContain(`"${f}":"%`);
    expect(Object.keys(BASE_LOG_FIELDS)).toEqual(expect.arrayContaining([ACCESS_LOG.status, ACCESS_LOG.durationMs]));
    let lokiQueries = 0;
    for (const d of Object.values(renderDashboards(spec))) {
      for (const { panel, target } of dashboardQueries(d)) {
        if (target.datasource.type !== 'loki') continue;
        lokiQueries++;
        const selectors = [...target.expr.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]!);
        expect(selectors.length, panel.title).toBe(1);
        const labels = [...selectors[0]!.matchAll(/([a-z_]+)(=~|=|!=|!~)"/g)].map((m) => m[1]!);
        expect(labels.length, panel.title).toBeGreaterThan(0);
        for (const l of labels) expect(LOG_LABELS as readonly string[], `${panel.title}: ${l}`).toContain(l);
      }
    }
    expect(lokiQueries).toBeGreaterThan(10);
  });

  it('turns anonymous access and sign-up off, and reads the admin password from the secret file', () => {
    for (const r of Object.values(rendered)) {
      const ini = parseIni(text(r.grafana.files[GRAFANA_FILES.ini]));
      expect(ini['auth.anonymous']).toEqual({ enabled: 'false' });
      expect(ini['users']?.['allow_sign_up']).toBe('false');
      expect(ini['security']?.['admin_password']).toBe(`$__file{${r.grafana.adminPasswordFile}}`);
      expect(r.grafana.adminPasswordFile).toBe(`${r.grafana.secretDir}/${GRAFANA_ADMIN_PASSWORD_FILE}`);
      expect(ini['dashboards']?.['default_home_dashboard_path']).toBe(`${r.grafana.configDir}/${GRAFANA_FILES.dashboardsDir}/overview.json`);
      expect(r.grafana.env['GF_PATHS_CONFIG']).toBe(`${r.grafana.configDir}/${GRAFANA_FILES.ini}`);
      expect(r.grafana.env['GF_PATHS_PROVISIONING']).toBe(`${r.grafana.configDir}/provisioning`);
    }
    expect(parseIni(text(rendered.kubernetes.grafana.files[GRAFANA_FILES.ini]))['security']?.['admin_user']).toBe('ops');
  });

  it('writes the admin password into the secret file only: no plain file, argument or variable holds it', () => {
    for (const r of Object.values(rendered)) {
      expect(r.grafana.secretFiles).toEqual({ [GRAFANA_ADMIN_PASSWORD_FILE]: ADMIN_PASSWORD });
      for (const [name, w] of Object.entries(r)) {
        for (const [p, c] of Object.entries(w.files)) expect(String(c).includes(ADMIN_PASSWORD), `${name}/${p}`).toBe(false);
        expect(JSON.stringify([w.args, w.env]).includes(ADMIN_PASSWORD), name).toBe(false);
        if (name !== 'grafana') expect(w.secretFiles, name).toEqual({});
      }
    }
    expect(() => renderMonitoringFiles(spec, { ...dockerMonitoringInput, grafana: { adminPassword: 'short' } })).toThrow(/at least 8/);
  });

  it('plain files do not depend on the password; a Pulumi Output passes through to the secret file untouched', () => {
    const output = { opaque: 'stands for pulumi.Output<string>' };
    const r = renderMonitoringFiles(spec, { ...dockerMonitoringInput, grafana: { adminPassword: output } });
    expect(r.grafana.secretFiles[GRAFANA_ADMIN_PASSWORD_FILE]).toBe(output);
    expect(r.grafana.files).toEqual(rendered.docker.grafana.files);
  });

  it('points the dashboard provider at the directory the dashboards are written to', () => {
    const provider = parseYaml(text(rendered.docker.grafana.files[GRAFANA_FILES.dashboardProvider])) as {
      providers: { options: { path: string }; disableDeletion: boolean; allowUiUpdates: boolean }[];
    };
    expect(provider.providers[0]!.options.path).toBe(`${rendered.docker.grafana.configDir}/${GRAFANA_FILES.dashboardsDir}`);
    expect([provider.providers[0]!.disableDeletion, provider.providers[0]!.allowUiUpdates]).toEqual([true, false]);
  });
});

/** Every block of a config, recursively. */
function blocks(body: readonly RiverStatement[]): RiverBlock[] {
  return body.flatMap((s) => (s.kind === 'block' ? [s, ...blocks(s.body)] : []));
}
function attrOf(b: RiverBlock, name: string): RiverValue | undefined {
  const s = b.body.find((x) => x.kind === 'attr' && x.name === name);
  return s?.kind === 'attr' ? s.value : undefined;
}
/** Every reference (`a.b.c`) anywhere in a value. */
function refs(v: RiverValue | undefined): string[] {
  if (v === null || v === undefined || typeof v !== 'object') return [];
  if (Array.isArray(v)) return (v as RiverValue[]).flatMap(refs);
  const o = v as { kind: string; path?: string; fields?: Record<string, RiverValue> };
  return o.kind === 'ref' ? [o.path!] : Object.values(o.fields ?? {}).flatMap(refs);
}

describe('Alloy', () => {
  const alloyInputs: Record<string, AlloyRenderInput> = Object.fromEntries(
    Object.entries(inputs).map(([k, i]) => [k, { discovery: i.alloy.discovery, loki: i.endpoints.loki, services: Object.values(LOG_SERVICES) }]),
  );

  it('ships container logs with discovery.docker + loki.source.docker, pod logs with discovery.kubernetes + loki.source.kubernetes', () => {
    const names = (k: string) =>
      blocks(renderAlloyConfig(alloyInputs[k]!))
        .filter((b) => b.label !== undefined)
        .map((b) => b.name);
    expect(names('docker')).toEqual(['discovery.docker', 'discovery.relabel', 'loki.source.docker', 'loki.process', 'loki.write']);
    expect(names('kubernetes')).toEqual(['discovery.kubernetes', 'discovery.relabel', 'loki.source.kubernetes', 'loki.process', 'loki.write']);
  });

  it('every reference names a component the config defines, with an export it has', () => {
    const exports: Record<string, string[]> = {
      'discovery.docker': ['targets'],
      'discovery.kubernetes': ['targets'],
      'discovery.relabel': ['output', 'rules'],
      'loki.process': ['receiver'],
      'loki.write': ['receiver'],
    };
    for (const input of Object.values(alloyInputs)) {
      const config = renderAlloyConfig(input);
      const defined = new Set(
        blocks(config)
          .filter((b) => b.label)
          .flatMap((b) => (exports[b.name] ?? []).map((e) => `${b.name}.${b.label}.${e}`)),
      );
      const used = blocks(config).flatMap((b) => b.body.flatMap((s) => (s.kind === 'attr' ? refs(s.value) : [])));
      expect(used.length).toBeGreaterThan(3);
      for (const r of used) expect(defined.has(r), r).toBe(true);
    }
  });

  it('gives streams only the allowed labels: service and level, never path, sandbox id or duration', () => {
    for (const [k, input] of Object.entries(alloyInputs)) {
      const all = blocks(renderAlloyConfig(input));
      const targetLabels = all
        .filter((b) => b.name === 'rule')
        .map((b) => attrOf(b, 'target_label'))
        .filter((x) => x !== undefined);
      expect(targetLabels, k).toEqual(['service']);
      const labelStage = all.filter((b) => b.name === 'stage.labels');
      expect(labelStage.length).toBe(1);
      expect(Object.keys((attrOf(labelStage[0]!, 'values') as { fields: object }).fields)).toEqual(['level']);
      const keep = all.filter((b) => b.name === 'stage.label_keep');
      expect(keep.length).toBe(1);
      expect(attrOf(keep[0]!, 'values')).toEqual([...LOG_LABELS]);
      // Nothing else may add labels: no static labels, no source-level labels, no external labels.
      for (const b of all) {
        expect(['stage.static_labels', 'stage.structured_metadata', 'stage.pack'], b.name).not.toContain(b.name);
        expect(attrOf(b, 'labels'), b.name).toBeUndefined();
        expect(attrOf(b, 'external_labels'), b.name).toBeUndefined();
      }
      // The rendered text agrees.
      const file = text(rendered[k as keyof typeof rendered].alloy.files['config.alloy']);
      for (const forbidden of ['sandbox_id', 'duration', '"path"', 'client_id', 'request_id', 'tier']) expect(file, forbidden).not.toContain(forbidden);
    }
  });

  it('keeps only the platform workloads, so `service` values are bounded', () => {
    const all = blocks(renderAlloyConfig(alloyInputs['docker']!));
    const keep = all.find((b) => b.name === 'rule' && attrOf(b, 'action') === 'keep')!;
    expect(attrOf(keep, 'regex')).toBe(Object.values(LOG_SERVICES).join('|'));
    expect(() => renderAlloyConfig({ ...alloyInputs['docker']!, services: [] })).toThrow();
  });

  it('maps the levels the platform writes to the fixed set, and anything else to no level', () => {
    const stages = blocks(renderAlloyConfig(alloyInputs['docker']!));
    const regexes = stages.filter((b) => b.name === 'stage.regex').map((b) => new RegExp(String(attrOf(b, 'expression')).replaceAll('(?P<', '(?<')));
    const [envoyLine, normalise] = regexes as [RegExp, RegExp];
    const levelOf = (raw: string | undefined) => (raw === undefined ? undefined : normalise.exec(raw)?.groups?.['level']);
    // Lines as the harness' processes write them.
    expect(
      levelOf(
        envoyLine.exec('[2026-11-28 04:34:53.284][22371][warning][main] [source/server/server.cc:1059] There is no configured limit')?.groups?.['raw_level'],
      ),
    ).toBe('warn');
    expect(levelOf(envoyLine.exec('[2026-11-28 04:34:53.284][22371][critical][main] x')?.groups?.['raw_level'])).toBe('critical');
    expect(envoyLine.exec('{"level":"info","msg":"x"}')).toBeNull();
    for (const [raw, level] of [
      ['info', 'info'],
      ['warning', 'warn'],
      ['error', 'error'],
      ['fatal', 'fatal'],
      ['debug', 'debug'],
      ['LOUD', undefined],
      ['sbx_123', undefined],
      ['', undefined],
    ] as const) {
      expect(levelOf(raw), raw).toBe(level);
    }
    for (const l of LOG_LEVELS) expect(levelOf(l)).toBe(l);
  });

  it('pushes to Loki at the given endpoint', () => {
    const write = blocks(renderAlloyConfig(alloyInputs['kubernetes']!)).find((b) => b.name === 'endpoint')!;
    expect(attrOf(write, 'url')).toBe('http://loki.agentd.svc.cluster.local:3100/loki/api/v1/push');
  });
});

/**
 * The keys Loki 3.7's configuration reference (docs/sources/shared/configuration.md) documents
 * for the blocks the platform writes; a typo in loki.ts would otherwise only show on deploy.
 */
const LOKI_KEYS: Record<string, readonly string[]> = {
  '': [
    'auth_enabled',
    'server',
    'common',
    'schema_config',
    'compactor',
    'limits_config',
    'analytics',
    'storage_config',
    'ingester',
    'querier',
    'ruler',
    'query_range',
  ],
  server: ['http_listen_address', 'http_listen_port', 'grpc_listen_address', 'grpc_listen_port', 'log_level', 'log_format'],
  common: ['instance_addr', 'path_prefix', 'storage', 'replication_factor', 'ring', 'compactor_address'],
  'common.storage': ['filesystem'],
  'common.storage.filesystem': ['chunks_directory', 'rules_directory'],
  'common.ring': ['kvstore', 'instance_addr'],
  'common.ring.kvstore': ['store'],
  schema_config: ['configs'],
  'schema_config.configs[]': ['from', 'store', 'object_store', 'schema', 'index'],
  'schema_config.configs[].index': ['prefix', 'period'],
  compactor: [
    'working_directory',
    'compaction_interval',
    'apply_retention_interval',
    'retention_enabled',
    'retention_delete_delay',
    'retention_delete_worker_count',
    'delete_request_store',
  ],
  limits_config: [
    'retention_period',
    'reject_old_samples',
    'reject_old_samples_max_age',
    'discover_service_name',
    'discover_log_levels',
    'max_label_names_per_series',
    'allow_structured_metadata',
  ],
  analytics: ['reporting_enabled'],
};

function keyPaths(v: unknown, path = ''): { path: string; key: string }[] {
  if (Array.isArray(v)) return v.flatMap((x) => keyPaths(x, `${path}[]`));
  if (v === null || typeof v !== 'object') return [];
  return Object.entries(v as Record<string, unknown>).flatMap(([k, x]) => [{ path, key: k }, ...keyPaths(x, path ? `${path}.${k}` : k)]);
}

describe('Loki', () => {
  it('uses only documented keys', () => {
    for (const r of Object.values(rendered)) {
      for (const { path, key } of keyPaths(parseYaml(text(r.loki.files[LOKI_CONFIG_FILE])))) {
        if (path === 'limits_config.discover_service_name') continue;
        expect(LOKI_KEYS[path], `block ${path || '(top)'}`).toBeDefined();
        expect(LOKI_KEYS[path], `${path}.${key}`).toContain(key);
      }
    }
  });

  it('stores on the local filesystem, keeps logs for the configured retention, and adds no labels of its own', () => {
    const cfg = (r: RenderedMonitoring) => parseYaml(text(r.loki.files[LOKI_CONFIG_FILE])) as Record<string, any>;
    const docker = cfg(rendered.docker);
    expect(docker['common'].storage).toEqual({ filesystem: { chunks_directory: '/loki/chunks', rules_directory: '/loki/rules' } });
    expect(docker['schema_config'].configs[0]).toMatchObject({ store: 'tsdb', object_store: 'filesystem', schema: 'v13' });
    expect(docker['limits_config'].retention_period).toBe('168h');
    expect(cfg(rendered.kubernetes)['limits_config'].retention_period).toBe(`${14 * 24}h`);
    expect(docker['compactor']).toMatchObject({ retention_enabled: true, delete_request_store: 'filesystem' });
    expect(docker['limits_config'].discover_service_name).toEqual([]);
    expect(docker['auth_enabled']).toBe(false);
    expect(rendered.docker.loki.args).toEqual([`-config.file=${rendered.docker.loki.configDir}/${LOKI_CONFIG_FILE}`]);
  });

  it('refuses a retention below one day', () => {
    expect(() => renderMonitoringFiles(spec, { ...dockerMonitoringInput, loki: { retentionDays: 0 } })).toThrow();
  });
});
