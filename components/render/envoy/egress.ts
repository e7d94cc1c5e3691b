// The egress Envoy: the only way sandboxes reach external APIs. One virtual host per service
// (the Host a sandbox names); the sandbox token is verified by Envoy before OPA sees the
// request; OPA decides with the verified claims; the credential is injected by an upstream
// filter from a file-based secret and never passes through OPA; rate limits per sandbox x service.

import { SANDBOX_TOKEN_HEADER, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../../agentd/src/contract.ts';
import type { EgressService, PolicySpec } from '../../../policy/spec.ts';
import type { Upstream } from '../types.ts';
import {
  BASE_LOG_FIELDS,
  EXT_AUTHZ_NS,
  enforcedRateLimit,
  fromAuthz,
  JWT_AUTHN_NS,
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
  routerFilter,
  sdsResource,
  statsListener,
  type Endpoint,
  type ProxyLimits,
  type ProxyListen,
} from './common.ts';
import {
  TYPE,
  ext,
  isIpLiteral,
  seconds,
  socketAddress,
  typed,
  type Bootstrap,
  type Cluster,
  type RateLimit,
  type RouteConfiguration,
  type TypedConfig,
  type VirtualHost,
} from './model.ts';

import { RATE_LIMIT_DOMAINS, egressLimitShapes } from '../ratelimit.ts';
import { TOKEN_BUDGET_FILTER, globalRateLimitFilter, globalRateLimits, rateLimitServiceCluster, type RateLimitServiceInput } from './global-ratelimit.ts';
import { tokenUsageLog, usageMeterFilter, usageMeterFor } from './llm-usage.ts';

export type { Upstream } from '../types.ts';

export interface EgressRenderInput {
  readonly listen: ProxyListen;
  readonly opa: Endpoint;
  /** Path of the JWKS file (the key agentd signs sandbox tokens with) inside the egress workload. */
  readonly jwksFile: string;
  /** Directory of the SDS files (plain config, one per credential) inside the workload. */
  readonly sdsDir: string;
  /**
   * Directory of the credential values (secret files, one per credential) inside the workload;
   * the top of a live secret directory, so that a swap of its `..data` reloads them in place.
   */
  readonly credentialDir: string;
  /** CA bundle that upstream certificates are verified against. */
  readonly caBundleFile: string;
  /** Per-service upstream overrides (stack config), e.g. a stand-in upstream in tests. */
  readonly upstreams?: Readonly<Record<string, Upstream>>;
  /**
   * Services whose credential secret is configured. A service that needs a credential and has
   * none answers 503 `credential_not_configured` instead of calling upstream without it.
   */
  readonly configuredCredentials: readonly string[];
  readonly limits: ProxyLimits;
  /**
   * Global rate limits: the rate-limit service all replicas share, which also holds the LLM
   * token budgets. Absent: local token buckets in this replica (token budgets counted, not enforced).
   */
  readonly rateLimitService?: RateLimitServiceInput;
}

export const EGRESS_STAT_PREFIX = 'egress';
export const EGRESS_RATE_LIMIT_STAT_PREFIX = 'egress_rate_limit';
const EGRESS_TOKEN_BUDGET_STAT_PREFIX = 'egress_token_budget';
export const EGRESS_EXT_AUTHZ_STAT_PREFIX = 'egress_authz';
/**
 * The request headers OPA gets at egress. The policy reads none (the sandbox comes from the
 * verified claims, the service from the route); content-type is harmless and keeps the list
 * non-empty (an empty list would mean every header).
 */
const EGRESS_AUTHZ_HEADERS = ['content-type'] as const;
/** jwt_authn provider and the metadata key its verified claims land under (OPA reads it). */
const JWT_PROVIDER = 'sandbox';

export const serviceCluster = (id: string) => `service_${id}`;
const credentialSecretName = (id: string) => `credential_${id}`;
/** File names: the SDS resource (plain, in sdsDir) and the credential value (secret, in credentialDir). */
export const credentialSdsFile = (id: string) => `${id}.sds.json`;
export const credentialValueFile = (id: string) => `${id}.credential`;

/** A service is routed only when it needs no credential or its credential is configured. */
const routable = (s: EgressService, input: EgressRenderInput): boolean => s.credential === null || input.configuredCredentials.includes(s.id);

function upstreamOf(service: EgressService, input: EgressRenderInput): Upstream {
  return input.upstreams?.[service.id] ?? service.baseUrl;
}

/** Per service: one token bucket per sandbox, sized by the sandbox's tier (from OPA's answer). */
function egressRateLimit(spec: PolicySpec, serviceId: string): TypedConfig {
  const descriptors = Object.values(spec.sandboxTiers)
    .filter((t) => t.services.includes(serviceId) && t.requestsPerMinute > 0)
    .map((t) => ({
      entries: [
        { key: 'tier', value: t.id },
        { key: 'sandbox', value: '' },
      ],
      token_bucket: bucket(t.requestsPerMinute, 60),
    }));
  const rateLimits: RateLimit[] = [{ actions: [fromAuthz('tier', 'tier'), fromAuthz('sandbox', 'sandbox_id')] }];
  return enforcedRateLimit({
    statPrefix: EGRESS_RATE_LIMIT_STAT_PREFIX,
    runtimePrefix: 'egress',
    // Only reached if OPA allowed a tier without a descriptor, which the spec rules out: fail closed.
    defaultBucket: bucket(1, 3600),
    descriptors,
    rateLimits,
  });
}

const jwtRequired = (): TypedConfig => typed(TYPE.jwtPerRoute, { requirement_name: JWT_PROVIDER });
const jwtDisabled = (): TypedConfig => typed(TYPE.jwtPerRoute, { disabled: true });

/**
 * Headers a sandbox might send that must never reach an external API: credentials of its own,
 * and anything that says where the request came from inside the platform (forwarding headers).
 */
const STRIPPED_BEFORE_UPSTREAM = [
  SANDBOX_TOKEN_HEADER,
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'cookie',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
  'x-real-ip',
  'via',
  'x-envoy-external-address',
];

function renderEgressRoutes(spec: PolicySpec, input: EgressRenderInput): RouteConfiguration {
  const vhosts: VirtualHost[] = Object.values(spec.egressServices).map((s) => {
    const missingCredential = !routable(s, input);
    const up = upstreamOf(s, input);
    return {
      name: s.id,
      domains: [s.id, `${s.id}:*`],
      request_headers_to_remove: STRIPPED_BEFORE_UPSTREAM,
      typed_per_filter_config: {
        'envoy.filters.http.jwt_authn': jwtRequired(),
        'envoy.filters.http.ext_authz': extAuthzContext({ policy: 'egress', service: s.id }),
        ...(input.rateLimitService
          ? {
              'envoy.filters.http.ratelimit': globalRateLimits(egressLimitShapes(spec, s.id).requests),
              ...(s.llmApi ? { [TOKEN_BUDGET_FILTER]: globalRateLimits(egressLimitShapes(spec, s.id).tokens) } : {}),
            }
          : { 'envoy.filters.http.local_ratelimit': egressRateLimit(spec, s.id) }),
        ...(s.llmApi ? { 'envoy.filters.http.lua': usageMeterFor(s.llmApi) } : {}),
      },
      routes: [
        missingCredential
          ? {
              name: `${s.id}_unconfigured`,
              match: { prefix: '/' },
              direct_response: jsonDirectResponse(
                503,
                'credential_not_configured',
                `no credential is configured for ${s.id}; set it with: pulumi config set --secret egress:${s.credential?.secret} VALUE`,
              ),
            }
          : {
              name: s.id,
              match: { prefix: '/' },
              route: { cluster: serviceCluster(s.id), timeout: seconds(s.timeoutSeconds), host_rewrite_literal: hostHeader(up) },
            },
      ],
    };
  });
  // Any other Host: a JSON 404, never a pass-through.
  vhosts.push({
    name: 'unknown_service',
    domains: ['*'],
    typed_per_filter_config: {
      'envoy.filters.http.jwt_authn': jwtDisabled(),
      'envoy.filters.http.ext_authz': extAuthzDisabled(),
    },
    routes: [
      {
        name: 'unknown_service',
        match: { prefix: '/' },
        direct_response: jsonDirectResponse(404, 'unknown_service', `unknown service; name one of ${Object.keys(spec.egressServices).join(', ')} as Host`),
      },
    ],
  });
  return { name: 'egress', virtual_hosts: vhosts };
}

const hostHeader = (u: Upstream) => ((u.scheme === 'https' && u.port === 443) || (u.scheme === 'http' && u.port === 80) ? u.host : `${u.host}:${u.port}`);

function serviceClusterConfig(s: EgressService, input: EgressRenderInput): Cluster {
  const up = upstreamOf(s, input);
  const base = cluster(serviceCluster(s.id), { host: up.host, port: up.port }, { connectTimeout: 5 });
  const upstreamFilters = [
    ...(s.credential
      ? [
          credentialInjector({
            secretName: credentialSecretName(s.id),
            sdsFile: `${input.sdsDir}/${credentialSdsFile(s.id)}`,
            header: s.credential.header,
            ...(s.credential.prefix ? { prefix: s.credential.prefix } : {}),
          }),
        ]
      : []),
    ext('envoy.filters.http.upstream_codec', TYPE.upstreamCodec),
  ];
  return {
    ...base,
    type: isIpLiteral(up.host) ? 'STATIC' : 'LOGICAL_DNS',
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': typed(TYPE.httpProtocolOptions, {
        ...(up.scheme === 'https'
          ? { auto_config: { http_protocol_options: {}, http2_protocol_options: {} } }
          : { explicit_http_config: { http_protocol_options: {} } }),
        http_filters: upstreamFilters,
      }),
    },
    ...(up.scheme === 'https'
      ? {
          transport_socket: ext('envoy.transport_sockets.tls', TYPE.upstreamTls, {
            sni: up.host,
            common_tls_context: {
              alpn_protocols: ['h2', 'http/1.1'],
              validation_context: {
                trusted_ca: { filename: input.caBundleFile },
                match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: up.host } }],
              },
            },
          }),
        }
      : {}),
  };
}

