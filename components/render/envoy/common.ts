// Pieces both proxies share: clusters, the stats-only listener, the admin interface on
// loopback, JSON access logs, and JSON bodies for every reply Envoy makes itself.

import {
  TYPE,
  ext,
  isIpLiteral,
  seconds,
  socketAddress,
  typed,
  type Bootstrap,
  type Cluster,
  type Listener,
  type RateLimit,
  type RouteConfiguration,
  type TypedExtension,
  type TypedConfig,
} from './model.ts';

import type { Endpoint } from '../types.ts';

export type { Endpoint };

/** Listen addresses of one proxy. */
export interface ProxyListen {
  /** The traffic listener. */
  readonly traffic: Endpoint;
  /** Envoy's admin interface: always bound to loopback, never published. */
  readonly adminPort: number;
  /** The stats-only listener Prometheus scrapes (/stats/prometheus, /ready). */
  readonly stats: Endpoint;
}

export const EXT_AUTHZ_NS = 'envoy.filters.http.ext_authz';
export const JWT_AUTHN_NS = 'envoy.filters.http.jwt_authn';

/**
 * Headers that could claim an identity or pick a policy: removed from every incoming request.
 * The gateway also removes every header under IDENTITY_HEADER_PREFIXES (identityPrefixes); the
 * egress proxy cannot, since agentd's sandbox token travels in x-agentd-sandbox-token.
 */
const IDENTITY_HEADERS = [
  'x-agentd-client-id',
  'x-agentd-client-role',
  'x-agentd-tier',
  'x-agentd-policy',
  'x-agentd-sandbox-id',
  'x-agentd-sandbox-tier',
  'x-sandbox-id',
  'x-sandbox-tier',
  'x-api-key-id',
  'x-policy',
  'x-envoy-original-path',
] as const;

/** On the gateway: any header with these prefixes is agentd's to set, never a caller's. */
export const IDENTITY_HEADER_PREFIXES = ['x-agentd-', 'x-sandbox-'] as const;

/** What each proxy may use before it refuses work instead of running out of memory. */
export interface ProxyLimits {
  /** The overload manager's heap ceiling: above 95 % of it new requests get 503 `overloaded`. */
  readonly maxHeapBytes: number;
  /** Downstream connections across all traffic listeners; more are refused. */
  readonly maxDownstreamConnections: number;
  /** Time to receive a whole request (headers and body), seconds: 408 after it. */
  readonly requestTimeoutSeconds: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = {
  // 256 MiB container limit: leave room for what the heap monitor does not count.
  maxHeapBytes: 192 * 1024 * 1024,
  maxDownstreamConnections: 10_000,
  requestTimeoutSeconds: 30,
};

/**
 * Envoy's overload manager: shrink the heap at 90 % of the ceiling, stop keep-alive at 90 %,
 * and above 95 % answer new requests 503 (JSON `overloaded`, see localReplyConfig) instead of
 * growing until the kernel kills the proxy. The connection monitor caps downstream
 * connections on every traffic listener (the stats listener is exempt, so probes still work).
 */
export function overloadManager(limits: ProxyLimits): object {
  const heap = 'envoy.resource_monitors.fixed_heap';
  const at = (value: number) => [{ name: heap, threshold: { value } }];
  return {
    refresh_interval: '0.25s',
    resource_monitors: [
      ext(heap, TYPE.fixedHeap, { max_heap_size_bytes: limits.maxHeapBytes }),
      ext('envoy.resource_monitors.global_downstream_max_connections', TYPE.downstreamConnections, {
        max_active_downstream_connections: limits.maxDownstreamConnections,
      }),
    ],
    actions: [
      { name: 'envoy.overload_actions.shrink_heap', triggers: at(0.9) },
      { name: 'envoy.overload_actions.disable_http_keepalive', triggers: at(0.9) },
      { name: 'envoy.overload_actions.stop_accepting_requests', triggers: at(0.95) },
    ],
  };
}

/**
 * A file-based SDS resource (plain config: it names files, it holds no secret). Envoy watches
 * the file and the directory of the files it names, so a rotated secret takes effect in place.
 */
export function sdsResource(name: string, secret: { generic: string } | { certificateChain: string; privateKey: string }): object {
  return {
    resources: [
      {
        '@type': TYPE.tlsSecret,
        name,
        ...('generic' in secret
          ? { generic_secret: { secret: { filename: secret.generic } } }
          : { tls_certificate: { certificate_chain: { filename: secret.certificateChain }, private_key: { filename: secret.privateKey } } }),
      },
    ],
  };
}

/**
 * Where Envoy finds an SDS resource: a file path. Envoy watches the directory of each secret
 * file the resource names: a secret file at the top of a live secret directory is re-read when
 * that directory's `..data` is swapped (a Kubernetes Secret volume, the Docker target's live
 * volumes), so a rotated secret takes effect without a restart.
 */
export const sdsConfig = (path: string) => ({ path_config_source: { path }, resource_api_version: 'V3' as const });

/** The upstream filter that injects a secret header from an SDS file (overwriting any such header). */
export function credentialInjector(opts: { secretName: string; sdsFile: string; header: string; prefix?: string }): TypedExtension {
  return ext('envoy.filters.http.credential_injector', TYPE.credentialInjector, {
    overwrite: true,
    allow_request_without_credential: false,
    credential: ext('envoy.http.injected_credentials.generic', TYPE.genericCredential, {
      credential: { name: opts.secretName, sds_config: sdsConfig(opts.sdsFile) },
      header: opts.header,
      ...(opts.prefix ? { header_value_prefix: opts.prefix } : {}),
    }),
  });
}

export function cluster(name: string, at: Endpoint, opts: { http2?: boolean; connectTimeout?: number } = {}): Cluster {
  return {
    name,
    type: isIpLiteral(at.host) ? 'STATIC' : 'STRICT_DNS',
    connect_timeout: seconds(opts.connectTimeout ?? 2),
    ...(isIpLiteral(at.host) ? {} : { dns_lookup_family: 'V4_PREFERRED' as const }),
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: socketAddress(at.host, at.port) } }] }],
    },
    ...(opts.http2
      ? {
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': typed(TYPE.httpProtocolOptions, {
              explicit_http_config: { http2_protocol_options: {} },
            }),
          },
        }
      : {}),
  };
}

