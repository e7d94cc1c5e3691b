// 2. Egress overhead, measured at two levels, each as "through egress" vs "direct", side by side:
//
//  - http_fetch (the target): POST /api/v1/sandboxes/<id>/intents {http_fetch GET github PATH}
//    straight to agentd (no gateway; with the headers the gateway would send), where
//      via egress: the harness's agentd -> egress Envoy (sandbox token verified by jwt_authn,
//                  ext_authz to OPA, rate limit, credential injected) -> HTTPS stand-in;
//      direct:     a second agentd, same build and settings, whose AGENTD_EGRESS_URL points
//                  straight at the HTTPS stand-in (NODE_EXTRA_CA_CERTS trusts the test CA):
//                  what agentd would cost calling the API itself.
//  - Envoy level (the breakdown): GET PATH with a live sandbox's token to the egress Envoy vs
//    the same GET over TLS straight to the stand-in.
//
// The stand-in upstream is the harness's (it runs in the bench's main process; the load
// generator has its own process). Tokens and sandboxes rotate so that no per-sandbox bucket
// (tier `admin`: 1,000/min per service) runs out.
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ENV, IDENTITY_HEADERS, READY_PATH, SANDBOXES_PATH, SANDBOX_TOKEN_HEADER } from '../../agentd/src/contract.ts';
import { egressCall, rawRequest } from '../../scripts/local/clients.ts';
import { ManagedProcess, answers, freePort } from '../../scripts/local/processes.ts';
import { StandInUpstream, issueServerCert } from '../../scripts/local/standin.ts';
import { interleavedRounds, withCpu, type StackContext } from '../lib/context.ts';
import { rateLoad, type HttpRequestSpec, type LoadTarget, type RateLoadResult } from '../lib/load.ts';
import { checkTarget, fmt, fmtDelta, table, type SectionResult } from '../lib/report.ts';
import { median, medianSummary, type LatencySummary } from '../lib/stats.ts';
import { medianRecord } from './gateway.ts';

const SECTION = 'Egress';
const EGRESS_P50_OVERHEAD_MS = 1.5;
const SERVICE = 'github';
const PATH = '/repos/o/r/issues';
const SANDBOX_TIER = 'admin';
/** Sandboxes are spread over this many client ids, each well below agentd's per-client cap. */
const CLIENTS = 10;

/**
 * The upstream agentd calls directly: the harness's stand-in code on its own port, with a
 * certificate from the harness's test CA that names the service too (agentd sends
 * Host: <service>, and undici takes the TLS server name from it, as with a real API host).
 */
async function startDirectUpstream(ctx: StackContext): Promise<StandInUpstream> {
  const caDir = dirname(ctx.stack.ca.caFile);
  const dir = join(ctx.workDir, 'direct-upstream');
  mkdirSync(dir, { recursive: true });
  const cert = issueServerCert({ caFile: ctx.stack.ca.caFile, caKeyFile: join(caDir, 'ca.key') }, dir, [SERVICE, 'localhost']);
  const upstream = new StandInUpstream();
  await upstream.start({ caFile: ctx.stack.ca.caFile, ...cert });
  return upstream;
}

/** A second agentd like the harness's, but calling the upstream directly. */
async function startDirectAgentd(ctx: StackContext, upstreamPort: number): Promise<{ process: ManagedProcess; port: number }> {
  const base = ctx.stack.processes.agentd.spec;
  const http = await freePort();
  const grpc = await freePort();
  const p = new ManagedProcess(
    {
      ...base,
      name: 'agentd-direct',
      env: {
        ...base.env,
        [ENV.httpListen]: `127.0.0.1:${http}`,
        [ENV.grpcListen]: `127.0.0.1:${grpc}`,
        [ENV.metricsListen]: `127.0.0.1:${await freePort()}`,
        [ENV.egressUrl]: `https://localhost:${upstreamPort}`,
        [ENV.dataDir]: join(ctx.workDir, 'agentd-direct-data'),
        NODE_EXTRA_CA_CERTS: ctx.stack.ca.caFile,
      },
      ready: () => answers(`http://127.0.0.1:${http}${READY_PATH}`),
    },
    join(ctx.workDir, 'agentd-direct.log'),
  );
  ctx.track(p);
  await p.start();
  return { process: p, port: http };
}

/** The headers the gateway sends agentd, for sandbox `i`'s client. */
const asClient = (gateway: Readonly<Record<string, string>>, i: number): Record<string, string> => ({
  ...gateway,
  [IDENTITY_HEADERS.clientId]: `bench-${i % CLIENTS}`,
});

