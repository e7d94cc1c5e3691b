// Prometheus metrics. Names and labels come from the contract (dashboards and alert rules
// depend on them). Each daemon instance has its own registry, so several can run in a process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CAPABILITIES, INTENT_OUTCOMES, METRICS } from './contract.ts';

export class Metrics {
  readonly registry: Registry;
  readonly intentsTotal: Counter<'capability' | 'outcome'>;
  readonly intentDuration: Histogram<'capability'>;
  readonly sandboxesActive: Gauge;
  readonly egressRequestsTotal: Counter<'service' | 'status'>;
  readonly httpRequestsTotal: Counter<'route' | 'method' | 'status'>;
  readonly grpcRequestsTotal: Counter<'method' | 'code'>;
  readonly storagePurgedRowsTotal: Counter<'table'>;

  constructor(opts: { version: string; countActiveSandboxes: () => number }) {
    const registry = new Registry();
    this.registry = registry;
    collectDefaultMetrics({ register: registry });
    this.intentsTotal = new Counter({
      name: METRICS.intentsTotal.name,
      help: 'Intents completed, by capability and outcome (ok = the egress proxy answered, whatever the status).',
      labelNames: METRICS.intentsTotal.labels,
      registers: [registry],
    });
    this.intentDuration = new Histogram({
      name: METRICS.intentDurationSeconds.name,
      help: 'Time from accepting an intent to its completion.',
      labelNames: METRICS.intentDurationSeconds.labels,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    });
    const count = opts.countActiveSandboxes;
    this.sandboxesActive = new Gauge({
      name: METRICS.sandboxesActive.name,
      help: 'Sandboxes neither terminated nor expired.',
      registers: [registry],
      collect() {
        try {
          this.set(count());
        } catch {
          // storage closed during shutdown: keep the last value
        }
      },
    });
    this.egressRequestsTotal = new Counter({
      name: METRICS.egressRequestsTotal.name,
      help: 'Requests sent to the egress proxy, by service and response status ("timeout", "unavailable", "error" when there was none).',
      labelNames: METRICS.egressRequestsTotal.labels,
      registers: [registry],
    });
    this.httpRequestsTotal = new Counter({
      name: METRICS.httpRequestsTotal.name,
      help: 'HTTP API requests, by route template, method and status.',
      labelNames: METRICS.httpRequestsTotal.labels,
      registers: [registry],
    });
    this.grpcRequestsTotal = new Counter({
      name: METRICS.grpcRequestsTotal.name,
      help: 'gRPC calls, by full method name and status code name.',
      labelNames: METRICS.grpcRequestsTotal.labels,
      registers: [registry],
    });
    this.storagePurgedRowsTotal = new Counter({
      name: METRICS.storagePurgedRowsTotal.name,
      help: 'Rows deleted by retention (age, and the per-sandbox cap on intent records), by table.',
      labelNames: METRICS.storagePurgedRowsTotal.labels,
      registers: [registry],
    });
    for (const table of ['sandboxes', 'intents']) this.storagePurgedRowsTotal.inc({ table }, 0);
    const info = new Gauge({
      name: METRICS.buildInfo.name,
      help: 'Always 1; the version label says which agentd is running.',
      labelNames: METRICS.buildInfo.labels,
      registers: [registry],
    });
    info.set({ version: opts.version }, 1);
    // Zero series for every outcome, so rate() and alerts work from the first scrape.
    for (const capability of CAPABILITIES) {
      for (const outcome of INTENT_OUTCOMES) this.intentsTotal.inc({ capability, outcome }, 0);
      this.intentDuration.zero({ capability });
    }
  }
}
