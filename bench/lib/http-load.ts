// The HTTP/1.1 load generator. Runs as its own process (bench/lib/load.ts starts it), so the
// bench's main process (stand-in upstream, log pipes, RSS sampler) never delays it. (Not a
// worker thread: autocannon switches to its own worker protocol when it is not on a main thread.)
//
// Two modes:
//  - "rate": open loop, wrk2-style. Request i is due at start + i/rate whatever the server does;
//    a due request takes an idle keep-alive connection, opens a new one (up to a cap) or waits
//    for one. Latency runs from the moment the scheduler dispatched the request (queueing for
//    a connection included, so a slow server cannot hide behind a slower send rate) to the last
//    byte of the response, measured with performance.now() (sub-microsecond resolution).
//    The scheduler's own lateness (timer wake-up vs due time) is reported separately.
//    autocannon's overallRate is not used for this: it sends each connection's per-second quota
//    in a burst and records latency in whole milliseconds, too coarse for 1 ms budgets.
//  - "max": closed loop, autocannon with N connections: the highest request rate reached.
//
// Requests are pre-serialized HTTP/1.1 texts, cycled in order (e.g. one per sandbox token).
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { summarize, type LatencySummary } from './stats.ts';

export interface LoadTarget {
  readonly host: string;
  readonly port: number;
  /** TLS to the target: trusted CA (PEM text) and server name. */
  readonly tls?: { readonly ca: string; readonly servername: string };
}

export interface HttpRequestSpec {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
}

export interface RateLoadSpec {
  readonly kind: 'rate';
  readonly target: LoadTarget;
  readonly requests: readonly HttpRequestSpec[];
  readonly rate: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Connections opened before the run, and the most the pool may grow to. */
  readonly initialConnections: number;
  readonly maxConnections: number;
  readonly expectStatus: number;
  /** Every response body must contain these strings (checked for every response). */
  readonly expectBody?: readonly string[];
  readonly timeoutMs: number;
}

export interface MaxLoadSpec {
  readonly kind: 'max';
  readonly target: LoadTarget;
  readonly requests: readonly HttpRequestSpec[];
  readonly connections: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly expectStatus: number;
  readonly timeoutMs: number;
}

export type LoadSpec = RateLoadSpec | MaxLoadSpec;

export interface RateLoadResult {
  readonly kind: 'rate';
  readonly targetRate: number;
  /** Responses completed per second of the measured window. */
  readonly achievedRate: number;
  readonly latency: LatencySummary;
  /** Timer lateness of the scheduler (dispatch - due), ms. */
  readonly schedulerLagP50Ms: number;
  readonly schedulerLagP99Ms: number;
  readonly sent: number;
  readonly ok: number;
  /** Responses with another status or body than expected, by status, and errors by message. */
  readonly unexpected: Readonly<Record<string, number>>;
  readonly errors: Readonly<Record<string, number>>;
  readonly connectionsOpened: number;
  /** CPU the load generator itself used over the whole run (warm-up included), ms. */
  readonly generatorCpuMs: number;
  /** One example of an unexpected response, for the error message. */
  readonly example?: string;
}

export interface MaxLoadResult {
  readonly kind: 'max';
  readonly connections: number;
  readonly requestsPerSecond: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly ok: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly generatorCpuMs: number;
}

export type LoadResult = RateLoadResult | MaxLoadResult;

export function serialize(target: LoadTarget, r: HttpRequestSpec): Buffer {
  const headers: Record<string, string> = { host: `${target.host}:${target.port}`, ...lower(r.headers) };
  if (r.body !== undefined) headers['content-length'] = String(Buffer.byteLength(r.body));
  const head =
    `${r.method} ${r.path} HTTP/1.1\r\n` +
    Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('') +
    '\r\n';
  return Buffer.from(head + (r.body ?? ''), 'utf8');
}

const lower = (h: Readonly<Record<string, string>>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));

const CRLF2 = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

interface Pending {
  readonly dispatchedAt: number;
  readonly measured: boolean;
  readonly onDone: (status: number, body: Buffer | null, error?: string) => void;
}

/**
 * One keep-alive HTTP/1.1 connection, one request at a time. Parses just enough of the
 * response: status, content-length or chunked body, connection: close.
 */
class Conn {
  readonly socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private pending: Pending | undefined;
  private state: { status: number; head: number; length: number | 'chunked'; close: boolean } | undefined;
  private timer: NodeJS.Timeout | undefined;
  closed = false;
  readonly ready: Promise<void>;
  private readonly timeoutMs: number;
  private readonly onClose: (c: Conn) => void;

  constructor(target: LoadTarget, timeoutMs: number, onClose: (c: Conn) => void) {
    this.timeoutMs = timeoutMs;
    this.onClose = onClose;
    const s = target.tls
      ? tlsConnect({ host: target.host, port: target.port, ca: target.tls.ca, servername: target.tls.servername, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host: target.host, port: target.port });
    s.setNoDelay(true);
    this.socket = s;
    this.ready = new Promise((resolve, reject) => {
      s.once(target.tls ? 'secureConnect' : 'connect', () => resolve());
      s.once('error', reject);
    });
    this.ready.catch(() => undefined);
    s.on('data', (d: Buffer) => this.onData(d));
    s.on('error', (e) => this.fail(e.message));
    s.on('close', () => this.fail('connection closed'));
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }

