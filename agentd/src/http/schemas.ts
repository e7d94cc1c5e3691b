// JSON schemas for the HTTP API. They validate requests (Ajv), serialize responses
// (fast-json-stringify) and generate /openapi.json (@fastify/swagger): one source for all three.
// Limits come from the core's validation constants and the configuration, so the schemas and
// the core agree.
import type { AgentdConfig } from '../config.ts';
import { CAPABILITIES, FORWARDED_REQUEST_HEADERS, HTTP_FETCH_METHODS, INTENT_OUTCOMES, SANDBOX_STATES, SERVICE_ID_PATTERN } from '../contract.ts';
import { INTENT_ID_PATTERN, LIMITS, SANDBOX_ID_PATTERN } from '../core/validation.ts';

type Schema = Record<string, unknown>;

const dateTime = { type: 'string', format: 'date-time' } as const;
const nullable = (s: Schema): Schema => ({ ...s, type: [s.type as string, 'null'] });

/** Shared schemas, registered with fastify.addSchema and referenced as { $ref: 'Name#' }. */
export function sharedSchemas(): Schema[] {
  return [
    {
      $id: 'Error',
      type: 'object',
      description: 'Every error response has this shape.',
      required: ['error'],
      properties: {
        error: {
          type: 'object',
          required: ['code', 'message'],
          properties: {
            code: {
              type: 'string',
              description:
                'Stable machine-readable code, e.g. invalid_argument, unauthenticated, tier_not_allowed, sandbox_not_found, sandbox_terminated, too_many_sandboxes, intent_too_large.',
            },
            message: { type: 'string' },
            field: { type: 'string', description: 'For invalid_argument: the offending field, e.g. "tier" or "params.path".' },
          },
        },
      },
    },
    {
      $id: 'Sandbox',
      type: 'object',
      required: ['id', 'owner', 'tier', 'labels', 'state', 'created_at', 'expires_at', 'terminated_at'],
      properties: {
        id: { type: 'string', pattern: SANDBOX_ID_PATTERN },
        owner: { type: 'string', description: 'The API client that created it.' },
        tier: { type: 'string' },
        labels: { type: 'object', additionalProperties: { type: 'string' } },
        state: { type: 'string', enum: [...SANDBOX_STATES] },
        created_at: dateTime,
        expires_at: dateTime,
        terminated_at: nullable(dateTime),
      },
    },
    {
      $id: 'Intent',
      type: 'object',
      description: 'An intent record. Response bodies are returned once, by the POST, and are not stored.',
      required: [
        'id',
        'sandbox_id',
        'capability',
        'service',
        'method',
        'path',
        'request_headers',
        'outcome',
        'status',
        'truncated',
        'body_bytes',
        'duration_ms',
        'error',
        'created_at',
        'completed_at',
      ],
      properties: intentProperties(),
    },
    {
      $id: 'IntentResult',
      type: 'object',
      description: 'The intent record plus the upstream response (status, headers, body as returned by the egress proxy).',
      required: ['id', 'sandbox_id', 'capability', 'outcome', 'status', 'headers', 'body', 'body_encoding', 'truncated', 'duration_ms'],
      properties: {
        ...intentProperties(),
        headers: { type: 'object', additionalProperties: { type: 'string' }, description: 'Response headers (lowercase; hop-by-hop headers removed).' },
        body: { type: 'string', description: 'Response body, at most AGENTD_FETCH_MAX_BYTES bytes.' },
        body_encoding: { type: 'string', enum: ['utf8', 'base64'], description: 'utf8 when the bytes are valid UTF-8, else base64.' },
        dropped_headers: { type: 'array', items: { type: 'string' }, description: 'Caller headers not on the allowlist, not forwarded.' },
      },
    },
  ];
}

function intentProperties(): Schema {
  return {
    id: { type: 'string', pattern: INTENT_ID_PATTERN },
    sandbox_id: { type: 'string', pattern: SANDBOX_ID_PATTERN },
    capability: { type: 'string', enum: [...CAPABILITIES] },
    service: { type: 'string' },
    method: { type: 'string' },
    path: { type: 'string' },
    request_headers: { type: 'object', additionalProperties: { type: 'string' }, description: 'The allowlisted caller headers that were forwarded.' },
    outcome: {
      type: 'string',
      enum: ['running', ...INTENT_OUTCOMES],
      description: 'ok: the egress proxy answered (any status); running: not finished (or the daemon is still running it).',
    },
    status: { type: ['integer', 'null'], description: 'Upstream HTTP status, null when there was no response.' },
    truncated: { type: 'boolean', description: 'The body was cut at AGENTD_FETCH_MAX_BYTES.' },
    body_bytes: { type: ['integer', 'null'] },
    duration_ms: { type: ['integer', 'null'] },
    error: { type: ['string', 'null'] },
    created_at: dateTime,
    completed_at: nullable(dateTime),
  };
}

