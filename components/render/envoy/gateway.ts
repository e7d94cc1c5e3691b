// The gateway Envoy: API clients in, agentd out. Every request but /health and /ready is
// authorized by OPA (policy chosen here, by Envoy's config: context extension policy=gateway)
// and rate-limited per API key at the key's tier, keyed on what OPA returned.

import { API_PREFIX, GRPC_SERVICE, HEALTH_PATH, READY_PATH } from '../../../agentd/src/contract.ts';
import type { PolicySpec } from '../../../policy/spec.ts';
import {
  BASE_LOG_FIELDS, EXT_AUTHZ_NS, enforcedRateLimit, fromAuthz, OPA_CLUSTER, adminBlock, adminCluster, bucket, cluster, connectionManager,
  extAuthzContext, extAuthzDisabled, extAuthzFilter, jsonAccessLog, jsonDirectResponse, localRateLimitFilter,
  localReplyConfig, percent, routerFilter, statsListener, type Endpoint, type ProxyListen,
} from './common.ts';
import {
  TYPE, ext, seconds, socketAddress, typed,
  type Bootstrap, type Listener, type RateLimit, type Route, type RouteConfiguration, type TypedConfig, type VirtualHost,
} from './model.ts';

export interface GatewayTls {
  /** Port of the TLS listener (beside the plain one). */
  readonly port: number;
  /** Certificate chain and private key files inside the gateway workload. */
  readonly certChainFile: string;
  readonly privateKeyFile: string;
}

export interface GatewayRenderInput {
  readonly listen: ProxyListen;
  readonly agentdHttp: Endpoint;
  readonly agentdGrpc: Endpoint;
  readonly opa: Endpoint;
  /** Largest request body accepted, in bytes (413 above). */
  readonly maxRequestBytes: number;
  /** Upstream timeout for API calls, in seconds (intents may wait on slow external APIs). */
  readonly upstreamTimeoutSeconds: number;
  readonly tls?: GatewayTls;
}

export const GATEWAY_STAT_PREFIX = 'gateway';
export const GATEWAY_RATE_LIMIT_STAT_PREFIX = 'gateway_rate_limit';
export const GATEWAY_EXT_AUTHZ_STAT_PREFIX = 'gateway_authz';
/** The request headers the gateway policy reads (policy/rego/agentd/gateway.rego): the key's two places. */
export const GATEWAY_AUTHZ_HEADERS = ['x-api-key', 'authorization'] as const;

/** The descriptor windows: each tier limits per minute and per hour. */
const WINDOWS = [
  { name: 'minute', seconds: 60, limit: (t: { requestsPerMinute: number | null }) => t.requestsPerMinute },
  { name: 'hour', seconds: 3600, limit: (t: { requestsPerHour: number | null }) => t.requestsPerHour },
] as const;


/** One descriptor per tier and window: a token bucket per distinct client id (empty value = per value). */
export function gatewayRateLimit(spec: PolicySpec): TypedConfig {
  const descriptors = Object.entries(spec.rateLimitTiers).flatMap(([tier, t]) =>
    WINDOWS.flatMap((w) => {
      const limit = w.limit(t);
      return limit === null
        ? []
        : [{ entries: [{ key: 'window', value: w.name }, { key: 'tier', value: tier }, { key: 'client', value: '' }], token_bucket: bucket(limit, w.seconds) }];
    }),
  );
  // Descriptors are built from OPA's answer (dynamic metadata), never from request headers.
  const rateLimits: RateLimit[] = WINDOWS.map((w) => ({
    actions: [
      { generic_key: { descriptor_key: 'window', descriptor_value: w.name } },
      fromAuthz('tier', 'tier'),
      fromAuthz('client', 'client_id'),
    ],
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

export function renderGatewayRoutes(spec: PolicySpec, input: GatewayRenderInput): RouteConfiguration {
  const open = { 'envoy.filters.http.ext_authz': extAuthzDisabled(), 'envoy.filters.http.local_ratelimit': noRateLimit() };
  const timeout = seconds(input.upstreamTimeoutSeconds);
  const routes: Route[] = [
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
      'envoy.filters.http.local_ratelimit': gatewayRateLimit(spec),
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
      httpFilters: [
        ext('envoy.filters.http.buffer', TYPE.buffer, { max_request_bytes: input.maxRequestBytes }),
        extAuthzFilter({ statPrefix: GATEWAY_EXT_AUTHZ_STAT_PREFIX, allowedHeaders: GATEWAY_AUTHZ_HEADERS }),
        localRateLimitFilter(GATEWAY_RATE_LIMIT_STAT_PREFIX),
        routerFilter(),
      ],
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
      filter_chains: [{ filters: [hcm(GATEWAY_STAT_PREFIX)] }],
    },
  ];
  if (input.tls) {
    listeners.push({
      name: 'gateway_tls',
      address: socketAddress(input.listen.traffic.host, input.tls.port),
      per_connection_buffer_limit_bytes: 1 << 20,
      filter_chains: [
        {
          filters: [hcm(`${GATEWAY_STAT_PREFIX}_tls`)],
          transport_socket: ext('envoy.transport_sockets.tls', TYPE.downstreamTls, {
            common_tls_context: {
              alpn_protocols: ['h2', 'http/1.1'],
              tls_params: { tls_minimum_protocol_version: 'TLSv1_2' },
              tls_certificates: [{ certificate_chain: { filename: input.tls.certChainFile }, private_key: { filename: input.tls.privateKeyFile } }],
            },
          }),
        },
      ],
    });
  }
  listeners.push(statsListener('gateway', input.listen.stats));
  return {
    node: { id: 'gateway', cluster: 'agentd-gateway' },
    admin: adminBlock(input.listen.adminPort),
    static_resources: {
      listeners,
      clusters: [
        cluster('agentd_http', input.agentdHttp),
        cluster('agentd_grpc', input.agentdGrpc, { http2: true }),
        cluster(OPA_CLUSTER, input.opa, { http2: true }),
        adminCluster(input.listen.adminPort),
      ],
    },
  };
}
