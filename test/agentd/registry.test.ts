// The sandbox registry (REGISTRY_BUNDLE_PATH), the OPA bundle of active sandboxes, over real HTTP:
// bearer auth, ETag / If-None-Match (200 / 304), OPA's long polling (held until the set changes,
// released within 100 ms of a create or terminate; 304 after wait=N), expiry dropping a sandbox,
// the acknowledgement wait (with fake pollers), and the tarball itself (unpacked with tar).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REGISTRY_BUNDLE_PATH, REGISTRY_BUNDLE_ROOT } from '../../agentd/src/contract.ts';
import { REGISTRY_ACK_TIMEOUT_MS } from '../../agentd/src/config.ts';
import { isLoopback } from '../../agentd/src/http/routes/registry.ts';
import { cleanupAll, sleep, startEgress, startInProcess, tempDir, writeSecret, type InProcess } from './support.ts';

afterAll(cleanupAll);

const REGISTRY_TOKEN = 'registry-token-0123456789abcdef';
const OPA_CT = 'application/vnd.openpolicyagent.bundles';

interface Bundle {
  files: Record<string, Buffer>;
  manifest: { revision: string; roots: string[] };
  active: Record<string, { tier: string; exp: number }>;
}

/** A small ustar reader, independent of agentd's writer: checks magic and checksums. */
function untar(tar: Buffer): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  let off = 0;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, n: number) =>
      h
        .subarray(a, a + n)
        .toString('latin1')
        .replace(/\0.*$/s, '');
    expect(str(257, 6)).toBe('ustar');
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : (h[i] as number);
    expect(parseInt(str(148, 8).trim(), 8)).toBe(sum);
    expect(str(156, 1)).toBe('0');
    const size = parseInt(str(124, 12), 8);
    files[str(0, 100)] = Buffer.from(tar.subarray(off + 512, off + 512 + size));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

function parseBundle(gz: Buffer): Bundle {
  const files = untar(gunzipSync(gz));
  const manifest = JSON.parse((files['.manifest'] as Buffer).toString('utf8'));
  const data = JSON.parse((files[`${REGISTRY_BUNDLE_ROOT}/data.json`] as Buffer).toString('utf8'));
  return { files, manifest, active: data.active };
}

interface PollAnswer {
  status: number;
  etag: string | null;
  contentType: string | null;
  body: Buffer;
  json: any;
  at: number;
}

async function poll(d: InProcess, headers: Record<string, string> = {}, token: string | null = REGISTRY_TOKEN): Promise<PollAnswer> {
  const res = await fetch(`${d.agentd.http.url}${REGISTRY_BUNDLE_PATH}`, {
    headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
  const body = Buffer.from(await res.arrayBuffer());
  let json: any;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: res.status, etag: res.headers.get('etag'), contentType: res.headers.get('content-type'), body, json, at: performance.now() };
}

/**
 * Behaves like OPA's bundle downloader with long polling: polls with If-None-Match = the
 * revision it activated last and `Prefer: modes=snapshot,delta;wait=N`, and re-polls at once.
 * `ackDelayMs` delays the re-poll (the acknowledgement) after a new bundle.
 */
class FakeOpa {
  readonly bundles: (Bundle & { at: number; etag: string })[] = [];
  private etag = '';
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly controller = new AbortController();
  private readonly d: InProcess;
  private readonly opts: { wait: number; ackDelayMs?: number };

  constructor(d: InProcess, opts: { wait: number; ackDelayMs?: number }) {
    this.d = d;
    this.opts = opts;
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let res: Response;
      try {
        res = await fetch(`${this.d.agentd.http.url}${REGISTRY_BUNDLE_PATH}`, {
          headers: { authorization: `Bearer ${REGISTRY_TOKEN}`, 'if-none-match': this.etag, prefer: `modes=snapshot,delta;wait=${this.opts.wait}` },
          signal: this.controller.signal,
        });
      } catch {
        return;
      }
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status === 200) {
        const etag = res.headers.get('etag') as string;
        this.bundles.push({ ...parseBundle(body), at: performance.now(), etag });
        if (this.opts.ackDelayMs) await sleep(this.opts.ackDelayMs);
        this.etag = etag;
      } else if (res.status !== 304) {
        throw new Error(`registry answered ${res.status}`);
      }
    }
  }

  /** Resolves when a bundle satisfying `pred` has arrived; returns it. */
  async waitFor(pred: (b: Bundle) => boolean, timeoutMs = 5000): Promise<Bundle & { at: number; etag: string }> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const b = this.bundles.find(pred);
      if (b) return b;
      if (performance.now() > until) throw new Error('no such bundle in time');
      await sleep(5);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.controller.abort();
    await this.done;
  }
}

