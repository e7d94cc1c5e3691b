// The Pulumi timings of the deploy suite: the core Docker stack deployed for real, from a copy
// of the project with its own state backend and stack (`benchdeploy`, so containers are named
// agentd-benchdeploy-* and never touch a user's dev stack or the e2e test's).
//
// Cold `pulumi up` from an empty stack (destroyed between runs) to a platform whose containers
// are healthy and whose gateway answers /health; then no-op `pulumi up` and `pulumi preview`,
// both with --expect-no-changes so that a plan with changes is an error, not a number. The local
// images are built (or found up to date) before any timing. Everything is destroyed at the end,
// also when a step fails.
import { rmSync } from 'node:fs';
import { buildLocalImages } from '../../scripts/images.ts';
import { freePort } from '../../scripts/local/processes.ts';
import { copyProject } from '../../scripts/local/project.ts';

export interface PulumiTiming {
  readonly id: 'pulumi-preview' | 'pulumi-up-noop' | 'pulumi-up-cold';
  readonly description: string;
  /** Wall time of each run of the command, ms. */
  readonly runsMs: number[];
  /** Resources in the stack after the up (Pulumi's own count, providers and components included). */
  readonly resources: number | null;
}

const STACK = 'benchdeploy';

export async function pulumiTimings(opts: { coldRuns: number; noopRuns: number; log: (m: string) => void }): Promise<PulumiTiming[]> {
  opts.log('deploy: building the local images (untimed)');
  buildLocalImages();
  const project = copyProject(STACK);
  const timed = (args: string[]): { ms: number; out: string } => {
    const t = performance.now();
    const r = project.pulumi(args);
    return { ms: performance.now() - t, out: r.out };
  };
  try {
    project.pulumi(['stack', 'init']);
    project.set('agentd:target', 'docker');
    project.set('agentd:images.mode', 'local');
    project.set('agentd:gateway.port', String(await freePort()));

    const cold: number[] = [];
    let resources: number | null = null;
    for (let i = 0; i < opts.coldRuns; i++) {
      if (i > 0) project.pulumi(['destroy', '--yes', '--skip-preview']);
      opts.log(`deploy: cold pulumi up ${i + 1}/${opts.coldRuns}`);
      const up = timed(['up', '--yes', '--skip-preview']);
      cold.push(up.ms);
      resources = Number(/\+ (\d+) created/.exec(up.out)?.[1] ?? NaN) || null;
      await expectHealthy(project.pulumi(['stack', 'output', 'gatewayUrl']).stdout.trim());
    }
    const noopUp: number[] = [];
    const preview: number[] = [];
    for (let i = 0; i < opts.noopRuns; i++) {
      opts.log(`deploy: no-op pulumi up and preview ${i + 1}/${opts.noopRuns}`);
      noopUp.push(timed(['up', '--yes', '--skip-preview', '--expect-no-changes']).ms);
      preview.push(timed(['preview', '--expect-no-changes']).ms);
    }
    return [
      { id: 'pulumi-preview', description: '`pulumi preview` of the Docker stack, nothing changed', runsMs: preview, resources },
      { id: 'pulumi-up-noop', description: 'no-op `pulumi up` (second up, nothing changed)', runsMs: noopUp, resources },
      { id: 'pulumi-up-cold', description: 'cold `pulumi up` (empty stack to healthy containers, images present)', runsMs: cold, resources },
    ];
  } finally {
    const down = project.pulumi(['destroy', '--yes', '--skip-preview'], { check: false });
    // On failure the copy (and its state) stays, so the destroy can be run again from it.
    if (down.status !== 0)
      opts.log(
        `deploy: pulumi destroy failed; finish it with PULUMI_BACKEND_URL=file://${project.dir}/state pulumi destroy --stack ${STACK} (in ${project.dir}):\n${down.out.slice(-2000)}`,
      );
    else rmSync(project.dir, { recursive: true, force: true });
  }
}

/** The deployed gateway answers /health with 200 (a broken deploy is an error, not a time). */
async function expectHealthy(gatewayUrl: string): Promise<void> {
  const r = await fetch(`${gatewayUrl}/health`);
  if (r.status !== 200) throw new Error(`the deployed gateway answered ${r.status} on ${gatewayUrl}/health`);
}
