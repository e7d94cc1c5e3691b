// The gateway Envoy: API clients in, agentd out. Every request but /health and /ready is
// authorized by OPA (policy chosen here, by Envoy's config: context extension policy=gateway)
// and rate-limited per API key at the key's tier, keyed on what OPA returned.

import { API_PREFIX, GATEWAY_TOKEN_HEADER, GRPC_SERVICE, HEALTH_PATH, READY_PATH } from '../../../agentd/src/contract.ts';
import type { PolicySpec } from '../../../policy/spec.ts';
import {
  BASE_LOG_FIELDS,
  EXT_AUTHZ_NS,
  IDENTITY_HEADER_PREFIXES,
  enforcedRateLimit,
  fromAuthz,
  OPA_CLUSTER,
  adminBlock,
  adminCluster,
  bucket,
  cluster,
  connectionManager,
  credentialInjector,
  extAuthzContext,
  extAuthzDisabled,
  extAuthzFilter,
  jsonAccessLog,
  jsonDirectResponse,
  localRateLimitFilter,
  localReplyConfig,
  overloadManager,
  percent,
  routerFilter,
  sdsConfig,
  statsListener,
  type Endpoint,
  type ProxyLimits,
  type ProxyListen,
} from './common.ts';
import {
  TYPE,
  ext,
  seconds,
  socketAddress,
  typed,
  type Bootstrap,
  type Cluster,
  type Listener,
  type RateLimit,
  type Route,
  type RouteConfiguration,
  type TypedConfig,
  type TypedExtension,
  type VirtualHost,
} from './model.ts';
import { GATEWAY_WINDOWS, RATE_LIMIT_DOMAINS, gatewayLimitShapes } from '../ratelimit.ts';
import { globalRateLimitFilter, globalRateLimitIgnored, globalRateLimits, rateLimitServiceCluster, type RateLimitServiceInput } from './global-ratelimit.ts';

/** SDS resource names of the gateway's secrets (files: see the SDS files the platform renders). */
export const GATEWAY_TLS_SECRET = 'gateway_tls';
export const GATEWAY_TOKEN_SECRET = 'agentd_gateway_token';

export interface GatewayRenderInput {
  readonly listen: ProxyListen;
  readonly agentdHttp: Endpoint;
  readonly agentdGrpc: Endpoint;
  readonly opa: Endpoint;
  /** Largest request body accepted, in bytes (413 above). */
  readonly maxRequestBytes: number;
  /** Upstream timeout for API calls, in seconds (intents may wait on slow external APIs). */
  readonly upstreamTimeoutSeconds: number;
  /**
   * TLS on the traffic listener (then it speaks only TLS: HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2
   * or later): the SDS file naming the certificate chain and key (GATEWAY_TLS_SECRET).
   */
  readonly tls?: { readonly sdsFile: string };
  /**
   * The SDS file naming the per-deploy secret the gateway sends agentd in GATEWAY_TOKEN_HEADER
   * (GATEWAY_TOKEN_SECRET): agentd trusts the identity headers only with it.
   */
  readonly agentdTokenSdsFile: string;
  readonly limits: ProxyLimits;
  /** Global rate limits: the rate-limit service all replicas share. Absent: local token buckets in this replica. */
  readonly rateLimitService?: RateLimitServiceInput;
}

export const GATEWAY_STAT_PREFIX = 'gateway';
export const GATEWAY_RATE_LIMIT_STAT_PREFIX = 'gateway_rate_limit';
export const GATEWAY_EXT_AUTHZ_STAT_PREFIX = 'gateway_authz';
/** The request headers the gateway policy reads (policy/rego/agentd/gateway.rego): the key's two places. */
const GATEWAY_AUTHZ_HEADERS = ['x-api-key', 'authorization'] as const;

