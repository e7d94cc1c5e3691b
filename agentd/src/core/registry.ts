// The sandbox registry: the set of active sandboxes (neither terminated nor expired), served to
// OPA as a bundle so that the egress policy refuses the token of a sandbox that is gone.
//
// Protocol (OPA's bundle downloader, v1/download/download.go):
//   - the response's ETag is the bundle revision; OPA sends it back as If-None-Match, and a
//     request whose If-None-Match is the current revision is answered 304;
//   - long polling: OPA sends `Prefer: modes=snapshot,delta;wait=N` (any `wait=N` among the
//     `;`/`,`-separated preferences counts); such a request is held until the set changes (200
//     with the new bundle) or N seconds pass (304). OPA only keeps long polling when the
//     response's Content-Type is application/vnd.openpolicyagent.bundles;
//   - acknowledgement: OPA re-polls with If-None-Match = the revision it just activated (after a
//     failed activation, the one it had). The highest revision a poller acknowledged is
//     recorded; createSandbox and terminateSandbox wait (bounded) until it includes their change,
//     when a poller was seen recently.
//
// Revisions are `<boot id>-<counter>`: the counter grows with every change, and the random boot
// id keeps a revision from a previous process (which OPA may have persisted) from ever matching.
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { REGISTRY_BUNDLE_ROOT } from '../contract.ts';
import type { Logger } from '../log.ts';
import type { Storage } from '../storage/sqlite.ts';
import { ustar } from './ustar.ts';

/** The Content-Type OPA looks for to keep long polling. */
export const OPA_BUNDLE_CONTENT_TYPE = 'application/vnd.openpolicyagent.bundles';
/** Files in the bundle. */
const REGISTRY_MANIFEST_FILE = '.manifest';
const REGISTRY_DATA_FILE = `${REGISTRY_BUNDLE_ROOT}/data.json`;

export interface RegistryBundle {
  revision: string;
  /** The ETag header value (the revision, quoted as HTTP requires). */
  etag: string;
  /** gzipped ustar archive. */
  body: Buffer;
  /** How many sandboxes it lists. */
  count: number;
}

export type PollResult = { status: 200; bundle: RegistryBundle } | { status: 304; revision: string; etag: string };

export type AckResult = 'acked' | 'no_poller' | 'timeout';

export interface RegistryDeps {
  storage: Storage;
  logger: Logger;
  ackTimeoutMs: number;
  pollerSeenMs: number;
  /**
   * A poller is expected (the registry has a token: OPA is configured to poll): wait for its
   * acknowledgement even before it was first seen, e.g. right after agentd restarted.
   */
  expectPoller: boolean;
  maxWaitSeconds: number;
  now?: () => number;
}

interface HeldPoll {
  resolve(r: PollResult): void;
  timer: NodeJS.Timeout;
}

interface AckWaiter {
  counter: number;
  resolve(r: AckResult): void;
  timer: NodeJS.Timeout;
}

