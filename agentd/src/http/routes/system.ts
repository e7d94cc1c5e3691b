// System routes: liveness, readiness, status, metrics and the OpenAPI document.
import type { FastifyPluginAsync } from 'fastify';
import { HEALTH_PATH, METRICS_PATH, OPENAPI_PATH, READY_PATH, STATUS_PATH } from '../../contract.ts';
import type { AgentdService } from '../../core/service.ts';
import type { Metrics } from '../../metrics.ts';
import type { routeSchemas } from '../schemas.ts';

export interface SystemRouteOptions {
  service: AgentdService;
  metrics: Metrics;
  schemas: ReturnType<typeof routeSchemas>;
}

export const systemRoutes: FastifyPluginAsync<SystemRouteOptions> = async (app, { service, metrics, schemas }) => {
  app.get(HEALTH_PATH, { schema: schemas.health }, async () => service.health());

  app.get(READY_PATH, { schema: schemas.ready }, async (_request, reply) => {
    const r = await service.readiness();
    if (r.ready) return { status: 'ready', checks: r.checks };
    const failed = Object.entries(r.checks)
      .filter(([, c]) => !c.ok)
      .map(([name]) => name);
    return reply.code(503).send({
      status: 'not_ready',
      checks: r.checks,
      error: { code: 'not_ready', message: `not ready: ${failed.join(', ')}` },
    });
  });

  app.get(STATUS_PATH, { schema: schemas.status }, async () => service.status());

  app.get(METRICS_PATH, { schema: schemas.metrics }, async (_request, reply) => {
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.get(OPENAPI_PATH, { schema: { hide: true, response: { 200: { type: 'object', additionalProperties: true } } } }, async () => app.swagger());
};
