// scripts/setup.ts for real, in a tool cache of its own: a Pulumi CLI already on PATH (a copy of
// the built one, elsewhere) is used and nothing is built; a provider in ~/.pulumi/plugins is
// used; an official release (served here by a stand-in for get.pulumi.com) is downloaded and
// checked against its published SHA-256, and a mismatch is refused. `--no-build` makes "would
// have built it" a failure the tests can see.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { pinnedVersions, REPO_ROOT, toolPath } from '../../scripts/local/tools.ts';

const v = pinnedVersions();
const PULUMI = v['PULUMI_VERSION']!;
const REAL_CACHE = process.env['AGENTD_TOOLS'] ?? join(homedir(), '.cache/agentd/tools');
const work = mkdtempSync(join(tmpdir(), 'agentd-setup-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** PATH without the real tool cache: this machine as it would be without our builds. */
const bareMachinePath = (process.env['PATH'] ?? '')
  .split(delimiter)
  .filter((d) => !d.startsWith(REAL_CACHE))
  .join(delimiter);

/** A fresh, empty tool cache and Pulumi home; runs scripts/setup.ts in them. */
function sandbox(name: string, extraPath: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const root = join(work, name);
  const tools = join(root, 'tools');
  const home = join(root, 'pulumi-home');
  mkdirSync(tools, { recursive: true });
  mkdirSync(home, { recursive: true });
  const childEnv = { ...process.env, AGENTD_TOOLS: tools, PULUMI_HOME: home, PATH: [...extraPath, bareMachinePath].join(delimiter), ...env };
  const setup = (...args: string[]) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/setup.ts'), ...args], {
      cwd: REPO_ROOT,
      env: childEnv,
      encoding: 'utf8',
      timeout: 300_000,
    });
    return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
  };
  return { root, tools, home, env: childEnv, setup };
}

/** scripts/setup.ts without blocking this event loop (a server of this test answers it). */
function setupAsync(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'scripts/setup.ts'), ...args], { cwd: REPO_ROOT, env });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    child.on('close', (status) => resolve({ status, out }));
  });
}

/** A copy of the built Pulumi CLI (with its language host) in a directory of its own. */
function pulumiCopy(dir: string): string {
  const built = dirname(toolPath('pulumi'));
  mkdirSync(dir, { recursive: true });
  for (const f of ['pulumi', 'pulumi-language-nodejs', 'pulumi-resource-pulumi-nodejs']) cpSync(join(built, f), join(dir, f));
  return dir;
}

