// Every HTTP error is JSON {error: {code, message, field?}}: domain errors, schema validation
// errors (with the offending field named), Fastify's own errors (bad JSON, body too large,
// unsupported media type), unknown routes and unexpected exceptions.
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AgentdError, HTTP_STATUS } from '../core/errors.ts';

interface AjvLikeError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
  propertyName?: string;
  parentSchema?: { description?: unknown };
}

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
  [extra: string]: unknown;
}

/** Dotted field path from an Ajv error, e.g. "/params/headers" + propertyName -> "params.headers.X-Y". */
function fieldOf(e: AjvLikeError): string {
  const parts = e.instancePath
    .split('/')
    .filter((p) => p !== '')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (e.keyword === 'required' && typeof e.params.missingProperty === 'string') parts.push(e.params.missingProperty);
  if (e.keyword === 'additionalProperties' && typeof e.params.additionalProperty === 'string') parts.push(e.params.additionalProperty);
  if (typeof e.propertyName === 'string') parts.push(e.propertyName);
  return parts.join('.');
}

function validationMessage(e: AjvLikeError, field: string, context: string): string {
  const where = field === '' ? context : field;
  switch (e.keyword) {
    case 'required':
      return `${where} is required`;
    case 'additionalProperties':
      return `${where} is not a known field`;
    case 'enum':
      return `${where} must be one of: ${(e.params.allowedValues as unknown[]).join(', ')}`;
    case 'pattern': {
      // The schema's description says what the value should look like.
      const d = e.parentSchema?.description;
      return typeof d === 'string' ? `${where} must be ${d}` : `${where} must match ${String(e.params.pattern)}`;
    }
    default:
      return `${where} ${e.message ?? 'is invalid'}`;
  }
}

function send(reply: FastifyReply, status: number, body: ErrorBody): void {
  void reply.code(status).type('application/json; charset=utf-8').send(body);
}

export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | AgentdError | Error, request: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof AgentdError) {
      const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.field !== undefined ? { field: err.field } : {}) } };
      if (err.details) Object.assign(body, err.details);
      if (err.kind === 'internal') request.log.error({ code: err.code, err: err.message }, 'request failed');
      if (err.kind === 'unauthenticated') void reply.header('www-authenticate', 'Bearer');
      return send(reply, HTTP_STATUS[err.kind], body);
    }
    const fe = err as FastifyError;
    if (Array.isArray(fe.validation) && fe.validation.length > 0) {
      const first = fe.validation[0] as unknown as AjvLikeError;
      const context = fe.validationContext ?? 'body';
      const field = fieldOf(first) || context;
      return send(reply, 400, { error: { code: 'invalid_argument', message: validationMessage(first, field, context), field } });
    }
    const status = typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 600 ? fe.statusCode : 500;
    if (status >= 500) {
      request.log.error({ err }, 'unhandled error');
      return send(reply, 500, { error: { code: 'internal', message: 'internal error' } });
    }
    switch (fe.code) {
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return send(reply, 400, {
          error: { code: 'invalid_argument', message: `body ${fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ? 'is empty' : 'is not valid JSON'}`, field: 'body' },
        });
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return send(reply, 413, { error: { code: 'payload_too_large', message: 'request body is too large', field: 'body' } });
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return send(reply, 415, { error: { code: 'unsupported_media_type', message: 'send the body as application/json' } });
      default:
        if (err instanceof SyntaxError || status === 400) {
          return send(reply, 400, { error: { code: 'invalid_argument', message: `bad request: ${fe.message}` } });
        }
        return send(reply, status, { error: { code: codeForStatus(status), message: fe.message } });
    }
  });

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    send(reply, 404, { error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });
}

/**
 * Errors Fastify raises before routing (a path with a broken percent-escape, an over-long
 * parameter): the same JSON shape as every other error.
 */
export function frameworkErrorHandler(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  if (error.code === 'FST_ERR_BAD_URL' || error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    send(reply, 400, { error: { code: 'invalid_argument', message: 'the request path is not valid (bad percent-encoding or too long)', field: 'path' } });
    return;
  }
  send(reply, 500, { error: { code: 'internal', message: 'internal error' } });
}

/** Requests that are not valid HTTP at all: answered in the same JSON shape, then closed. */
export function clientErrorHandler(err: NodeJS.ErrnoException & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let body: ErrorBody = { error: { code: 'invalid_argument', message: 'malformed HTTP request' } };
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    body = { error: { code: 'request_timeout', message: 'the request did not arrive in time' } };
  } else if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    body = { error: { code: 'headers_too_large', message: 'request headers are too large' } };
  }
  const text = JSON.stringify(body);
  const reason = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[status];
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
    );
  }
  socket.destroy(err);
}

function codeForStatus(status: number): string {
  const codes: Record<number, string> = {
    401: 'unauthenticated',
    403: 'permission_denied',
    404: 'not_found',
    405: 'method_not_allowed',
    406: 'not_acceptable',
    408: 'request_timeout',
    409: 'conflict',
    413: 'payload_too_large',
    414: 'uri_too_long',
    415: 'unsupported_media_type',
    429: 'too_many_requests',
    431: 'headers_too_large',
  };
  return codes[status] ?? 'bad_request';
}
