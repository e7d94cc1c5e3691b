// Which image runs each workload, with the command line and health probe that image needs.
// `upstream` uses registry images (Envoy, OPA's -envoy build, agentd from agentd/Dockerfile);
// `local` uses the images scripts/images.ts builds here from the pinned tools (no registry).
// The monitoring overlay always runs the upstream images (Grafana, Loki and Alloy are AGPL:
// not built here).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StackConfig } from './config.ts';
import type { ImageRole } from './render/types.ts';

export interface ImageChoice {
  readonly ref: string;
  /** argv[0] (and fixed leading arguments) of the main process in this image. */
  readonly binary: readonly string[];
  /** A probe command for a URL on loopback inside the container. */
  probe(url: string): string[];
  /** A command that waits (up to two minutes) until host:port takes connections, for an init container; absent when the image has none. */
  waitFor?(host: string, port: number): string[];
}

export interface ImageSet {
  readonly envoy: ImageChoice;
  readonly opa: ImageChoice;
  readonly agentd: ImageChoice;
  /** Envoy's rate-limit service and its Redis (global rate limits). */
  readonly ratelimit: ImageChoice;
  readonly redis: ImageChoice;
}

const UPSTREAM_IMAGES = {
  envoy: 'envoyproxy/envoy:v1.40.0',
  opa: 'openpolicyagent/opa:1.22.3-envoy-static',
  agentd: 'agentd:latest',
  // Upstream tags its images by commit: the one RATELIMIT_VERSION (scripts/versions.env) pins.
  ratelimit: 'envoyproxy/ratelimit:3fb70258',
  redis: 'redis:7.4-alpine',
} as const;

/** build/images.json, written by scripts/images.ts. */
const LOCAL_IMAGES_MANIFEST = 'build/images.json';
/** What a preview shows for a local image not built yet. */
const UNBUILT_LOCAL_IMAGE = 'agentd-local/not-built:preview';

const localProbe = (url: string) => ['/usr/local/bin/agentd-healthcheck', url];
const localWaitFor = (host: string, port: number) => ['/usr/local/bin/agentd-healthcheck', '--wait', '120s', `tcp://${host}:${port}`];
const agentdProbe = () => ['node', '/app/agentd.mjs', 'healthcheck'];

export function chooseImages(config: StackConfig['images'], repoRoot: string, preview?: { warn(message: string): void }): ImageSet {
  if (config.mode === 'local') {
    const manifest = join(repoRoot, LOCAL_IMAGES_MANIFEST);
    let local: Record<string, string>;
    if (existsSync(manifest)) {
      local = JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, string>;
    } else if (preview) {
      // A preview (e.g. in CI, where nothing is built) needs no image: it shows placeholders, and
      // `up` still refuses to run without the real ones.
      preview.warn(`${LOCAL_IMAGES_MANIFEST} does not exist: the preview shows the local images as ${UNBUILT_LOCAL_IMAGE}; \`npm run up\` builds them`);
      local = { envoy: UNBUILT_LOCAL_IMAGE, opa: UNBUILT_LOCAL_IMAGE, agentd: UNBUILT_LOCAL_IMAGE, ratelimit: UNBUILT_LOCAL_IMAGE, redis: UNBUILT_LOCAL_IMAGE };
    } else {
      throw new Error(
        `agentd:images.mode is local but ${LOCAL_IMAGES_MANIFEST} does not exist: build the images with \`node scripts/images.ts\` (npm run up does it for you)`,
      );
    }
    return {
      envoy: { ref: config.envoy ?? local['envoy']!, binary: ['envoy'], probe: localProbe },
      opa: { ref: config.opa ?? local['opa']!, binary: ['opa'], probe: localProbe },
      agentd: { ref: config.agentd ?? local['agentd']!, binary: ['node', '/app/agentd.mjs'], probe: agentdProbe },
      ratelimit: { ref: config.ratelimit ?? local['ratelimit'] ?? UNBUILT_LOCAL_IMAGE, binary: ['ratelimit'], probe: localProbe, waitFor: localWaitFor },
      redis: { ref: config.redis ?? local['redis'] ?? UNBUILT_LOCAL_IMAGE, binary: ['redis-server'], probe: localProbe },
    };
  }
  return {
    envoy: {
      ref: config.envoy ?? UPSTREAM_IMAGES.envoy,
      binary: ['envoy'],
      // The upstream Envoy image has bash but no HTTP client: a TCP connect to the stats listener.
      probe: (url) => ['bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${new URL(url).port}`],
    },
    opa: {
      ref: config.opa ?? UPSTREAM_IMAGES.opa,
      binary: ['/opa'],
      probe: (url) => ['/opa', 'eval', '--fail', `http.send({"method": "get", "url": "${url}"}).status_code == 200`],
    },
    agentd: { ref: config.agentd ?? UPSTREAM_IMAGES.agentd, binary: ['node', '/app/agentd.mjs'], probe: agentdProbe },
    // Alpine-based: BusyBox wget.
    ratelimit: {
      ref: config.ratelimit ?? UPSTREAM_IMAGES.ratelimit,
      binary: ['/bin/ratelimit'],
      probe: (url) => ['wget', '-q', '-O', '/dev/null', url],
      // BusyBox nc; two minutes, as agentd-healthcheck --wait 120s.
      waitFor: (host, port) => ['sh', '-c', `for i in $(seq 120); do nc -z -w 2 ${host} ${port} && exit 0; sleep 1; done; exit 1`],
    },
    redis: { ref: config.redis ?? UPSTREAM_IMAGES.redis, binary: ['redis-server'], probe: (url) => ['redis-cli', '-p', new URL(url).port, 'ping'] },
  };
}

/** Upstream images of the monitoring overlay. */
const MONITORING_IMAGES = {
  prometheus: 'prom/prometheus:v3.16.0',
  loki: 'grafana/loki:3.7.0',
  alloy: 'grafana/alloy:v1.11.0',
  grafana: 'grafana/grafana:12.3.0',
} as const;

/** Each monitoring image's entrypoint (Grafana's run.sh takes no arguments). */
const MONITORING_ENTRYPOINTS = { prometheus: ['/bin/prometheus'], loki: ['/usr/bin/loki'], alloy: ['/bin/alloy'], grafana: ['/run.sh'] } as const;

/** The image of a workload's role: the stack's choice for the platform's own, the pinned upstream for monitoring. */
export function imageFor(images: ImageSet, role: ImageRole): ImageChoice {
  if (role === 'envoy' || role === 'opa' || role === 'agentd' || role === 'ratelimit' || role === 'redis') return images[role];
  return { ref: MONITORING_IMAGES[role], binary: MONITORING_ENTRYPOINTS[role], probe: (url) => ['wget', '-q', '-O', '/dev/null', url] };
}
