// The tool table's decisions (scripts/toolchain.ts), without installing anything: which tools
// each command needs, which found versions will do, the official release files and checksums,
// and how builds share the cores.
import { describe, expect, it } from 'vitest';
import {
  buildOrder,
  buildSlots,
  checksumFor,
  opaVersion,
  pulumiAccepts,
  TOOL_NAMES,
  TOOLS,
  toolsFor,
  versionAccepted,
  whoNeeds,
} from '../../scripts/toolchain.ts';

const linux = { os: 'linux', arch: 'amd64' } as const;

describe('toolsFor: each command installs only what it uses', () => {
  it('npm run up of a Docker stack with local images: the CLI, random and docker providers, Envoy, OPA, Node, the rate-limit service, Redis, an engine; no Kubernetes, no test tools', () => {
    expect(toolsFor('up', { target: 'docker', localImages: true })).toEqual([
      'node',
      'pulumi',
      'pulumi-random',
      'pulumi-docker',
      'envoy',
      'opa',
      'docker-engine',
      'ratelimit',
      'redis',
    ]);
  });

  it('a Kubernetes stack with upstream images: the Kubernetes provider, no Docker provider, engine, Envoy or OPA', () => {
    expect(toolsFor('up', { target: 'kubernetes', localImages: false })).toEqual(['node', 'pulumi', 'pulumi-random', 'pulumi-kubernetes']);
    expect(toolsFor('preview', { target: 'kubernetes', localImages: false })).toEqual(['node', 'pulumi', 'pulumi-random', 'pulumi-kubernetes', 'opa']);
  });

  it('preview --without-images and destroy build no image; only the preview can do without an engine, and it asks OPA for its decision diff', () => {
    const dev = { target: 'docker', localImages: true } as const;
    expect(toolsFor('preview', dev, { withoutImages: true })).toEqual(['node', 'pulumi', 'pulumi-random', 'pulumi-docker', 'opa']);
    expect(toolsFor('destroy', dev)).toEqual(['node', 'pulumi', 'pulumi-random', 'pulumi-docker', 'docker-engine']);
    expect(toolsFor('preview', dev)).toContain('envoy');
  });

  it('npm test, bench and a bare setup take every tool; dev and policy no Pulumi', () => {
    for (const c of ['test', 'bench', 'setup'] as const) expect(toolsFor(c)).toEqual([...TOOL_NAMES]);
    expect(toolsFor('dev')).toEqual(['node', 'envoy', 'opa']);
    expect(toolsFor('policy')).toEqual(['node', 'opa']);
  });

  it('the rate-limit service and Redis: npm test and bench, and the local images (their images are built with the others); not dev or policy', () => {
    for (const t of ['ratelimit', 'redis'] as const) {
      expect(toolsFor('test')).toContain(t);
      expect(toolsFor('bench')).toContain(t);
      expect(toolsFor('up', { target: 'docker', localImages: true })).toContain(t);
      expect(toolsFor('up', { target: 'kubernetes', localImages: false })).not.toContain(t);
      expect(toolsFor('dev')).not.toContain(t);
      expect(whoNeeds(t)).toBe('up/preview of stacks with local images, npm test, npm run bench');
    }
  });

  it('says who needs a tool a command does not', () => {
    expect(whoNeeds('prometheus')).toBe('npm test, npm run bench');
    expect(whoNeeds('pulumi-kubernetes')).toBe('up/preview/destroy/key of Kubernetes stacks, npm test, npm run bench');
    expect(whoNeeds('opa')).toBe(
      'up/preview of stacks with local images, every preview (its decision diff), npm run dev, npm run policy, npm test, npm run bench',
    );
  });
});

describe('a copy found on the machine', () => {
  it('the Pulumi CLI: any 3.x at least as new as the SDK', () => {
    expect(pulumiAccepts('3.276.0', '3.276.0')).toBeUndefined();
    expect(pulumiAccepts('3.280.1', '3.276.0')).toBeUndefined();
    expect(pulumiAccepts('3.300.0', '3.276.0')).toBeUndefined();
    expect(pulumiAccepts('3.275.9', '3.276.0')).toBe('pulumi v3.275.9 is older than 3.276.0, the @pulumi/pulumi SDK this program uses');
    expect(pulumiAccepts('3.100.0', '3.276.0')).toContain('older than 3.276.0');
    expect(pulumiAccepts('4.0.0', '3.276.0')).toContain('not a 3.x CLI');
  });

  it('every other tool: exactly the pinned version', () => {
    expect(versionAccepted('envoy', '1.40.0', '1.40.0')).toBeUndefined();
    expect(versionAccepted('envoy', '1.40.1', '1.40.0')).toBe('envoy 1.40.1 is not the pinned 1.40.0');
  });

  it('OPA: the -envoy build (upstream, or ours naming the plugin), never a stock OPA', () => {
    expect(opaVersion('Version: 1.19.1-envoy\nBuild Commit: abc\n')).toBe('1.19.1-envoy');
    expect(opaVersion('Version: 1.19.1-envoy-2\n')).toBe('1.19.1-envoy');
    expect(opaVersion('Version: 1.19.1\nBuild Commit: agentd-envoy_ext_authz_grpc-84327e83726d\n')).toBe('1.19.1-envoy');
    expect(opaVersion('Version: 1.19.1\nBuild Commit: 0123abc\n')).toBe('1.19.1 (a stock OPA, without the Envoy plugin)');
    expect(opaVersion('not opa')).toBeUndefined();
  });

  it('the version probes read what the tools print', () => {
    const probe = (tool: keyof typeof TOOLS, bin: string, out: string) => {
      const m = TOOLS[tool].onMachine;
      if (m?.where !== 'path') throw new Error(`${tool} is not looked up on PATH`);
      return m.probes[bin]!.parse(out);
    };
    expect(probe('pulumi', 'pulumi', 'v3.276.0\n')).toBe('3.276.0');
    expect(probe('envoy', 'envoy', 'envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n')).toBe('1.40.0');
    expect(probe('prometheus', 'promtool', 'promtool, version 3.16.0 (branch: HEAD, revision: v0.316.0)\n')).toBe('3.16.0');
    expect(probe('etcd', 'etcd', 'etcd Version: 3.7.3\nGit SHA: v3.7.3\n')).toBe('3.7.3');
    expect(probe('kube-apiserver', 'kubectl', 'Client Version: v1.37.2\nKustomize Version: v5.7.1\n')).toBe('1.37.2');
    expect(TOOLS['pulumi-docker'].onMachine).toEqual({ where: 'plugins', plugin: 'docker' });
  });

  it("ratelimit is always the pinned build (no version flag to check a copy with); Redis, like the Docker engine, is the machine's package, unpinned", () => {
    expect(TOOLS.ratelimit).toMatchObject({ versionKey: 'RATELIMIT_VERSION', cacheDir: 'ratelimit', binaries: ['ratelimit'] });
    expect(TOOLS.ratelimit.onMachine).toBeUndefined();
    expect(TOOLS.ratelimit.official).toBeUndefined();
    expect(TOOLS.ratelimit.fallback).toMatchObject({ script: 'ratelimit', cpuBound: true });
    for (const t of ['redis', 'docker-engine'] as const) {
      expect(TOOLS[t].versionKey).toBeUndefined();
      expect(TOOLS[t].binaries).toEqual([]);
      expect(TOOLS[t].fallback.cpuBound).toBe(false);
    }
    expect(TOOLS.redis.fallback.script).toBe('redis');
  });
});