const ADMIN_CLUSTER = 'envoy_admin';

export function adminCluster(adminPort: number): Cluster {
  return cluster(ADMIN_CLUSTER, { host: '127.0.0.1', port: adminPort });
}

/** JSON access log to stdout; fields are `%...%` operators, never a credential. */
export function jsonAccessLog(fields: Readonly<Record<string, string>>): TypedExtension {
  return ext('envoy.access_loggers.stdout', TYPE.stdoutAccessLog, {
    log_format: {
      json_format: fields,
      formatters: [ext('envoy.formatter.req_without_query', TYPE.reqWithoutQuery)],
    },
  });
}

/** Fields every access log carries. The path is logged without its query (a key could hide there). */
export const BASE_LOG_FIELDS = {
  time: '%START_TIME%',
  proxy: '', // set per proxy
  method: '%REQ(:METHOD)%',
  path: '%REQ_WITHOUT_QUERY(:PATH)%',
  protocol: '%PROTOCOL%',
  status: '%RESPONSE_CODE%',
  flags: '%RESPONSE_FLAGS%',
  details: '%RESPONSE_CODE_DETAILS%',
  duration_ms: '%DURATION%',
  response_ms: '%RESPONSE_DURATION%',
  bytes_in: '%BYTES_RECEIVED%',
  bytes_out: '%BYTES_SENT%',
  request_id: '%REQ(X-REQUEST-ID)%',
  decision_id: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:decision_id)%`,
  reason: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:reason)%`,
} as const;

/** A local reply filter on a CEL expression over the request and the response. */
const cel = (expression: string) => ({ extension_filter: ext('envoy.access_loggers.extension_filters.cel', TYPE.celFilter, { expression }) });

const jsonBody = (code: string, message: string, extra: Readonly<Record<string, string>> = {}) => ({
  json_format: { error: { code, message, ...extra } },
});

/** What a 429 says of the limit that refused it: its x-ratelimit-limit (with the limit's name) and the seconds until it resets. */
const RATE_LIMIT_FIELDS = { limit: '%RESP(x-ratelimit-limit)%', reset_seconds: '%RESP(x-ratelimit-reset)%' } as const;

/**
 * Replies Envoy makes itself get a JSON body with a machine-readable code, as OPA's denials
 * do. OPA's own denials (flag UAEX with OPA's status) keep OPA's body; when OPA cannot answer,
 * ext_authz replies 503 with UAEX, which becomes `authorization_unavailable`.
 */
