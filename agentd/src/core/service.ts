// The domain core: sandboxes and their intents. HTTP and gRPC are thin transports over this
// class; they translate requests into these calls and AgentdError into their error formats.
import { randomBytes } from 'node:crypto';
import type { AgentdConfig } from '../config.ts';
import type { IntentOutcome, SandboxState } from '../contract.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { IntentRow, SandboxRow, Storage } from '../storage/sqlite.ts';
import { intentRecordText } from '../storage/sqlite.ts';
import type { Caller } from './caller.ts';
import type { EgressClient } from './egress.ts';
import { AgentdError, conflict, notFound, permissionDenied, resourceExhausted } from './errors.ts';
import type { SandboxRegistry } from './registry.ts';
import type { TokenService } from './tokens.ts';
import { validateCreateSandbox, validateIntent, validateListSandboxes, validatePage, validateSandboxId } from './validation.ts';

export interface SandboxView {
  id: string;
  /** The client that created it. */
  owner: string;
  tier: string;
  labels: Record<string, string>;
  state: SandboxState;
  created_at: string;
  expires_at: string;
  terminated_at: string | null;
}

export interface IntentView {
  id: string;
  sandbox_id: string;
  capability: string;
  service: string;
  method: string;
  path: string;
  request_headers: Record<string, string>;
  outcome: IntentOutcome | 'running';
  status: number | null;
  truncated: boolean;
  body_bytes: number | null;
  duration_ms: number | null;
  error: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface IntentResult extends IntentView {
  headers: Record<string, string>;
  body: string;
  body_encoding: 'utf8' | 'base64';
  dropped_headers: string[];
}

export interface StatusView {
  version: string;
  mode: string;
  started_at: string;
  uptime_seconds: number;
  sandboxes: { total: number; active: number; expired: number; terminated: number };
  intents: { total: number; running: number; in_flight: number };
  /** Only for callers with scope 'all'. */
  egress_url?: string;
  /** Only for callers with scope 'all'. */
  token_kid?: string;
}

/** Readiness: booleans only (never an address or an error text). */
export interface ReadinessView {
  ready: boolean;
  checks: { storage: boolean; draining: boolean };
  /** Names of the checks that make the daemon unready. */
  failed: string[];
}

export interface ServiceDeps {
  config: AgentdConfig;
  storage: Storage;
  tokens: TokenService;
  egress: EgressClient;
  metrics: Metrics;
  logger: Logger;
  version: string;
  /** The sandbox registry served to OPA (absent: no revocation feed, no waiting). */
  registry?: SandboxRegistry;
  now?: () => number;
}

/** Bytes of the numeric columns and the outcome of an intent record (a fixed allowance). */
const INTENT_RECORD_FIXED_BYTES = 64;

const newId = (prefix: string): string => `${prefix}_${randomBytes(12).toString('hex')}`;
const iso = (ms: number): string => new Date(ms).toISOString();

export class AgentdService {
  private readonly deps: ServiceDeps;
  private readonly now: () => number;
  private readonly startedAt: number;
  private draining = false;
  /** In-flight egress requests, with the owner of their sandbox. */
  private readonly inFlight = new Map<AbortController, string>();
  private readonly listeners = new Set<(serving: boolean) => void>();

  constructor(deps: ServiceDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.startedAt = this.now();
  }

  // ---- health -------------------------------------------------------------------------------

  get isDraining(): boolean {
    return this.draining;
  }

  /** Liveness: the process is up and its event loop answers. */
  health(): { status: 'ok' } {
    return { status: 'ok' };
  }

  /**
   * Readiness: the daemon's own dependencies only. Storage must answer and the daemon must not
   * be draining. The egress proxy is not probed: it is shared by every replica, so failing
   * readiness on it would take the whole API (sandbox management included) out of the load
   * balancer for a downstream outage; intents report egress_unavailable instead. The answer
   * holds booleans only: no address, no error text.
   */
  readiness(): ReadinessView {
    let storage = false;
    try {
      storage = this.deps.storage.ping();
    } catch {
      storage = false;
    }
    const checks = { storage, draining: this.draining };
    const failed = [...(storage ? [] : ['storage']), ...(this.draining ? ['draining'] : [])];
    return { ready: failed.length === 0, checks, failed };
  }

