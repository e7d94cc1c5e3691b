// Durable storage for sandboxes and intent records: one SQLite file (node:sqlite) in WAL mode
// with synchronous=FULL, so every statement that returned has been fsynced and survives kill -9
// or power loss. All access is synchronous and happens on the event loop thread; statements are
// small (single-row writes, paged reads) and purges run in bounded batches.
//
// Bounded: an intent insert and the deletion of the sandbox's records beyond the per-sandbox
// cap are one transaction; retention (intents, and sandboxes that ended, older than N days)
// deletes in batches the caller spreads over event loop turns. New databases use
// auto_vacuum=INCREMENTAL, so freed pages can be returned to the file system.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { DATABASE_FILE } from '../contract.ts';

export interface SandboxRow {
  seq: number;
  id: string;
  /** The client that created it ('' for sandboxes from before schema 2). */
  owner: string;
  tier: string;
  labels: Record<string, string>;
  created_at: number; // epoch ms
  expires_at: number;
  terminated_at: number | null;
}

export type IntentState = 'running' | 'ok' | 'timeout' | 'egress_unavailable' | 'error' | 'interrupted';

export interface IntentRow {
  seq: number;
  id: string;
  sandbox_id: string;
  capability: string;
  service: string;
  method: string;
  path: string;
  request_headers: Record<string, string>;
  outcome: IntentState;
  status: number | null;
  truncated: boolean;
  body_bytes: number | null;
  duration_ms: number | null;
  error: string | null;
  created_at: number;
  completed_at: number | null;
}

export type SandboxStateFilter = 'active' | 'expired' | 'terminated';

export interface Page<T> {
  items: T[];
  /** seq of the last item when more may follow, else null. */
  next: number | null;
}

const SCHEMA_VERSION = 2;