export function localReplyConfig(extra: readonly object[] = []): object {
  const flag = (flags: string[]) => ({ response_flag_filter: { flags } });
  const status = (code: number) => ({
    status_code_filter: { comparison: { op: 'EQ', value: { default_value: code, runtime_key: `agentd.local_reply.${code}` } } },
  });
  return {
    // The first mapper that matches applies.
    mappers: [
      {
        filter: { and_filter: { filters: [flag(['UAEX']), status(503)] } },
        body_format_override: jsonBody('authorization_unavailable', 'the policy engine did not answer; the request was refused'),
      },
      // The ext_authz plugin's own 400 for a request it cannot parse (a malformed query such as
      // `?%zz`) is plain text, unlike the policy's denials: give it the JSON shape too.
      {
        filter: {
          and_filter: {
            filters: [flag(['UAEX']), status(400), cel("!('content-type' in response.headers) || response.headers['content-type'] != 'application/json'")],
          },
        },
        body_format_override: jsonBody('bad_request', 'the request could not be parsed (path or query string)'),
      },
      // OPA's denials already carry OPA's JSON body: leave them as they are.
      { filter: flag(['UAEX']) },
      ...extra,
      // The limit that refused the request, as the x-ratelimit-* headers name it (a global
      // limit's name says which: requests or tokens, the window and the service; the token
      // budgets are checked by a filter of their own, so only their refusals name tokens).
      {
        filter: {
          and_filter: {
            filters: [status(429), cel("'x-ratelimit-limit' in response.headers && response.headers['x-ratelimit-limit'].contains('tokens per')")],
          },
        },
        body_format_override: jsonBody(
          'token_budget_exhausted',
          'the token budget of this sandbox on this service is spent; retry after the reset time',
          RATE_LIMIT_FIELDS,
        ),
      },
      {
        filter: status(429),
        body_format_override: jsonBody('rate_limited', 'rate limit exceeded; retry after the reset time in x-ratelimit-reset', RATE_LIMIT_FIELDS),
      },
      // A global limit that fails closed while the rate-limit service cannot answer.
      { filter: flag(['RLSE']), body_format_override: jsonBody('rate_limit_unavailable', 'the rate-limit service did not answer; the request was refused') },
      { filter: flag(['NR']), body_format_override: jsonBody('not_found', 'no route for this request') },
      { filter: flag(['UT']), status_code: 504, body_format_override: jsonBody('upstream_timeout', 'the upstream did not answer in time') },
      { filter: flag(['UF', 'UH', 'URX', 'UC', 'UO', 'NC']), body_format_override: jsonBody('upstream_unavailable', 'the upstream could not be reached') },
      { filter: status(413), body_format_override: jsonBody('payload_too_large', 'the request body is larger than this gateway accepts') },
      { filter: status(400), body_format_override: jsonBody('bad_request', 'the request is malformed (path, headers or encoding)') },
      { filter: status(408), body_format_override: jsonBody('request_timeout', 'the request was not received in time') },
      { filter: status(431), body_format_override: jsonBody('headers_too_large', 'the request headers are too large') },
      // The overload manager refusing new requests near its heap ceiling: no response flag, so
      // it is told by its response code details (its own body would be plain text).
      {
        filter: cel("response.code_details == 'overload'"),
        body_format_override: jsonBody('overloaded', 'the proxy is overloaded; retry later'),
      },
    ],
  };
}

/** A direct JSON reply, for routes that answer without an upstream. */
export function jsonDirectResponse(status: number, code: string, message: string) {
  return { status, body: { inline_string: JSON.stringify({ error: { code, message } }) } };
}

/** HCM settings both proxies share: path normalisation, timeouts, header limits, header stripping. */
export function connectionManager(opts: {
  statPrefix: string;
  routeConfig: RouteConfiguration;
  httpFilters: readonly TypedExtension[];
  accessLog: TypedExtension;
  /** Access loggers besides the JSON log (e.g. one that turns log fields into metrics). */
  extraAccessLogs?: readonly object[];
  localReply: object;
  requestTimeoutSeconds: number;
  /** Remove every request header with these prefixes before any filter runs (the gateway). */
  stripPrefixes?: readonly string[];
  /** Do not append the caller's address to x-forwarded-for (egress: nothing about the caller goes upstream). */
  skipXffAppend?: boolean;
}): TypedExtension {
  return ext('envoy.filters.network.http_connection_manager', TYPE.hcm, {
    stat_prefix: opts.statPrefix,
    codec_type: 'AUTO',
    use_remote_address: true,
    normalize_path: true,
    merge_slashes: true,
    path_with_escaped_slashes_action: 'REJECT_REQUEST',
    // Forged identity headers go before any filter or route sees them.
    early_header_mutation_extensions: [
      ext('envoy.http.early_header_mutation.header_mutation', TYPE.headerMutation, {
        mutations: [
          ...IDENTITY_HEADERS.map((h) => ({ remove: h })),
          ...(opts.stripPrefixes ?? []).map((prefix) => ({ remove_on_match: { key_matcher: { prefix } } })),
        ],
      }),
    ],
    ...(opts.skipXffAppend ? { skip_xff_append: true } : {}),
    request_headers_timeout: seconds(10),
    // The whole request (a trickled body included) must arrive within this: 408 after it.
    request_timeout: seconds(opts.requestTimeoutSeconds),
    stream_idle_timeout: seconds(300),
    common_http_protocol_options: { headers_with_underscores_action: 'REJECT_REQUEST', max_headers_count: 100, idle_timeout: seconds(300) },
    max_request_headers_kb: 60,
    http2_protocol_options: { max_concurrent_streams: 100 },
    // The listener and the clusters it routes to load from two live files, in either order: a
    // route to a cluster not loaded yet answers 503 for that moment, rather than the whole
    // listener update being refused (and never retried, as its file does not change again).
    route_config: { ...opts.routeConfig, validate_clusters: false },
    http_filters: opts.httpFilters,
    access_log: [opts.accessLog, ...(opts.extraAccessLogs ?? [])],
    local_reply_config: opts.localReply,
  });
}

