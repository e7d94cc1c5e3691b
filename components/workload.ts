// What a target deploys: a planned workload (components/render/types.ts) with its image, its
// secrets and its files resolved to Pulumi values, and the content hash that rolls exactly the
// workloads whose files changed. Nothing here knows a target.

import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import type { ImageChoice } from './images.ts';
import type { PlannedWorkload, SecretRef, WorkloadFiles } from './render/types.ts';

/**
 * A planned workload with its image, secrets and files resolved to Pulumi values: what a
 * target deploys.
 */
export interface Workload extends Omit<PlannedWorkload, 'image' | 'args' | 'files' | 'secretFiles' | 'health' | 'live'> {
  readonly image: pulumi.Input<string>;
  /** Full command line (the image's entrypoint and the plan's arguments). */
  readonly command: readonly string[];
  /** Plain files by path relative to configDir (OPA's include the bundle, known once the keys are). */
  readonly files: pulumi.Input<WorkloadFiles>;
  /** Secret files by path relative to secretDir: Pulumi secrets end to end. */
  readonly secretFiles: Readonly<Record<string, pulumi.Output<string>>>;
  /** Liveness/readiness probe: an HTTP GET on loopback inside the workload, and the command that performs it in this image. */
  readonly health: PlannedWorkload['health'] & { readonly command: readonly string[] };
  /** The command, in this image, that waits for `startsAfter` (when the plan names one and the image has a way). */
  readonly waitCommand?: readonly string[];
  /** Files updated in place (PlannedWorkload.live), the secret ones resolved to Pulumi secrets. */
  readonly live?: {
    readonly dir: string;
    readonly files: WorkloadFiles;
    readonly secretDir: string;
    readonly secretFiles: Readonly<Record<string, pulumi.Output<string>>>;
  };
}

/** A planned workload resolved against its image, its secrets, and its final files. */
export function resolveWorkload(
  w: PlannedWorkload,
  image: ImageChoice,
  secret: (ref: SecretRef) => pulumi.Output<string>,
  files: pulumi.Input<WorkloadFiles> = w.files,
): Workload {
  const { args, live, ...rest } = w;
  return {
    ...rest,
    ...(live ? { live: { ...live, secretFiles: Object.fromEntries(Object.entries(live.secretFiles).map(([p, ref]) => [p, secret(ref)])) } } : {}),
    image: image.ref,
    command: [...image.binary, ...args],
    files,
    secretFiles: Object.fromEntries(Object.entries(w.secretFiles).map(([p, ref]) => [p, secret(ref)])),
    health: {
      ...w.health,
      command: image.probe(w.health.path === undefined ? `tcp://127.0.0.1:${w.health.port}` : `http://127.0.0.1:${w.health.port}${w.health.path}`),
    },
    ...(w.startsAfter && image.waitFor ? { waitCommand: image.waitFor(w.startsAfter.host, w.startsAfter.port) } : {}),
  };
}

/**
 * A hash of everything that should restart the workload when it changes: its files and its
 * secret files. Targets put it in a label or annotation; an unchanged workload keeps its hash,
 * so a policy change restarts exactly the workloads whose files changed.
 */
function contentHash(files: WorkloadFiles, secrets: Readonly<Record<string, string>> = {}): string {
  const h = createHash('sha256');
  for (const [kind, set] of [
    ['file', files],
    ['secret', secrets],
  ] as const) {
    for (const p of Object.keys(set).sort()) {
      const c = set[p]!;
      h.update(`${kind}\0${p}\0`)
        .update(typeof c === 'string' ? c : `base64:${c.base64}`)
        .update('\0');
    }
  }
  return h.digest('hex').slice(0, 16);
}

/** The workload's content hash as an Output; not secret (a hash of random secrets reveals nothing). */
export function workloadHash(w: Workload): pulumi.Output<string> {
  const names = Object.keys(w.secretFiles).sort();
  return pulumi.unsecret(
    pulumi
      .all([pulumi.output(w.files), pulumi.all(names.map((n) => w.secretFiles[n]!))])
      .apply(([files, values]) => contentHash(files as WorkloadFiles, Object.fromEntries(names.map((n, i) => [n, values[i]!])))),
  );
}

/** A hash of a workload's live files (plain and secret): what names a new revision of them. Not secret. */
export function liveHash(w: Workload): pulumi.Output<string> | undefined {
  const live = w.live;
  if (!live) return undefined;
  const names = Object.keys(live.secretFiles).sort();
  return pulumi.unsecret(
    pulumi.all(names.map((n) => live.secretFiles[n]!)).apply((values) => contentHash(live.files, Object.fromEntries(names.map((n, i) => [n, values[i]!])))),
  );
}