/** One descriptor per tier and window: a token bucket per distinct client id (empty value = per value). */
function gatewayRateLimit(spec: PolicySpec): TypedConfig {
  const descriptors = Object.entries(spec.rateLimitTiers).flatMap(([tier, t]) =>
    GATEWAY_WINDOWS.flatMap((w) => {
      const limit = w.limit(t);
      return limit === null
        ? []
        : [
            {
              entries: [
                { key: 'window', value: w.name },
                { key: 'tier', value: tier },
                { key: 'client', value: '' },
              ],
              token_bucket: bucket(limit, w.seconds),
            },
          ];
    }),
  );
  // Descriptors are built from OPA's answer (dynamic metadata), never from request headers.
  const rateLimits: RateLimit[] = GATEWAY_WINDOWS.map((w) => ({
    actions: [{ generic_key: { descriptor_key: 'window', descriptor_value: w.name } }, fromAuthz('tier', 'tier'), fromAuthz('client', 'client_id')],
  }));
  return enforcedRateLimit({
    statPrefix: GATEWAY_RATE_LIMIT_STAT_PREFIX,
    runtimePrefix: 'gateway',
    // Requests that match no descriptor (the unlimited tier) draw from this bucket: effectively none.
    defaultBucket: bucket(1_000_000_000, 1),
    descriptors,
    rateLimits,
  });
}

const noRateLimit = (): TypedConfig =>
  typed(TYPE.localRateLimit, {
    stat_prefix: GATEWAY_RATE_LIMIT_STAT_PREFIX,
    token_bucket: bucket(1_000_000_000, 1),
    filter_enabled: percent(0, 'gateway.rate_limit.health_enabled'),
  });

function renderGatewayRoutes(spec: PolicySpec, input: GatewayRenderInput): RouteConfiguration {
  const global = input.rateLimitService !== undefined;
  const open = {
    'envoy.filters.http.ext_authz': extAuthzDisabled(),
    ...(global ? { 'envoy.filters.http.ratelimit': globalRateLimitIgnored() } : { 'envoy.filters.http.local_ratelimit': noRateLimit() }),
  };
  const timeout = seconds(input.upstreamTimeoutSeconds);
  const routes: Route[] = [
    // A body announced larger than the gateway accepts: 413 without reading it, once the caller
    // is authorized (ext_authz runs first). Bodies without a length are counted as they pass
    // (bodyLimitFilter).
    {
      name: 'too_large',
      match: { prefix: '/', headers: [{ name: 'content-length', range_match: { start: input.maxRequestBytes + 1, end: Number.MAX_SAFE_INTEGER } }] },
      direct_response: jsonDirectResponse(413, 'payload_too_large', `the request body is larger than this gateway accepts (${input.maxRequestBytes} bytes)`),
      // Answer at once, without collecting the body first (bodyLimitFilter would).
      typed_per_filter_config: { 'envoy.filters.http.lua': typed(TYPE.luaPerRoute, { disabled: true }) },
    },
    { name: 'health', match: { path: HEALTH_PATH }, route: { cluster: 'agentd_http', timeout: seconds(5) }, typed_per_filter_config: open },
    { name: 'ready', match: { path: READY_PATH }, route: { cluster: 'agentd_http', timeout: seconds(5) }, typed_per_filter_config: open },
    { name: 'grpc', match: { prefix: `/${GRPC_SERVICE}/`, grpc: {} }, route: { cluster: 'agentd_grpc', timeout } },
    { name: 'api', match: { prefix: `${API_PREFIX}/` }, route: { cluster: 'agentd_http', timeout } },
    { name: 'api_root', match: { path: API_PREFIX }, route: { cluster: 'agentd_http', timeout } },
    {
      name: 'not_found',
      match: { prefix: '/' },
      direct_response: jsonDirectResponse(404, 'not_found', `no such route; the API is under ${API_PREFIX}/ and /${GRPC_SERVICE}/`),
      typed_per_filter_config: open,
    },
  ];
  const vhost: VirtualHost = {
    name: 'agentd',
    domains: ['*'],
    routes,
    typed_per_filter_config: {
      'envoy.filters.http.ext_authz': extAuthzContext({ policy: 'gateway' }),
      ...(global
        ? { 'envoy.filters.http.ratelimit': globalRateLimits(gatewayLimitShapes(spec)) }
        : { 'envoy.filters.http.local_ratelimit': gatewayRateLimit(spec) }),
    },
  };
  return { name: 'gateway', virtual_hosts: [vhost] };
}

