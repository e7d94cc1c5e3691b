// The gRPC transport: agentd.v1.Agentd over the domain core, the standard grpc.health.v1.Health
// service, and server reflection (v1 and v1alpha).
//
// Every agentd.v1.Agentd call is authenticated in one place (`unary`): the caller comes from
// the identity metadata the gateway forwards (the IDENTITY_HEADERS names), trusted only with the
// gateway token when one is configured (core/caller.ts). grpc.health.v1 and reflection are
// open, like /health.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { formatAddress, type ListenAddress } from '../config.ts';
import { GRPC_ERROR_CODE_METADATA, GRPC_ERROR_FIELD_METADATA, GRPC_INTENT_ID_METADATA, GRPC_SERVICE, REQUEST_ID_HEADER } from '../contract.ts';
import type { Caller, CallerAuthenticator } from '../core/caller.ts';
import { AgentdError, type ErrorKind } from '../core/errors.ts';
import type { AgentdService, IntentResult } from '../core/service.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';

const STATUS_FOR: Record<ErrorKind, grpc.status> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  permission_denied: grpc.status.PERMISSION_DENIED,
  not_found: grpc.status.NOT_FOUND,
  conflict: grpc.status.FAILED_PRECONDITION,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  bad_gateway: grpc.status.UNAVAILABLE,
  unavailable: grpc.status.UNAVAILABLE,
  deadline_exceeded: grpc.status.DEADLINE_EXCEEDED,
  internal: grpc.status.INTERNAL,
};

const STATUS_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v as number, k]),
);

export interface GrpcDeps {
  service: AgentdService;
  auth: CallerAuthenticator;
  metrics: Metrics;
  logger: Logger;
  listen: ListenAddress;
  packageDefinition: PackageDefinition;
}

export interface GrpcHandle {
  port: number;
  /** Stop accepting calls and wait for the running ones. */
  shutdown(): Promise<void>;
  /** Cancel whatever still runs. */
  forceShutdown(): void;
}

type Req = Record<string, unknown>;
type Ctx = { requestId: string; caller: Caller };