describe('setup uses what the machine has', () => {
  it('a Pulumi CLI on PATH: linked into the cache and used, no Pulumi built', () => {
    const copy = pulumiCopy(join(work, 'usr-local-bin'));
    const s = sandbox('pulumi-on-path', [copy]);
    const r = s.setup('--no-build', 'pulumi');
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain(`pulumi: using ${copy}/pulumi (${PULUMI}), found on this machine`);
    // Nothing was built: no sources fetched, no build directory; the cache entry is a link.
    expect(readdirSync(join(s.tools, 'pulumi'))).toEqual([PULUMI]);
    const entry = join(s.tools, 'pulumi', PULUMI, 'bin');
    expect(lstatSync(join(entry, 'pulumi')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(entry, 'pulumi'))).toBe(join(copy, 'pulumi'));
    expect(readlinkSync(join(entry, 'pulumi-language-nodejs'))).toBe(join(copy, 'pulumi-language-nodejs'));
    // The npm scripts' PATH (scripts/lib.sh) runs that copy.
    const used = spawnSync('bash', ['-c', 'source scripts/lib.sh && readlink -f "$(command -v pulumi)" && pulumi version'], {
      cwd: REPO_ROOT,
      env: s.env,
      encoding: 'utf8',
    });
    expect(used.stdout.trim().split('\n')).toEqual([join(copy, 'pulumi'), `v${PULUMI}`]);
    // --explain says where it comes from.
    const explained = s.setup('--explain', 'pulumi');
    expect(explained.out).toContain(`pulumi ${PULUMI}`);
    expect(explained.out).toContain(`cache: linked to the machine's ${copy}/pulumi (${PULUMI}), checked on every run`);

    // The copy goes away: the link is dropped, and only a build would do now (refused by --no-build).
    rmSync(copy, { recursive: true });
    const gone = s.setup('--no-build', 'pulumi');
    expect(gone.status).toBe(1);
    expect(gone.out).toContain('the copy linked earlier no longer does');
    expect(gone.out).toContain('pulumi would have to be built from source, and --no-build was given');
    expect(existsSync(join(s.tools, 'pulumi', PULUMI))).toBe(false);
  });

  it('a Pulumi CLI older than the SDK is not used, and --explain says why', () => {
    const old = join(work, 'old-pulumi');
    mkdirSync(old);
    writeFileSync(join(old, 'pulumi'), '#!/bin/sh\necho v3.100.0\n', { mode: 0o755 });
    writeFileSync(join(old, 'pulumi-language-nodejs'), '#!/bin/sh\n', { mode: 0o755 });
    const s = sandbox('pulumi-too-old', [old], { AGENTD_RELEASES_PULUMI: 'http://127.0.0.1:9/unreachable' });
    const explained = s.setup('--explain', 'pulumi');
    expect(explained.status).toBe(0);
    expect(explained.out).toContain(`not on this machine: ${old}/pulumi: pulumi v3.100.0 is older than ${PULUMI}, the @pulumi/pulumi SDK this program uses`);
    expect(explained.out).toContain(`built from github.com/pulumi/pulumi/pkg/v3 (Go module proxy)`);
    expect(s.setup('--no-build', 'pulumi').status).toBe(1);
  });

  it('Envoy, OPA (the -envoy build), Prometheus, etcd and Kubernetes on PATH at the pinned versions are used', () => {
    const bin = join(work, 'opt-bin');
    mkdirSync(bin);
    const real: Record<string, string> = {
      envoy: join(REAL_CACHE, 'envoy', v['ENVOY_VERSION']!, 'bin/envoy'),
      opa: join(REAL_CACHE, 'opa', v['OPA_ENVOY_VERSION']!, 'bin/opa'),
      prometheus: join(REAL_CACHE, 'prometheus', v['PROMETHEUS_VERSION']!, 'bin/prometheus'),
      promtool: join(REAL_CACHE, 'prometheus', v['PROMETHEUS_VERSION']!, 'bin/promtool'),
      etcd: join(REAL_CACHE, 'etcd', v['ETCD_VERSION']!, 'bin/etcd'),
      'kube-apiserver': join(REAL_CACHE, 'kubernetes', v['KUBERNETES_VERSION']!, 'bin/kube-apiserver'),
      'kube-controller-manager': join(REAL_CACHE, 'kubernetes', v['KUBERNETES_VERSION']!, 'bin/kube-controller-manager'),
      kubectl: join(REAL_CACHE, 'kubernetes', v['KUBERNETES_VERSION']!, 'bin/kubectl'),
    };
    for (const [name, path] of Object.entries(real)) symlinkSync(path, join(bin, name));
    const s = sandbox('tools-on-path', [bin]);
    const r = s.setup('--no-build', 'envoy', 'opa', 'prometheus', 'etcd', 'kube-apiserver');
    expect(r.status, r.out).toBe(0);
    for (const [tool, exe, version] of [
      ['envoy', 'envoy', v['ENVOY_VERSION']],
      ['opa', 'opa', v['OPA_ENVOY_VERSION']],
      ['prometheus', 'prometheus', v['PROMETHEUS_VERSION']],
      ['etcd', 'etcd', v['ETCD_VERSION']],
      ['kube-apiserver', 'kube-apiserver', v['KUBERNETES_VERSION']],
    ]) {
      expect(r.out).toContain(`${tool}: using ${join(bin, exe!)} (${version}), found on this machine`);
    }
    expect(readlinkSync(join(s.tools, 'prometheus', v['PROMETHEUS_VERSION']!, 'bin/promtool'))).toBe(join(bin, 'promtool'));
  });

  it("a provider in Pulumi's plugin directory at the pinned version is used", () => {
    const s = sandbox('plugin-dir');
    const ver = v['PULUMI_RANDOM_VERSION']!;
    const plugin = join(s.home, 'plugins', `resource-random-v${ver}`);
    mkdirSync(plugin, { recursive: true });
    cpSync(join(REAL_CACHE, 'pulumi-random', ver, 'bin/pulumi-resource-random'), join(plugin, 'pulumi-resource-random'));
    const r = s.setup('--no-build', 'pulumi-random');
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain(`pulumi-random: using ${plugin}/pulumi-resource-random (${ver}), found on this machine`);
    // Another version there does not count.
    const other = sandbox('plugin-dir-other-version');
    mkdirSync(join(other.home, 'plugins', 'resource-random-v4.0.0'), { recursive: true });
    const refused = other.setup('--explain', 'pulumi-random');
    expect(refused.out).toContain(`not in ${join(other.home, 'plugins')} at v${ver}`);
  });
});

