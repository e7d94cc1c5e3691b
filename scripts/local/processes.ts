// Child processes for the harness and `npm run dev`: each logs to its own file (the secret-
// hygiene tests read them all), can be stopped, killed and started again, and is waited for
// with a readiness probe rather than a sleep.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { connect, createServer } from 'node:net';

export interface ProcessSpec {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Resolves true when the process is ready to serve. */
  readonly ready: () => Promise<boolean>;
  readonly readyTimeoutMs?: number;
}

export class ManagedProcess {
  readonly spec: ProcessSpec;
  readonly logFile: string;
  private child: ChildProcess | undefined;
  private log: WriteStream | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(spec: ProcessSpec, logFile: string) {
    this.spec = spec;
    this.logFile = logFile;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.log = createWriteStream(this.logFile, { flags: 'a' });
    const child = spawn(this.spec.command, [...this.spec.args], {
      cwd: this.spec.cwd,
      env: { ...process.env, ...this.spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout?.pipe(this.log, { end: false });
    child.stderr?.pipe(this.log, { end: false });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + (this.spec.readyTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(`${this.spec.name} exited during start (code ${child.exitCode}); log ${this.logFile}:\n${this.tail()}`);
      }
      if (await this.spec.ready().catch(() => false)) return;
      await sleep(100);
    }
    throw new Error(`${this.spec.name} was not ready after ${this.spec.readyTimeoutMs ?? 30_000} ms; log ${this.logFile}:\n${this.tail()}`);
  }

  /** SIGTERM (or another signal) and wait for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<void> {
    if (!this.child || !this.running) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** kill -9: no chance to clean up. */
  kill(): Promise<void> {
    return this.stop('SIGKILL');
  }

  /** The exit of the current run. */
  waitExit(): Promise<void> {
    return this.exited;
  }

  /** Waits until a JSON log line satisfies `match` (access logs are flushed about once a second). */
  async waitForJsonLine(match: (line: any) => boolean, timeoutMs = 5000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const found = this.jsonLines().find(match);
      if (found) return found;
      await sleep(100);
    }
    throw new Error(`${this.spec.name}: no log line matched within ${timeoutMs} ms; last lines:\n${this.tail(10)}`);
  }

  /** Every line of the log that is a JSON object. */
  jsonLines(): any[] {
    let text = '';
    try {
      text = readFileSync(this.logFile, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l)];
        } catch {
          return [];
        }
      });
  }

  tail(lines = 40): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A free port below the kernel's ephemeral range (32768+), so that no outgoing connection can
 * take it between this check and the bind. Each vitest worker draws from its own block, and a
 * process never hands out the same port twice.
 */
const handedOut = new Set<number>();
export async function freePort(): Promise<number> {
  const pool = Number(process.env['VITEST_POOL_ID'] ?? process.env['VITEST_WORKER_ID'] ?? 0) % 8;
  const base = 20_000 + pool * 1500;
  const start = Math.floor(Math.random() * 1500);
  for (let i = 0; i < 1500; i++) {
    const port = base + ((start + i) % 1500);
    if (handedOut.has(port)) continue;
    if (await canBind(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${base}-${base + 1499}`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** GET a URL and say whether it answered with the given status. */
export async function answers(url: string, status = 200): Promise<boolean> {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 1000);
  try {
    const r = await fetch(url, { signal: ctl.signal });
    await r.arrayBuffer();
    return r.status === status;
  } finally {
    clearTimeout(t);
  }
}

/** Whether something accepts TCP connections on loopback `port` (a server without an HTTP health endpoint, e.g. Redis). */
export function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
