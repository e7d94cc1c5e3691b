// The domain core: sandboxes and their intents. HTTP and gRPC are thin transports over this
// class; they translate requests into these calls and AgentdError into their error formats.
import { randomBytes } from 'node:crypto';
import type { AgentdConfig } from '../config.ts';
import type { IntentOutcome, SandboxState } from '../contract.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { IntentRow, SandboxRow, Storage } from '../storage/sqlite.ts';
import type { EgressClient, EgressProbe } from './egress.ts';
import { AgentdError, conflict, notFound } from './errors.ts';
import type { TokenService } from './tokens.ts';
import { validateCreateSandbox, validateIntent, validateListSandboxes, validatePage, validateSandboxId } from './validation.ts';

export interface SandboxView {
  id: string;
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
  egress_url: string;
  token_kid: string;
}

export interface ReadinessView {
  ready: boolean;
  checks: {
    storage: { ok: boolean; error?: string };
    egress: { ok: boolean; url: string; reachable: boolean; error?: string };
    shutdown: { ok: boolean; draining: boolean };
  };
}

export interface ServiceDeps {
  config: AgentdConfig;
  storage: Storage;
  tokens: TokenService;
  egress: EgressClient;
  metrics: Metrics;
  logger: Logger;
  version: string;
  now?: () => number;
}

const newId = (prefix: string): string => `${prefix}_${randomBytes(12).toString('hex')}`;
const iso = (ms: number): string => new Date(ms).toISOString();

export class AgentdService {
  private readonly deps: ServiceDeps;
  private readonly now: () => number;
  private readonly startedAt: number;
  private draining = false;
  private readonly inFlight = new Set<AbortController>();
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
   * Readiness: the daemon's own dependencies. Storage must answer and the daemon must not be
   * draining. The egress proxy is reported (a TCP connect, cached 5 s) but does not make the
   * daemon unready: it is shared by every replica, so failing readiness on it would take the
   * whole API (sandbox management included) out of the load balancer for a downstream outage;
   * intents report egress_unavailable instead.
   */
  async readiness(): Promise<ReadinessView> {
    let storage: ReadinessView['checks']['storage'];
    try {
      storage = { ok: this.deps.storage.ping() };
      if (!storage.ok) storage.error = 'storage is closed';
    } catch (err) {
      storage = { ok: false, error: (err as Error).message };
    }
    const probe: EgressProbe = await this.deps.egress.probe();
    const egress = { ok: true, url: this.deps.config.egressUrl, reachable: probe.reachable, ...(probe.error ? { error: `egress proxy not reachable: ${probe.error}` } : {}) };
    const shutdown = { ok: !this.draining, draining: this.draining };
    return { ready: storage.ok && shutdown.ok, checks: { storage, egress, shutdown } };
  }

  /** Readiness without the (informational, networked) egress probe. */
  isReadyNow(): boolean {
    if (this.draining) return false;
    try {
      return this.deps.storage.ping();
    } catch {
      return false;
    }
  }