  send(bytes: Buffer, p: Pending): void {
    this.pending = p;
    this.timer = setTimeout(() => {
      this.fail('timeout');
      this.socket.destroy();
    }, this.timeoutMs);
    this.socket.write(bytes);
  }

  private notified = false;

  private fail(msg: string): void {
    this.closed = true;
    const p = this.pending;
    this.pending = undefined;
    if (this.timer) clearTimeout(this.timer);
    if (p) p.onDone(0, null, msg);
    if (!this.notified) {
      this.notified = true;
      this.onClose(this);
    }
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      if (!this.state) {
        const end = this.buf.indexOf(CRLF2);
        if (end < 0) return;
        const head = this.buf.subarray(0, end).toString('latin1');
        const lines = head.split('\r\n');
        const status = Number(lines[0]!.split(' ')[1]);
        let length: number | 'chunked' = 0;
        let close = false;
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          const k = l.slice(0, i).trim().toLowerCase();
          const v = l.slice(i + 1).trim();
          if (k === 'content-length') length = Number(v);
          else if (k === 'transfer-encoding' && v.toLowerCase().includes('chunked')) length = 'chunked';
          else if (k === 'connection' && v.toLowerCase() === 'close') close = true;
        }
        this.state = { status, head: end + 4, length, close };
      }
      const st = this.state;
      let bodyEnd: number;
      let body: Buffer;
      if (st.length === 'chunked') {
        const parts: Buffer[] = [];
        let pos = st.head;
        let done = false;
        for (;;) {
          const eol = this.buf.indexOf(CRLF, pos);
          if (eol < 0) break;
          const size = parseInt(this.buf.subarray(pos, eol).toString('latin1'), 16);
          if (size === 0) {
            if (this.buf.length >= eol + 4) {
              pos = eol + 4;
              done = true;
            }
            break;
          }
          if (this.buf.length < eol + 2 + size + 2) break;
          parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
          pos = eol + 2 + size + 2;
        }
        if (!done) return;
        bodyEnd = pos;
        body = Buffer.concat(parts);
      } else {
        if (this.buf.length < st.head + st.length) return;
        bodyEnd = st.head + st.length;
        body = this.buf.subarray(st.head, bodyEnd);
      }
      const p = this.pending;
      this.pending = undefined;
      if (this.timer) clearTimeout(this.timer);
      this.buf = this.buf.subarray(bodyEnd);
      this.state = undefined;
      if (st.close) {
        this.closed = true;
        this.socket.destroy();
      }
      p?.onDone(st.status, body);
      if (this.buf.length === 0) return;
    }
  }
}