export function renderGatewayConfig(spec: PolicySpec, input: GatewayRenderInput): Bootstrap {
  const routeConfig = renderGatewayRoutes(spec, input);
  const hcm = (statPrefix: string) =>
    connectionManager({
      statPrefix,
      routeConfig,
      // Authorization first, on headers alone: a request without a valid key is refused before
      // any of its body is read or buffered (and its connection closed), however large the
      // body it announces. Only an authorized request's body is counted, up to the limit.
      httpFilters: [
        extAuthzFilter({ statPrefix: GATEWAY_EXT_AUTHZ_STAT_PREFIX, allowedHeaders: GATEWAY_AUTHZ_HEADERS }),
        input.rateLimitService
          ? globalRateLimitFilter({
              statPrefix: GATEWAY_RATE_LIMIT_STAT_PREFIX,
              domain: RATE_LIMIT_DOMAINS.gateway,
              whenUnavailable: input.rateLimitService.whenUnavailable,
            })
          : localRateLimitFilter(GATEWAY_RATE_LIMIT_STAT_PREFIX),
        bodyLimitFilter(input.maxRequestBytes),
        routerFilter(),
      ],
      requestTimeoutSeconds: input.limits.requestTimeoutSeconds,
      stripPrefixes: IDENTITY_HEADER_PREFIXES,
      accessLog: jsonAccessLog({
        ...BASE_LOG_FIELDS,
        proxy: 'gateway',
        client_id: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:client_id)%`,
        tier: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:tier)%`,
        grpc_status: '%GRPC_STATUS%',
      }),
      localReply: localReplyConfig(),
    });
  const listeners: Listener[] = [
    {
      name: 'gateway',
      address: socketAddress(input.listen.traffic.host, input.listen.traffic.port),
      per_connection_buffer_limit_bytes: 1 << 20,
      filter_chains: [
        {
          filters: [hcm(GATEWAY_STAT_PREFIX)],
          ...(input.tls
            ? {
                transport_socket: ext('envoy.transport_sockets.tls', TYPE.downstreamTls, {
                  common_tls_context: {
                    alpn_protocols: ['h2', 'http/1.1'],
                    tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
                    tls_certificate_sds_secret_configs: [{ name: GATEWAY_TLS_SECRET, sds_config: sdsConfig(input.tls.sdsFile) }],
                  },
                }),
              }
            : {}),
        },
      ],
    },
  ];
  listeners.push(statsListener('gateway', input.listen.stats));
  return {
    node: { id: 'gateway', cluster: 'agentd-gateway' },
    admin: adminBlock(input.listen.adminPort),
    overload_manager: overloadManager(input.limits),
    static_resources: {
      listeners,
      clusters: [
        agentdCluster('agentd_http', input.agentdHttp, input.agentdTokenSdsFile, false),
        agentdCluster('agentd_grpc', input.agentdGrpc, input.agentdTokenSdsFile, true),
        cluster(OPA_CLUSTER, input.opa, { http2: true }),
        ...(input.rateLimitService ? [rateLimitServiceCluster(input.rateLimitService.endpoint)] : []),
        adminCluster(input.listen.adminPort),
      ],
    },
  };
}

/**
 * Buffers an authorized request's body and answers 413 (JSON) when it is larger than `maxBytes`.
 * Envoy's buffer filter cannot do this after ext_authz: it counts only what arrives after it
 * starts, and a body that arrived while OPA decided reaches it in one piece, uncounted. While
 * a body is buffered Envoy holds at most the connection's buffer limit (1 MiB; 413 above it).
 */
function bodyLimitFilter(maxBytes: number): TypedExtension {
  const body = JSON.stringify({ error: { code: 'payload_too_large', message: `the request body is larger than this gateway accepts (${maxBytes} bytes)` } });
  const script = [
    'function envoy_on_request(handle)',
    '  local body = handle:body()',
    `  if body ~= nil and body:length() > ${maxBytes} then`,
    `    handle:respond({[":status"] = "413", ["content-type"] = "application/json"}, [[${body}]])`,
    '  end',
    'end',
  ].join('\n');
  return ext('envoy.filters.http.lua', TYPE.lua, { default_source_code: { inline_string: script } });
}

/**
 * A cluster to agentd whose requests carry the gateway's per-deploy token, injected by an
 * upstream filter from a secret file (overwriting anything else under that name).
 */
function agentdCluster(name: string, at: Endpoint, tokenSdsFile: string, http2: boolean): Cluster {
  return {
    ...cluster(name, at),
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': typed(TYPE.httpProtocolOptions, {
        explicit_http_config: http2 ? { http2_protocol_options: {} } : { http_protocol_options: {} },
        http_filters: [
          credentialInjector({ secretName: GATEWAY_TOKEN_SECRET, sdsFile: tokenSdsFile, header: GATEWAY_TOKEN_HEADER }),
          ext('envoy.filters.http.upstream_codec', TYPE.upstreamCodec),
        ],
      }),
    },
  };
}