async function createSandboxes(port: number, gateway: Readonly<Record<string, string>>, n: number): Promise<{ id: string; token: string }[]> {
  const out: { id: string; token: string }[] = [];
  for (let i = 0; i < n; i++) {
    const r = await rawRequest(port, {
      method: 'POST',
      path: SANDBOXES_PATH,
      headers: { 'content-type': 'application/json', ...asClient(gateway, i) },
      body: JSON.stringify({ tier: SANDBOX_TIER, labels: { bench: 'egress' } }),
    });
    if (r.status !== 201) throw new Error(`creating a sandbox on agentd :${port} answered ${r.status} ${r.body.slice(0, 300)}`);
    out.push({ id: r.json().id, token: r.json().token });
  }
  return out;
}

const intentBody = JSON.stringify({ capability: 'http_fetch', params: { service: SERVICE, method: 'GET', path: PATH } });
const intentRequests = (ids: readonly string[], gateway: Readonly<Record<string, string>>): HttpRequestSpec[] =>
  ids.map((id, i) => ({
    method: 'POST',
    path: `${SANDBOXES_PATH}/${id}/intents`,
    headers: { 'content-type': 'application/json', ...asClient(gateway, i) },
    body: intentBody,
  }));

interface Level {
  readonly id: 'fetch' | 'envoy';
  readonly title: string;
  readonly rate: number;
  readonly expectBody: readonly string[];
  readonly variants: readonly { id: 'egress' | 'direct'; label: string; target: LoadTarget; requests: readonly HttpRequestSpec[] }[];
}

