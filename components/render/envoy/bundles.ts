// The bundle server: an Envoy that serves OPA its policy bundle over HTTP, so that a policy
// change reaches OPA without restarting it. OPA polls the bundle with the ETag it holds
// (If-None-Match); the server answers 304 while that is the revision it serves, and the bundle
// with its ETag otherwise. A policy change replaces the bundle server (its files are new), never
// OPA: while the server restarts, OPA's polls fail and it keeps the policy it has; once the new
// server answers, OPA downloads the new revision and activates it, or, if it cannot (a corrupt
// or invalid bundle), keeps the previous one and reports the error. Pure config: no code runs in
// the server but Envoy's own direct responses.

import { adminBlock, adminCluster, jsonAccessLog, jsonDirectResponse, statsListener, type ProxyListen } from './common.ts';
import { ext, seconds, socketAddress, TYPE, type Bootstrap, type Route, type RouteConfiguration } from './model.ts';

/** The media type OPA expects of a bundle. */
export const BUNDLE_CONTENT_TYPE = 'application/vnd.openpolicyagent.bundles';

/** One bundle the server serves. */
export interface ServedBundle {
  /** URL path OPA requests (the bundle's `resource`, with a leading slash). */
  readonly path: string;
  /** Absolute path of the bundle file inside the server (read once, when Envoy loads its config). */
  readonly file: string;
  /** The bundle's revision: its ETag, quoted as HTTP wants it. */
  readonly revision: string;
}

export interface BundleServerRenderInput {
  readonly listen: ProxyListen;
  readonly bundles: readonly ServedBundle[];
  /** Largest bundle the server may hold in memory. */
  readonly maxBundleBytes: number;
}

const etagOf = (revision: string) => `"${revision}"`;
const header = (key: string, value: string) => ({ header: { key, value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' as const });

function bundleRoutes(b: ServedBundle, i: number): Route[] {
  const etag = header('etag', etagOf(b.revision));
  return [
    {
      name: `bundle_${i}_unchanged`,
      match: { path: b.path, headers: [{ name: 'if-none-match', string_match: { exact: etagOf(b.revision) } }] },
      direct_response: { status: 304 },
      response_headers_to_add: [etag],
    },
    {
      name: `bundle_${i}`,
      match: { path: b.path },
      direct_response: { status: 200, body: { filename: b.file } },
      response_headers_to_add: [etag, header('content-type', BUNDLE_CONTENT_TYPE)],
    },
  ];
}

export function renderBundleServerConfig(input: BundleServerRenderInput): Bootstrap {
  const routeConfig: RouteConfiguration = {
    name: 'bundles',
    max_direct_response_body_size_bytes: input.maxBundleBytes,
    virtual_hosts: [
      {
        name: 'bundles',
        domains: ['*'],
        routes: [
          ...input.bundles.flatMap(bundleRoutes),
          { name: 'other', match: { prefix: '/' }, direct_response: jsonDirectResponse(404, 'not_found', 'no bundle at this path') },
        ],
      },
    ],
  };
  const hcm = ext('envoy.filters.network.http_connection_manager', TYPE.hcm, {
    stat_prefix: 'bundles',
    codec_type: 'AUTO',
    request_timeout: seconds(30),
    route_config: routeConfig,
    http_filters: [ext('envoy.filters.http.router', TYPE.router)],
    access_log: [jsonAccessLog({ proxy: 'bundles', method: '%REQ(:METHOD)%', path: '%REQ(:PATH)%', status: '%RESPONSE_CODE%', bytes: '%BYTES_SENT%' })],
  });
  return {
    node: { id: 'bundles', cluster: 'agentd-bundles' },
    admin: adminBlock(input.listen.adminPort),
    static_resources: {
      listeners: [
        { name: 'bundles', address: socketAddress(input.listen.traffic.host, input.listen.traffic.port), filter_chains: [{ filters: [hcm] }] },
        statsListener('bundles', input.listen.stats),
      ],
      clusters: [adminCluster(input.listen.adminPort)],
    },
  };
}
