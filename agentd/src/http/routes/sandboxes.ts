// Sandbox routes: create, list, get, terminate.
import type { FastifyPluginAsync } from 'fastify';
import { SANDBOXES_PATH } from '../../contract.ts';
import type { AgentdService } from '../../core/service.ts';
import type { routeSchemas } from '../schemas.ts';
import { callerOf } from '../caller.ts';

export interface SandboxRouteOptions {
  service: AgentdService;
  schemas: ReturnType<typeof routeSchemas>;
}

type IdParams = { Params: { id: string } };
type ListQuery = { Querystring: { state?: string; tier?: string; limit?: number; cursor?: string } };

export const sandboxRoutes: FastifyPluginAsync<SandboxRouteOptions> = async (app, { service, schemas }) => {
  app.post(SANDBOXES_PATH, { schema: schemas.createSandbox }, async (request, reply) => {
    const { sandbox, token } = await service.createSandbox(callerOf(request), request.body);
    return reply
      .code(201)
      .header('location', `${SANDBOXES_PATH}/${sandbox.id}`)
      .send({ ...sandbox, token });
  });

  app.get<ListQuery>(SANDBOXES_PATH, { schema: schemas.listSandboxes }, async (request) => service.listSandboxes(callerOf(request), request.query));

  app.get<IdParams>(`${SANDBOXES_PATH}/:id`, { schema: schemas.getSandbox }, async (request) => service.getSandbox(callerOf(request), request.params.id));

  app.delete<IdParams>(`${SANDBOXES_PATH}/:id`, { schema: schemas.terminateSandbox }, async (request) =>
    service.terminateSandbox(callerOf(request), request.params.id),
  );
};
