// 3. OPA decisions as Envoy asks for them (ext_authz v3 Check over gRPC) against the real OPA
// with its Envoy plugin, loaded with bundles of 10, 1,000 and 10,000 API keys and 100 egress
// services. All OPAs run at once and the rounds rotate between them.
//
// Numbers per size and decision kind:
//  - Check latency: sequential calls (one in flight) from a lean HTTP/2 client with pre-encoded
//    requests; this is what one ext_authz round trip costs Envoy, client overhead included.
//  - In-OPA evaluation time: the same inputs through OPA's REST API with ?metrics=true
//    (timer_rego_query_eval_ns), i.e. the Rego evaluation alone, without gRPC or transport.
//  - Decisions/s with several calls in flight.
import { join } from 'node:path';
import { buildBundle } from '../../policy/bundle.ts';
import { ExtAuthzClient, RegistryServer, startOpa, type AuthzRequest, type RunningOpa } from '../../scripts/local/opa.ts';
import type { ManagedProcess } from '../../scripts/local/processes.ts';
import { cpuMs } from '../lib/cpu.ts';
import type { QuietWindow } from '../lib/context.ts';
import { TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../agentd/src/contract.ts';
import { RawExtAuthz, encodeCheck, isAllowed } from '../lib/ext-authz.ts';
import { readRss } from '../lib/memory.ts';
import { checkTarget, fmt, table, type SectionResult } from '../lib/report.ts';
import type { BenchSettings } from '../lib/settings.ts';
import { median, medianSummary, rotate, summarize, type LatencySummary } from '../lib/stats.ts';
import { syntheticPolicy, type SyntheticPolicy } from '../lib/synthetic.ts';

const SECTION = 'OPA';
const OPA_P99_TARGET_MS = 1;
const OPA_SCALING_TARGET = 1.5;

type Kind = 'gateway' | 'egress';
const KINDS: readonly Kind[] = ['gateway', 'egress'];

/** A small deterministic PRNG, so every run asks the same questions. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Allowed requests: a random enabled client on a path its role grants; a random service for an admin sandbox. */
function requests(p: SyntheticPolicy, kind: Kind, n: number): AuthzRequest[] {
  const rnd = prng(kind === 'gateway' ? 1 : 2);
  const pick = <T>(a: readonly T[]) => a[Math.floor(rnd() * a.length)]!;
  if (kind === 'gateway') {
    const enabled = p.spec.clients.filter((c) => c.enabled);
    const byRole: Record<string, { method: string; path: string }> = {
      admin: { method: 'GET', path: '/api/v1/sandboxes/sbx_0123456789/intents' },
      operator: { method: 'POST', path: '/api/v1/sandboxes/sbx_0123456789/intents' },
      reader: { method: 'GET', path: '/api/v1/status' },
    };
    return Array.from({ length: n }, () => {
      const c = pick(enabled);
      const r = byRole[c.role]!;
      return { contextExtensions: { policy: 'gateway' }, method: r.method, path: r.path, headers: { 'x-api-key': p.apiKeys[c.id]! } };
    });
  }
  const now = Math.floor(Date.now() / 1000);
  return Array.from({ length: n }, (_, i) => ({
    contextExtensions: { policy: 'egress', service: pick(p.serviceIds) },
    method: 'GET',
    path: '/v1/items/42/history',
    host: 'svc',
    jwtClaims: { sub: `sbx_bench${i % 50}`, tier: 'admin', iss: TOKEN_ISSUER, aud: TOKEN_AUDIENCE, iat: now, exp: now + 7200 },
  }));
}

/** The input OPA's Envoy plugin hands to Rego for the same request (protobuf JSON names). */
function restInput(r: AuthzRequest): object {
  return {
    attributes: {
      request: { http: { method: r.method, path: r.path, host: r.host ?? 'gateway', headers: { ':path': r.path, ':method': r.method, ...(r.headers ?? {}) } } },
      contextExtensions: r.contextExtensions ?? {},
      ...(r.jwtClaims ? { metadataContext: { filterMetadata: { 'envoy.filters.http.jwt_authn': { sandbox: r.jwtClaims } } } } : {}),
    },
  };
}

/**
 * The OPA configurations measured: the shipped one, and two diagnostics that take the levers of
 * docs/benchmarks.md ("Authorization at the speed of the proxy") away one by one, to show what
 * each bought.
 */
type Variant = 'shipped' | 'no-cache' | 'before';
const VARIANT_LABELS: Record<Variant, string> = {
  shipped: '',
  'no-cache': 'decision cache off (diagnostic)',
  before: 'cache off, decision log before the answer (diagnostic: the plugin as before)',
};

interface SizeState {
  readonly keys: number;
  readonly variant: Variant;
  readonly policy: SyntheticPolicy;
  readonly bundleBytes: number;
  readonly dataJsonBytes: number;
  readonly opa: RunningOpa;
  readonly client: RawExtAuthz;
  readonly frames: Record<Kind, Buffer[]>;
  readonly inputs: Record<Kind, AuthzRequest[]>;
  readonly rounds: Record<Kind, LatencySummary[]>;
}

async function sequential(st: SizeState, kind: Kind, calls: number): Promise<LatencySummary> {
  const frames = st.frames[kind];
  const lat = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const frame = frames[i % frames.length]!;
    const t = performance.now();
    const res = await st.client.call(frame);
    lat[i] = performance.now() - t;
    if (!isAllowed(res)) throw new Error(`OPA (${st.keys} keys) did not allow a ${kind} request that the policy grants`);
  }
  return summarize(lat);
}

