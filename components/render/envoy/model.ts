// A typed model of the Envoy v3 API: only the shapes the agentd renderers emit, with the field
// names of the proto (snake_case, as Envoy reads YAML/JSON). Typed extensions carry their
// `@type`; the constructors below fill it in, so a renderer cannot pair a config with the wrong
// type URL. Nothing here knows about agentd: the renderers do.

const T = 'type.googleapis.com/';

export const TYPE = {
  hcm: `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  listener: `${T}envoy.config.listener.v3.Listener`,
  cluster: `${T}envoy.config.cluster.v3.Cluster`,
  router: `${T}envoy.extensions.filters.http.router.v3.Router`,
  extAuthz: `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`,
  extAuthzPerRoute: `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`,
  localRateLimit: `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  rateLimit: `${T}envoy.extensions.filters.http.ratelimit.v3.RateLimit`,
  rateLimitPerRoute: `${T}envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute`,
  statsAccessLog: `${T}envoy.extensions.access_loggers.stats.v3.Config`,
  jwtAuthn: `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`,
  jwtPerRoute: `${T}envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`,
  buffer: `${T}envoy.extensions.filters.http.buffer.v3.Buffer`,
  bufferPerRoute: `${T}envoy.extensions.filters.http.buffer.v3.BufferPerRoute`,
  credentialInjector: `${T}envoy.extensions.filters.http.credential_injector.v3.CredentialInjector`,
  genericCredential: `${T}envoy.extensions.http.injected_credentials.generic.v3.Generic`,
  upstreamCodec: `${T}envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec`,
  httpProtocolOptions: `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
  stdoutAccessLog: `${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`,
  upstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
  downstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`,
  tlsSecret: `${T}envoy.extensions.transport_sockets.tls.v3.Secret`,
  reqWithoutQuery: `${T}envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery`,
  headerMutation: `${T}envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation`,
  lua: `${T}envoy.extensions.filters.http.lua.v3.Lua`,
  luaPerRoute: `${T}envoy.extensions.filters.http.lua.v3.LuaPerRoute`,
  celFilter: `${T}envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter`,
  fixedHeap: `${T}envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig`,
  downstreamConnections: `${T}envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig`,
} as const;

export interface TypedConfig {
  readonly '@type': string;
  readonly [field: string]: unknown;
}

export interface TypedExtension {
  readonly name: string;
  readonly typed_config: TypedConfig;
}

export interface SocketAddress {
  readonly socket_address: { readonly address: string; readonly port_value: number };
}

export type Duration = `${number}s`;

export interface HeaderValueOption {
  readonly header: { readonly key: string; readonly value: string };
  readonly append_action?: 'APPEND_IF_EXISTS_OR_ADD' | 'ADD_IF_ABSENT' | 'OVERWRITE_IF_EXISTS_OR_ADD';
}

export interface RouteMatch {
  readonly prefix?: string;
  readonly path?: string;
  readonly headers?: readonly {
    readonly name: string;
    readonly string_match?: { readonly prefix?: string; readonly exact?: string };
    /** Matches an integer header value in [start, end). */
    readonly range_match?: { readonly start: number; readonly end: number };
  }[];
  readonly grpc?: Record<string, never>;
}

export interface RouteAction {
  readonly cluster: string;
  readonly timeout?: Duration;
  readonly host_rewrite_literal?: string;
  readonly retry_policy?: { readonly retry_on: string; readonly num_retries: number };
}

export interface DirectResponse {
  readonly status: number;
  /** Inline, or a file Envoy reads when it loads the config (the bundle server's bundles). */
  readonly body?: { readonly inline_string: string } | { readonly filename: string };
}

export interface Route {
  readonly name: string;
  readonly match: RouteMatch;
  readonly route?: RouteAction;
  readonly direct_response?: DirectResponse;
  readonly typed_per_filter_config?: Readonly<Record<string, TypedConfig>>;
  readonly request_headers_to_remove?: readonly string[];
  readonly response_headers_to_add?: readonly HeaderValueOption[];
}

export interface RateLimitAction {
  readonly generic_key?: { readonly descriptor_key: string; readonly descriptor_value: string };
  readonly metadata?: {
    readonly descriptor_key: string;
    readonly metadata_key: { readonly key: string; readonly path: readonly { readonly key: string }[] };
    readonly source: 'DYNAMIC';
    readonly skip_if_absent?: boolean;
  };
}

export interface RateLimit {
  readonly actions: readonly RateLimitAction[];
  /** What the descriptor adds to its counter: a number (0: a check that counts nothing) or a formatted value (e.g. metadata). */
  readonly hits_addend?: { readonly number: number } | { readonly format: string };
  /** Sent to the rate-limit service when the stream ends (its answer ignored), e.g. to charge a response's usage. */
  readonly apply_on_stream_done?: boolean;
}

export interface VirtualHost {
  readonly name: string;
  readonly domains: readonly string[];
  readonly routes: readonly Route[];
  readonly rate_limits?: readonly RateLimit[];
  readonly typed_per_filter_config?: Readonly<Record<string, TypedConfig>>;
  readonly request_headers_to_remove?: readonly string[];
}

export interface RouteConfiguration {
  readonly name: string;
  readonly virtual_hosts: readonly VirtualHost[];
  readonly request_headers_to_remove?: readonly string[];
  /** Largest direct-response body (Envoy's default is 4 KiB). */
  readonly max_direct_response_body_size_bytes?: number;
  /** Whether a route to an unknown cluster makes the whole config invalid (Envoy's default for inline route tables: true). */
  readonly validate_clusters?: boolean;
}

export interface FilterChain {
  readonly filters: readonly TypedExtension[];
  readonly transport_socket?: TypedExtension;
}

export interface Listener {
  readonly name: string;
  readonly address: SocketAddress;
  readonly filter_chains: readonly FilterChain[];
  readonly per_connection_buffer_limit_bytes?: number;
  /** Exempt from the overload manager's global connection limit (the stats listener: probes). */
  readonly ignore_global_conn_limit?: boolean;
}

export interface Cluster {
  readonly name: string;
  readonly type: 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS';
  readonly connect_timeout: Duration;
  readonly dns_lookup_family?: 'V4_PREFERRED' | 'AUTO';
  readonly load_assignment: {
    readonly cluster_name: string;
    readonly endpoints: readonly { readonly lb_endpoints: readonly { readonly endpoint: { readonly address: SocketAddress } }[] }[];
  };
  readonly typed_extension_protocol_options?: Readonly<Record<string, TypedConfig>>;
  readonly transport_socket?: TypedExtension;
  readonly circuit_breakers?: { readonly thresholds: readonly Record<string, number | string>[] };
}

export interface Bootstrap {
  readonly node: { readonly id: string; readonly cluster: string };
  readonly admin: { readonly address: SocketAddress; readonly access_log?: readonly TypedExtension[] };
  readonly static_resources: { readonly listeners: readonly Listener[]; readonly clusters: readonly Cluster[] };
  readonly layered_runtime?: unknown;
  readonly overload_manager?: unknown;
  /** Listeners and clusters loaded from files (liveProxyConfig). */
  readonly dynamic_resources?: unknown;
}

// ---- constructors ------------------------------------------------------------------------

export const typed = (type: string, fields: Record<string, unknown> = {}): TypedConfig => ({ '@type': type, ...fields });

export const ext = (name: string, type: string, fields: Record<string, unknown> = {}): TypedExtension => ({
  name,
  typed_config: typed(type, fields),
});

export const socketAddress = (address: string, port: number): SocketAddress => ({
  socket_address: { address, port_value: port },
});

export const seconds = (s: number): Duration => `${s}s`;

/** Whether a host is an IP literal (a STATIC cluster) rather than a name to resolve. */
export const isIpLiteral = (host: string): boolean => /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