describe('setup tries the official release before a build', () => {
  /** A stand-in for get.pulumi.com/releases/sdk: the release tarball of the built CLI and a checksum list. */
  async function releaseServer(checksum: (real: string) => string) {
    const dir = join(work, `release-${Math.random().toString(16).slice(2)}`);
    pulumiCopy(join(dir, 'stage', 'pulumi'));
    const tarball = `pulumi-v${PULUMI}-linux-x64.tar.gz`;
    const tar = spawnSync('tar', ['-czf', join(dir, tarball), '-C', join(dir, 'stage'), 'pulumi']);
    expect(tar.status).toBe(0);
    const sum = createHash('sha256')
      .update(readFileSync(join(dir, tarball)))
      .digest('hex');
    writeFileSync(join(dir, `pulumi-${PULUMI}-checksums.txt`), `${'0'.repeat(64)}  pulumi-v${PULUMI}-darwin-arm64.tar.gz\n${checksum(sum)}  ${tarball}\n`);
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url!);
      const file = join(dir, req.url!.replace(/^\/releases\/sdk\//, ''));
      if (!existsSync(file) || req.url!.includes('..')) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200).end(readFileSync(file));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/releases/sdk`;
    return { base, requests, close: () => new Promise<void>((r) => server.close(() => r())) };
  }

  it('downloads the release, checks its SHA-256 and installs it (no build)', async () => {
    const release = await releaseServer((real) => real);
    try {
      const s = sandbox('official-release', [], { AGENTD_RELEASES_PULUMI: release.base });
      // Asynchronously: the stand-in server answers on this event loop.
      const r = await setupAsync(s.env, '--no-build', 'pulumi');
      expect(r.status, r.out).toBe(0);
      expect(r.out).toContain(`pulumi: trying the official release ${release.base}/pulumi-v${PULUMI}-linux-x64.tar.gz (SHA-256 checked)`);
      expect(release.requests).toEqual([`/releases/sdk/pulumi-${PULUMI}-checksums.txt`, `/releases/sdk/pulumi-v${PULUMI}-linux-x64.tar.gz`]);
      const bin = join(s.tools, 'pulumi', PULUMI, 'bin');
      expect(lstatSync(join(bin, 'pulumi')).isFile()).toBe(true);
      expect(spawnSync(join(bin, 'pulumi'), ['version'], { encoding: 'utf8' }).stdout.trim()).toBe(`v${PULUMI}`);
      expect(existsSync(join(bin, 'pulumi-language-nodejs'))).toBe(true);
      expect(JSON.parse(readFileSync(join(s.tools, 'pulumi', PULUMI, '.source'), 'utf8'))).toMatchObject({ kind: 'official', version: PULUMI });
    } finally {
      await release.close();
    }
  }, 300_000);

  it('refuses a download whose SHA-256 is not the published one, and installs nothing', async () => {
    const release = await releaseServer(() => 'f'.repeat(64));
    try {
      const s = sandbox('official-bad-sum', [], { AGENTD_RELEASES_PULUMI: release.base });
      const r = await setupAsync(s.env, '--no-build', 'pulumi');
      expect(r.status).toBe(1);
      expect(r.out).toContain(`says ${'f'.repeat(64)}: refused`);
      expect(r.out).toContain('pulumi would have to be built from source, and --no-build was given');
      expect(readdirSync(join(s.tools, 'pulumi'))).toEqual([]);
    } finally {
      await release.close();
    }
  }, 300_000);
});

describe('setup builds what it must, side by side, with progress', () => {
  it('a build and a download at once: the plan, a line per step, progress while they run, the total', async () => {
    // An address that never resolves stands in for a machine without internet access.
    const s = sandbox('builds', [], { AGENTD_RELEASES_OPA: 'https://releases.invalid/opa', AGENTD_SETUP_PROGRESS_SECONDS: '2' });
    const r = await setupAsync(s.env, 'opa', 'envoy');
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('opa: the official release https://releases.invalid/opa/');
    expect(r.out).toContain('is out of reach (releases.invalid does not resolve here');
    expect(r.out).toMatch(/\[setup\] opa, envoy: 2 to install: opa \(build, ≈2 min\), envoy \(download, ≈0.5 min\); expected ≈2 min/);
    expect(r.out).toContain('step 1/2: opa: built from OPA and the plugin module in scripts/tools/opa-envoy (Go module proxy) (expected ≈2 min)');
    // The download does not wait for the build.
    expect(r.out.indexOf('step 2/2: envoy: downloaded')).toBeLessThan(r.out.indexOf('step 1/2: opa ready in'));
    expect(r.out).toMatch(/\[setup\] \d+ s elapsed, [01] of 2 done: /);
    expect(r.out).toMatch(/step 2\/2: envoy ready in \d+ s/);
    expect(r.out).toMatch(/opa, envoy: 2 installed in \d+/);
    expect(spawnSync(join(s.tools, 'opa', v['OPA_ENVOY_VERSION']!, 'bin/opa'), ['version'], { encoding: 'utf8' }).stdout).toContain(
      'Build Commit: agentd-envoy_ext_authz_grpc',
    );
  }, 600_000);
});

describe('setup --explain', () => {
  it('for a command and stack: what it needs, and what it does not and who does', () => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/setup.ts'), '--explain', '--for', 'up', '--stack', 'staging'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const [needed, unneeded] = r.stdout.split('Not needed for this, so not installed:\n') as [string, string];
    expect(needed).toContain('Tools for npm run up (stack staging: kubernetes)');
    for (const t of ['node', 'pulumi', 'pulumi-random', 'pulumi-kubernetes']) expect(needed).toMatch(new RegExp(`^  ${t} `, 'm'));
    for (const t of ['pulumi-docker', 'envoy', 'opa', 'prometheus', 'docker-engine', 'etcd', 'kube-apiserver', 'ratelimit', 'redis'])
      expect(unneeded).toMatch(new RegExp(`^  ${t} +only for `, 'm'));
    expect(unneeded).toMatch(/^ {2}prometheus +only for npm test, npm run bench$/m);
  });
});