  /** Subscribe to serving-state changes (gRPC health Watch). Returns an unsubscribe function. */
  onServingChange(fn: (serving: boolean) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  status(): StatusView {
    const now = this.now();
    return {
      version: this.deps.version,
      mode: this.deps.config.mode,
      started_at: iso(this.startedAt),
      uptime_seconds: Math.round((now - this.startedAt) / 100) / 10,
      sandboxes: this.deps.storage.countSandboxes(now),
      intents: { ...this.deps.storage.countIntents(), in_flight: this.inFlight.size },
      egress_url: this.deps.config.egressUrl,
      token_kid: this.deps.tokens.signingKid,
    };
  }

  // ---- sandboxes ----------------------------------------------------------------------------

  async createSandbox(raw: unknown): Promise<{ sandbox: SandboxView; token: string }> {
    const { config, storage, tokens } = this.deps;
    const input = validateCreateSandbox(raw, { tiers: config.sandboxTiers, defaultTtlSeconds: config.defaultTtlSeconds, maxTtlSeconds: config.maxTtlSeconds });
    const createdAt = this.now();
    const id = newId('sbx');
    const expiresAt = createdAt + input.ttlSeconds * 1000;
    // Sign before storing: a sandbox is only acknowledged together with its token.
    const token = await tokens.sign({ sandboxId: id, tier: input.tier, expiresAtMs: expiresAt, issuedAtMs: createdAt });
    const row = storage.insertSandbox({ id, tier: input.tier, labels: input.labels, created_at: createdAt, expires_at: expiresAt });
    this.deps.logger.info({ sandbox_id: id, tier: input.tier, ttl_seconds: input.ttlSeconds }, 'sandbox created');
    return { sandbox: this.sandboxView(row), token };
  }

  listSandboxes(raw: { state?: unknown; tier?: unknown; limit?: unknown; cursor?: unknown }): { sandboxes: SandboxView[]; next_cursor: string | null } {
    const q = validateListSandboxes(raw, this.deps.config.sandboxTiers);
    const page = this.deps.storage.listSandboxes({ state: q.state, tier: q.tier, after: q.after, limit: q.limit, now: this.now() });
    return { sandboxes: page.items.map((r) => this.sandboxView(r)), next_cursor: page.next === null ? null : String(page.next) };
  }

  getSandbox(rawId: unknown, field = 'id'): SandboxView {
    return this.sandboxView(this.requireSandbox(rawId, field));
  }

  /**
   * Terminates a sandbox. Terminating an expired sandbox is allowed (it records the
   * termination); terminating one that is already terminated is a conflict.
   */
  terminateSandbox(rawId: unknown, field = 'id'): SandboxView {
    const existing = this.requireSandbox(rawId, field);
    const row = this.deps.storage.terminateSandbox(existing.id, this.now());
    if (!row) throw conflict('sandbox_terminated', `sandbox ${existing.id} is already terminated`);
    this.deps.logger.info({ sandbox_id: row.id }, 'sandbox terminated');
    return this.sandboxView(row);
  }

  // ---- intents ------------------------------------------------------------------------------

  /**
   * Executes an intent for an active sandbox. The record is stored as "running" before the
   * request leaves, and completed afterwards. An upstream answer of any status is a result
   * with outcome "ok"; otherwise an AgentdError carries the completed record in details.intent
   * (bad_gateway: egress_unavailable, deadline_exceeded: timeout, unavailable: interrupted).
   */
  async executeIntent(rawId: unknown, raw: unknown, ctx: { requestId: string; idField?: string; paramsField?: string }): Promise<IntentResult> {
    const { config, storage, tokens, egress, metrics, logger } = this.deps;
    const sandbox = this.requireSandbox(rawId, ctx.idField ?? 'id');
    const input = validateIntent(raw, { paramsField: ctx.paramsField ?? 'params', defaultTimeoutMs: config.fetchTimeoutMs, maxTimeoutMs: config.fetchMaxTimeoutMs });
    const state = this.stateOf(sandbox);
    if (state !== 'active') throw conflict('sandbox_not_active', `sandbox ${sandbox.id} is ${state}; intents need an active sandbox`);
    if (this.draining) throw new AgentdError('unavailable', 'shutting_down', 'agentd is shutting down; retry on another instance');

    const p = input.params;
    const started = this.now();
    const startedHr = performance.now();
    const record = storage.insertIntent({
      id: newId('int'),
      sandbox_id: sandbox.id,
      capability: input.capability,
      service: p.service,
      method: p.method,
      path: p.path,
      request_headers: p.headers,
      created_at: started,
    });
    const controller = new AbortController();
    this.inFlight.add(controller);
    let res;
    try {
      const token = await tokens.sign({ sandboxId: sandbox.id, tier: sandbox.tier, expiresAtMs: sandbox.expires_at });
      res = await egress.fetch(p, token, ctx.requestId, controller.signal);
    } catch (err) {
      res = { outcome: 'error' as const, status: null, headers: {}, body: Buffer.alloc(0), truncated: false, error: `internal error: ${(err as Error).message}` };
    } finally {
      this.inFlight.delete(controller);
    }
    const durationMs = Math.round(performance.now() - startedHr);
    const completed =
      storage.isOpen
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
    const view = this.intentView(completed ?? { ...record, outcome: res.outcome, status: res.status, truncated: res.truncated, body_bytes: res.body.length, duration_ms: durationMs, error: res.error, completed_at: this.now() });

    metrics.intentsTotal.inc({ capability: input.capability, outcome: res.outcome });
    metrics.intentDuration.observe({ capability: input.capability }, durationMs / 1000);
    const statusLabel = res.status !== null ? String(res.status) : res.outcome === 'egress_unavailable' ? 'unavailable' : res.outcome;
    metrics.egressRequestsTotal.inc({ service: p.service, status: statusLabel });
    // The path is logged without its query string (it may carry caller data).
    logger.info(
      { reqId: ctx.requestId, sandbox_id: sandbox.id, intent_id: record.id, capability: input.capability, service: p.service, method: p.method, path: p.path.split('?')[0], status: res.status, outcome: res.outcome, duration_ms: durationMs, truncated: res.truncated },
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

  listIntents(rawId: unknown, raw: { limit?: unknown; cursor?: unknown }, field = 'id'): { intents: IntentView[]; next_cursor: string | null } {
    const sandbox = this.requireSandbox(rawId, field);
    const q = validatePage(raw);
    const page = this.deps.storage.listIntents(sandbox.id, q);
    return { intents: page.items.map((r) => this.intentView(r)), next_cursor: page.next === null ? null : String(page.next) };
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
    for (const c of this.inFlight) c.abort();
    return n;
  }

  // ---- helpers ------------------------------------------------------------------------------

  private requireSandbox(rawId: unknown, field: string): SandboxRow {
    const id = validateSandboxId(rawId, field);
    const row = this.deps.storage.getSandbox(id);
    if (!row) throw notFound('sandbox_not_found', `sandbox ${id} not found`);
    return row;
  }

  private stateOf(r: SandboxRow): SandboxState {
    if (r.terminated_at !== null) return 'terminated';
    return r.expires_at <= this.now() ? 'expired' : 'active';
  }

  private sandboxView(r: SandboxRow): SandboxView {
    return {
      id: r.id,
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