  /** Whether the daemon is ready (gRPC Health). */
  isReadyNow(): boolean {
    return this.readiness().ready;
  }

  /** Subscribe to serving-state changes (gRPC health Watch). Returns an unsubscribe function. */
  onServingChange(fn: (serving: boolean) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Version, uptime and counts. Scope 'all' sees every sandbox and the deployment details;
   * scope 'own' gets the counts of its own sandboxes and no egress URL or key id.
   */
  status(caller: Caller): StatusView {
    const now = this.now();
    const base = {
      version: this.deps.version,
      mode: this.deps.config.mode,
      started_at: iso(this.startedAt),
      uptime_seconds: Math.round((now - this.startedAt) / 100) / 10,
    };
    if (caller.scope !== 'all') {
      const owner = caller.clientId;
      let inFlight = 0;
      for (const o of this.inFlight.values()) if (o === owner) inFlight += 1;
      return {
        ...base,
        sandboxes: this.deps.storage.countSandboxes(now, owner),
        intents: { ...this.deps.storage.countIntents(owner), in_flight: inFlight },
      };
    }
    return {
      ...base,
      sandboxes: this.deps.storage.countSandboxes(now),
      intents: { ...this.deps.storage.countIntents(), in_flight: this.inFlight.size },
      egress_url: this.deps.config.egressUrl,
      token_kid: this.deps.tokens.signingKid,
    };
  }

  // ---- sandboxes ----------------------------------------------------------------------------

  /**
   * Creates a sandbox owned by the caller. The tier must be one the caller's role may create
   * (403 tier_not_allowed), and the caller may have at most AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT
   * active sandboxes (429 too_many_sandboxes). Returns once the registry's poller (OPA) has the
   * new sandbox, when one is polling (bounded wait).
   */
  async createSandbox(caller: Caller, raw: unknown): Promise<{ sandbox: SandboxView; token: string }> {
    const { config, storage, tokens } = this.deps;
    const input = validateCreateSandbox(raw, { tiers: config.sandboxTiers, defaultTtlSeconds: config.defaultTtlSeconds, maxTtlSeconds: config.maxTtlSeconds });
    if (!caller.sandboxTiers.includes(input.tier)) {
      const allowed = config.sandboxTiers.filter((t) => caller.sandboxTiers.includes(t));
      const who = caller.role !== '' ? `role "${caller.role}"` : `client "${caller.clientId}"`;
      throw permissionDenied(
        'tier_not_allowed',
        `${who} may not create "${input.tier}" sandboxes; allowed: ${allowed.length > 0 ? allowed.join(', ') : 'none'}`,
      );
    }
    this.checkActiveLimit(caller);
    const createdAt = this.now();
    const id = newId('sbx');
    const expiresAt = createdAt + input.ttlSeconds * 1000;
    // Sign before storing: a sandbox is only acknowledged together with its token.
    const token = await tokens.sign({ sandboxId: id, tier: input.tier, expiresAtMs: expiresAt, issuedAtMs: createdAt });
    // Checked again with no await before the insert, so concurrent creates cannot overshoot.
    this.checkActiveLimit(caller);
    const row = storage.insertSandbox({ id, owner: caller.clientId, tier: input.tier, labels: input.labels, created_at: createdAt, expires_at: expiresAt });
    this.deps.logger.info({ sandbox_id: id, owner: caller.clientId, tier: input.tier, ttl_seconds: input.ttlSeconds }, 'sandbox created');
    await this.publish(id, 'created');
    return { sandbox: this.sandboxView(row), token };
  }

  /** Sandboxes the caller may see (scope 'own': its own), oldest first; pages bounded in bytes. */
  listSandboxes(
    caller: Caller,
    raw: { state?: unknown; tier?: unknown; limit?: unknown; cursor?: unknown },
  ): { sandboxes: SandboxView[]; next_cursor: string | null } {
    const q = validateListSandboxes(raw, this.deps.config.sandboxTiers);
    const owner = caller.scope === 'all' ? undefined : caller.clientId;
    const page = this.deps.storage.listSandboxes({ state: q.state, tier: q.tier, owner, after: q.after, limit: q.limit, now: this.now() });
    const fitted = this.fitPage(page.items, page.next, (r) => this.sandboxView(r));
    return { sandboxes: fitted.items, next_cursor: fitted.next_cursor };
  }

  getSandbox(caller: Caller, rawId: unknown, field = 'id'): SandboxView {
    return this.sandboxView(this.requireSandbox(caller, rawId, field));
  }

  /**
   * Terminates a sandbox. Terminating an expired sandbox is allowed (it records the
   * termination); terminating one that is already terminated is a conflict. Returns once the
   * registry's poller (OPA) no longer lists it, when one is polling (bounded wait): from then
   * on its token is refused at the egress proxy.
   */
  async terminateSandbox(caller: Caller, rawId: unknown, field = 'id'): Promise<SandboxView> {
    const existing = this.requireSandbox(caller, rawId, field);
    const row = this.deps.storage.terminateSandbox(existing.id, this.now());
    if (!row) throw conflict('sandbox_terminated', `sandbox ${existing.id} is already terminated`);
    this.deps.logger.info({ sandbox_id: row.id, owner: row.owner }, 'sandbox terminated');
    await this.publish(row.id, 'terminated');
    return this.sandboxView(row);
  }

  // ---- intents ------------------------------------------------------------------------------

  /**
   * Executes an intent for an active sandbox. The record is stored as "running" before the
   * request leaves, and completed afterwards. An upstream answer of any status is a result
   * with outcome "ok"; otherwise an AgentdError carries the completed record in details.intent
   * (bad_gateway: egress_unavailable, deadline_exceeded: timeout, unavailable: interrupted).
   */
  async executeIntent(caller: Caller, rawId: unknown, raw: unknown, ctx: { requestId: string; idField?: string; paramsField?: string }): Promise<IntentResult> {
    const { config, storage, tokens, egress, metrics, logger } = this.deps;
    const sandbox = this.requireSandbox(caller, rawId, ctx.idField ?? 'id');
    const paramsField = ctx.paramsField ?? 'params';
    const input = validateIntent(raw, { paramsField, defaultTimeoutMs: config.fetchTimeoutMs, maxTimeoutMs: config.fetchMaxTimeoutMs });
    const p = input.params;
    const newRecord = {
      id: newId('int'),
      sandbox_id: sandbox.id,
      capability: input.capability,
      service: p.service,
      method: p.method,
      path: p.path,
      request_headers: p.headers,
    };
    // The stored record is bounded: refuse before anything is stored or sent.
    const recordBytes = intentRecordText(newRecord).reduce((n, t) => n + Buffer.byteLength(t), INTENT_RECORD_FIXED_BYTES);
    if (recordBytes > config.intentRecordMaxBytes) {
      const pathBytes = Buffer.byteLength(p.path);
      const headerBytes = Buffer.byteLength(JSON.stringify(p.headers));
      const field = headerBytes > pathBytes ? `${paramsField}.headers` : `${paramsField}.path`;
      throw new AgentdError(
        'invalid_argument',
        'intent_too_large',
        `${field} makes the intent record ${recordBytes} bytes; at most ${config.intentRecordMaxBytes} bytes are stored per intent (path, forwarded headers and metadata)`,
        { field },
      );
    }
    const state = this.stateOf(sandbox);
    if (state !== 'active') throw conflict('sandbox_not_active', `sandbox ${sandbox.id} is ${state}; intents need an active sandbox`);
    if (this.draining) throw new AgentdError('unavailable', 'shutting_down', 'agentd is shutting down; retry on another instance');

    const started = this.now();
    const startedHr = performance.now();
    const inserted = storage.insertIntent({ ...newRecord, created_at: started }, config.retentionIntentsPerSandbox);
    const record = inserted.row;
    if (inserted.purged > 0) metrics.storagePurgedRowsTotal.inc({ table: 'intents' }, inserted.purged);
    const controller = new AbortController();
    this.inFlight.set(controller, sandbox.owner);
    let res: Awaited<ReturnType<EgressClient['fetch']>>;
    try {
      const token = await tokens.sign({ sandboxId: sandbox.id, tier: sandbox.tier, expiresAtMs: sandbox.expires_at });
      res = await egress.fetch(p, token, ctx.requestId, controller.signal);
    } catch (err) {
      res = {
        outcome: 'error' as const,
        status: null,
        headers: {},
        body: Buffer.alloc(0),
        truncated: false,
        error: `internal error: ${(err as Error).message}`,
      };
    } finally {
      this.inFlight.delete(controller);
    }
    const durationMs = Math.round(performance.now() - startedHr);
    const completed = storage.isOpen
      ? storage.completeIntent(record.id, {
          outcome: res.outcome,
          status: res.status,
          truncated: res.truncated,
          body_bytes: res.status === null ? null : res.body.length,
          duration_ms: durationMs,
          error: res.error,
          completed_at: this.now(),
        })
      : undefined;
    const view = this.intentView(
      completed ?? {
        ...record,
        outcome: res.outcome,
        status: res.status,
        truncated: res.truncated,
        body_bytes: res.body.length,
        duration_ms: durationMs,
        error: res.error,
        completed_at: this.now(),
      },
    );

    metrics.intentsTotal.inc({ capability: input.capability, outcome: res.outcome });
    metrics.intentDuration.observe({ capability: input.capability }, durationMs / 1000);
    const statusLabel = res.status !== null ? String(res.status) : res.outcome === 'egress_unavailable' ? 'unavailable' : res.outcome;
    metrics.egressRequestsTotal.inc({ service: p.service, status: statusLabel });
    // The path is logged without its query string (it may carry caller data).
    logger.info(
      {
        reqId: ctx.requestId,
        sandbox_id: sandbox.id,
        intent_id: record.id,
        capability: input.capability,
        service: p.service,
        method: p.method,
        path: p.path.split('?')[0],
        status: res.status,
        outcome: res.outcome,
        duration_ms: durationMs,
        truncated: res.truncated,
      },
      'intent completed',
    );

    const body = encodeBody(res.body, res.truncated);
    const result: IntentResult = { ...view, headers: res.headers, body: body.text, body_encoding: body.encoding, dropped_headers: p.droppedHeaders };
    switch (res.outcome) {
      case 'ok':
        return result;
      case 'timeout':
        throw new AgentdError('deadline_exceeded', 'timeout', `${p.method} ${p.service}: ${res.error}`, { details: { intent: result } });
      case 'egress_unavailable':
        throw new AgentdError('bad_gateway', 'egress_unavailable', res.error ?? 'egress proxy unavailable', { details: { intent: result } });
      case 'interrupted':
        throw new AgentdError('unavailable', 'interrupted', res.error ?? 'interrupted', { details: { intent: result } });
      default:
        throw new AgentdError('internal', 'egress_error', res.error ?? 'egress request failed', { details: { intent: result } });
    }
  }

  listIntents(caller: Caller, rawId: unknown, raw: { limit?: unknown; cursor?: unknown }, field = 'id'): { intents: IntentView[]; next_cursor: string | null } {
    const sandbox = this.requireSandbox(caller, rawId, field);
    const q = validatePage(raw);
    const page = this.deps.storage.listIntents(sandbox.id, q);
    const fitted = this.fitPage(page.items, page.next, (r) => this.intentView(r));
    return { intents: fitted.items, next_cursor: fitted.next_cursor };
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Stop being ready; in-flight work continues. */
  beginDrain(): void {
    if (this.draining) return;
    this.draining = true;
    for (const fn of this.listeners) fn(false);
  }

  get inFlightIntents(): number {
    return this.inFlight.size;
  }

  /** Abort every in-flight egress request (after the grace period); they end "interrupted". */
  abortInFlight(): number {
    const n = this.inFlight.size;
    for (const c of this.inFlight.keys()) c.abort();
    return n;
  }

  // ---- helpers ------------------------------------------------------------------------------

  /**
   * The sandbox, if the caller may see it. Another client's sandbox is, for scope 'own',
   * exactly as absent as one that does not exist (same code, same message).
   */
  private requireSandbox(caller: Caller, rawId: unknown, field: string): SandboxRow {
    const id = validateSandboxId(rawId, field);
    const row = this.deps.storage.getSandbox(id);
    if (!row || (caller.scope !== 'all' && row.owner !== caller.clientId)) throw notFound('sandbox_not_found', `sandbox ${id} not found`);
    return row;
  }

  private checkActiveLimit(caller: Caller): void {
    const max = this.deps.config.maxActiveSandboxesPerClient;
    const active = this.deps.storage.countActiveSandboxes(this.now(), caller.clientId);
    if (active >= max) {
      throw resourceExhausted(
        'too_many_sandboxes',
        `client "${caller.clientId}" has ${active} active sandboxes, the most allowed (${max}); terminate one first`,
      );
    }
  }

  /** Publishes a change of the active set to the registry and waits (bounded) for OPA to have it. */
  private async publish(sandboxId: string, change: 'created' | 'terminated'): Promise<void> {
    const registry = this.deps.registry;
    if (!registry) return;
    const counter = registry.changed(change);
    const started = performance.now();
    const result = await registry.awaitAck(counter);
    if (result === 'timeout') {
      this.deps.logger.warn(
        { sandbox_id: sandboxId, change, revision: registry.revision, acknowledged: registry.acknowledged, waited_ms: Math.round(performance.now() - started) },
        'sandbox registry: no poller acknowledged the change in time; the egress proxy may not know it yet',
      );
    }
  }

  /**
   * Cuts a page so that its JSON stays within AGENTD_PAGE_MAX_BYTES (at least one item, so
   * paging always advances). `next` is the storage cursor when more items follow the rows.
   */
  private fitPage<R extends { seq: number }, V>(rows: R[], next: number | null, view: (r: R) => V): { items: V[]; next_cursor: string | null } {
    const max = this.deps.config.pageMaxBytes;
    const items: V[] = [];
    let bytes = 64; // the envelope
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i] as R;
      const v = view(r);
      const size = Buffer.byteLength(JSON.stringify(v)) + 1;
      if (items.length > 0 && bytes + size > max) {
        return { items, next_cursor: String((rows[i - 1] as R).seq) };
      }
      bytes += size;
      items.push(v);
    }
    return { items, next_cursor: next === null ? null : String(next) };
  }