async function runRate(spec: RateLoadSpec): Promise<RateLoadResult> {
  const reqs = spec.requests.map((r) => serialize(spec.target, r));
  const idle: Conn[] = [];
  const all = new Set<Conn>();
  const waiting: (() => void)[] = [];
  let opened = 0;
  let stopping = false;
  const open = (): Conn => {
    opened++;
    const c = new Conn(spec.target, spec.timeoutMs, (closed) => {
      all.delete(closed);
      const i = idle.indexOf(closed);
      if (i >= 0) idle.splice(i, 1);
      // Requests waiting for a connection get a new one in place of the closed one.
      if (waiting.length > 0 && !stopping) {
        const n = open();
        n.ready.then(
          () => {
            idle.push(n);
            waiting.shift()?.();
          },
          () => undefined,
        );
      }
    });
    all.add(c);
    return c;
  };
  const initial = Array.from({ length: spec.initialConnections }, open);
  await Promise.all(initial.map((c) => c.ready));
  idle.push(...initial);

  const cpu0 = process.cpuUsage();
  const interval = 1000 / spec.rate;
  const start = performance.now() + 5;
  const measureStart = start + spec.warmupMs;
  const end = measureStart + spec.durationMs;
  const latencies: number[] = [];
  const lags: number[] = [];
  const unexpected: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let example: string | undefined;
  let sent = 0;
  let ok = 0;
  let okInWindow = 0;
  let inFlight = 0;
  let allDone: () => void = () => undefined;
  const finished = new Promise<void>((r) => (allDone = r));
  let schedulingDone = false;

  const withConnection = (fn: (c: Conn) => void) => {
    const c = idle.pop();
    if (c) return fn(c);
    if (all.size < spec.maxConnections) {
      const n = open();
      n.ready.then(
        () => fn(n),
        (e: Error) => {
          errors[`connect: ${e.message}`] = (errors[`connect: ${e.message}`] ?? 0) + 1;
          inFlight--;
          if (schedulingDone && inFlight === 0) allDone();
        },
      );
      return;
    }
    waiting.push(() => fn(idle.pop()!));
  };
  // A released connection goes to the first request waiting for one, else back to the pool.
  const releaseTo = (c: Conn) => {
    if (c.closed) return;
    idle.push(c);
    waiting.shift()?.();
  };

  const dispatch = (i: number, due: number, now: number) => {
    const measured = due >= measureStart;
    if (measured) lags.push(now - due);
    sent++;
    inFlight++;
    withConnection((c) => {
      c.send(reqs[i % reqs.length]!, {
        dispatchedAt: now,
        measured,
        onDone: (status, body, error) => {
          const t = performance.now();
          inFlight--;
          if (error !== undefined) {
            errors[error] = (errors[error] ?? 0) + 1;
          } else if (status !== spec.expectStatus || (spec.expectBody && !spec.expectBody.every((s) => body!.includes(s)))) {
            unexpected[String(status)] = (unexpected[String(status)] ?? 0) + 1;
            example ??= `${status} ${body!.toString('utf8').slice(0, 300)}`;
          } else {
            ok++;
            if (measured) {
              okInWindow++;
              latencies.push(t - now);
            }
          }
          releaseTo(c);
          if (schedulingDone && inFlight === 0) allDone();
        },
      });
    });
  };

  let i = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (true) {
        const due = start + i * interval;
        if (due > now || due >= end) break;
        dispatch(i, due, now);
        i++;
      }
      const nextDue = start + i * interval;
      if (nextDue >= end) return resolve();
      setTimeout(tick, Math.max(0, nextDue - performance.now()));
    };
    setTimeout(tick, Math.max(0, start - performance.now()));
  });
  schedulingDone = true;
  if (inFlight > 0) {
    await Promise.race([finished, new Promise((r) => setTimeout(r, spec.timeoutMs + 1000))]);
  }
  stopping = true;
  for (const c of all) c.socket.destroy();
  const cpu = process.cpuUsage(cpu0);
  const lagSummary = summarize(lags);
  return {
    kind: 'rate',
    targetRate: spec.rate,
    achievedRate: okInWindow / (spec.durationMs / 1000),
    latency: summarize(latencies),
    schedulerLagP50Ms: lagSummary.p50Ms,
    schedulerLagP99Ms: lagSummary.p99Ms,
    sent,
    ok,
    unexpected,
    errors,
    connectionsOpened: opened,
    generatorCpuMs: (cpu.user + cpu.system) / 1000,
    ...(example ? { example } : {}),
  };
}

async function runMax(spec: MaxLoadSpec): Promise<MaxLoadResult> {
  const base = {
    url: `${spec.target.tls ? 'https' : 'http'}://${spec.target.host}:${spec.target.port}`,
    connections: spec.connections,
    pipelining: 1,
    timeout: Math.ceil(spec.timeoutMs / 1000),
    ...(spec.target.tls ? { tlsOptions: { ca: spec.target.tls.ca, servername: spec.target.tls.servername } } : {}),
    requests:
      spec.requests.length === 1
        ? [
            {
              method: spec.requests[0]!.method,
              path: spec.requests[0]!.path,
              headers: { ...spec.requests[0]!.headers },
              ...(spec.requests[0]!.body ? { body: spec.requests[0]!.body } : {}),
            },
          ]
        : [
            {
              // Cycle through the requests (e.g. one per sandbox token).
              setupRequest: (req: Record<string, unknown>, ctx: Record<string, number>) => {
                const n = (ctx['n'] = ((ctx['n'] ?? -1) + 1) % spec.requests.length);
                const r = spec.requests[n]!;
                return { ...req, method: r.method, path: r.path, headers: { ...r.headers }, ...(r.body ? { body: r.body } : {}) };
              },
            },
          ],
  };
  if (spec.warmupMs > 0) await autocannon({ ...base, duration: spec.warmupMs / 1000 } as never);
  const cpu0 = process.cpuUsage();
  const r = (await autocannon({ ...base, duration: spec.durationMs / 1000 } as never)) as unknown as {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number };
    non2xx: number;
    errors: number;
    timeouts: number;
    statusCodeStats: Record<string, { count: number }>;
    '2xx': number;
    duration: number;
  };
  const cpu = process.cpuUsage(cpu0);
  const expected = r.statusCodeStats[String(spec.expectStatus)]?.count ?? 0;
  return {
    kind: 'max',
    connections: spec.connections,
    // Completed responses with the expected status per second of the run.
    requestsPerSecond: expected / r.duration,
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
    ok: expected,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    generatorCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return spec.kind === 'rate' ? runRate(spec) : runMax(spec);
}

// As a child process (bench/lib/load.ts): the spec as JSON on stdin, the result as JSON on stdout.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const chunks: Buffer[] = [];
  process.stdin.on('data', (c: Buffer) => chunks.push(c));
  process.stdin.on('end', () => {
    runLoad(JSON.parse(Buffer.concat(chunks).toString('utf8')) as LoadSpec).then(
      (r) => process.stdout.write(JSON.stringify({ ok: true, result: r }) + '\n', () => process.exit(0)),
      (e: Error) => process.stdout.write(JSON.stringify({ ok: false, error: e.stack ?? e.message }) + '\n', () => process.exit(0)),
    );
  });
}
