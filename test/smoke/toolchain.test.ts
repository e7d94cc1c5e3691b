// The smoke suite: each pinned tool, for real. Envoy validates, OPA tests, promtool checks,
// the Pulumi engine runs a program loading every provider plugin, and a locally built image
// runs in the local Docker engine.
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, pinnedVersions, run, toolPath } from '../../scripts/local/tools.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'agentd-smoke-'));
const v = pinnedVersions();

describe('envoy', () => {
  it(`is ${v['ENVOY_VERSION']} and validates a minimal config, rejecting a broken one`, () => {
    const envoy = toolPath('envoy');
    expect(run(envoy, ['--version']).stdout).toContain(`/${v['ENVOY_VERSION']}/`);
    const dir = tmp();
    const good = {
      static_resources: {
        listeners: [
          {
            name: 'l',
            address: { socket_address: { address: '127.0.0.1', port_value: 10000 } },
            filter_chains: [
              {
                filters: [
                  {
                    name: 'envoy.filters.network.tcp_proxy',
                    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 't', cluster: 'c' },
                  },
                ],
              },
            ],
          },
        ],
        clusters: [
          {
            name: 'c',
            type: 'STATIC',
            load_assignment: {
              cluster_name: 'c',
              endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 10001 } } } }] }],
            },
          },
        ],
      },
    };
    writeFileSync(join(dir, 'good.json'), JSON.stringify(good));
    writeFileSync(
      join(dir, 'bad.json'),
      JSON.stringify({ ...good, static_resources: { ...good.static_resources, clusters: [{ name: 'c', type: 'NOT_A_TYPE' }] } }),
    );
    expect(run(envoy, ['--mode', 'validate', '-c', join(dir, 'good.json')]).code).toBe(0);
    expect(run(envoy, ['--mode', 'validate', '-c', join(dir, 'bad.json')]).code).not.toBe(0);
  });
});

describe('opa', () => {
  it(`is ${v['OPA_ENVOY_VERSION']} with the Envoy plugin, and runs opa test`, () => {
    const opa = toolPath('opa');
    expect(run(opa, ['version']).stdout).toContain(`Version: ${v['OPA_ENVOY_VERSION']!.replace(/-envoy$/, '')}`);
    const dir = tmp();
    writeFileSync(join(dir, 'p.rego'), 'package smoke\n\nallow if input.user == "alice"\n');
    writeFileSync(
      join(dir, 'p_test.rego'),
      'package smoke_test\n\nimport data.smoke\n\ntest_alice if smoke.allow with input as {"user": "alice"}\n\ntest_bob if not smoke.allow with input as {"user": "bob"}\n',
    );
    const r = run(opa, ['test', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('PASS: 2/2');
  });
});

describe('prometheus', () => {
  it(`promtool ${v['PROMETHEUS_VERSION']} checks a config`, () => {
    const promtool = toolPath('promtool');
    expect(run(promtool, ['--version']).stdout).toContain(v['PROMETHEUS_VERSION']!);
    const dir = tmp();
    writeFileSync(
      join(dir, 'prometheus.yml'),
      'global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: smoke\n    static_configs:\n      - targets: ["127.0.0.1:9090"]\n',
    );
    const r = run(promtool, ['check', 'config', join(dir, 'prometheus.yml')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});

describe('docker engine', () => {
  it('builds an image locally and runs it hardened', () => {
    const dir = tmp();
    cpSync(toolPath('opa'), join(dir, 'opa'));
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY opa /opa\nUSER 10001:10001\nENTRYPOINT ["/opa"]\n');
    execFileSync('docker', ['build', '-q', '-t', 'agentd-smoke:latest', dir], { env: { ...process.env, DOCKER_BUILDKIT: '0' }, stdio: 'pipe' });
    const out = execFileSync(
      'docker',
      ['run', '--rm', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', 'agentd-smoke:latest', 'version'],
      { encoding: 'utf8' },
    );
    expect(out).toContain('Version:');
    execFileSync('docker', ['rmi', 'agentd-smoke:latest'], { stdio: 'pipe' });
  }, 120_000);
});

describe('pulumi', () => {
  it(`engine ${v['PULUMI_VERSION']} runs preview, up and destroy of a program loading the random, docker and kubernetes plugins`, () => {
    const pulumi = toolPath('pulumi');
    expect(run(pulumi, ['version']).stdout.trim()).toBe(`v${v['PULUMI_VERSION']}`);
    const dir = tmp();
    cpSync(join(REPO_ROOT, 'test/smoke/pulumi-program'), dir, { recursive: true });
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'agentd-smoke', type: 'module' }));
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
    mkdirSync(join(dir, 'state'));
    const render = join(dir, 'rendered');
    const net = `agentd-smoke-${process.pid}`;
    const env = { ...process.env, PULUMI_BACKEND_URL: `file://${join(dir, 'state')}`, PULUMI_CONFIG_PASSPHRASE: 'smoke', PULUMI_SKIP_UPDATE_CHECK: 'true' };
    const p = (...args: string[]) => {
      const r = spawnSync(pulumi, [...args, '--non-interactive'], { cwd: dir, env, encoding: 'utf8' });
      expect(r.status, `pulumi ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`).toBe(0);
      return r.stdout;
    };
    p('stack', 'init', 'smoke');
    p('config', 'set', 'networkName', net);
    p('config', 'set', 'renderDir', render);
    expect(p('preview')).toMatch(/\+ 5 to create|5 to create/);
    p('up', '--yes', '--skip-preview');
    // Derived from a secret, the length stays secret unless asked for.
    expect(JSON.parse(p('stack', 'output', '--json'))).toEqual({ passwordLength: '[secret]', networkName: net });
    expect(JSON.parse(p('stack', 'output', '--json', '--show-secrets'))).toEqual({ passwordLength: 24, networkName: net });
    expect(execFileSync('docker', ['network', 'inspect', net, '--format', '{{.Name}}'], { encoding: 'utf8' }).trim()).toBe(net);
    expect(readdirSync(render, { recursive: true }).some((f) => String(f).endsWith('.yaml'))).toBe(true);
    p('destroy', '--yes', '--skip-preview');
    expect(spawnSync('docker', ['network', 'inspect', net]).status).not.toBe(0);
    expect(readdirSync(render, { recursive: true }).filter((f) => String(f).endsWith('.yaml'))).toEqual([]);
  }, 300_000);
});