  private stateOf(r: SandboxRow): SandboxState {
    if (r.terminated_at !== null) return 'terminated';
    return r.expires_at <= this.now() ? 'expired' : 'active';
  }

  private sandboxView(r: SandboxRow): SandboxView {
    return {
      id: r.id,
      owner: r.owner,
      tier: r.tier,
      labels: r.labels,
      state: this.stateOf(r),
      created_at: iso(r.created_at),
      expires_at: iso(r.expires_at),
      terminated_at: r.terminated_at === null ? null : iso(r.terminated_at),
    };
  }

  private intentView(r: Omit<IntentRow, 'seq'>): IntentView {
    return {
      id: r.id,
      sandbox_id: r.sandbox_id,
      capability: r.capability,
      service: r.service,
      method: r.method,
      path: r.path,
      request_headers: r.request_headers,
      outcome: r.outcome,
      status: r.status,
      truncated: r.truncated,
      body_bytes: r.body_bytes,
      duration_ms: r.duration_ms,
      error: r.error,
      created_at: iso(r.created_at),
      completed_at: r.completed_at === null ? null : iso(r.completed_at),
    };
  }
}

/** UTF-8 text when the bytes are valid UTF-8 (a character cut by truncation is dropped), else base64. */
function encodeBody(buf: Buffer, truncated: boolean): { text: string; encoding: 'utf8' | 'base64' } {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (let cut = 0; cut <= (truncated ? 3 : 0) && cut <= buf.length; cut++) {
    try {
      return { text: decoder.decode(buf.subarray(0, buf.length - cut)), encoding: 'utf8' };
    } catch {
      // try a shorter prefix (only when truncated) or fall back to base64
    }
  }
  return { text: buf.toString('base64'), encoding: 'base64' };
}
