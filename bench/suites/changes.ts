// 6. Changes: the routine changes of a platform team, applied with `pulumi up` to the core Docker
// stack for real while steady traffic of a caller the change does not concern runs: about
// 50 req/s through the gateway (admin's GET /api/v1/status) and about 10 req/s through the egress
// proxy (admin's sandbox, http_fetch to a stand-in upstream). One after another: a tier's limit
// changed, a client disabled, an egress service added, an egress credential rotated, an API key
// rotated, a gateway setting changed. For each: requests sent, those that failed, the time from
// `pulumi up` returning to the change being in force (probed), and the containers replaced.
// Targets: no failure, in force within 5 s.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildLocalImages } from '../../scripts/images.ts';
import { rawRequest, steadyTraffic } from '../../scripts/local/clients.ts';
import { freePort, sleep } from '../../scripts/local/processes.ts';
import { copyProject, type ProjectCopy } from '../../scripts/local/project.ts';
import { checkTarget, fmt, table, type SectionResult, type TargetCheck } from '../lib/report.ts';

const SECTION = 'Changes';
const STACK = 'benchchanges';
const PREFIX = `agentd-${STACK}`;
const STANDIN = `${PREFIX}-standin`;
const STANDIN_NET = `${PREFIX}-standin-net`;
const IN_FORCE_TARGET_MS = 5_000;

/** A stand-in upstream: answers 200 to anything and remembers each path's Authorization header. */
const STANDIN_SERVER = `
import { createServer } from 'node:http';
const seen = {};
createServer((req, res) => {
  if (req.url === '/__seen') { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(seen)); return; }
  seen[req.url.split('?')[0]] = req.headers['authorization'] ?? null;
  res.setHeader('content-type', 'application/json');
  res.end('{"ok":true}');
}).listen(8080);
`;

interface ChangeResult {
  readonly change: string;
  readonly gatewayRequests: number;
  readonly gatewayFailed: number;
  readonly egressRequests: number;
  readonly egressFailed: number;
  readonly upSeconds: number;
  /** From `pulumi up` returning to the probe seeing the change; null if it never did (within 15 s). */
  readonly inForceMs: number | null;
  readonly replaced: readonly string[];
}

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

export async function changesSuite(log: (m: string) => void): Promise<SectionResult> {
  log('changes: building the local images (untimed)');
  const images = buildLocalImages();
  const project = copyProject(STACK);
  const gatewayPort = await freePort();
  const standinPort = await freePort();
  const ctx = join(project.dir, 'standin');
  mkdirSync(ctx);
  writeFileSync(join(ctx, 'server.mjs'), STANDIN_SERVER);
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${images.nodeBase}\nCOPY server.mjs /app/server.mjs\n`);
  spawnSync('docker', ['rm', '-f', STANDIN]);
  spawnSync('docker', ['network', 'rm', STANDIN_NET]);
  try {
    docker('build', '-q', '-t', `${STANDIN}:latest`, ctx);
    docker('network', 'create', STANDIN_NET);
    docker(
      'run',
      '-d',
      '--name',
      STANDIN,
      '--network',
      STANDIN_NET,
      '--network-alias',
      'standin',
      '-p',
      `127.0.0.1:${standinPort}:8080`,
      '--read-only',
      `${STANDIN}:latest`,
      'node',
      '/app/server.mjs',
    );
    project.pulumi(['stack', 'init']);
    for (const [k, v] of [
      ['agentd:target', 'docker'],
      ['agentd:images.mode', 'local'],
      ['agentd:gateway.port', String(gatewayPort)],
      ['agentd:docker.egressNetworks[0]', STANDIN_NET],
      ['agentd:egress.upstreams.httpbin', 'http://standin:8080'],
      ['agentd:egress.upstreams.github', 'http://standin:8080'],
    ] as const)
      project.set(k, v);
    project.set('egress:github-token', 'github-token-1', true);
    log('changes: deploying the stack');
    project.pulumi(['up', '--yes', '--skip-preview']);
    const results = await runChanges(project, gatewayPort, standinPort, log);
    return report(results);
  } finally {
    const down = project.pulumi(['destroy', '--yes', '--skip-preview'], { check: false });
    spawnSync('docker', ['rm', '-f', STANDIN]);
    spawnSync('docker', ['network', 'rm', STANDIN_NET]);
    if (down.status !== 0)
      log(`changes: pulumi destroy failed; finish it with PULUMI_BACKEND_URL=file://${project.dir}/state pulumi destroy --stack ${STACK} (in ${project.dir})`);
    else rmSync(project.dir, { recursive: true, force: true });
  }
}

