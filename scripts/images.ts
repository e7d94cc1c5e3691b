// The air-gapped image path: builds every runtime image locally from the pinned tools (this
// machine reaches no container registry), tags each with a hash of its content, and writes
// build/images.json for stacks whose config says `agentd:images: {mode: local}`.
//
//   node scripts/images.ts            (npm run up does it when the stack needs local images)
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'build/images');
export const IMAGES_MANIFEST = join(ROOT, 'build/images.json');
const TOOLS = process.env['AGENTD_TOOLS'] ?? join(process.env['HOME'] ?? '/root', '.cache/agentd/tools');
const versions = Object.fromEntries(
  readFileSync(join(ROOT, 'scripts/versions.env'), 'utf8')
    .split('\n')
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => l.split('=') as [string, string]),
);

const log = (msg: string) => process.stderr.write(`[images] ${msg}\n`);
const docker = (args: string[], opts: { quiet?: boolean } = {}) =>
  execFileSync('docker', args, {
    env: { ...process.env, DOCKER_BUILDKIT: '0' },
    stdio: opts.quiet ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });

/** The binary and its shared libraries (from ldd), placed at the same paths in rootfs. */
function addBinary(rootfs: string, binary: string, at: string): void {
  place(rootfs, binary, at);
  let ldd = '';
  try {
    ldd = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return; // "not a dynamic executable": a static binary needs nothing else
  }
  for (const m of ldd.matchAll(/(\/[^\s]+) \(0x/g)) place(rootfs, m[1]!, m[1]!);
}

function place(rootfs: string, from: string, at: string): void {
  const dest = join(rootfs, at);
  mkdirSync(dirname(dest), { recursive: true });
  rmSync(dest, { force: true });
  const real = realpathSync(from);
  try {
    linkSync(real, dest);
  } catch {
    copyFileSync(real, dest);
  }
}

function hashDir(dir: string, h = createHash('sha256'), base = dir): ReturnType<typeof createHash> {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) hashDir(p, h, base);
    else h.update(relative(base, p)).update('\0').update(readFileSync(p)).update('\0');
  }
  return h;
}

/** An image of a binary laid out by `fill`; `entrypoint` for an image run without a command (the pause image). */
function buildRootfsImage(name: string, fill: (rootfs: string) => void, entrypoint?: string): string {
  const ctx = join(OUT, name);
  rmSync(ctx, { recursive: true, force: true });
  const rootfs = join(ctx, 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  fill(rootfs);
  place(rootfs, join(OUT, 'healthcheck'), '/usr/local/bin/agentd-healthcheck');
  if (existsSync('/etc/ssl/certs/ca-certificates.crt')) place(rootfs, '/etc/ssl/certs/ca-certificates.crt', '/etc/ssl/certs/ca-certificates.crt');
  const dockerfile = readFileSync(join(ROOT, 'scripts/images/rootfs.Dockerfile'), 'utf8');
  writeFileSync(join(ctx, 'Dockerfile'), entrypoint ? `${dockerfile}ENTRYPOINT ${JSON.stringify([entrypoint])}\n` : dockerfile);
  const tag = `agentd-local/${name}:${hashDir(ctx).digest('hex').slice(0, 12)}`;
  buildIfMissing(tag, ctx, []);
  return tag;
}

/** A static Go program of scripts/images/ (healthcheck, pause), built into OUT. */
function goBuild(dir: string, out: string): void {
  execFileSync('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', out, '.'], { cwd: dir, env: { ...process.env, CGO_ENABLED: '0' }, stdio: 'inherit' });
}

function buildIfMissing(tag: string, ctx: string, args: string[]): void {
  try {
    docker(['image', 'inspect', tag], { quiet: true });
    log(`${tag}: present`);
    return;
  } catch {
    // not built yet
  }
  log(`building ${tag}`);
  docker(['build', '-q', '-t', tag, ...args, ctx]);
}

export interface LocalImages {
  readonly envoy: string;
  readonly opa: string;
  readonly nodeBase: string;
  readonly agentd: string;
  readonly ratelimit: string;
  readonly redis: string;
}

/**
 * Runs `build` holding build/images/.lock: the suites that build images (the Docker and the node
 * e2e) run side by side, and each build empties and refills the same directories. A lock whose
 * holder is gone is taken over.
 */
