// The HTTP transport: a Fastify instance with one plugin per concern. Request validation uses
// two Ajv instances: strict (no type coercion, unknown fields rejected) for bodies and path
// parameters, and one that coerces query strings ("?limit=10" -> 10).
//
// Every /api/v1 request is authenticated first (onRequest): the caller comes from the identity
// headers the gateway forwards, trusted only with the gateway token when one is configured
// (core/caller.ts); handlers read it with callerOf(request). The sandbox registry
// (REGISTRY_BUNDLE_PATH) has its own bearer token. /metrics is served on its own listener
// (metrics-server.ts), not here.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Ajv, type Options as AjvOptions } from 'ajv';
import fastifySwagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { AgentdConfig } from '../config.ts';
import { API_PREFIX, HEALTH_PATH, HTTP_BODY_LIMIT_BYTES, READY_PATH, REGISTRY_BUNDLE_PATH, REQUEST_ID_HEADER } from '../contract.ts';
import type { CallerAuthenticator } from '../core/caller.ts';
import { invalidArgument } from '../core/errors.ts';
import type { SandboxRegistry } from '../core/registry.ts';
import type { AgentdService } from '../core/service.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import './caller.ts';
import { clientErrorHandler, frameworkErrorHandler, registerErrorHandlers } from './errors.ts';
import { intentRoutes } from './routes/intents.ts';
import { registryRoutes } from './routes/registry.ts';
import { sandboxRoutes } from './routes/sandboxes.ts';
import { systemRoutes } from './routes/system.ts';
import { routeSchemas, sharedSchemas } from './schemas.ts';

export interface HttpDeps {
  config: AgentdConfig;
  service: AgentdService;
  metrics: Metrics;
  logger: Logger;
  version: string;
  auth: CallerAuthenticator;
  registry: SandboxRegistry;
  /** The registry endpoint's bearer token (null: development, loopback callers only). */
  registryToken: string | null;
}

/** Probes and registry polls arrive every few seconds: their request lines are logged at debug. */
const QUIET_ROUTES = new Set<string>([HEALTH_PATH, READY_PATH, REGISTRY_BUNDLE_PATH]);

const isApiPath = (p: string): boolean => p === API_PREFIX || p.startsWith(`${API_PREFIX}/`);

/** Whether every percent-escape of a raw query string is well-formed UTF-8. */
function wellFormedQuery(query: string): boolean {
  for (const part of query.split('&')) {
    try {
      decodeURIComponent(part.replace(/\+/g, ' '));
    } catch {
      return false;
    }
  }
  return true;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/**
 * Counts the requests in flight on each connection of an HTTP server. closeIdle() destroys the
 * connections with none: kept-alive ones, and ones that were opened but never sent a request
 * (Node's own closeIdleConnections leaves those, and they would hold a drain open until the
 * grace period ends). Connections with a request in flight finish it (Connection: close).
 */
export function trackConnections(server: Server): { closeIdle(): number } {
  const active = new Map<Socket, number>();
  server.on('connection', (socket: Socket) => {
    active.set(socket, 0);
    socket.once('close', () => active.delete(socket));
  });
  server.on('request', (req, res) => {
    const socket = req.socket;
    active.set(socket, (active.get(socket) ?? 0) + 1);
    res.once('close', () => {
      if (active.has(socket)) active.set(socket, Math.max(0, (active.get(socket) ?? 1) - 1));
    });
  });
  return {
    closeIdle: () => {
      let n = 0;
      for (const [socket, count] of active) {
        if (count === 0) {
          socket.destroy();
          n += 1;
        }
      }
      return n;
    },
  };
}

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
    // Malformed URLs and HTTP requests are answered in the same JSON error shape.
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
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

  // Authentication first, before routing decides anything else (unknown /api/v1 paths too).
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (request) => {
    const route = request.routeOptions.url;
    if (!isApiPath(route ?? request.url.split('?')[0] ?? '')) return;
    request.caller = deps.auth.authenticate((name) => {
      const v = request.headers[name];
      return Array.isArray(v) ? null : v;
    }, request.id);
  });
  // A query string with a broken percent-escape is refused on every route.
  app.addHook('onRequest', async (request) => {
    const q = request.url.indexOf('?');
    if (q >= 0 && !wellFormedQuery(request.url.slice(q + 1))) {
      throw invalidArgument('query', 'is not a well-formed query string (bad percent-encoding)');
    }
  });

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
  await app.register(systemRoutes, { service: deps.service, schemas });
  await app.register(sandboxRoutes, { service: deps.service, schemas });
  await app.register(intentRoutes, { service: deps.service, schemas });
  await app.register(registryRoutes, { registry: deps.registry, token: deps.registryToken, schemas });
  return app;
}
