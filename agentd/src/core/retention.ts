// Retention: keeps the database bounded. Every PURGE_INTERVAL_MS (and once at start) it deletes
// intent records older than AGENTD_RETENTION_DAYS, and sandboxes that ended (terminated or
// expired) longer ago than that together with their records; at start it also trims sandboxes
// holding more than AGENTD_RETENTION_INTENTS_PER_SANDBOX records (the cap itself is enforced on
// every insert). Deletes run in batches of PURGE_BATCH_ROWS with an event loop turn between
// them, so requests are never held up for long. After deleting it returns free pages to the
// file system (incremental_vacuum) and truncates the WAL (checkpoint).
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { PURGE_BATCH_ROWS, type Storage } from '../storage/sqlite.ts';

const DAY_MS = 86_400_000;
/** Free pages returned per step (4 MiB with 4 KiB pages). */
const VACUUM_PAGES_PER_STEP = 1024;

export interface PurgeResult {
  intents: number;
  sandboxes: number;
}

export interface RetentionDeps {
  storage: Storage;
  metrics: Metrics;
  logger: Logger;
  retentionDays: number;
  intentsPerSandbox: number;
  now?: () => number;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Retention {
  private readonly deps: RetentionDeps;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PurgeResult> | undefined;
  private trimmedOnce = false;
  private stopped = false;

  constructor(deps: RetentionDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /** Runs once now, then every intervalMs (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    const run = (): void => {
      this.runOnce().catch((err: unknown) => this.deps.logger.error({ err: { message: (err as Error).message } }, 'storage purge failed'));
    };
    run();
    this.timer = setInterval(run, intervalMs);
    this.timer.unref();
  }

  /** One purge pass (concurrent calls share the running one). `now` may be given (tests). */
  runOnce(now: number = this.now()): Promise<PurgeResult> {
    this.running ??= this.pass(now).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Stops the timer and waits for a running pass to finish its current batch. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  private get usable(): boolean {
    return !this.stopped && this.deps.storage.isOpen;
  }

  private async pass(now: number): Promise<PurgeResult> {
    const { storage, retentionDays, intentsPerSandbox } = this.deps;
    const result: PurgeResult = { intents: 0, sandboxes: 0 };
    const started = performance.now();
    if (retentionDays > 0) {
      const cutoff = now - retentionDays * DAY_MS;
      for (let n = PURGE_BATCH_ROWS; n >= PURGE_BATCH_ROWS && this.usable; await turn()) {
        n = storage.purgeIntentsBefore(cutoff);
        result.intents += n;
      }
      for (let n = PURGE_BATCH_ROWS; n > 0 && this.usable; await turn()) {
        const r = storage.purgeEndedSandboxes(cutoff);
        result.intents += r.intents;
        result.sandboxes += r.sandboxes;
        n = r.intents + r.sandboxes;
      }
    }
    // The cap is enforced on insert; a lowered cap trims existing sandboxes once, at start.
    if (intentsPerSandbox > 0 && !this.trimmedOnce) {
      this.trimmedOnce = true;
      for (let n = 1; n > 0 && this.usable; await turn()) {
        n = storage.trimIntentsPerSandbox(intentsPerSandbox);
        result.intents += n;
      }
    }
    const total = result.intents + result.sandboxes;
    if (total > 0 && this.usable) {
      for (let free = 1, i = 0; free > 0 && i < 10_000 && this.usable; i++, await turn()) {
        free = storage.incrementalVacuum(VACUUM_PAGES_PER_STEP);
      }
      if (this.usable) storage.checkpoint();
      this.deps.metrics.storagePurgedRowsTotal.inc({ table: 'intents' }, result.intents);
      this.deps.metrics.storagePurgedRowsTotal.inc({ table: 'sandboxes' }, result.sandboxes);
      this.deps.logger.info(
        {
          purged_intents: result.intents,
          purged_sandboxes: result.sandboxes,
          retention_days: retentionDays,
          intents_per_sandbox: intentsPerSandbox,
          duration_ms: Math.round(performance.now() - started),
        },
        'storage purged',
      );
    }
    return result;
  }
}