async function runChanges(project: ProjectCopy, gatewayPort: number, standinPort: number, log: (m: string) => void): Promise<ChangeResult[]> {
  const keys = () => JSON.parse(project.pulumi(['stack', 'output', 'apiKeys', '--show-secrets', '--json']).stdout) as Record<string, string>;
  let apiKeys = keys();
  const call = (key: string, method: string, path: string, body?: string) =>
    rawRequest(gatewayPort, { method, path, headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) }, body, timeoutMs: 15_000 });
  const admin = apiKeys['admin']!;
  const sbx = await call(admin, 'POST', '/api/v1/sandboxes', JSON.stringify({ tier: 'admin', ttl_seconds: 3600 }));
  if (sbx.status !== 201) throw new Error(`changes: could not create the traffic sandbox: ${sbx.status} ${sbx.body}`);
  const sandboxId = (sbx.json() as { id: string }).id;
  const intent = (service: string, path: string) =>
    call(admin, 'POST', `/api/v1/sandboxes/${sandboxId}/intents`, JSON.stringify({ capability: 'http_fetch', params: { service, method: 'GET', path } }));
  const egressOk = async () => {
    const r = await intent('httpbin', '/get');
    return r.status === 200 && (r.json() as { status?: number }).status === 200;
  };
  if (!(await egressOk())) throw new Error('changes: the egress traffic does not reach the stand-in before any change');
  const seen = async () =>
    JSON.parse(execFileSync('curl', ['-s', `http://127.0.0.1:${standinPort}/__seen`], { encoding: 'utf8' })) as Record<string, string | null>;
  const containers = () =>
    Object.fromEntries(
      docker('ps', '--filter', `label=agentd.stack=${PREFIX}`, '--filter', 'label=agentd.role=workload', '--format', '{{.Names}} {{.ID}}')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ') as [string, string]),
    );
  const dataFile = (name: string) => join(project.dir, 'policy/data', name);
  const edit = (name: string, from: string, to: string) => {
    const before = readFileSync(dataFile(name), 'utf8');
    if (!before.includes(from)) throw new Error(`changes: ${name} no longer holds ${JSON.stringify(from)}`);
    writeFileSync(dataFile(name), before.replace(from, to));
  };
  let lastProbe = '';

  const changes: { name: string; apply: () => void; inForce: () => Promise<boolean> }[] = [
    {
      // dashboard's tier: two requests in a row pass under 60 a minute, the second is refused under 1.
      name: "a rate-limit tier's limit (default: 60 -> 1 per minute)",
      apply: () => edit('rate-limit-tiers.yaml', '  default:\n    requests_per_minute: 60\n', '  default:\n    requests_per_minute: 1\n'),
      inForce: async () => {
        await call(apiKeys['dashboard']!, 'GET', '/api/v1/status');
        return (await call(apiKeys['dashboard']!, 'GET', '/api/v1/status')).status === 429;
      },
    },
    {
      name: 'a client disabled (ci)',
      apply: () =>
        edit('clients.yaml', '    role: operator\n    rate_limit_tier: standard\n', '    role: operator\n    rate_limit_tier: standard\n    enabled: false\n'),
      inForce: async () => (await call(apiKeys['ci']!, 'GET', '/api/v1/status')).status === 403,
    },
    {
      name: 'an egress service added (extra)',
      apply: () => {
        const file = dataFile('egress-services.yaml');
        writeFileSync(
          file,
          `${readFileSync(file, 'utf8').trimEnd()}\n  extra:\n    display_name: Extra\n    base_url: https://extra.example.com\n    allowed_methods: [GET]\n    allowed_paths: ['/extra-probe']\n    timeout_seconds: 10\n`,
        );
        project.set('agentd:egress.upstreams.extra', 'http://standin:8080');
      },
      inForce: async () => {
        const r = await intent('extra', '/extra-probe');
        lastProbe = `${r.status} ${r.body.slice(0, 300)}`;
        return r.status === 200 && (r.json() as { status?: number }).status === 200;
      },
    },
    {
      name: 'an egress credential rotated (github)',
      apply: () => project.set('egress:github-token', 'github-token-2', true),
      inForce: async () => {
        await intent('github', '/repos/o/r/issues');
        return (await seen())['/repos/o/r/issues'] === 'Bearer github-token-2';
      },
    },
    {
      name: 'an API key rotated (dashboard, 1 h grace)',
      apply: () => {
        project.set('agentd:keys.dashboard.generation', '2');
        project.set('agentd:keys.dashboard.previousValidUntil', new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z'));
      },
      inForce: async () => (await call(apiKeys['dashboard']!, 'GET', '/api/v1/status')).status === 200,
    },
    {
      name: 'a gateway setting (body limit 1 MiB -> 2 KiB)',
      apply: () => project.set('agentd:gateway.maxRequestBytes', '2048'),
      inForce: async () => (await call(admin, 'POST', '/api/v1/sandboxes', JSON.stringify({ tier: 'admin', padding: 'x'.repeat(4096) }))).status === 413,
    },
  ];

  const results: ChangeResult[] = [];
  for (const c of changes) {
    log(`changes: ${c.name}`);
    const before = containers();
    const gatewayTraffic = steadyTraffic(async () => (await call(admin, 'GET', '/api/v1/status')).status === 200, 20);
    const egressTraffic = steadyTraffic(egressOk, 100);
    let gateway = { sent: 0, failed: 0 };
    let egress = { sent: 0, failed: 0 };
    let upSeconds = 0;
    let inForceMs: number | null = null;
    try {
      await sleep(1000);
      c.apply();
      const t0 = performance.now();
      await project.pulumiAsync(['up', '--yes', '--skip-preview']);
      upSeconds = (performance.now() - t0) / 1000;
      apiKeys = keys();
      const done = performance.now();
      while (performance.now() - done < 15_000) {
        if (await c.inForce()) {
          inForceMs = performance.now() - done;
          break;
        }
        await sleep(c.name.startsWith('a rate-limit') ? 1000 : 100);
      }
      if (inForceMs === null) log(`changes: not in force; last probe: ${lastProbe}`);
      await sleep(1000);
    } finally {
      gateway = await gatewayTraffic.stop();
      egress = await egressTraffic.stop();
    }
    const after = containers();
    results.push({
      change: c.name,
      gatewayRequests: gateway.sent,
      gatewayFailed: gateway.failed,
      egressRequests: egress.sent,
      egressFailed: egress.failed,
      upSeconds,
      inForceMs,
      replaced: Object.keys(before)
        .filter((n) => after[n] !== before[n])
        .map((n) => n.slice(PREFIX.length + 1)),
    });
  }
  return results;
}

