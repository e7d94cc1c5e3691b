// The user's main job, for real: `pulumi up` of a stack into the local Docker engine, traffic
// through the provisioned gateway and egress (to a stand-in upstream container that checks the
// injected credential), a no-op preview, a policy change under traffic that replaces only the
// bundle server (OPA takes the new bundle unrestarted; no request of another client fails), invalid data
// that stops the preview, TLS at the gateway from secret stack config (and plaintext exposure
// refused), the passphrase rule, and a destroy that leaves nothing behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestCa, standinReceived } from '../../scripts/local/standin.ts';
import { freePort, sleep } from '../../scripts/local/processes.ts';
import { AgentdGrpc, curlStatusAndVersion, rawRequest, steadyTraffic } from '../../scripts/local/clients.ts';
import { buildStandinImage, expectCredentialInjected } from '../support/standin.ts';
import * as grpc from '@grpc/grpc-js';
import { REPO_ROOT } from '../../scripts/local/tools.ts';
import { copyProject, disableClientUnderTraffic, type ProjectCopy } from '../../scripts/local/project.ts';
import { buildLocalImages, type LocalImages } from '../../scripts/images.ts';

const STACK = 'e2e';
const PREFIX = `agentd-${STACK}`;
const EXT_NET = 'agentd-e2e-ext';
const STANDIN = 'agentd-e2e-standin';
const CREDENTIAL = `github-credential-${Date.now()}-e2e`;

let work: string;
let env: NodeJS.ProcessEnv;
let images: LocalImages;
let gatewayPort: number;
let standinPort: number;
let outputs: { gatewayUrl: string; grpcEndpoint: string; policyRevision: string; apiKeys: Record<string, string> };

const docker = (...args: string[]) =>
  execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DOCKER_BUILDKIT: '0' } }).trim();
let project: ProjectCopy;
const pulumi = (args: string[], check = true) => project.pulumi(args, { check });
const stackContainers = () =>
  docker('ps', '-a', '--filter', `label=agentd.stack=${PREFIX}`, '--filter', 'label=agentd.role=workload', '--format', '{{.Names}} {{.ID}}')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ') as [string, string]);
const containerIds = () => Object.fromEntries(stackContainers());
const get = (path: string, key?: string) => rawRequest(gatewayPort, { path, headers: key ? { 'x-api-key': key } : {} });

beforeAll(async () => {
  docker('info', '--format', '{{.ServerVersion}}'); // fails the suite when no engine answers
  images = buildLocalImages();
  project = copyProject(STACK);
  work = project.dir;
  env = project.env;

  // The stand-in upstream: a container on its own network, which the egress proxy joins.
  const ca = buildStandinImage(join(work, 'standin'), 'standin', images.nodeBase, `${STANDIN}:latest`);
  spawnSync('docker', ['rm', '-f', STANDIN]);
  spawnSync('docker', ['network', 'rm', EXT_NET]);
  docker('network', 'create', '--label', `agentd.e2e=1`, EXT_NET);
  standinPort = await freePort();
  docker(
    'run',
    '-d',
    '--name',
    STANDIN,
    '--network',
    EXT_NET,
    '--network-alias',
    'standin',
    '-p',
    `127.0.0.1:${standinPort}:8443`,
    '--read-only',
    '--user',
    '10001:10001',
    `${STANDIN}:latest`,
    'node',
    '/app/server.mjs',
  );

  gatewayPort = await freePort();
  pulumi(['stack', 'init']);
  const set = project.set;
  set('agentd:target', 'docker');
  set('agentd:images.mode', 'local');
  set('agentd:gateway.port', String(gatewayPort));
  set('agentd:egress.upstreams.github', 'https://standin:8443');
  set('agentd:egress.caCertificates', readFileSync(ca.caFile, 'utf8'));
  set('agentd:docker.egressNetworks[0]', EXT_NET);
  // Global rate limits: the rate-limit service and Redis run as containers of the stack too.
  set('agentd:rateLimits.mode', 'global');
  set('egress:github-token', CREDENTIAL, true);
}, 900_000);

afterAll(async () => {
  if (work && docker('ps', '-a', '-q', '--filter', `label=agentd.stack=${PREFIX}`) !== '') pulumi(['destroy', '--yes', '--skip-preview'], false);
  spawnSync('docker', ['rm', '-f', STANDIN]);
  spawnSync('docker', ['network', 'rm', EXT_NET]);
}, 600_000);