/** Decisions per second with `concurrency` calls in flight, and OPA's CPU per decision (us). */
async function throughput(st: SizeState, concurrency: number, ms: number): Promise<{ perSecond: number; opaCpuUs: number }> {
  const frames = st.frames.gateway;
  let done = 0;
  const end = performance.now() + ms;
  const cpu0 = cpuMs(st.opa.process.pid) ?? NaN;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      let i = w;
      while (performance.now() < end) {
        await st.client.call(frames[i % frames.length]!);
        i += concurrency;
        done++;
      }
    }),
  );
  const perSecond = done / ((performance.now() - t0) / 1000);
  return { perSecond, opaCpuUs: (((cpuMs(st.opa.process.pid) ?? NaN) - cpu0) * 1000) / done };
}

/** Takes levers of the rendered plugin config away (the diagnostic variants). */
function withoutLevers(variant: Exclude<Variant, 'shipped'>): (config: Record<string, unknown>) => void {
  return (config) => {
    const plugin = Object.values(config['plugins'] as Record<string, Record<string, unknown>>)[0]!;
    if (!('decision-cache' in plugin) || !('decision-log-queue' in plugin))
      throw new Error('the rendered OPA config lost its decision-cache or decision-log-queue');
    delete plugin['decision-cache'];
    if (variant === 'before') delete plugin['decision-log-queue'];
  };
}

async function evalTimes(st: SizeState, kind: Kind, calls: number): Promise<LatencySummary> {
  const url = `http://127.0.0.1:${st.opa.httpPort}/v1/data/agentd/envoy/authz/result?metrics=true`;
  const ms: number[] = [];
  for (let i = 0; i < calls; i++) {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: restInput(st.inputs[kind][i % st.inputs[kind].length]!) }),
    });
    const j = (await r.json()) as { result?: { allowed?: boolean }; metrics?: Record<string, number> };
    if (j.result?.allowed !== true) throw new Error(`OPA REST (${st.keys} keys) did not allow a ${kind} request: ${JSON.stringify(j).slice(0, 300)}`);
    if (i >= 20) ms.push((j.metrics?.['timer_rego_query_eval_ns'] ?? NaN) / 1e6);
  }
  return summarize(ms);
}