describe('official releases', () => {
  const files = (tool: keyof typeof TOOLS, version: string, base: string) => {
    const o = TOOLS[tool].official;
    if (o?.kind !== 'files') throw new Error(`${tool} has no release files`);
    return o.files(version, linux, base);
  };

  it('the Pulumi CLI: the release tarball and its checksum list, with the language host inside', () => {
    expect(files('pulumi', '3.276.0', 'https://get.pulumi.com/releases/sdk')).toEqual([
      {
        url: 'https://get.pulumi.com/releases/sdk/pulumi-v3.276.0-linux-x64.tar.gz',
        sha256Url: 'https://get.pulumi.com/releases/sdk/pulumi-3.276.0-checksums.txt',
        checksumName: 'pulumi-v3.276.0-linux-x64.tar.gz',
        format: 'tar.gz',
        members: {
          pulumi: 'pulumi/pulumi',
          'pulumi-language-nodejs': 'pulumi/pulumi-language-nodejs',
          'pulumi-resource-pulumi-nodejs': 'pulumi/pulumi-resource-pulumi-nodejs',
        },
      },
    ]);
  });

  it('Prometheus, etcd, OPA-Envoy and Kubernetes: their release files, each with a published SHA-256', () => {
    const base = 'https://example.test';
    expect(files('prometheus', '3.16.0', base)[0]!.url).toBe(`${base}/v3.16.0/prometheus-3.16.0.linux-amd64.tar.gz`);
    expect(files('etcd', '3.7.3', base)[0]!.sha256Url).toBe(`${base}/v3.7.3/SHA256SUMS`);
    expect(files('opa', '1.19.1-envoy', base)[0]!.url).toBe(`${base}/v1.19.1-envoy/opa_envoy_linux_amd64_static`);
    expect(files('kube-apiserver', '1.37.2', base).map((f) => f.sha256Url)).toEqual(
      ['kube-apiserver', 'kube-controller-manager', 'kubectl'].map((b) => `${base}/v1.37.2/bin/linux/amd64/${b}.sha256`),
    );
    expect(TOOLS['pulumi-kubernetes'].official).toEqual({ kind: 'pulumi-plugin', host: 'api.github.com', plugin: 'kubernetes' });
  });

  it('checksumFor reads a checksum list or a lone digest, and nothing else', () => {
    const a = 'a'.repeat(64);
    const b = 'B'.repeat(64);
    expect(checksumFor(`${a}  other.tar.gz\n${b}  pulumi-v3.276.0-linux-x64.tar.gz\n`, 'pulumi-v3.276.0-linux-x64.tar.gz')).toBe('b'.repeat(64));
    expect(checksumFor(`${a} *dir/etcd.tar.gz\n`, 'etcd.tar.gz')).toBe(a);
    expect(checksumFor(`${a}\n`, 'kubectl')).toBe(a);
    expect(checksumFor(`${a}  other\n${b}  more\n`, 'kubectl')).toBeUndefined();
    expect(checksumFor('<html>not found</html>', 'kubectl')).toBeUndefined();
  });
});

describe('builds side by side', () => {
  it('two builds on two cores, each with one Go package at a time; a requested number wins', () => {
    expect(buildSlots(2)).toEqual({ jobs: 2, goParallel: 1 });
    expect(buildSlots(8)).toEqual({ jobs: 3, goParallel: 2 });
    expect(buildSlots(2, 1)).toEqual({ jobs: 1, goParallel: 2 });
  });

  it('longest first', () => {
    expect(buildOrder(['pulumi-random', 'pulumi', 'pulumi-kubernetes', 'opa'])).toEqual(['pulumi-kubernetes', 'pulumi', 'pulumi-random', 'opa']);
  });
});
