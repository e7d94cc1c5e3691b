// The metrics listener (AGENTD_METRICS_LISTEN, default port AGENTD_METRICS_PORT): GET /metrics
// and nothing else, apart from the API port, so that a scraper never reaches the API and the API
// port never exposes metrics. Every other request is a 404 in the API's JSON error shape.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatAddress, type ListenAddress } from '../config.ts';
import { METRICS_PATH } from '../contract.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';

export interface MetricsServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startMetricsServer(opts: { metrics: Metrics; listen: ListenAddress; logger: Logger }): Promise<MetricsServer> {
  const { metrics, logger } = opts;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if ((req.method === 'GET' || req.method === 'HEAD') && path === METRICS_PATH) {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(text) });
          res.end(req.method === 'HEAD' ? undefined : text);
        },
        (err: unknown) => {
          logger.error({ err: { message: (err as Error).message } }, 'metrics collection failed');
          json(res, 500, { error: { code: 'internal', message: 'internal error' } });
        },
      );
      return;
    }
    json(res, 404, { error: { code: 'not_found', message: `this listener serves GET ${METRICS_PATH} only` } });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  logger.debug({ metrics: formatAddress({ host: opts.listen.host, port }) }, 'metrics listening');
  return {
    host: opts.listen.host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