/** The stats-only listener: /stats/prometheus and /ready from the admin interface, nothing else. */
export function statsListener(name: string, at: Endpoint): Listener {
  const routeConfig: RouteConfiguration = {
    name: `${name}_stats`,
    virtual_hosts: [
      {
        name: 'stats',
        domains: ['*'],
        routes: [
          { name: 'prometheus', match: { path: '/stats/prometheus' }, route: { cluster: ADMIN_CLUSTER, timeout: seconds(10) } },
          { name: 'ready', match: { path: '/ready' }, route: { cluster: ADMIN_CLUSTER, timeout: seconds(2) } },
          { name: 'other', match: { prefix: '/' }, direct_response: jsonDirectResponse(404, 'not_found', 'only /stats/prometheus and /ready are served here') },
        ],
      },
    ],
  };
  return {
    name: `${name}_stats`,
    address: socketAddress(at.host, at.port),
    ignore_global_conn_limit: true,
    filter_chains: [
      {
        filters: [
          ext('envoy.filters.network.http_connection_manager', TYPE.hcm, {
            stat_prefix: `${name}_stats`,
            route_config: routeConfig,
            http_filters: [ext('envoy.filters.http.router', TYPE.router)],
          }),
        ],
      },
    ],
  };
}

export function adminBlock(adminPort: number) {
  return { address: socketAddress('127.0.0.1', adminPort) };
}

/**
 * ext_authz over gRPC to OPA; fails closed with 503 when OPA does not answer. `allowedHeaders`
 * are the only request headers OPA is sent (the ones its policy reads): nothing else a caller
 * sends (a key in a header of its own choosing, a sandbox token, a cookie) reaches OPA or its
 * decision log, whatever the log's masking policy does. No request body is sent: OPA decides on
 * headers, before the proxy buffers a body.
 */
export function extAuthzFilter(opts: {
  statPrefix: string;
  allowedHeaders: readonly string[];
  metadataNamespaces?: readonly string[];
  timeoutSeconds?: number;
}): TypedExtension {
  return ext('envoy.filters.http.ext_authz', TYPE.extAuthz, {
    stat_prefix: opts.statPrefix,
    transport_api_version: 'V3',
    grpc_service: { envoy_grpc: { cluster_name: OPA_CLUSTER }, timeout: seconds(opts.timeoutSeconds ?? 1) },
    failure_mode_allow: false,
    status_on_error: { code: 503 },
    include_peer_certificate: false,
    allowed_headers: { patterns: opts.allowedHeaders.map((h) => ({ exact: h })) },
    ...(opts.metadataNamespaces ? { metadata_context_namespaces: opts.metadataNamespaces } : {}),
  });
}

export const OPA_CLUSTER = 'opa';

export const extAuthzContext = (ctx: Readonly<Record<string, string>>): TypedConfig =>
  typed(TYPE.extAuthzPerRoute, { check_settings: { context_extensions: ctx } });

export const extAuthzDisabled = (): TypedConfig => typed(TYPE.extAuthzPerRoute, { disabled: true });

/** The local_ratelimit filter in the chain: inert until a virtual host or route configures it. */
export function localRateLimitFilter(statPrefix: string): TypedExtension {
  return ext('envoy.filters.http.local_ratelimit', TYPE.localRateLimit, { stat_prefix: statPrefix });
}

export const routerFilter = (): TypedExtension => ext('envoy.filters.http.router', TYPE.router, { suppress_envoy_headers: true });