export async function egressSuite(ctx: StackContext): Promise<SectionResult> {
  const { stack, settings: s } = ctx;
  const directUpstream = await startDirectUpstream(ctx);
  let direct: { process: ManagedProcess; port: number } | undefined;
  try {
    const agent = await startDirectAgentd(ctx, directUpstream.port);
    direct = agent;
    const ca = readFileSync(stack.ca.caFile, 'utf8');
    // Enough sandboxes (and tokens) that each stays far below its tier's per-minute bucket.
    const perRun = (rate: number) => Math.ceil((rate * (s.warmupMs + s.durationMs)) / 1000);
    const sandboxCount = Math.max(20, Math.ceil((perRun(s.intentRate) * s.rounds * 2) / 500));
    const tokenCount = Math.max(50, Math.ceil((perRun(s.egressRate) * s.rounds * 2) / 500));
    ctx.log(`egress: ${sandboxCount} sandboxes per agentd, ${tokenCount} sandbox tokens`);
    const gw = stack.asGateway;
    const viaIds = (await createSandboxes(stack.ports.agentdHttp, gw, sandboxCount)).map((x) => x.id);
    const directIds = (await createSandboxes(agent.port, gw, sandboxCount)).map((x) => x.id);
    // Live sandboxes: the egress refuses a token whose sandbox agentd's registry does not list.
    const tokens = (await createSandboxes(stack.ports.agentdHttp, gw, tokenCount)).map((x) => x.token);
    const credential = stack.credentials[SERVICE];
    if (!credential) throw new Error(`the harness configured no credential for ${SERVICE}`);

    // Both paths work, and the egress path injects the credential.
    stack.upstream.clear();
    const viaEnvoy = await egressCall(stack.ports.egress, SERVICE, tokens[0], { path: PATH });
    const injected = stack.upstream.received[0]?.headers['authorization'];
    if (viaEnvoy.status !== 200 || injected !== `Bearer ${credential}`)
      throw new Error(`egress check failed: ${viaEnvoy.status} ${viaEnvoy.body.slice(0, 200)}`);
    for (const [port, id] of [
      [stack.ports.agentdHttp, viaIds[0]!],
      [agent.port, directIds[0]!],
    ] as const) {
      const r = await rawRequest(port, {
        method: 'POST',
        path: `${SANDBOXES_PATH}/${id}/intents`,
        headers: { 'content-type': 'application/json', ...asClient(gw, 0) },
        body: intentBody,
      });
      if (r.status !== 200 || r.json().outcome !== 'ok' || r.json().status !== 200)
        throw new Error(`http_fetch on agentd :${port} failed: ${r.status} ${r.body.slice(0, 300)}`);
    }

    const levels: Level[] = [
      {
        id: 'fetch',
        title: 'http_fetch through agentd',
        rate: s.intentRate,
        expectBody: ['"outcome":"ok"', '"status":200'],
        variants: [
          {
            id: 'egress',
            label: 'agentd -> egress Envoy -> upstream',
            target: { host: '127.0.0.1', port: stack.ports.agentdHttp },
            requests: intentRequests(viaIds, gw),
          },
          { id: 'direct', label: 'agentd -> upstream (direct)', target: { host: '127.0.0.1', port: agent.port }, requests: intentRequests(directIds, gw) },
        ],
      },
      {
        id: 'envoy',
        title: 'Envoy level',
        rate: s.egressRate,
        expectBody: ['"ok":true'],
        variants: [
          {
            id: 'egress',
            label: 'client -> egress Envoy (token) -> upstream',
            target: { host: '127.0.0.1', port: stack.ports.egress },
            requests: tokens.map((t) => ({ method: 'GET', path: PATH, headers: { host: SERVICE, [SANDBOX_TOKEN_HEADER]: t } })),
          },
          {
            id: 'direct',
            label: 'client -> upstream over TLS (direct)',
            target: { host: '127.0.0.1', port: stack.upstream.port, tls: { ca, servername: 'localhost' } },
            requests: [{ method: 'GET', path: PATH, headers: { host: 'localhost', authorization: `Bearer ${credential}` } }],
          },
        ],
      },
    ];

    const pids = {
      'egress Envoy': stack.processes.egress.pid,
      OPA: stack.processes.opa.pid,
      agentd: stack.processes.agentd.pid,
      'agentd (direct)': agent.process.pid,
      'bench process (stand-in, log pipes)': process.pid,
    };
    ctx.sampler.setPhase('egress');
    const results: Record<
      string,
      {
        rate: number;
        byVariant: Record<string, LatencySummary>;
        overhead: { p50Ms: number; p90Ms: number; p99Ms: number; perRoundP50Ms: number[] };
        achievedRate: Record<string, number>;
        cpuUsPerRequest: Record<string, Record<string, number>>;
        discardedRounds: number;
        stalledRoundsKept: number;
        rounds: Record<string, RateLoadResult[]>;
      }
    > = {};
    for (const level of levels) {
      type Run = { result: RateLoadResult; cpu: Record<string, number>; schedulerLagP99Ms: number };
      const out = await interleavedRounds<Level['variants'][number], Run>({
        rounds: s.rounds,
        variants: level.variants,
        maxRetries: s.stallRetries,
        log: ctx.log,
        quiet: ctx.quiet,
        run: async (v, r, attempt) => {
          ctx.log(`egress: ${level.title}, ${level.rate} req/s, round ${r + 1}/${s.rounds}${attempt ? ' (again)' : ''}, ${v.label}`);
          stack.upstream.clear();
          directUpstream.clear();
          const { result, cpuUsPerRequest } = await withCpu(
            pids,
            (x) => x.sent,
            () =>
              rateLoad(
                {
                  target: v.target,
                  requests: v.requests,
                  rate: level.rate,
                  warmupMs: s.warmupMs,
                  durationMs: s.durationMs,
                  initialConnections: 4,
                  maxConnections: 64,
                  expectStatus: 200,
                  expectBody: level.expectBody,
                  timeoutMs: 10_000,
                },
                `egress ${level.title}: ${v.label}`,
              ),
          );
          return { result, cpu: cpuUsPerRequest, schedulerLagP99Ms: result.schedulerLagP99Ms };
        },
      });
      const rounds = out.byVariant;
      directUpstream.clear();
      stack.upstream.clear();
      const per = (k: 'p50Ms' | 'p90Ms' | 'p99Ms') => rounds['egress']!.map((x, i) => x.result.latency[k] - rounds['direct']![i]!.result.latency[k]);
      results[level.id] = {
        rate: level.rate,
        byVariant: Object.fromEntries(Object.entries(rounds).map(([id, list]) => [id, medianSummary(list.map((x) => x.result.latency))])),
        overhead: { p50Ms: median(per('p50Ms')), p90Ms: median(per('p90Ms')), p99Ms: median(per('p99Ms')), perRoundP50Ms: per('p50Ms') },
        achievedRate: Object.fromEntries(Object.entries(rounds).map(([id, list]) => [id, median(list.map((x) => x.result.achievedRate))])),
        cpuUsPerRequest: Object.fromEntries(Object.entries(rounds).map(([id, list]) => [id, medianRecord(list.map((x) => x.cpu))])),
        discardedRounds: out.discardedRounds,
        stalledRoundsKept: out.stalledRoundsKept,
        rounds: Object.fromEntries(Object.entries(rounds).map(([id, list]) => [id, list.map((x) => x.result)])),
      };
    }
    ctx.sampler.setPhase(undefined);

    const fetch = results['fetch']!;
    const envoy = results['envoy']!;
    const note = (l: { stalledRoundsKept: number }) =>
      l.stalledRoundsKept > 0 ? `${l.stalledRoundsKept} of ${s.rounds} rounds kept although the machine stalled` : undefined;
    const targets = [
      checkTarget({
        id: 'egress.fetch-p50-overhead',
        section: SECTION,
        description: `http_fetch via egress - direct, p50 at ${fetch.rate} req/s`,
        value: fetch.overhead.p50Ms,
        limit: EGRESS_P50_OVERHEAD_MS,
        kind: 'max',
        unit: ' ms',
        note: note(fetch),
      }),
      checkTarget({
        id: 'egress.envoy-p50-overhead',
        section: SECTION,
        description: `Envoy level (token GET via egress - TLS direct), p50 at ${envoy.rate} req/s`,
        value: envoy.overhead.p50Ms,
        limit: EGRESS_P50_OVERHEAD_MS,
        kind: 'max',
        unit: ' ms',
        note: note(envoy),
      }),
    ];

    const ms = (n: number) => fmt(n, 3);
    const cpuCols = ['egress Envoy', 'OPA', 'agentd', 'agentd (direct)', 'bench process (stand-in, log pipes)', 'load generator'];
    const markdown = [
      `What is measured: (1) **http_fetch**: POST /api/v1/sandboxes/<id>/intents (http_fetch GET ${SERVICE} ${PATH}) straight to agentd, with the headers the gateway sends; "via egress" is the harness agentd whose AGENTD_EGRESS_URL is the egress Envoy (jwt_authn + ext_authz/OPA with the sandbox registry + rate limit + credential injection, TLS to the stand-in); "direct" is a second, identical agentd whose AGENTD_EGRESS_URL is a second HTTPS stand-in (same code, certificate for \`${SERVICE}\`), so it pays the TLS a direct call would. (2) **Envoy level**: GET ${PATH} with a live sandbox's token to the egress Envoy vs the same GET over TLS (keep-alive) straight to the stand-in. The stand-in is the harness HTTPS upstream.`,
      '',
      `Open loop, ${s.rounds} rounds x ${s.durationMs / 1000} s per variant (after ${s.warmupMs / 1000} s warm-up), order rotated per round; medians over rounds (ms). Rounds run again after a load-generator stall: ${levels.map((l) => `${l.title}: ${results[l.id]!.discardedRounds}`).join(', ')}.`,
      '',
      table(
        ['Level', 'Rate', 'Variant', 'p50', 'p90', 'p99', 'achieved req/s'],
        levels.flatMap((l) =>
          l.variants.map((v) => {
            const x = results[l.id]!.byVariant[v.id]!;
            return [l.title, `${l.rate}/s`, v.label, ms(x.p50Ms), ms(x.p90Ms), ms(x.p99Ms), fmt(results[l.id]!.achievedRate[v.id], 0)];
          }),
        ),
      ),
      '',
      table(
        ['Level', 'Added by egress (median of per-round differences)', 'p50', 'p90', 'p99'],
        levels.map((l) => {
          const o = results[l.id]!.overhead;
          return [l.title, 'via egress - direct', fmtDelta(o.p50Ms, 3), fmtDelta(o.p90Ms, 3), fmtDelta(o.p99Ms, 3)];
        }),
      ),
      '',
      'CPU time per request (microseconds), median over rounds:',
      '',
      table(
        ['Run', ...cpuCols],
        levels.flatMap((l) =>
          l.variants.map((v) => {
            const c = results[l.id]!.cpuUsPerRequest[v.id] ?? {};
            return [`${l.title}: ${v.label}`, ...cpuCols.map((k) => (c[k] === undefined || c[k]! < 0.5 ? '-' : fmt(c[k], 0)))];
          }),
        ),
      ),
    ].join('\n');

    return {
      id: 'egress',
      title: '2. Egress overhead',
      data: { service: SERVICE, sandboxTier: SANDBOX_TIER, sandboxes: sandboxCount, tokens: tokenCount, levels: results },
      targets,
      markdown,
    };
  } finally {
    ctx.sampler.setPhase(undefined);
    await direct?.process.stop();
    await directUpstream.stop();
  }
}