const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE sandboxes (
      seq           INTEGER PRIMARY KEY AUTOINCREMENT,
      id            TEXT NOT NULL UNIQUE,
      tier          TEXT NOT NULL,
      labels        TEXT NOT NULL,
      created_at    INTEGER NOT NULL,
      expires_at    INTEGER NOT NULL,
      terminated_at INTEGER
    ) STRICT;
    CREATE INDEX sandboxes_state ON sandboxes (terminated_at, expires_at);
    CREATE TABLE intents (
      seq             INTEGER PRIMARY KEY AUTOINCREMENT,
      id              TEXT NOT NULL UNIQUE,
      sandbox_id      TEXT NOT NULL REFERENCES sandboxes (id),
      capability      TEXT NOT NULL,
      service         TEXT NOT NULL,
      method          TEXT NOT NULL,
      path            TEXT NOT NULL,
      request_headers TEXT NOT NULL,
      outcome         TEXT NOT NULL,
      status          INTEGER,
      truncated       INTEGER NOT NULL DEFAULT 0,
      body_bytes      INTEGER,
      duration_ms     INTEGER,
      error           TEXT,
      created_at      INTEGER NOT NULL,
      completed_at    INTEGER
    ) STRICT;
    CREATE INDEX intents_sandbox ON intents (sandbox_id, seq);
    CREATE INDEX intents_outcome ON intents (outcome);
  `,
  2: `
    ALTER TABLE sandboxes ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE INDEX sandboxes_owner ON sandboxes (owner, terminated_at, expires_at);
    CREATE INDEX intents_created ON intents (created_at);
  `,
};

/** Most rows one purge statement deletes (the event loop gets a turn between batches). */
export const PURGE_BATCH_ROWS = 500;
/** The WAL file is cut back to this size after a checkpoint. */
const JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024;

type Raw = Record<string, unknown>;

/** The text columns of an intent record as insertIntent stores them (to measure its size). */
export function intentRecordText(i: Pick<IntentRow, 'id' | 'sandbox_id' | 'capability' | 'service' | 'method' | 'path' | 'request_headers'>): string[] {
  return [i.id, i.sandbox_id, i.capability, i.service, i.method, i.path, JSON.stringify(i.request_headers)];
}

export class Storage {
  readonly file: string;
  private readonly db: DatabaseSync;
  private readonly stmts: Record<string, StatementSync>;
  private open = true;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.file = path.join(dataDir, DATABASE_FILE);
    this.db = new DatabaseSync(this.file);
    // Only takes effect on a new database (before the first table exists).
    this.db.exec('PRAGMA auto_vacuum = INCREMENTAL');
    this.db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA journal_size_limit = ${JOURNAL_SIZE_LIMIT};
      PRAGMA synchronous = FULL;
      PRAGMA foreign_keys = ON;
      PRAGMA busy_timeout = 5000;
      PRAGMA temp_store = MEMORY;
    `);
    this.migrate();
    const p = (sql: string): StatementSync => this.db.prepare(sql);
    this.stmts = {
      insertSandbox: p(`INSERT INTO sandboxes (id, owner, tier, labels, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *`),
      getSandbox: p(`SELECT * FROM sandboxes WHERE id = ?`),
      terminateSandbox: p(`UPDATE sandboxes SET terminated_at = ? WHERE id = ? AND terminated_at IS NULL RETURNING *`),
      insertIntent: p(`INSERT INTO intents (id, sandbox_id, capability, service, method, path, request_headers, outcome, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?) RETURNING *`),
      completeIntent: p(`UPDATE intents SET outcome = ?, status = ?, truncated = ?, body_bytes = ?, duration_ms = ?, error = ?, completed_at = ?
                         WHERE id = ? AND outcome = 'running' RETURNING *`),
      listIntents: p(`SELECT * FROM intents WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
      interruptRunning: p(`UPDATE intents SET outcome = 'interrupted', error = ?, completed_at = ? WHERE outcome = 'running'`),
      countSandboxes: p(`SELECT count(*) AS total,
                           coalesce(sum(terminated_at IS NOT NULL), 0) AS terminated,
                           coalesce(sum(terminated_at IS NULL AND expires_at <= ?), 0) AS expired,
                           coalesce(sum(terminated_at IS NULL AND expires_at > ?), 0) AS active
                         FROM sandboxes`),
      countSandboxesOwned: p(`SELECT count(*) AS total,
                           coalesce(sum(terminated_at IS NOT NULL), 0) AS terminated,
                           coalesce(sum(terminated_at IS NULL AND expires_at <= ?), 0) AS expired,
                           coalesce(sum(terminated_at IS NULL AND expires_at > ?), 0) AS active
                         FROM sandboxes WHERE owner = ?`),
      countActive: p(`SELECT count(*) AS n FROM sandboxes WHERE terminated_at IS NULL AND expires_at > ?`),
      countActiveOwned: p(`SELECT count(*) AS n FROM sandboxes WHERE owner = ? AND terminated_at IS NULL AND expires_at > ?`),
      countIntents: p(`SELECT count(*) AS total, coalesce(sum(outcome = 'running'), 0) AS running FROM intents`),
      countIntentsOwned: p(`SELECT count(*) AS total, coalesce(sum(i.outcome = 'running'), 0) AS running
                            FROM intents i JOIN sandboxes s ON s.id = i.sandbox_id WHERE s.owner = ?`),
      listActive: p(`SELECT id, tier, expires_at FROM sandboxes WHERE terminated_at IS NULL AND expires_at > ? ORDER BY seq`),
      nextExpiry: p(`SELECT min(expires_at) AS at FROM sandboxes WHERE terminated_at IS NULL AND expires_at > ?`),
      // The per-sandbox cap: delete this sandbox's records older than its newest N.
      trimSandboxIntents: p(`DELETE FROM intents WHERE sandbox_id = ? AND seq <= (
                               SELECT seq FROM intents WHERE sandbox_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`),
      purgeOldIntents: p(`DELETE FROM intents WHERE seq IN (
                            SELECT seq FROM intents WHERE created_at < ? AND outcome != 'running' ORDER BY created_at LIMIT ?)`),
      endedSandboxes: p(`SELECT id FROM sandboxes
                         WHERE (terminated_at IS NOT NULL AND terminated_at < ?) OR (terminated_at IS NULL AND expires_at < ?)
                         ORDER BY seq LIMIT ?`),
      purgeSandboxIntents: p(`DELETE FROM intents WHERE seq IN (SELECT seq FROM intents WHERE sandbox_id = ? LIMIT ?)`),
      deleteSandbox: p(`DELETE FROM sandboxes WHERE id = ? AND NOT EXISTS (SELECT 1 FROM intents WHERE sandbox_id = ?)`),
      overfullSandboxes: p(`SELECT sandbox_id FROM intents GROUP BY sandbox_id HAVING count(*) > ? LIMIT ?`),
      freelist: p(`PRAGMA freelist_count`),
      ping: p(`SELECT 1 AS ok`),
    };
  }

  private migrate(): void {
    const row = this.db.prepare('PRAGMA user_version').get() as Raw;
    const current = Number(row.user_version ?? 0);
    if (current > SCHEMA_VERSION) {
      throw new Error(
        `database ${this.file} has schema version ${current}, newer than this agentd (${SCHEMA_VERSION}); run a newer agentd or use another data directory`,
      );
    }
    for (let v = current + 1; v <= SCHEMA_VERSION; v++) {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        this.db.exec(MIGRATIONS[v] as string);
        this.db.exec(`PRAGMA user_version = ${v}`);
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
  }

  get isOpen(): boolean {
    return this.open;
  }

  ping(): boolean {
    if (!this.open) return false;
    return (this.stmts.ping!.get() as Raw).ok === 1;
  }

  insertSandbox(s: { id: string; owner: string; tier: string; labels: Record<string, string>; created_at: number; expires_at: number }): SandboxRow {
    const row = this.stmts.insertSandbox!.get(s.id, s.owner, s.tier, JSON.stringify(s.labels), s.created_at, s.expires_at) as Raw;
    return toSandbox(row);
  }

  getSandbox(id: string): SandboxRow | undefined {
    const row = this.stmts.getSandbox!.get(id) as Raw | undefined;
    return row ? toSandbox(row) : undefined;
  }

  /** Sets terminated_at unless already set; returns the updated row, or undefined if it was. */
  terminateSandbox(id: string, at: number): SandboxRow | undefined {
    const row = this.stmts.terminateSandbox!.get(at, id) as Raw | undefined;
    return row ? toSandbox(row) : undefined;
  }

  listSandboxes(opts: {
    state?: SandboxStateFilter | undefined;
    tier?: string | undefined;
    owner?: string | undefined;
    after: number;
    limit: number;
    now: number;
  }): Page<SandboxRow> {
    const where: string[] = ['seq > ?'];
    const args: (string | number)[] = [opts.after];
    if (opts.owner !== undefined) {
      where.push('owner = ?');
      args.push(opts.owner);
    }
    if (opts.state === 'terminated') where.push('terminated_at IS NOT NULL');
    if (opts.state === 'active') {
      where.push('terminated_at IS NULL AND expires_at > ?');
      args.push(opts.now);
    }
    if (opts.state === 'expired') {
      where.push('terminated_at IS NULL AND expires_at <= ?');
      args.push(opts.now);
    }
    if (opts.tier !== undefined) {
      where.push('tier = ?');
      args.push(opts.tier);
    }
    args.push(opts.limit + 1);
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...args) as Raw[];
    return page(rows.map(toSandbox), opts.limit);
  }

  /** Counts of all sandboxes, or of one owner's. */
  countSandboxes(now: number, owner?: string): { total: number; active: number; expired: number; terminated: number } {
    const r = (owner === undefined ? this.stmts.countSandboxes!.get(now, now) : this.stmts.countSandboxesOwned!.get(now, now, owner)) as Raw;
    return { total: Number(r.total), active: Number(r.active), expired: Number(r.expired), terminated: Number(r.terminated) };
  }

  countActiveSandboxes(now: number, owner?: string): number {
    const r = (owner === undefined ? this.stmts.countActive!.get(now) : this.stmts.countActiveOwned!.get(owner, now)) as Raw;
    return Number(r.n);
  }

  /** Active sandboxes (neither terminated nor expired at `now`), oldest first. */
  listActiveSandboxes(now: number): { id: string; tier: string; expires_at: number }[] {
    return (this.stmts.listActive!.all(now) as Raw[]).map((r) => ({ id: String(r.id), tier: String(r.tier), expires_at: Number(r.expires_at) }));
  }

  /** When the next active sandbox expires (epoch ms), or null if none is active. */
  nextExpiry(now: number): number | null {
    const at = (this.stmts.nextExpiry!.get(now) as Raw).at;
    return at === null || at === undefined ? null : Number(at);
  }

  /**
   * Stores an intent as running. With keepPerSandbox > 0, the sandbox's records beyond the
   * newest keepPerSandbox are deleted in the same transaction; `purged` counts them.
   */
  insertIntent(
    i: {
      id: string;
      sandbox_id: string;
      capability: string;
      service: string;
      method: string;
      path: string;
      request_headers: Record<string, string>;
      created_at: number;
    },
    keepPerSandbox = 0,
  ): { row: IntentRow; purged: number } {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const row = this.stmts.insertIntent!.get(
        i.id,
        i.sandbox_id,
        i.capability,
        i.service,
        i.method,
        i.path,
        JSON.stringify(i.request_headers),
        i.created_at,
      ) as Raw;
      const purged = keepPerSandbox > 0 ? Number(this.stmts.trimSandboxIntents!.run(i.sandbox_id, i.sandbox_id, keepPerSandbox).changes) : 0;
      this.db.exec('COMMIT');
      return { row: toIntent(row), purged };
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  completeIntent(
    id: string,
    r: {
      outcome: Exclude<IntentState, 'running'>;
      status: number | null;
      truncated: boolean;
      body_bytes: number | null;
      duration_ms: number;
      error: string | null;
      completed_at: number;
    },
  ): IntentRow | undefined {
    const row = this.stmts.completeIntent!.get(r.outcome, r.status, r.truncated ? 1 : 0, r.body_bytes, r.duration_ms, r.error, r.completed_at, id) as
      | Raw
      | undefined;
    return row ? toIntent(row) : undefined;
  }

  listIntents(sandboxId: string, opts: { after: number; limit: number }): Page<IntentRow> {
    const rows = this.stmts.listIntents!.all(sandboxId, opts.after, opts.limit + 1) as Raw[];
    return page(rows.map(toIntent), opts.limit);
  }

  countIntents(owner?: string): { total: number; running: number } {
    const r = (owner === undefined ? this.stmts.countIntents!.get() : this.stmts.countIntentsOwned!.get(owner)) as Raw;
    return { total: Number(r.total), running: Number(r.running) };
  }

  // ---- retention (each call deletes at most about `batch` rows) ------------------------------

  /** Deletes up to `batch` completed intent records created before `cutoff`. */
  purgeIntentsBefore(cutoff: number, batch = PURGE_BATCH_ROWS): number {
    return Number(this.stmts.purgeOldIntents!.run(cutoff, batch).changes);
  }

  /**
   * Deletes sandboxes that ended (terminated, or expired) before `cutoff`, with their intent
   * records: at most `batch` rows in all. Returns what it deleted.
   */
  purgeEndedSandboxes(cutoff: number, batch = PURGE_BATCH_ROWS): { sandboxes: number; intents: number } {
    const ids = (this.stmts.endedSandboxes!.all(cutoff, cutoff, batch) as Raw[]).map((r) => String(r.id));
    let budget = batch;
    let sandboxes = 0;
    let intents = 0;
    if (ids.length === 0) return { sandboxes, intents };
    this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const id of ids) {
        if (budget <= 0) break;
        const n = Number(this.stmts.purgeSandboxIntents!.run(id, budget).changes);
        intents += n;
        budget -= n;
        // Deleted only once no intent record refers to it (else the next batch continues).
        const d = Number(this.stmts.deleteSandbox!.run(id, id).changes);
        sandboxes += d;
        budget -= d;
      }
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
    return { sandboxes, intents };
  }

  /** Trims sandboxes holding more than `keep` intent records (after the cap was lowered). */
  trimIntentsPerSandbox(keep: number, batch = PURGE_BATCH_ROWS): number {
    if (keep <= 0) return 0;
    const ids = (this.stmts.overfullSandboxes!.all(keep, 50) as Raw[]).map((r) => String(r.sandbox_id));
    let n = 0;
    for (const id of ids) {
      if (n >= batch) break;
      n += Number(this.stmts.trimSandboxIntents!.run(id, id, keep).changes);
    }
    return n;
  }

  /** Returns up to `pages` free pages to the file system; how many free pages remain. */
  incrementalVacuum(pages: number): number {
    this.db.exec(`PRAGMA incremental_vacuum(${Math.max(1, Math.floor(pages))})`);
    return Number((this.stmts.freelist!.get() as Raw).freelist_count);
  }

  /** Checkpoints the WAL into the database and truncates the WAL file. */
  checkpoint(): void {
    this.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  }

  /** auto_vacuum mode: 0 none, 1 full, 2 incremental. */
  autoVacuumMode(): number {
    return Number((this.db.prepare('PRAGMA auto_vacuum').get() as Raw).auto_vacuum);
  }

  /** Intents left "running" by a previous process can never complete: mark them interrupted. */
  interruptRunningIntents(at: number, reason: string): number {
    return Number(this.stmts.interruptRunning!.run(reason, at).changes);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.db.close();
  }
}

function page<T extends { seq: number }>(rows: T[], limit: number): Page<T> {
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  return { items, next: more ? (items[items.length - 1] as T).seq : null };
}

function toSandbox(r: Raw): SandboxRow {
  return {
    seq: Number(r.seq),
    id: String(r.id),
    owner: String(r.owner ?? ''),
    tier: String(r.tier),
    labels: JSON.parse(String(r.labels)) as Record<string, string>,
    created_at: Number(r.created_at),
    expires_at: Number(r.expires_at),
    terminated_at: r.terminated_at === null ? null : Number(r.terminated_at),
  };
}

function toIntent(r: Raw): IntentRow {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  return {
    seq: Number(r.seq),
    id: String(r.id),
    sandbox_id: String(r.sandbox_id),
    capability: String(r.capability),
    service: String(r.service),
    method: String(r.method),
    path: String(r.path),
    request_headers: JSON.parse(String(r.request_headers)) as Record<string, string>,
    outcome: String(r.outcome) as IntentState,
    status: num(r.status),
    truncated: Number(r.truncated) === 1,
    body_bytes: num(r.body_bytes),
    duration_ms: num(r.duration_ms),
    error: r.error === null || r.error === undefined ? null : String(r.error),
    created_at: Number(r.created_at),
    completed_at: num(r.completed_at),
  };
}