/** The entity tags of an If-None-Match value, unquoted (W/ and quotes removed). */
function parseEntityTags(header: string | undefined): string[] {
  if (header === undefined || header.trim() === '') return [];
  return header
    .split(',')
    .map((t) =>
      t
        .trim()
        .replace(/^W\//, '')
        .replace(/^"(.*)"$/, '$1'),
    )
    .filter((t) => t !== '');
}

/** The `wait=N` preference of a Prefer header (seconds), or null when there is none. */
export function parsePreferWait(header: string | undefined): number | null {
  if (header === undefined) return null;
  for (const part of header.split(/[;,]/)) {
    const m = /^\s*wait\s*=\s*"?(\d{1,9})"?\s*$/i.exec(part);
    if (m) return Number(m[1]);
  }
  return null;
}

export class SandboxRegistry {
  private readonly deps: RegistryDeps;
  private readonly now: () => number;
  private readonly bootId = randomBytes(4).toString('hex');
  private counter = 1;
  private acked = 0;
  private lastPollAt = Number.NEGATIVE_INFINITY;
  private cache: { counter: number; bundle: RegistryBundle } | undefined;
  private readonly held = new Set<HeldPoll>();
  private readonly ackWaiters = new Set<AckWaiter>();
  private expiryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(deps: RegistryDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /** Schedules the first expiry wake-up. */
  start(): void {
    this.scheduleExpiry();
  }

  get revision(): string {
    return this.revisionOf(this.counter);
  }

  /** The highest revision counter a poller acknowledged (0: none). */
  get acknowledged(): number {
    return this.acked;
  }

  /** Whether a poller (OPA) asked recently or is waiting right now. */
  pollerSeen(): boolean {
    return this.held.size > 0 || this.now() - this.lastPollAt < this.deps.pollerSeenMs;
  }

  /**
   * The set changed (a sandbox was created or terminated, or expired): a new revision, held
   * polls are answered with it at once. Returns the new revision counter (for awaitAck).
   */
  changed(reason: string): number {
    this.counter += 1;
    this.cache = undefined;
    this.scheduleExpiry();
    if (this.held.size > 0) {
      const bundle = this.bundle();
      for (const h of this.held) {
        clearTimeout(h.timer);
        h.resolve({ status: 200, bundle });
      }
      this.held.clear();
    }
    this.deps.logger.debug({ revision: this.revision, reason }, 'sandbox registry changed');
    return this.counter;
  }

  /** The current bundle (built once per revision). */
  bundle(): RegistryBundle {
    if (this.cache?.counter === this.counter) return this.cache.bundle;
    const active: Record<string, { tier: string; exp: number }> = {};
    const rows = this.deps.storage.listActiveSandboxes(this.now());
    for (const r of rows) active[r.id] = { tier: r.tier, exp: Math.floor(r.expires_at / 1000) };
    const revision = this.revision;
    const manifest = { revision, roots: [REGISTRY_BUNDLE_ROOT] };
    const tar = ustar([
      { name: REGISTRY_MANIFEST_FILE, content: Buffer.from(JSON.stringify(manifest)) },
      { name: REGISTRY_DATA_FILE, content: Buffer.from(JSON.stringify({ active })) },
    ]);
    const bundle: RegistryBundle = { revision, etag: `"${revision}"`, body: gzipSync(tar), count: rows.length };
    this.cache = { counter: this.counter, bundle };
    return bundle;
  }

  /**
   * One poll. `onClose` registers a callback for a client that goes away while held.
   * Answers 304 when If-None-Match names the current revision (after holding the request
   * up to `wait` seconds when it asked for long polling), else 200 with the bundle.
   */
  poll(req: { ifNoneMatch: string | undefined; waitSeconds: number | null; onClose(fn: () => void): void }): Promise<PollResult> | PollResult {
    this.lastPollAt = this.now();
    const tags = parseEntityTags(req.ifNoneMatch);
    this.recordAck(tags);
    const current = this.revision;
    if (!tags.includes(current)) return { status: 200, bundle: this.bundle() };
    const notModified: PollResult = { status: 304, revision: current, etag: `"${current}"` };
    const wait = Math.min(req.waitSeconds ?? 0, this.deps.maxWaitSeconds);
    if (wait <= 0 || this.closed) return notModified;
    return new Promise<PollResult>((resolve) => {
      const h: HeldPoll = {
        resolve: (r) => {
          this.lastPollAt = this.now();
          resolve(r);
        },
        timer: setTimeout(() => {
          this.held.delete(h);
          h.resolve(notModified);
        }, wait * 1000),
      };
      h.timer.unref();
      this.held.add(h);
      req.onClose(() => {
        if (this.held.delete(h)) {
          clearTimeout(h.timer);
          h.resolve(notModified);
        }
      });
    });
  }

  /**
   * Waits until a poller acknowledged revision `counter` (or a later one), at most
   * ackTimeoutMs, and only when a poller is expected or was seen recently (no OPA: no wait).
   */
  awaitAck(counter: number): Promise<AckResult> {
    if (this.acked >= counter) return Promise.resolve('acked');
    if (this.closed || !(this.deps.expectPoller || this.pollerSeen())) return Promise.resolve('no_poller');
    return new Promise<AckResult>((resolve) => {
      const w: AckWaiter = {
        counter,
        resolve,
        timer: setTimeout(() => {
          this.ackWaiters.delete(w);
          resolve('timeout');
        }, this.deps.ackTimeoutMs),
      };
      w.timer.unref();
      this.ackWaiters.add(w);
    });
  }

  /** Shutdown: held polls answer 304 now, waiters stop waiting, no more wake-ups. */
  close(): void {
    this.closed = true;
    clearTimeout(this.expiryTimer);
    const current = this.revision;
    for (const h of this.held) {
      clearTimeout(h.timer);
      h.resolve({ status: 304, revision: current, etag: `"${current}"` });
    }
    this.held.clear();
    for (const w of this.ackWaiters) {
      clearTimeout(w.timer);
      w.resolve('timeout');
    }
    this.ackWaiters.clear();
  }

  // ---- helpers ------------------------------------------------------------------------------

  private revisionOf(counter: number): string {
    return `${this.bootId}-${counter}`;
  }

  private recordAck(tags: string[]): void {
    const prefix = `${this.bootId}-`;
    let best = this.acked;
    for (const t of tags) {
      if (!t.startsWith(prefix)) continue;
      const rest = t.slice(prefix.length);
      if (!/^[1-9][0-9]{0,15}$/.test(rest)) continue;
      const n = Number(rest);
      // Only revisions this process handed out count.
      if (n <= this.counter && n > best) best = n;
    }
    if (best === this.acked) return;
    this.acked = best;
    for (const w of this.ackWaiters) {
      if (w.counter <= best) {
        clearTimeout(w.timer);
        this.ackWaiters.delete(w);
        w.resolve('acked');
      }
    }
  }

  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.closed || !this.deps.storage.isOpen) return;
    const now = this.now();
    const next = this.deps.storage.nextExpiry(now);
    if (next === null) return;
    // setTimeout's limit is 2^31-1 ms (about 24.8 days): wake up then and look again.
    const delay = Math.min(Math.max(next - now, 0) + 1, 2_147_483_647);
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      if (this.closed || !this.deps.storage.isOpen) return;
      if (this.now() >= next) this.changed('expiry');
      else this.scheduleExpiry();
    }, delay);
    this.expiryTimer.unref();
  }
}