export async function startGrpcServer(deps: GrpcDeps): Promise<GrpcHandle> {
  const { service, metrics, logger, auth } = deps;
  const loaded = grpc.loadPackageDefinition(deps.packageDefinition) as unknown as {
    agentd: { v1: { Agentd: grpc.ServiceClientConstructor } };
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });

  const unary = (name: string, fn: (req: Req, ctx: Ctx) => unknown): grpc.handleUnaryCall<Req, unknown> => {
    const method = `/${GRPC_SERVICE}/${name}`;
    return (call, callback) => {
      const started = performance.now();
      const fromHeader = call.metadata.get(REQUEST_ID_HEADER)[0];
      const requestId = typeof fromHeader === 'string' && /^[A-Za-z0-9._:@/+=-]{1,128}$/.test(fromHeader) ? fromHeader : randomUUID();
      const done = (code: grpc.status, err?: string): void => {
        metrics.grpcRequestsTotal.inc({ method, code: STATUS_NAME[code] ?? String(code) });
        const entry = {
          reqId: requestId,
          rpc: method,
          code: STATUS_NAME[code],
          duration_ms: Math.round(performance.now() - started),
          ...(err ? { error: err } : {}),
        };
        if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) logger.error(entry, 'rpc failed');
        else if (name === 'Health' && code === grpc.status.OK) logger.debug(entry, 'rpc completed');
        else logger.info(entry, 'rpc completed');
      };
      Promise.resolve()
        .then(() => {
          // The caller, from the metadata (a key given more than once counts as missing).
          const caller = auth.authenticate((key) => {
            const values = call.metadata.get(key);
            if (values.length === 0) return undefined;
            return values.length === 1 && typeof values[0] === 'string' ? values[0] : null;
          }, requestId);
          return fn(call.request, { requestId, caller });
        })
        .then(
          (res) => {
            done(grpc.status.OK);
            callback(null, res);
          },
          (err: unknown) => {
            if (!(err instanceof AgentdError)) logger.error({ reqId: requestId, rpc: method, err }, 'unhandled error');
            const e = toServiceError(err);
            done(e.code, e.details);
            callback(e);
          },
        );
    };
  };

  const pick = (o: Req | undefined, keys: string[]): Req | undefined => {
    if (o === undefined || o === null) return undefined;
    const out: Req = {};
    for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
    return out;
  };

  server.addService(loaded.agentd.v1.Agentd.service, {
    Health: unary('Health', () => ({ status: service.health().status, ready: service.isReadyNow() })),
    Status: unary('Status', (_req, ctx) => service.status(ctx.caller)),
    CreateSandbox: unary('CreateSandbox', async (req, ctx) => {
      const { sandbox, token } = await service.createSandbox(ctx.caller, pick(req, ['tier', 'labels', 'ttl_seconds']));
      return { sandbox, token };
    }),
    ListSandboxes: unary('ListSandboxes', (req, ctx) => {
      const r = service.listSandboxes(ctx.caller, pick(req, ['state', 'tier', 'limit', 'cursor']) ?? {});
      return { sandboxes: r.sandboxes, next_cursor: r.next_cursor ?? '' };
    }),
    GetSandbox: unary('GetSandbox', (req, ctx) => ({ sandbox: service.getSandbox(ctx.caller, req.id) })),
    TerminateSandbox: unary('TerminateSandbox', async (req, ctx) => ({ sandbox: await service.terminateSandbox(ctx.caller, req.id) })),
    ExecuteIntent: unary('ExecuteIntent', async (req, ctx) => {
      const raw = {
        capability: req.capability,
        params: pick(req.http_fetch as Req | undefined, ['service', 'method', 'path', 'headers', 'body', 'timeout_ms']),
      };
      const r = await service.executeIntent(ctx.caller, req.sandbox_id, raw, { requestId: ctx.requestId, idField: 'sandbox_id', paramsField: 'http_fetch' });
      return intentResponse(r);
    }),
    ListIntents: unary('ListIntents', (req, ctx) => {
      const r = service.listIntents(ctx.caller, req.sandbox_id, pick(req, ['limit', 'cursor']) ?? {}, 'sandbox_id');
      return { intents: r.intents, next_cursor: r.next_cursor ?? '' };
    }),
  });

  // grpc.health.v1.Health
  const known = new Set(['', GRPC_SERVICE]);
  const servingStatus = (): string => (service.isDraining ? 'NOT_SERVING' : 'SERVING');
  const watchers = new Set<grpc.ServerWritableStream<Req, unknown>>();
  service.onServingChange(() => {
    for (const call of watchers) {
      call.write({ status: servingStatus() });
      call.end();
    }
    watchers.clear();
  });
  server.addService(loaded.grpc.health.v1.Health.service, {
    Check: (call: grpc.ServerUnaryCall<Req, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const name = String(call.request.service ?? '');
      if (!known.has(name)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service '${name}'` });
        return;
      }
      callback(null, { status: servingStatus() });
    },
    Watch: (call: grpc.ServerWritableStream<Req, unknown>) => {
      const name = String(call.request.service ?? '');
      if (!known.has(name)) {
        call.write({ status: 'SERVICE_UNKNOWN' });
        return; // stays open: the service may appear later (it will not, but that is the protocol)
      }
      call.write({ status: servingStatus() });
      if (service.isDraining) {
        call.end();
        return;
      }
      watchers.add(call);
      call.on('cancelled', () => watchers.delete(call));
    },
  });

  new ReflectionService(deps.packageDefinition as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatAddress(deps.listen), grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });

  return {
    port,
    shutdown: () =>
      new Promise<void>((resolve) => {
        for (const call of watchers) call.end();
        watchers.clear();
        server.tryShutdown(() => resolve());
      }),
    forceShutdown: () => server.forceShutdown(),
  };
}

function intentResponse(r: IntentResult): Req {
  return { intent: r, headers: r.headers, body: r.body, body_encoding: r.body_encoding, dropped_headers: r.dropped_headers };
}

function toServiceError(err: unknown): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (err instanceof AgentdError) {
    metadata.set(GRPC_ERROR_CODE_METADATA, err.code);
    if (err.field !== undefined) metadata.set(GRPC_ERROR_FIELD_METADATA, err.field);
    const intent = err.details?.intent as { id?: string } | undefined;
    if (intent?.id) metadata.set(GRPC_INTENT_ID_METADATA, intent.id);
    return Object.assign(new Error(err.message), { code: STATUS_FOR[err.kind], details: err.message, metadata });
  }
  metadata.set(GRPC_ERROR_CODE_METADATA, 'internal');
  return Object.assign(new Error('internal error'), { code: grpc.status.INTERNAL, details: 'internal error', metadata });
}