async function registryDaemon(extra: Record<string, string> = {}): Promise<InProcess> {
  const egress = await startEgress();
  const dir = tempDir();
  return startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_REGISTRY_TOKEN_FILE: writeSecret(dir, 'registry-token', REGISTRY_TOKEN), ...extra });
}

describe('the registry endpoint', () => {
  let d: InProcess;
  beforeAll(async () => {
    d = await registryDaemon();
  });

  it('needs the bearer token: 401 JSON otherwise', async () => {
    const cases: [Record<string, string>, string | null][] = [
      [{}, null],
      [{}, 'wrong-token-0123456789abcdef'],
      [{}, `${REGISTRY_TOKEN}x`],
      [{ authorization: `Basic ${Buffer.from(`opa:${REGISTRY_TOKEN}`).toString('base64')}` }, null],
      [{ authorization: `bearer  ${REGISTRY_TOKEN}` }, null],
    ];
    for (const [headers, token] of cases) {
      const r = await poll(d, headers, token);
      expect(r.status, JSON.stringify(headers)).toBe(401);
      expect(r.contentType).toMatch(/^application\/json/);
      expect(r.json).toEqual({ error: { code: 'unauthenticated', message: 'authentication required' } });
    }
    // The gateway token or identity headers do not open it either.
    expect((await poll(d, { 'x-agentd-client-id': 'admin', 'x-agentd-client-scope': 'all' }, null)).status).toBe(401);
    expect((await poll(d)).status).toBe(200);
    expect(d.logs.length).toBeGreaterThan(3);
    for (const line of d.logs) expect(line).not.toContain(REGISTRY_TOKEN.slice(9));
  });

  it('200 with the bundle and an ETag; 304 when If-None-Match is the current revision', async () => {
    const first = await poll(d);
    expect(first.status).toBe(200);
    // Every answer says it is an OPA bundle server (so OPA resumes long polling after a failed poll).
    expect(first.contentType).toBe('application/vnd.openpolicyagent.bundles');
    expect(first.etag).toMatch(/^"[0-9a-f]{8}-\d+"$/);
    const b = parseBundle(first.body);
    expect(`"${b.manifest.revision}"`).toBe(first.etag);

    const same = await poll(d, { 'if-none-match': first.etag as string });
    expect(same.status).toBe(304);
    expect(same.etag).toBe(first.etag);
    expect(same.body.length).toBe(0);
    // Unquoted (as a raw revision) and in a list are recognised too.
    expect((await poll(d, { 'if-none-match': b.manifest.revision })).status).toBe(304);
    expect((await poll(d, { 'if-none-match': `"other", ${first.etag}` })).status).toBe(304);
    // Anything else gets the bundle.
    expect((await poll(d, { 'if-none-match': '"00000000-1"' })).status).toBe(200);

    // A change makes the old revision stale.
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' });
    const after = await poll(d, { 'if-none-match': first.etag as string });
    expect(after.status).toBe(200);
    expect(after.etag).not.toBe(first.etag);
    expect(Object.keys(parseBundle(after.body).active)).toContain(s.json.id);
    // Changes move the revision forward (same boot id, a higher counter).
    const [bootA, nA] = (first.etag as string).replace(/"/g, '').split('-');
    const [bootB, nB] = (after.etag as string).replace(/"/g, '').split('-');
    expect(bootB).toBe(bootA);
    expect(Number(nB)).toBeGreaterThan(Number(nA));
  });

  it('the tarball is a gzipped POSIX ustar archive with .manifest and sandboxes/data.json (unpacked with tar)', async () => {
    // A daemon no poller has seen yet, so that the changes below do not wait for one.
    const d = await registryDaemon();
    const a = (await d.api('POST', '/api/v1/sandboxes', { tier: 'premium', ttl_seconds: 600 })).json;
    const b = (await d.api('POST', '/api/v1/sandboxes', { tier: 'restricted', ttl_seconds: 900 })).json;
    const gone = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    expect((await d.api('DELETE', `/api/v1/sandboxes/${gone.id}`)).status).toBe(200);
    const r = await poll(d);
    expect(r.status).toBe(200);

    const dir = tempDir('agentd-registry-');
    const file = path.join(dir, 'bundle.tar.gz');
    writeFileSync(file, r.body);
    const list = spawnSync('tar', ['-tvzf', file], { encoding: 'utf8' });
    expect(list.status, list.stderr).toBe(0);
    const names = list.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/).pop());
    expect(names).toEqual(['.manifest', 'sandboxes/data.json']);
    const out = path.join(dir, 'x');
    mkdirSync(out);
    const x = spawnSync('tar', ['-xzf', file, '-C', out], { encoding: 'utf8' });
    expect(x.status, x.stderr).toBe(0);

    const manifest = JSON.parse(readFileSync(path.join(out, '.manifest'), 'utf8'));
    expect(manifest).toEqual({ revision: (r.etag as string).replace(/"/g, ''), roots: ['sandboxes'] });
    const data = JSON.parse(readFileSync(path.join(out, 'sandboxes', 'data.json'), 'utf8'));
    expect(Object.keys(data)).toEqual(['active']);
    expect(data.active[a.id]).toEqual({ tier: 'premium', exp: Math.floor(Date.parse(a.expires_at) / 1000) });
    expect(data.active[b.id]).toEqual({ tier: 'restricted', exp: Math.floor(Date.parse(b.expires_at) / 1000) });
    expect(data.active[gone.id]).toBeUndefined();
    // Exactly the active sandboxes (as the API lists them).
    const active = (await d.api('GET', '/api/v1/sandboxes?state=active&limit=1000')).json.sandboxes.map((s: any) => s.id);
    expect(Object.keys(data.active).sort()).toEqual([...active].sort());
    // The test's own reader agrees with tar.
    expect(parseBundle(r.body).active).toEqual(data.active);
  });

  it('long polling: held, then 304 after wait=N, with the OPA bundle content type', async () => {
    const cur = await poll(d);
    const started = performance.now();
    const r = await poll(d, { 'if-none-match': cur.etag as string, prefer: 'modes=snapshot,delta;wait=1' });
    const held = performance.now() - started;
    expect(r.status).toBe(304);
    expect(r.contentType).toBe(OPA_CT);
    expect(held).toBeGreaterThanOrEqual(950);
    expect(held).toBeLessThan(2500);
    // A long poll with a stale revision answers at once, with the bundle and the same type.
    const stale = await poll(d, { 'if-none-match': '"00000000-1"', prefer: 'modes=snapshot,delta;wait=30' });
    expect(stale.status).toBe(200);
    expect(stale.contentType).toBe(OPA_CT);
    // The `modes=long-polling, wait=N` spelling counts too.
    const alt = performance.now();
    const r2 = await poll(d, { 'if-none-match': cur.etag as string, prefer: 'modes=long-polling, wait=1' });
    expect(r2.status).toBe(304);
    expect(performance.now() - alt).toBeGreaterThanOrEqual(950);
  });

  it('loopback only when no registry token is configured (development)', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) expect(isLoopback(a), a).toBe(true);
    for (const a of ['192.0.2.2', '10.0.0.1', '::ffff:10.0.0.1', 'fd00::2', '::', undefined]) expect(isLoopback(a), String(a)).toBe(false);
  });

  it('without a token file (development) a loopback client gets the bundle without a token', async () => {
    const open = await startInProcess({ AGENTD_EGRESS_URL: 'http://127.0.0.1:9' });
    const r = await poll(open, {}, null);
    expect(r.status).toBe(200);
    expect(parseBundle(r.body).manifest.roots).toEqual(['sandboxes']);
  });
});

describe('long polling with an OPA-like poller', () => {
  let d: InProcess;
  let opa: FakeOpa;
  beforeAll(async () => {
    d = await registryDaemon();
    opa = new FakeOpa(d, { wait: 30 });
    await opa.waitFor(() => true);
  });
  afterAll(async () => {
    await opa.stop();
  });

  it('a create releases the held poll within 100 ms, and returns only after the poller acknowledged', async () => {
    const t0 = performance.now();
    const res = await d.api('POST', '/api/v1/sandboxes', { tier: 'standard' });
    const returned = performance.now();
    expect(res.status).toBe(201);
    const b = await opa.waitFor((x) => res.json.id in x.active, 1000);
    expect(b.at - t0).toBeLessThan(100);
    expect(b.active[res.json.id]).toEqual({ tier: 'standard', exp: Math.floor(Date.parse(res.json.expires_at) / 1000) });
    // The poller had the bundle before the API answered.
    expect(b.at).toBeLessThanOrEqual(returned);
    expect(returned - t0).toBeLessThan(1000);
  });

  it('a terminate releases the held poll within 100 ms: DELETE returns once the poller dropped the sandbox', async () => {
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    await opa.waitFor((x) => s.id in x.active);
    const count = opa.bundles.length;
    const t0 = performance.now();
    const del = await d.api('DELETE', `/api/v1/sandboxes/${s.id}`);
    const returned = performance.now();
    expect(del.status).toBe(200);
    const b = await opa.waitFor((x) => opa.bundles.indexOf(x as any) >= count && !(s.id in x.active), 1000);
    expect(b.at - t0).toBeLessThan(100);
    expect(b.at).toBeLessThanOrEqual(returned);
  });

  it('an expiring sandbox leaves the set at its expiry, without any API call', async () => {
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 1 })).json;
    const withIt = await opa.waitFor((x) => s.id in x.active);
    const expiresAt = Date.parse(s.expires_at);
    const b = await opa.waitFor((x) => opa.bundles.indexOf(x as any) > opa.bundles.indexOf(withIt) && !(s.id in x.active), 3000);
    expect(b.manifest.revision).not.toBe(withIt.manifest.revision);
    // Not before the expiry, and soon after it.
    const at = Date.now() - (performance.now() - b.at);
    expect(at).toBeGreaterThanOrEqual(expiresAt - 5);
    expect(at - expiresAt).toBeLessThan(500);
  });

  it('held polls are answered (304) when the daemon shuts down, so the drain is not held up', async () => {
    const x = await registryDaemon();
    const cur = await poll(x);
    const pending = poll(x, { 'if-none-match': cur.etag as string, prefer: 'modes=snapshot,delta;wait=60' });
    await sleep(100);
    const t0 = performance.now();
    await x.agentd.close('test');
    const r = await pending;
    expect(r.status).toBe(304);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('the acknowledgement wait', () => {
  it('no OPA configured (no registry token) and no poller seen: create and terminate do not wait', async () => {
    const d = await registryDaemon({ AGENTD_REGISTRY_TOKEN_FILE: '' });
    const t0 = performance.now();
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' });
    expect(s.status).toBe(201);
    expect((await d.api('DELETE', `/api/v1/sandboxes/${s.json.id}`)).status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(d.logs.some((l) => l.includes('no poller acknowledged'))).toBe(false);
  });

  it('OPA configured but not polling yet (agentd just restarted): create waits for it, at most the timeout, then succeeds with a warning', async () => {
    const d = await registryDaemon();
    const t0 = performance.now();
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' });
    const took = performance.now() - t0;
    expect(s.status).toBe(201);
    expect(took).toBeGreaterThanOrEqual(REGISTRY_ACK_TIMEOUT_MS - 100);
    expect(took).toBeLessThan(REGISTRY_ACK_TIMEOUT_MS + 1500);
    expect(d.logs.some((l) => l.includes('no poller acknowledged'))).toBe(true);
  });

  it('a poller that acknowledges late: create waits exactly until the acknowledgement', async () => {
    const d = await registryDaemon();
    const opa = new FakeOpa(d, { wait: 30, ackDelayMs: 400 });
    await opa.waitFor(() => true);
    await sleep(450); // the first bundle's acknowledgement is in: the poll is held
    const t0 = performance.now();
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' });
    const took = performance.now() - t0;
    expect(s.status).toBe(201);
    const b = await opa.waitFor((x) => s.json.id in x.active);
    expect(b.at - t0).toBeLessThan(100);
    expect(took).toBeGreaterThanOrEqual(380);
    expect(took).toBeLessThan(1500);
    expect(d.logs.some((l) => l.includes('no poller acknowledged'))).toBe(false);
    await opa.stop();
  });

  it('a poller that never acknowledges: create and terminate still succeed after the bound (2 s), with a warning', async () => {
    const d = await registryDaemon();
    // Polls once (so it was "seen"), never again.
    expect((await poll(d)).status).toBe(200);
    const t0 = performance.now();
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' });
    const took = performance.now() - t0;
    expect(s.status).toBe(201);
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(3500);
    const warnings = d.logs.map((l) => JSON.parse(l)).filter((l) => l.level === 'warn' && l.msg.includes('no poller acknowledged'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ sandbox_id: s.json.id, change: 'created' });

    // An acknowledgement of the current revision (If-None-Match) lets the next change through fast.
    const cur = await poll(d);
    expect((await poll(d, { 'if-none-match': cur.etag as string })).status).toBe(304);
    const t1 = performance.now();
    const del = d.api('DELETE', `/api/v1/sandboxes/${s.json.id}`);
    await sleep(50);
    const next = await poll(d, { 'if-none-match': cur.etag as string });
    expect(next.status).toBe(200);
    expect(parseBundle(next.body).active[s.json.id]).toBeUndefined();
    expect((await poll(d, { 'if-none-match': next.etag as string })).status).toBe(304);
    expect((await del).status).toBe(200);
    expect(performance.now() - t1).toBeLessThan(1500);
  });
});