export async function opaSuite(
  s: BenchSettings,
  ctx: { workDir: string; log: (m: string) => void; track: (p: ManagedProcess) => void; quiet?: QuietWindow },
): Promise<SectionResult> {
  const states: SizeState[] = [];
  const registries: RegistryServer[] = [];
  try {
    const smallest = Math.min(...s.opaKeyCounts);
    const sizes: { keys: number; variant: Variant }[] = [
      ...s.opaKeyCounts.map((keys) => ({ keys, variant: 'shipped' as const })),
      { keys: smallest, variant: 'no-cache' },
      { keys: smallest, variant: 'before' },
    ];
    for (const { keys, variant } of sizes) {
      ctx.log(`opa: bundle and OPA for ${keys} keys / ${s.opaServices} services${variant === 'shipped' ? '' : ` (${VARIANT_LABELS[variant]})`}`);
      const policy = syntheticPolicy({ clients: keys, services: s.opaServices });
      const bundle = buildBundle(policy.spec, policy.keyHashes);
      const dir = join(ctx.workDir, `opa-${keys}${variant === 'shipped' ? '' : `-${variant}`}`);
      // The sandboxes the egress requests name are live in agentd's registry (a stand-in here).
      const exp = Math.floor(Date.now() / 1000) + 7200;
      const registry = await new RegistryServer(
        join(dir, 'registry'),
        Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`sbx_bench${i}`, { tier: 'admin', exp }])),
      ).start();
      registries.push(registry);
      const opa = await startOpa(dir, bundle.bytes, {
        registry: registry.opaInput(),
        ...(variant === 'shipped' ? {} : { editConfig: withoutLevers(variant) }),
      });
      ctx.track(opa.process);
      const client = new RawExtAuthz(opa.grpcPort);
      await client.ready;
      const inputs = { gateway: requests(policy, 'gateway', 256), egress: requests(policy, 'egress', 256) };
      // The harness client agrees on one request of each kind (same proto, decoded fully).
      const harnessClient = new ExtAuthzClient(opa.grpcPort);
      for (const k of KINDS) {
        const a = await harnessClient.check(inputs[k][0]!);
        if (!a.allowed) throw new Error(`OPA (${keys} keys) refused a ${k} request the policy grants: ${JSON.stringify(a.body)}`);
      }
      harnessClient.close();
      states.push({
        keys,
        variant,
        policy,
        bundleBytes: bundle.bytes.length,
        dataJsonBytes: Buffer.byteLength(Object.entries(bundle.files).find(([p]) => p.endsWith('data.json'))?.[1] ?? ''),
        opa,
        client,
        inputs,
        frames: { gateway: inputs.gateway.map(encodeCheck), egress: inputs.egress.map(encodeCheck) },
        rounds: { gateway: [], egress: [] },
      });
    }

    ctx.log(`opa: ${s.opaRounds} rounds x ${s.opaCallsPerRound} sequential Check calls per size and kind`);
    for (const st of states) for (const k of KINDS) await sequential(st, k, 300);
    for (let r = 0; r < s.opaRounds; r++) {
      await ctx.quiet?.wait(ctx.log);
      for (const st of rotate(states, r)) {
        for (const k of r % 2 ? [...KINDS].reverse() : KINDS) st.rounds[k].push(await sequential(st, k, s.opaCallsPerRound));
      }
    }
    const tput = new Map<SizeState, { perSecond: number; opaCpuUs: number }[]>();
    for (let r = 0; r < Math.max(1, Math.floor(s.opaRounds / 2)); r++) {
      await ctx.quiet?.wait(ctx.log);
      for (const st of rotate(states, r)) tput.set(st, [...(tput.get(st) ?? []), await throughput(st, s.opaConcurrency, s.opaThroughputMs)]);
    }
    const evals = new Map<SizeState, Record<Kind, LatencySummary>>();
    for (const st of states) evals.set(st, { gateway: await evalTimes(st, 'gateway', 220), egress: await evalTimes(st, 'egress', 220) });

    const rows = states.map((st) => {
      const rss = readRss(st.opa.process.pid ?? 0);
      return {
        keys: st.keys,
        variant: st.variant,
        services: s.opaServices,
        bundleBytes: st.bundleBytes,
        dataJsonBytes: st.dataJsonBytes,
        check: { gateway: medianSummary(st.rounds.gateway), egress: medianSummary(st.rounds.egress) },
        checkRounds: st.rounds,
        evalInOpa: evals.get(st)!,
        decisionsPerSecond: median((tput.get(st) ?? []).map((x) => x.perSecond)),
        opaCpuUsPerDecision: median((tput.get(st) ?? []).map((x) => x.opaCpuUs)),
        throughputRounds: tput.get(st) ?? [],
        opaRssMiB: rss?.rssMiB ?? null,
        opaPeakRssMiB: rss?.peakMiB ?? null,
      };
    });

    const shipped = rows.filter((r) => r.variant === 'shipped');
    const worst = shipped.flatMap((r) => KINDS.map((k) => ({ keys: r.keys, kind: k, p99: r.check[k].p99Ms }))).sort((a, b) => b.p99 - a.p99)[0]!;
    const small = shipped.find((r) => r.keys === Math.min(...s.opaKeyCounts))!;
    const large = shipped.find((r) => r.keys === Math.max(...s.opaKeyCounts))!;
    const noCache = rows.find((r) => r.variant === 'no-cache');
    const before = rows.find((r) => r.variant === 'before');
    const scaling = large.check.gateway.p50Ms / small.check.gateway.p50Ms;
    const targets = [
      checkTarget({
        id: 'opa.check-p99',
        section: SECTION,
        description: `ext_authz Check p99, worst of ${s.opaKeyCounts.join('/')} keys x gateway/egress (here: ${worst.keys} keys, ${worst.kind})`,
        value: worst.p99,
        limit: OPA_P99_TARGET_MS,
        kind: 'max',
        unit: ' ms',
      }),
      checkTarget({
        id: 'opa.key-scaling',
        section: SECTION,
        description: `gateway Check p50 with ${large.keys} keys / with ${small.keys} keys`,
        value: scaling,
        limit: OPA_SCALING_TARGET,
        kind: 'max',
        unit: 'x',
      }),
    ];

    const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
    const markdown = [
      `Bundles from synthetic specs (YAML validated by parsePolicySpec, key hashes by sha256Hex): N API keys over the shipped roles and tiers, ${s.opaServices} egress services. ` +
        `Check latency: ${s.opaRounds} rounds x ${s.opaCallsPerRound} sequential ext_authz v3 Check calls per size and kind (one in flight; lean HTTP/2 client, requests pre-encoded; every answer checked to be "allowed"). ` +
        'In-OPA eval: the same inputs via the REST API with ?metrics=true (timer_rego_query_eval_ns: Rego evaluation only). Gateway = API key lookup + role path match; egress = verified-claims sandbox tier + service path match.',
      '',
      table(
        [
          'API keys',
          'Bundle (data.json)',
          'Decision',
          'Check p50',
          'p90',
          'p99',
          'In-OPA eval p50 / p99',
          `Decisions/s (${s.opaConcurrency} in flight)`,
          'OPA CPU per decision',
          'OPA RSS',
        ],
        rows.flatMap((r) =>
          KINDS.map((k) => [
            r.variant === 'shipped' ? String(r.keys) : `${r.keys}, ${VARIANT_LABELS[r.variant]}`,
            `${kib(r.bundleBytes)} (${kib(r.dataJsonBytes)})`,
            k,
            `${fmt(r.check[k].p50Ms, 3)} ms`,
            `${fmt(r.check[k].p90Ms, 3)} ms`,
            `${fmt(r.check[k].p99Ms, 3)} ms`,
            `${fmt(r.evalInOpa[k].p50Ms, 3)} / ${fmt(r.evalInOpa[k].p99Ms, 3)} ms`,
            k === 'gateway' ? fmt(r.decisionsPerSecond, 0) : '',
            k === 'gateway' ? `${fmt(r.opaCpuUsPerDecision, 0)} us` : '',
            k === 'gateway' ? `${fmt(r.opaRssMiB, 0)} MiB` : '',
          ]),
        ),
      ),
      '',
      `Scaling: gateway Check p50 at ${large.keys} keys is ${fmt(scaling, 2)}x the p50 at ${small.keys} keys (keys are looked up by hash: one map access).`,
      ...(noCache && before
        ? [
            '',
            `What the plugin's levers bought (${small.keys} keys, gateway decisions, same bundle): OPA CPU per decision ${fmt(before.opaCpuUsPerDecision, 0)} us with the decision log written before the answer and no cache (the plugin as before), ` +
              `${fmt(noCache.opaCpuUsPerDecision, 0)} us with the log queue (the entry is still masked and written, after the answer), ${fmt(small.opaCpuUsPerDecision, 0)} us shipped (decision cache hits; every check still logged). ` +
              `Check p50 ${fmt(before.check.gateway.p50Ms, 3)} / ${fmt(noCache.check.gateway.p50Ms, 3)} / ${fmt(small.check.gateway.p50Ms, 3)} ms, p99 ${fmt(before.check.gateway.p99Ms, 3)} / ${fmt(noCache.check.gateway.p99Ms, 3)} / ${fmt(small.check.gateway.p99Ms, 3)} ms. ` +
              'The shipped rows ask 256 distinct requests over and over, so after the warm-up every Check is a cache hit; the cache-off row is the price of a first request (a new key, path or token).',
          ]
        : []),
    ].join('\n');

    return { id: 'opa', title: '3. OPA decisions by policy size', data: { rows, worstP99: worst, keyScaling: scaling }, targets, markdown };
  } finally {
    for (const st of states) {
      st.client.close();
      await st.opa.process.stop();
    }
    for (const r of registries) await r.close();
  }
}
