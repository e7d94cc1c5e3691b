// The HTTP transport: a Fastify instance with one plugin per concern. Request validation uses
// two Ajv instances: strict (no type coercion, unknown fields rejected) for bodies and path
// parameters, and one that coerces query strings ("?limit=10" -> 10).
import { randomUUID } from 'node:crypto';
import { Ajv, type Options as AjvOptions } from 'ajv';
import fastifySwagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { AgentdConfig } from '../config.ts';
import { HEALTH_PATH, HTTP_BODY_LIMIT_BYTES, METRICS_PATH, READY_PATH, REQUEST_ID_HEADER } from '../contract.ts';
import type { AgentdService } from '../core/service.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { registerErrorHandlers } from './errors.ts';
import { intentRoutes } from './routes/intents.ts';
import { sandboxRoutes } from './routes/sandboxes.ts';
import { systemRoutes } from './routes/system.ts';
import { routeSchemas, sharedSchemas } from './schemas.ts';

export interface HttpDeps {
  config: AgentdConfig;
  service: AgentdService;
  metrics: Metrics;
  logger: Logger;
  version: string;
}

/** Probes and scrapes arrive every few seconds: their request lines are logged at debug. */
const QUIET_ROUTES = new Set<string>([HEALTH_PATH, READY_PATH, METRICS_PATH]);

const REQUEST_ID_RE = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger,
    // One log line per request, written by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    // Requests arriving on kept-alive connections during a drain are still served (with
    // Connection: close); the listener is closed, so no new connections arrive.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    bodyLimit: HTTP_BODY_LIMIT_BYTES,
    // Honour the request id Envoy sets, when it looks like one.
    requestIdHeader: false,
    genReqId: (req) => {
      const h = req.headers[REQUEST_ID_HEADER];
      return typeof h === 'string' && REQUEST_ID_RE.test(h) ? h : randomUUID();
    },
    routerOptions: { ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;

  // verbose: errors carry their schema, whose description makes pattern errors readable.
  const base: AjvOptions = { useDefaults: true, removeAdditional: false, allErrors: false, strict: false, verbose: true };
  const strictAjv = new Ajv({ ...base, coerceTypes: false });
  const queryAjv = new Ajv({ ...base, coerceTypes: true });
  for (const a of [strictAjv, queryAjv]) {
    // "date-time" and friends are response annotations here; requests use patterns instead.
    a.addFormat('date-time', true);
  }
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'querystring' ? queryAjv : strictAjv).compile(schema));

  for (const s of sharedSchemas()) app.addSchema(s);
  // Request bodies are JSON only (Fastify also parses text/plain by default): 415 otherwise.
  app.removeContentTypeParser('text/plain');

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'agentd',
        version: deps.version,
        description: 'Sandboxes and their intents. The same operations are served over gRPC (agentd.v1.Agentd).',
      },
      tags: [{ name: 'system' }, { name: 'sandboxes' }, { name: 'intents' }],
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
  });

  registerErrorHandlers(app);

  app.addHook('onSend', async (request, reply, payload) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    // While draining, close each connection after its response, so that a kept-alive
    // connection does not hold the drain open until the grace period ends.
    if (deps.service.isDraining) reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.httpRequestsTotal.inc({ route, method: request.method, status: String(reply.statusCode) });
    request.log[QUIET_ROUTES.has(route) && reply.statusCode < 400 ? 'debug' : 'info'](
      { method: request.method, route, url: request.url.split('?')[0], status: reply.statusCode, duration_ms: Math.round(reply.elapsedTime) },
      'request completed',
    );
  });

  const schemas = routeSchemas(deps.config);
  await app.register(systemRoutes, { service: deps.service, metrics: deps.metrics, schemas });
  await app.register(sandboxRoutes, { service: deps.service, schemas });
  await app.register(intentRoutes, { service: deps.service, schemas });
  return app;
}
