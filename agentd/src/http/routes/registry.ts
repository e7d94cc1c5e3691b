// The sandbox registry endpoint OPA polls (REGISTRY_BUNDLE_PATH): the active sandboxes as a
// bundle, with ETag / If-None-Match and long polling (core/registry.ts has the protocol).
//
// Auth: `Authorization: Bearer <token>` equal to the content of AGENTD_REGISTRY_TOKEN_FILE
// (compared in constant time). Without a token file (development only; production requires
// one) the endpoint answers loopback clients only.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { REGISTRY_BUNDLE_PATH } from '../../contract.ts';
import { unauthenticated } from '../../core/errors.ts';
import { OPA_BUNDLE_CONTENT_TYPE, parsePreferWait, type SandboxRegistry } from '../../core/registry.ts';
import type { routeSchemas } from '../schemas.ts';

export interface RegistryRouteOptions {
  registry: SandboxRegistry;
  /** The bearer token; null: loopback clients only (development). */
  token: string | null;
  schemas: ReturnType<typeof routeSchemas>;
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Whether a peer address is loopback (127.0.0.0/8, ::1, or IPv4-mapped 127.x). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address);
}

export const registryRoutes: FastifyPluginAsync<RegistryRouteOptions> = async (app, { registry, token, schemas }) => {
  const tokenDigest = token === null ? null : digest(token);

  app.get(REGISTRY_BUNDLE_PATH, { schema: schemas.registry }, async (request, reply) => {
    if (tokenDigest !== null) {
      const auth = request.headers.authorization;
      const m = typeof auth === 'string' ? /^Bearer ([!-~]+)$/.exec(auth) : null;
      if (!m || !timingSafeEqual(digest(m[1] as string), tokenDigest)) throw unauthenticated();
    } else if (!isLoopback(request.socket.remoteAddress)) {
      throw unauthenticated();
    }

    const prefer = request.headers.prefer;
    const wait = parsePreferWait(Array.isArray(prefer) ? prefer.join(';') : prefer);
    const inm = request.headers['if-none-match'];
    const result = await registry.poll({
      ifNoneMatch: Array.isArray(inm) ? inm.join(',') : inm,
      waitSeconds: wait,
      onClose: (fn) => reply.raw.once('close', fn),
    });

    void reply.header('cache-control', 'no-store');
    // OPA switches to long polling, and back to it after a failed poll (agentd restarting),
    // only when an answer carries this content type: so every answer does, asked for or not.
    void reply.header('content-type', OPA_BUNDLE_CONTENT_TYPE);
    if (result.status === 304) {
      return reply.code(304).header('etag', result.etag).send();
    }
    return reply.code(200).header('etag', result.bundle.etag).send(result.bundle.body);
  });
};