describe('pulumi up into the local Docker engine', () => {
  it('deploys the stack and exports its endpoints, with the API keys as a secret', () => {
    pulumi(['up', '--yes', '--skip-preview']);
    outputs = JSON.parse(
      pulumi(['stack', 'output', '--json', '--show-secrets'])
        .out.split('\n')
        .filter((l) => !l.startsWith('warning'))
        .join('\n')
        .trim(),
    ) as never;
    expect(outputs.gatewayUrl).toBe(`http://127.0.0.1:${gatewayPort}`);
    expect(outputs.grpcEndpoint).toBe(`127.0.0.1:${gatewayPort}`);
    expect(outputs.policyRevision).toMatch(/^[0-9a-f]{20}$/);
    const plain = pulumi(['stack', 'output', '--json']).out;
    expect(plain).toContain('[secret]');
    expect(plain).not.toContain(outputs.apiKeys['admin']!);
    expect(Object.keys(containerIds()).sort()).toEqual([
      `${PREFIX}-agentd`,
      `${PREFIX}-bundles`,
      `${PREFIX}-egress`,
      `${PREFIX}-gateway`,
      `${PREFIX}-opa`,
      `${PREFIX}-ratelimit`,
      `${PREFIX}-redis`,
    ]);
  }, 900_000);

  it('runs every container hardened and publishes only the gateway, on loopback', () => {
    for (const [name] of stackContainers()) {
      const c = JSON.parse(docker('inspect', name))[0];
      expect(c.Config.User, name).toBe('10001:10001');
      expect(c.HostConfig.ReadonlyRootfs).toBe(true);
      expect(c.HostConfig.CapDrop).toEqual(['ALL']);
      expect(c.HostConfig.SecurityOpt).toContain('no-new-privileges:true');
      expect(c.HostConfig.RestartPolicy.Name).toBe('unless-stopped');
      expect(c.State.Health?.Status).toBe('healthy');
      const bindings = Object.values(c.HostConfig.PortBindings ?? {}).flat() as { HostIp: string; HostPort: string }[];
      if (name.endsWith('-gateway')) expect(bindings).toEqual([{ HostIp: '127.0.0.1', HostPort: String(gatewayPort) }]);
      else expect(bindings).toEqual([]);
    }
  });

  it('answers /health without a key and /api/v1/status with one, through the gateway', async () => {
    expect((await get('/health')).status).toBe(200);
    expect((await get('/api/v1/status')).status).toBe(401);
    const r = await get('/api/v1/status', outputs.apiKeys['admin']);
    expect(r.status).toBe(200);
    expect(r.json().version).toBeTruthy();
  });

  it("limits a key through the stack's rate-limit service (global mode): the limit is the service's, named by its tier", async () => {
    const r = await get('/api/v1/status', outputs.apiKeys['ci']);
    expect(r.status).toBe(200);
    // Only Envoy's global filter names the limit; the local one sends bare numbers.
    expect(r.headers['x-ratelimit-limit']).toContain('name="requests per minute of tier standard"');
    expect(Number(r.headers['x-ratelimit-remaining'])).toBeLessThan(120);
  });

  it('runs an http_fetch through egress to the stand-in, which receives the injected credential', async () => {
    await expectCredentialInjected({
      gateway: { port: gatewayPort },
      key: outputs.apiKeys['ci']!,
      standin: `https://127.0.0.1:${standinPort}`,
      path: '/repos/o/r/issues?e2e=1',
      credential: CREDENTIAL,
    });
  });

  it('right after: pulumi preview reports no changes (and npm run preview agrees)', () => {
    pulumi(['preview', '--expect-no-changes', '--diff']);
    const r = spawnSync(process.execPath, [join(work, 'scripts/preview.ts'), '--stack', STACK, '--expect-no-changes'], { cwd: work, env, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 300_000);

  it('invalid policy data stops pulumi preview and pulumi up before any resource changes', () => {
    const file = join(work, 'policy/data/clients.yaml');
    const good = readFileSync(file, 'utf8');
    const before = containerIds();
    writeFileSync(file, good.replace('rate_limit_tier: standard', 'rate_limit_tier: gold'));
    try {
      const preview = pulumi(['preview'], false);
      expect(preview.status).not.toBe(0);
      expect(preview.out).toContain('policy/data/clients.yaml: clients[1].rate_limit_tier: unknown tier "gold"');
      expect(pulumi(['up', '--yes', '--skip-preview'], false).status).not.toBe(0);
      expect(containerIds()).toEqual(before);
    } finally {
      writeFileSync(file, good);
    }
  }, 300_000);

  it('a policy change under traffic: only the bundle server is replaced, no request of another client fails, the change is in force within 5 s', async () => {
    const before = containerIds();
    const ci = outputs.apiKeys['ci']!;
    const admin = outputs.apiKeys['admin']!;
    expect((await get('/api/v1/status', ci)).status).toBe(200);
    // Steady traffic of a client the change does not concern while pulumi up runs.
    const { inForceMs, ...sent } = await disableClientUnderTraffic(project, {
      request: async () => (await get('/api/v1/status', admin)).status === 200,
      disabled: async () => (await get('/api/v1/status', ci)).status === 403,
      waitMs: 10_000,
    });
    console.log(`policy change under traffic: ${sent.sent} requests of an unaffected client, ${sent.failed} failed; in force ${inForceMs} ms after pulumi up`);
    expect(sent.sent).toBeGreaterThan(100);
    expect(sent.failed, 'requests of the unaffected client that failed').toBe(0);
    expect(inForceMs).toBeLessThanOrEqual(5_000);
    const after = containerIds();
    expect(after[`${PREFIX}-bundles`]).not.toBe(before[`${PREFIX}-bundles`]);
    for (const w of ['opa', 'gateway', 'egress', 'agentd']) expect(after[`${PREFIX}-${w}`], w).toBe(before[`${PREFIX}-${w}`]);
    const r = await get('/api/v1/status', ci);
    expect(r.status).toBe(403);
    expect(r.json().error.code).toBe('disabled_api_key');
  }, 600_000);

  it('npm run key -- rotate: a new key, the old one still the same client during the grace period; retire ends it; only the bundle server is replaced', async () => {
    const key = (...args: string[]) =>
      spawnSync(process.execPath, [join(work, 'scripts/key.ts'), '--stack', STACK, ...args], { cwd: work, env, encoding: 'utf8', timeout: 300_000 });
    const before = containerIds();
    const old = outputs.apiKeys['admin']!;
    const rotated = key('rotate', 'admin', '--grace', '1h');
    expect(rotated.status, rotated.stderr).toBe(0);
    const fresh = rotated.stdout.trim();
    expect(fresh).toMatch(/^agk_/);
    expect(fresh).not.toBe(old);
    expect(rotated.stderr).toMatch(/previous key works until \d{4}-\d{2}-\d{2}T/);
    // Both keys are admin (OPA answers the same client id, which rate limits and agentd see).
    await sleep(2000); // the bundle server was replaced: OPA polls it every second
    for (const k of [fresh, old]) {
      const r = await get('/api/v1/status', k);
      expect(r.status, r.body).toBe(200);
    }
    expect((await get('/api/v1/sandboxes', fresh)).status).toBe(200);
    const printed = key('admin');
    expect(printed.stdout.trim()).toBe(fresh);
    // A second rotation during the grace period is refused, with the way out.
    const again = key('rotate', 'admin');
    expect(again.status).toBe(1);
    expect(again.stderr).toContain('retire it first');
    const retired = key('retire', 'admin');
    expect(retired.status, retired.stderr).toBe(0);
    await sleep(2000);
    const refused = await get('/api/v1/status', old);
    expect([refused.status, refused.json().error.code]).toEqual([401, 'invalid_api_key']);
    expect((await get('/api/v1/status', fresh)).status).toBe(200);
    const after = containerIds();
    expect(after[`${PREFIX}-bundles`]).not.toBe(before[`${PREFIX}-bundles`]);
    for (const w of ['opa', 'gateway', 'egress', 'agentd']) expect(after[`${PREFIX}-${w}`], w).toBe(before[`${PREFIX}-${w}`]);
    outputs.apiKeys['admin'] = fresh;
  }, 600_000);

  it('a gateway setting under traffic: the running gateway takes it in place (nothing restarted), no request fails, in force within 5 s', async () => {
    const before = containerIds();
    const admin = outputs.apiKeys['admin']!;
    const big = JSON.stringify({ tier: 'standard', padding: 'x'.repeat(4096) });
    const post = () =>
      rawRequest(gatewayPort, { method: 'POST', path: '/api/v1/sandboxes', headers: { 'x-api-key': admin, 'content-type': 'application/json' }, body: big });
    expect((await post()).status).not.toBe(413);
    const traffic = steadyTraffic(async () => (await get('/api/v1/status', admin)).status === 200, 20);
    let inForceMs: number;
    let sent: { sent: number; failed: number };
    try {
      project.set('agentd:gateway.maxRequestBytes', '2048');
      await project.pulumiAsync(['up', '--yes', '--skip-preview']);
      const upDone = Date.now();
      while ((await post()).status !== 413 && Date.now() - upDone < 10_000) await sleep(100);
      inForceMs = Date.now() - upDone;
      await sleep(1000);
    } finally {
      sent = await traffic.stop();
    }
    console.log(`gateway setting under traffic: ${sent.sent} requests, ${sent.failed} failed; in force ${inForceMs} ms after pulumi up`);
    expect(sent.sent).toBeGreaterThan(100);
    expect(sent.failed, 'requests that failed during the change').toBe(0);
    expect(inForceMs).toBeLessThanOrEqual(5_000);
    expect(containerIds(), 'no workload container replaced').toEqual(before);
  }, 600_000);

  it('an egress credential rotated with pulumi config: the stand-in gets the new value, nothing restarted', async () => {
    const before = containerIds();
    const rotated = `${CREDENTIAL}-rotated`;
    project.set('egress:github-token', rotated, true);
    await project.pulumiAsync(['up', '--yes', '--skip-preview']);
    const key = outputs.apiKeys['admin']!; // ci was disabled by the policy change above
    const sbx = await rawRequest(gatewayPort, {
      method: 'POST',
      path: '/api/v1/sandboxes',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ tier: 'standard' }),
    });
    expect(sbx.status, sbx.body).toBe(201);
    const received = () => standinReceived(`https://127.0.0.1:${standinPort}`, '/repos/o/r/issues?rotated=1').map((r) => r.headers['authorization']);
    const intent = await rawRequest(gatewayPort, {
      method: 'POST',
      path: `/api/v1/sandboxes/${sbx.json().id}/intents`,
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ capability: 'http_fetch', params: { service: 'github', method: 'GET', path: '/repos/o/r/issues?rotated=1' } }),
    });
    expect(intent.status, intent.body).toBe(200);
    expect(received()).toEqual([`Bearer ${rotated}`]);
    expect(containerIds(), 'no workload container replaced').toEqual(before);
  }, 600_000);

  it('a policy signing key of the stack own (policy:signingKey, secret): OPA verifies with it and activates the bundle it signed; in plaintext it stops the preview', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    project.set('policy:signingKey', pem);
    const plain = pulumi(['preview'], false);
    expect(plain.status).not.toBe(0);
    expect(plain.out).toContain('policy:signingKey is stored in plaintext in the stack file; set it again as a secret');
    project.set('policy:signingKey', pem, true);
    expect(readFileSync(join(work, 'stacks', `Pulumi.${STACK}.yaml`), 'utf8')).not.toContain('PRIVATE KEY');
    const before = containerIds();
    pulumi(['up', '--yes', '--skip-preview']);
    // OPA restarts with the new public key; the bundle server serves the bundle signed by the private one.
    const copied = join(work, 'opa-verification-key.pem');
    docker('cp', `${PREFIX}-opa:/run/secrets/agentd/policy-verification-key.pem`, copied);
    expect(readFileSync(copied, 'utf8')).toBe(publicKey.export({ type: 'spki', format: 'pem' }).toString());
    expect(containerIds()[`${PREFIX}-opa`]).not.toBe(before[`${PREFIX}-opa`]);
    expect(containerIds()[`${PREFIX}-gateway`], 'the proxies stay').toBe(before[`${PREFIX}-gateway`]);
  }, 600_000);

  it('right after the new key: OPA has the signed policy active, and decides', async () => {
    const deadline = Date.now() + 30_000;
    let status = 0;
    while (Date.now() < deadline && status !== 200) {
      status = (await get('/api/v1/status', outputs.apiKeys['admin']!)).status;
      if (status !== 200) await sleep(500);
    }
    expect(status).toBe(200);
    expect((await get('/api/v1/status', 'agk_not-a-key')).status).toBe(401);
  }, 60_000);

  it('a stack other than dev without a passphrase of its own stops before anything is encrypted, with the fix', () => {
    // The shipped staging stack, as in the repository (the project copy has only its own stack).
    cpSync(join(REPO_ROOT, 'stacks/Pulumi.staging.yaml'), join(work, 'stacks/Pulumi.staging.yaml'));
    const bare = { ...env };
    delete bare['PULUMI_CONFIG_PASSPHRASE'];
    delete bare['PULUMI_CONFIG_PASSPHRASE_FILE'];
    const r = spawnSync(process.execPath, [join(work, 'scripts/preview.ts'), '--stack', 'staging'], { cwd: work, env: bare, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(2);
    expect(r.stderr).toContain('stack staging has no passphrase: nothing was encrypted or changed');
    expect(r.stderr).toContain('PULUMI_CONFIG_PASSPHRASE_FILE');
    expect(pulumi(['stack', 'ls', '--json']).stdout).not.toContain('"staging"');
    // The public development passphrase does not pass for another stack either, even set on purpose.
    const pub = spawnSync(process.execPath, [join(work, 'scripts/preview.ts'), '--stack', 'staging'], {
      cwd: work,
      env: { ...bare, PULUMI_CONFIG_PASSPHRASE: 'agentd-local-development' },
      encoding: 'utf8',
    });
    expect(pub.status).toBe(2);
    expect(pub.stderr).toContain('public development passphrase');
  });

  it('publishing beyond loopback without TLS stops pulumi preview, naming the fix; nothing changes', () => {
    const before = containerIds();
    project.set('agentd:gateway.bindAddress', '0.0.0.0');
    try {
      const preview = pulumi(['preview'], false);
      expect(preview.status).not.toBe(0);
      expect(preview.out).toContain('agentd:gateway.bindAddress is 0.0.0.0');
      expect(preview.out).toContain('has no TLS');
      expect(preview.out).toContain('gateway:tlsCertificate');
      expect(containerIds()).toEqual(before);
    } finally {
      project.set('agentd:gateway.bindAddress', '127.0.0.1');
    }
  }, 300_000);

  it('with a certificate in secret stack config the gateway serves only HTTPS (HTTP/1.1, HTTP/2, gRPC), switched in place: nothing is replaced', async () => {
    const tlsDir = join(work, 'gateway-ca');
    mkdirSync(tlsDir);
    const ca = makeTestCa(tlsDir, 'localhost');
    project.set('gateway:tlsCertificate', readFileSync(ca.certFile, 'utf8'), true);
    project.set('gateway:tlsPrivateKey', readFileSync(ca.keyFile, 'utf8'), true);
    const stackFile = readFileSync(join(work, 'stacks', `Pulumi.${STACK}.yaml`), 'utf8');
    expect(stackFile).not.toContain('PRIVATE KEY');
    const before = containerIds();
    pulumi(['up', '--yes', '--skip-preview']);
    // The listener and its certificate are live files: the running gateway switches to TLS in place.
    expect(containerIds()).toEqual(before);
    expect(pulumi(['stack', 'output', 'gatewayUrl']).stdout.trim()).toBe(`https://127.0.0.1:${gatewayPort}`);
    const https = () =>
      spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', ca.caFile, `https://localhost:${gatewayPort}/health`], { encoding: 'utf8' })
        .stdout;
    for (let i = 0; i < 50 && https() !== '200'; i++) await sleep(100);
    expect(https()).toBe('200');
    const admin = outputs.apiKeys['admin']!;
    for (const [flag, version] of [
      ['--http1.1', '1.1'],
      ['--http2', '2'],
    ] as const) {
      const args = ['--cacert', ca.caFile, '--resolve', `localhost:${gatewayPort}:127.0.0.1`, flag, '-H', `x-api-key: ${admin}`];
      expect(curlStatusAndVersion([...args, `https://localhost:${gatewayPort}/api/v1/status`]), flag).toBe(`200 ${version}`);
    }
    const rpc = new AgentdGrpc(`127.0.0.1:${gatewayPort}`, { caFile: ca.caFile, servername: 'localhost' });
    try {
      expect(await rpc.call('Status', {}, admin)).toMatchObject({ ok: true });
      expect(await rpc.call('Status', {})).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
    } finally {
      rpc.close();
    }
    await expect(get('/api/v1/status', admin)).rejects.toThrow();
  }, 600_000);

  it('pulumi destroy leaves no container, network or volume of the stack', () => {
    pulumi(['destroy', '--yes', '--skip-preview']);
    expect(docker('ps', '-a', '-q', '--filter', `label=agentd.stack=${PREFIX}`)).toBe('');
    expect(docker('network', 'ls', '-q', '--filter', `label=agentd.stack=${PREFIX}`)).toBe('');
    expect(docker('volume', 'ls', '-q', '--filter', `label=agentd.stack=${PREFIX}`)).toBe('');
  }, 600_000);
});
