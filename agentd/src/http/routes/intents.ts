// Intent routes: execute (http_fetch through the egress proxy) and history.
import type { FastifyPluginAsync } from 'fastify';
import { SANDBOXES_PATH } from '../../contract.ts';
import type { AgentdService } from '../../core/service.ts';
import type { routeSchemas } from '../schemas.ts';
import { callerOf } from '../caller.ts';

export interface IntentRouteOptions {
  service: AgentdService;
  schemas: ReturnType<typeof routeSchemas>;
}

type IdParams = { Params: { id: string } };
type PageQuery = { Querystring: { limit?: number; cursor?: string } };

export const intentRoutes: FastifyPluginAsync<IntentRouteOptions> = async (app, { service, schemas }) => {
  app.post<IdParams>(`${SANDBOXES_PATH}/:id/intents`, { schema: schemas.executeIntent }, async (request) =>
    service.executeIntent(callerOf(request), request.params.id, request.body, { requestId: request.id }),
  );

  app.get<IdParams & PageQuery>(`${SANDBOXES_PATH}/:id/intents`, { schema: schemas.listIntents }, async (request) =>
    service.listIntents(callerOf(request), request.params.id, request.query),
  );
};