function report(results: readonly ChangeResult[]): SectionResult {
  const targets: TargetCheck[] = results.flatMap((r, i) => [
    checkTarget({
      id: `changes.${i + 1}.failed`,
      section: SECTION,
      description: `${r.change}: failed requests of unaffected callers (gateway + egress)`,
      value: r.gatewayFailed + r.egressFailed,
      limit: 0,
      kind: 'max',
      unit: '',
      digits: 0,
    }),
    checkTarget({
      id: `changes.${i + 1}.in-force`,
      section: SECTION,
      description: `${r.change}: in force after pulumi up returns`,
      value: r.inForceMs ?? Number.NaN,
      limit: IN_FORCE_TARGET_MS,
      kind: 'max',
      unit: ' ms',
      digits: 0,
    }),
  ]);
  const markdown = [
    'Steady traffic of a caller the change does not concern while `pulumi up` applies each change to the core Docker stack: about 50 req/s through the gateway, about 10 req/s through the egress proxy (http_fetch to a stand-in upstream).',
    '',
    table(
      ['Change', 'Gateway requests (failed)', 'Egress requests (failed)', '`pulumi up`', 'In force after `up`', 'Containers replaced'],
      results.map((r) => [
        r.change,
        `${r.gatewayRequests} (${r.gatewayFailed})`,
        `${r.egressRequests} (${r.egressFailed})`,
        `${fmt(r.upSeconds, 1)} s`,
        r.inForceMs === null ? 'not within 15 s' : `${fmt(r.inForceMs, 0)} ms`,
        r.replaced.length > 0 ? r.replaced.join(', ') : 'none',
      ]),
    ),
  ].join('\n');
  return { id: 'changes', title: '6. Changes under traffic', data: { results }, targets, markdown };
}