function withBuildLock<T>(build: () => T): T {
  mkdirSync(OUT, { recursive: true });
  const lock = join(OUT, '.lock');
  const deadline = Date.now() + 20 * 60_000;
  let waited = false;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = Number(readFileSync(lock, 'utf8'));
    if (!holderAlive(holder, lock)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${lock}: process ${holder} has been building images for 20 minutes; stop it or remove the lock`);
    if (!waited) log(`waiting for process ${holder}, which is building images`);
    waited = true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 250);
  }
  try {
    return build();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Whether the lock's holder runs; a lock without a pid is being written, unless it is old. */
function holderAlive(pid: number, lock: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) {
    try {
      return Date.now() - statSync(lock).mtimeMs < 5_000;
    } catch {
      return false;
    }
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function buildLocalImages(): LocalImages {
  return withBuildLock(buildLocalImagesLocked);
}

function buildLocalImagesLocked(): LocalImages {
  mkdirSync(OUT, { recursive: true });
  log('building agentd-healthcheck');
  goBuild(join(ROOT, 'scripts/images/healthcheck'), join(OUT, 'healthcheck'));
  const bin = (tool: string, version: string, name = tool) => join(TOOLS, tool, version, 'bin', name);
  const envoy = buildRootfsImage('envoy', (r) => addBinary(r, bin('envoy', versions['ENVOY_VERSION']!), '/usr/local/bin/envoy'));
  const opa = buildRootfsImage('opa', (r) => addBinary(r, bin('opa', versions['OPA_ENVOY_VERSION']!), '/usr/local/bin/opa'));
  const ratelimit = buildRootfsImage('ratelimit', (r) => addBinary(r, bin('ratelimit', versions['RATELIMIT_VERSION']!), '/usr/local/bin/ratelimit'));
  // Debian's redis-server (npm run setup -- redis), with the shared libraries it links.
  const redis = buildRootfsImage('redis', (r) => addBinary(r, '/usr/bin/redis-server', '/usr/local/bin/redis-server'));
  const nodeBase = buildRootfsImage('node', (r) => addBinary(r, bin('node', versions['NODE_VERSION']!), '/usr/local/bin/node'));
  log('bundling agentd');
  execFileSync(process.execPath, [join(ROOT, 'agentd/scripts/build.ts')], { stdio: 'inherit' });
  const agentdHash = hashDir(join(ROOT, 'agentd/dist'))
    .update(readFileSync(join(ROOT, 'agentd/Dockerfile')))
    .update(nodeBase)
    .digest('hex')
    .slice(0, 12);
  const agentd = `agentd-local/agentd:${agentdHash}`;
  buildIfMissing(agentd, join(ROOT, 'agentd'), ['--build-arg', `BASE_IMAGE=${nodeBase}`]);
  const images: LocalImages = { envoy, opa, nodeBase, agentd, ratelimit, redis };
  writeFileSync(IMAGES_MANIFEST, JSON.stringify(images, null, 2) + '\n');
  log(`wrote ${relative(process.cwd(), IMAGES_MANIFEST)}`);
  return images;
}

/** The images of the one-node test cluster itself (scripts/kube-node.sh): its pause container and CoreDNS. */
export interface NodeImages {
  readonly pause: string;
  readonly coredns: string;
}

export function buildNodeImages(): NodeImages {
  return withBuildLock(buildNodeImagesLocked);
}

function buildNodeImagesLocked(): NodeImages {
  mkdirSync(OUT, { recursive: true });
  log('building agentd-healthcheck and agentd-pause');
  goBuild(join(ROOT, 'scripts/images/healthcheck'), join(OUT, 'healthcheck'));
  goBuild(join(ROOT, 'scripts/images/pause'), join(OUT, 'agentd-pause'));
  const pause = buildRootfsImage('pause', (r) => place(r, join(OUT, 'agentd-pause'), '/usr/local/bin/agentd-pause'), '/usr/local/bin/agentd-pause');
  const coredns = buildRootfsImage('coredns', (r) =>
    addBinary(r, join(TOOLS, 'coredns', versions['COREDNS_VERSION']!, 'bin', 'coredns'), '/usr/local/bin/coredns'),
  );
  return { pause, coredns };
}

if (import.meta.url === `file://${process.argv[1]}` && process.argv[2] === '--node') {
  // scripts/kube-node.sh reads the tags from stdout.
  process.stdout.write(`${JSON.stringify(buildNodeImages())}\n`);
} else if (import.meta.url === `file://${process.argv[1]}`) {
  const t0 = Date.now();
  const images = buildLocalImages();
  for (const [k, v] of Object.entries(images)) log(`${k.padEnd(9)} ${v}`);
  log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