/** The SDS resource that points Envoy at a credential file (plain config: no secret inside). */
export function credentialSds(serviceId: string, credentialDir: string): object {
  return sdsResource(credentialSecretName(serviceId), { generic: `${credentialDir}/${credentialValueFile(serviceId)}` });
}

export function renderEgressConfig(spec: PolicySpec, input: EgressRenderInput): Bootstrap {
  const llmApis = [...new Set(Object.values(spec.egressServices).flatMap((s) => (s.llmApi ? [s.llmApi] : [])))].sort();
  const hcm = connectionManager({
    statPrefix: EGRESS_STAT_PREFIX,
    routeConfig: renderEgressRoutes(spec, input),
    httpFilters: [
      ext('envoy.filters.http.jwt_authn', TYPE.jwtAuthn, {
        providers: {
          [JWT_PROVIDER]: {
            issuer: TOKEN_ISSUER,
            audiences: [TOKEN_AUDIENCE],
            local_jwks: { filename: input.jwksFile },
            from_headers: [{ name: SANDBOX_TOKEN_HEADER }],
            forward: false,
            payload_in_metadata: JWT_PROVIDER,
            clock_skew_seconds: 30,
          },
        },
        requirement_map: { [JWT_PROVIDER]: { provider_name: JWT_PROVIDER } },
      }),
      extAuthzFilter({ statPrefix: EGRESS_EXT_AUTHZ_STAT_PREFIX, allowedHeaders: EGRESS_AUTHZ_HEADERS, metadataNamespaces: [JWT_AUTHN_NS] }),
      ...(input.rateLimitService
        ? [
            globalRateLimitFilter({
              statPrefix: EGRESS_RATE_LIMIT_STAT_PREFIX,
              domain: RATE_LIMIT_DOMAINS.egress,
              whenUnavailable: input.rateLimitService.whenUnavailable,
            }),
            // Token budgets in a filter of their own: a refusal's headers name only token budgets.
            ...(llmApis.length > 0
              ? [
                  globalRateLimitFilter({
                    name: TOKEN_BUDGET_FILTER,
                    statPrefix: EGRESS_TOKEN_BUDGET_STAT_PREFIX,
                    domain: RATE_LIMIT_DOMAINS.egress,
                    whenUnavailable: input.rateLimitService.whenUnavailable,
                  }),
                ]
              : []),
          ]
        : [localRateLimitFilter(EGRESS_RATE_LIMIT_STAT_PREFIX)]),
      ...(llmApis.length > 0 ? [usageMeterFilter(llmApis)] : []),
      routerFilter(),
    ],
    ...(llmApis.length > 0 ? { extraAccessLogs: [tokenUsageLog()] } : {}),
    accessLog: jsonAccessLog({
      ...BASE_LOG_FIELDS,
      proxy: 'egress',
      service: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:service)%`,
      sandbox_id: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:sandbox_id)%`,
      tier: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:tier)%`,
      upstream_host: '%UPSTREAM_HOST%',
    }),
    requestTimeoutSeconds: input.limits.requestTimeoutSeconds,
    // Nothing about the caller goes upstream: no x-forwarded-for appended (and any sent is removed).
    skipXffAppend: true,
    localReply: localReplyConfig([
      {
        // jwt_authn refuses a token for another audience with 403.
        filter: { status_code_filter: { comparison: { op: 'EQ', value: { default_value: 403, runtime_key: 'agentd.egress.403' } } } },
        body_format_override: {
          json_format: { error: { code: 'invalid_sandbox_token', message: 'the sandbox token is not valid here (%RESPONSE_CODE_DETAILS%)' } },
        },
      },
      {
        // jwt_authn's own refusals (no token, bad signature, expired): JSON like the rest.
        filter: { status_code_filter: { comparison: { op: 'EQ', value: { default_value: 401, runtime_key: 'agentd.egress.401' } } } },
        body_format_override: {
          json_format: { error: { code: 'invalid_sandbox_token', message: 'a valid sandbox token is required (%RESPONSE_CODE_DETAILS%)' } },
        },
      },
    ]),
  });
  return {
    node: { id: 'egress', cluster: 'agentd-egress' },
    admin: adminBlock(input.listen.adminPort),
    overload_manager: overloadManager(input.limits),
    static_resources: {
      listeners: [
        {
          name: 'egress',
          address: socketAddress(input.listen.traffic.host, input.listen.traffic.port),
          per_connection_buffer_limit_bytes: 1 << 20,
          filter_chains: [{ filters: [hcm] }],
        },
        statsListener('egress', input.listen.stats),
      ],
      clusters: [
        ...Object.values(spec.egressServices)
          .filter((s) => routable(s, input))
          .map((s) => serviceClusterConfig(s, input)),
        cluster(OPA_CLUSTER, input.opa, { http2: true }),
        ...(input.rateLimitService ? [rateLimitServiceCluster(input.rateLimitService.endpoint)] : []),
        adminCluster(input.listen.adminPort),
      ],
    },
  };
}
