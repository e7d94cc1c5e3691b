// System routes: liveness, readiness, status and the OpenAPI document. (Metrics are served on
// their own listener: ../metrics-server.ts.)
import type { FastifyPluginAsync } from 'fastify';
import { HEALTH_PATH, OPENAPI_PATH, READY_PATH, STATUS_PATH } from '../../contract.ts';
import type { AgentdService } from '../../core/service.ts';
import type { routeSchemas } from '../schemas.ts';
import { callerOf } from '../caller.ts';

export interface SystemRouteOptions {
  service: AgentdService;
  schemas: ReturnType<typeof routeSchemas>;
}

export const systemRoutes: FastifyPluginAsync<SystemRouteOptions> = async (app, { service, schemas }) => {
  app.get(HEALTH_PATH, { schema: schemas.health }, async () => service.health());

  // Booleans only: nothing here names an address or repeats an error from the network.
  app.get(READY_PATH, { schema: schemas.ready }, async (_request, reply) => {
    const r = service.readiness();
    if (r.ready) return { status: 'ready', checks: r.checks };
    return reply.code(503).send({
      status: 'not_ready',
      checks: r.checks,
      error: { code: 'not_ready', message: `not ready: ${r.failed.join(', ')}` },
    });
  });

  app.get(STATUS_PATH, { schema: schemas.status }, async (request) => service.status(callerOf(request)));

  app.get(
    OPENAPI_PATH,
    {
      schema: {
        hide: true,
        querystring: { type: 'object', additionalProperties: false, properties: {} },
        response: { 200: { type: 'object', additionalProperties: true } },
      },
    },
    async () => app.swagger(),
  );
};