/** A rate-limit descriptor entry taken from OPA's answer (ext_authz dynamic metadata). */
export const fromAuthz = (descriptorKey: string, key: string) => ({
  metadata: { descriptor_key: descriptorKey, metadata_key: { key: EXT_AUTHZ_NS, path: [{ key }] }, source: 'DYNAMIC' as const },
});

/**
 * An enforcing local rate limit (per virtual host): one token bucket per distinct descriptor
 * value (wildcard entries), up to 100,000 tracked, x-ratelimit-* headers, RESOURCE_EXHAUSTED for
 * gRPC. `defaultBucket` is what a request matching no descriptor draws from.
 */
export function enforcedRateLimit(opts: {
  statPrefix: string;
  runtimePrefix: string;
  defaultBucket: ReturnType<typeof bucket>;
  descriptors: readonly object[];
  rateLimits: readonly RateLimit[];
}): TypedConfig {
  return typed(TYPE.localRateLimit, {
    stat_prefix: opts.statPrefix,
    token_bucket: opts.defaultBucket,
    filter_enabled: percent(100, `${opts.runtimePrefix}.rate_limit.enabled`),
    filter_enforced: percent(100, `${opts.runtimePrefix}.rate_limit.enforced`),
    descriptors: opts.descriptors,
    rate_limits: opts.rateLimits,
    always_consume_default_token_bucket: false,
    max_dynamic_descriptors: 100_000,
    enable_x_ratelimit_headers: 'DRAFT_VERSION_03',
    local_rate_limit_per_downstream_connection: false,
    rate_limited_as_resource_exhausted: true,
  });
}

/** A token bucket that refills `perWindow` tokens every `windowSeconds`. */
export const bucket = (perWindow: number, windowSeconds: number) => ({
  max_tokens: perWindow,
  tokens_per_fill: perWindow,
  fill_interval: seconds(windowSeconds),
});

export const percent = (n: number, runtimeKey: string) => ({
  runtime_key: runtimeKey,
  default_value: { numerator: n, denominator: 'HUNDRED' },
});

/**
 * Envoy's command line, the same in every target: access logs flushed every second (the
 * default is ten, too late for a tail or a log shipper), a short drain on shutdown.
 */
export function envoyArgs(configFile: string): string[] {
  return ['-c', configFile, '--file-flush-interval-msec', '1000', '--drain-time-s', '5', '--log-level', 'warn'];
}

/** The files of a proxy whose listeners and clusters are live: the bootstrap, and what it loads from the live directory. */
export interface LiveProxyConfig {
  /** Static: node, admin, overload manager, the stats listener and the admin cluster, and where the rest comes from. */
  readonly bootstrap: Bootstrap;
  /** The traffic listeners (LDS, a file in the live directory). */
  readonly lds: object;
  /** The clusters but the admin one (CDS, a file in the live directory). */
  readonly cds: object;
}

/** File names of the live listeners and clusters, in a proxy's live directory. */
export const LIVE_FILES = { lds: 'lds.yaml', cds: 'cds.yaml' } as const;

/**
 * Moves a proxy's traffic listeners and clusters out of its bootstrap into LDS and CDS files in
 * `liveDir`, which Envoy watches: an atomic swap of the directory's `..data` (a Kubernetes
 * ConfigMap volume, the Docker target's live volume) makes Envoy load the new listeners and
 * clusters in place. A changed listener takes new connections at once, on the same socket,
 * while the old one drains its connections (`--drain-time-s`): no connection is refused, no
 * request in flight is cut. Only a bootstrap change (admin, overload limits) needs a restart.
 */
export function liveProxyConfig(bootstrap: Bootstrap, liveDir: string, staticListeners: readonly string[]): LiveProxyConfig {
  const isStaticListener = (l: Listener) => staticListeners.includes(l.name);
  const isStaticCluster = (c: Cluster) => c.name === ADMIN_CLUSTER;
  const source = (file: string) => ({
    path_config_source: { path: `${liveDir}/${file}`, watched_directory: { path: liveDir } },
    resource_api_version: 'V3' as const,
  });
  return {
    bootstrap: {
      ...bootstrap,
      static_resources: {
        listeners: bootstrap.static_resources.listeners.filter(isStaticListener),
        clusters: bootstrap.static_resources.clusters.filter(isStaticCluster),
      },
      dynamic_resources: { lds_config: source(LIVE_FILES.lds), cds_config: source(LIVE_FILES.cds) },
    },
    lds: { resources: bootstrap.static_resources.listeners.filter((l) => !isStaticListener(l)).map((l) => ({ '@type': TYPE.listener, ...l })) },
    cds: { resources: bootstrap.static_resources.clusters.filter((c) => !isStaticCluster(c)).map((c) => ({ '@type': TYPE.cluster, ...c })) },
  };
}
