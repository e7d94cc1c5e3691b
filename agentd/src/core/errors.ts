// Domain errors. Each carries a transport-neutral kind (mapped to an HTTP status and a gRPC
// code by the transports), a stable machine-readable code, and for bad input the field.

export type ErrorKind =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'conflict'
  | 'resource_exhausted'
  | 'bad_gateway'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'internal';

export class AgentdError extends Error {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly field: string | undefined;
  /** Extra payload a transport may return with the error (e.g. the intent record). */
  readonly details: Record<string, unknown> | undefined;

  constructor(kind: ErrorKind, code: string, message: string, options?: { field?: string; details?: Record<string, unknown> }) {
    super(message);
    this.name = 'AgentdError';
    this.kind = kind;
    this.code = code;
    this.field = options?.field;
    this.details = options?.details;
  }
}

/** Bad input: the message names the field ("tier must be one of ..."). */
export function invalidArgument(field: string, problem: string): AgentdError {
  return new AgentdError('invalid_argument', 'invalid_argument', `${field} ${problem}`, { field });
}

export function notFound(code: string, message: string): AgentdError {
  return new AgentdError('not_found', code, message);
}

export function conflict(code: string, message: string): AgentdError {
  return new AgentdError('conflict', code, message);
}

/** The one answer to a request without valid gateway credentials: it says nothing more. */
export function unauthenticated(): AgentdError {
  return new AgentdError('unauthenticated', 'unauthenticated', 'authentication required');
}

export function permissionDenied(code: string, message: string): AgentdError {
  return new AgentdError('permission_denied', code, message);
}

export function resourceExhausted(code: string, message: string): AgentdError {
  return new AgentdError('resource_exhausted', code, message);
}

export const HTTP_STATUS: Record<ErrorKind, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  conflict: 409,
  resource_exhausted: 429,
  bad_gateway: 502,
  unavailable: 503,
  deadline_exceeded: 504,
  internal: 500,
};
