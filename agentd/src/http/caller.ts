// The authenticated caller on a Fastify request: set by the onRequest hook in server.ts for
// every /api/v1 request, read by the handlers with callerOf(request).
import type { FastifyRequest } from 'fastify';
import type { Caller } from '../core/caller.ts';
import { AgentdError } from '../core/errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller of an /api/v1 request (null elsewhere). */
    caller: Caller | null;
  }
}

/** The caller of an /api/v1 request. */
export function callerOf(request: FastifyRequest): Caller {
  if (request.caller === null) throw new AgentdError('internal', 'internal', 'no caller on an API request');
  return request.caller;
}