const ref = (id: string): Schema => ({ $ref: `${id}#` });
const errors = (...codes: number[]): Record<number, Schema> => Object.fromEntries(codes.map((c) => [c, ref('Error')]));

/** Routes without query parameters refuse any. */
const noQuery = { type: 'object', additionalProperties: false, properties: {} } as const;

const sandboxIdParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', pattern: SANDBOX_ID_PATTERN, description: 'a sandbox id (sbx_ + 24 hex digits)' } },
} as const;

const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: LIMITS.listMax, default: LIMITS.listDefault },
  cursor: { type: 'string', pattern: LIMITS.cursorPattern, description: 'the next_cursor of the previous page' },
} as const;

export function routeSchemas(config: AgentdConfig) {
  const tiers = [...config.sandboxTiers];
  return {
    health: {
      tags: ['system'],
      summary: 'Liveness: the process answers.',
      querystring: noQuery,
      response: { 200: { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ok'] } } } },
    },
    ready: {
      tags: ['system'],
      summary: 'Readiness: storage open and not draining (booleans only; the egress proxy is not probed).',
      querystring: noQuery,
      response: {
        200: readinessSchema(),
        503: readinessSchema(),
      },
    },
    status: {
      tags: ['system'],
      summary: "Version, uptime and counts. Scope 'own': counts of the caller's sandboxes, without egress_url and token_kid.",
      querystring: noQuery,
      response: {
        ...errors(400, 401),
        200: {
          type: 'object',
          required: ['version', 'mode', 'started_at', 'uptime_seconds', 'sandboxes', 'intents'],
          properties: {
            version: { type: 'string' },
            mode: { type: 'string' },
            started_at: dateTime,
            uptime_seconds: { type: 'number' },
            sandboxes: counts(['total', 'active', 'expired', 'terminated']),
            intents: counts(['total', 'running', 'in_flight']),
            egress_url: { type: 'string', description: "Only for scope 'all'." },
            token_kid: { type: 'string', description: "Only for scope 'all'." },
          },
        },
      },
    },
    registry: {
      hide: true,
      summary: 'The sandbox registry as an OPA bundle (bearer token; ETag, If-None-Match, Prefer: wait=N long polling).',
      querystring: noQuery,
      response: {
        200: { type: 'string', format: 'binary', description: 'gzipped tar: .manifest and sandboxes/data.json' },
        304: { type: 'null', description: 'Not modified (If-None-Match is the current revision).' },
        ...errors(400, 401),
      },
    },
    createSandbox: {
      tags: ['sandboxes'],
      summary:
        "Create a sandbox owned by the caller; the response carries its token (returned only here). 403 tier_not_allowed when the caller's role may not create the tier; 429 too_many_sandboxes above the per-client limit.",
      querystring: noQuery,
      body: {
        type: 'object',
        required: ['tier'],
        additionalProperties: false,
        properties: {
          tier: { type: 'string', enum: tiers },
          labels: {
            type: 'object',
            maxProperties: LIMITS.labelsMax,
            description: `Label keys match ${LIMITS.labelKeyPattern}.`,
            additionalProperties: { type: 'string', maxLength: LIMITS.labelValueMaxLength },
          },
          ttl_seconds: { type: 'integer', minimum: 1, maximum: config.maxTtlSeconds, description: `Default ${config.defaultTtlSeconds}.` },
        },
      },
      response: {
        201: {
          type: 'object',
          required: ['id', 'owner', 'tier', 'labels', 'state', 'created_at', 'expires_at', 'token'],
          properties: {
            id: { type: 'string' },
            owner: { type: 'string' },
            tier: { type: 'string' },
            labels: { type: 'object', additionalProperties: { type: 'string' } },
            state: { type: 'string', enum: [...SANDBOX_STATES] },
            created_at: dateTime,
            expires_at: dateTime,
            terminated_at: nullable(dateTime),
            token: { type: 'string', description: 'The sandbox token (JWT HS256; sub = sandbox id, tier, exp = expires_at).' },
          },
        },
        ...errors(400, 401, 403, 429),
      },
    },
    listSandboxes: {
      tags: ['sandboxes'],
      summary: "List sandboxes, oldest first (scope 'own': the caller's). A page stops before AGENTD_PAGE_MAX_BYTES.",
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { state: { type: 'string', enum: [...SANDBOX_STATES] }, tier: { type: 'string', enum: tiers }, ...pageQuery },
      },
      response: {
        200: {
          type: 'object',
          required: ['sandboxes', 'next_cursor'],
          properties: { sandboxes: { type: 'array', items: ref('Sandbox') }, next_cursor: { type: ['string', 'null'] } },
        },
        ...errors(400, 401),
      },
    },
    getSandbox: {
      tags: ['sandboxes'],
      summary: "Get a sandbox (404 for another client's sandbox with scope 'own').",
      params: sandboxIdParams,
      querystring: noQuery,
      response: { 200: ref('Sandbox'), ...errors(400, 401, 404) },
    },
    terminateSandbox: {
      tags: ['sandboxes'],
      summary: 'Terminate a sandbox. 409 if it is already terminated; an expired sandbox can be terminated.',
      params: sandboxIdParams,
      querystring: noQuery,
      response: { 200: ref('Sandbox'), ...errors(400, 401, 404, 409) },
    },
    executeIntent: {
      tags: ['intents'],
      summary:
        'Execute an intent (http_fetch through the egress proxy). 200 whatever the upstream status; 502 egress unavailable, 504 timeout (both with the intent record).',
      params: sandboxIdParams,
      querystring: noQuery,
      body: {
        type: 'object',
        required: ['capability', 'params'],
        additionalProperties: false,
        properties: {
          capability: { type: 'string', enum: [...CAPABILITIES] },
          params: {
            type: 'object',
            required: ['service', 'method', 'path'],
            additionalProperties: false,
            properties: {
              service: {
                type: 'string',
                pattern: SERVICE_ID_PATTERN,
                description: 'a service id (lowercase letters, digits, "." and "-"), sent as Host to the egress proxy',
              },
              method: { type: 'string', enum: [...HTTP_FETCH_METHODS] },
              path: {
                type: 'string',
                minLength: 1,
                maxLength: LIMITS.pathMaxLength,
                pattern: LIMITS.pathPattern,
                description: 'a path and query starting with a single "/" (not a URL), printable ASCII without spaces',
              },
              headers: {
                type: 'object',
                maxProperties: LIMITS.headersMax,
                additionalProperties: { type: 'string', maxLength: LIMITS.headerValueMaxLength },
                description: `Forwarded: ${FORWARDED_REQUEST_HEADERS.join(', ')}. Credential and routing headers are rejected; others dropped.`,
              },
              body: { type: 'string', description: `Request body (UTF-8), at most ${LIMITS.requestBodyMaxBytes} bytes; not with GET or HEAD.` },
              timeout_ms: { type: 'integer', minimum: 1, maximum: config.fetchMaxTimeoutMs, description: `Default ${config.fetchTimeoutMs}.` },
            },
          },
        },
      },
      response: {
        200: ref('IntentResult'),
        ...errors(400, 401, 404, 409),
        500: errorWithIntent('the egress request failed unexpectedly (with the intent record)'),
        502: errorWithIntent('egress proxy unavailable (with the intent record)'),
        503: errorWithIntent('shutting down (intent interrupted, with its record; or not started)'),
        504: errorWithIntent('timed out (with the intent record)'),
      },
    },
    listIntents: {
      tags: ['intents'],
      summary: "List a sandbox's intents, oldest first (records only, no response bodies).",
      params: sandboxIdParams,
      querystring: { type: 'object', additionalProperties: false, properties: { ...pageQuery } },
      response: {
        200: {
          type: 'object',
          required: ['intents', 'next_cursor'],
          properties: { intents: { type: 'array', items: ref('Intent') }, next_cursor: { type: ['string', 'null'] } },
        },
        ...errors(400, 401, 404),
      },
    },
  };
}

function counts(keys: string[]): Schema {
  return { type: 'object', required: keys, properties: Object.fromEntries(keys.map((k) => [k, { type: 'integer' }])) };
}

function errorWithIntent(description: string): Schema {
  return {
    type: 'object',
    description,
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
      },
      intent: ref('IntentResult'),
    },
  };
}

function readinessSchema(): Schema {
  return {
    type: 'object',
    required: ['status', 'checks'],
    properties: {
      status: { type: 'string', enum: ['ready', 'not_ready'] },
      checks: {
        type: 'object',
        required: ['storage', 'draining'],
        properties: {
          storage: { type: 'boolean', description: 'The database answers.' },
          draining: { type: 'boolean', description: 'The daemon is shutting down.' },
        },
      },
      error: {
        type: 'object',
        properties: { code: { type: 'string' }, message: { type: 'string' } },
      },
    },
  };
}
