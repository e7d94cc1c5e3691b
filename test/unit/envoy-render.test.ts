import { describe, expect, it } from 'vitest';
import { renderGatewayConfig } from '../../components/render/envoy/gateway.ts';
import { credentialSds, renderEgressConfig } from '../../components/render/envoy/egress.ts';
import { BUNDLE_CONTENT_TYPE, renderBundleServerConfig } from '../../components/render/envoy/bundles.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { egressInput, gatewayInput, shippedSpec } from '../../scripts/local/fixtures.ts';
import { golden } from '../support/golden.ts';

const spec = shippedSpec();
const json = (v: unknown) => JSON.stringify(v);

describe('gateway Envoy config', () => {
  const cfg = renderGatewayConfig(spec, gatewayInput);
  const text = toYaml(cfg);

  it('matches the golden file', () => golden('gateway.envoy.yaml', text));

  it('is deterministic', () => expect(toYaml(renderGatewayConfig(shippedSpec(), gatewayInput))).toBe(text));

  it('binds the admin interface to loopback only', () => {
    expect(cfg.admin.address.socket_address.address).toBe('127.0.0.1');
  });

  it('fails closed when OPA does not answer', () => {
    expect(text).toContain('failure_mode_allow: false');
  });

  it('selects the gateway policy in its own config, and has one descriptor per tier and window', () => {
    expect(text).toContain('policy: gateway');
    for (const [tier, t] of Object.entries(spec.rateLimitTiers)) {
      const n = (text.match(new RegExp(`value: ${tier}\\n`, 'g')) ?? []).length;
      expect(n, tier).toBe(t.requestsPerMinute === null ? 0 : 2);
    }
  });

  it('keys rate limits on OPA metadata, never on request headers', () => {
    expect(text).not.toContain('request_headers:');
    expect(text).toContain('key: client_id');
  });

  it('with TLS, serves only TLS on the traffic listener (ALPN h2 + http/1.1, TLS 1.2 minimum, certificate by SDS)', () => {
    expect(cfg.static_resources.listeners[0]!.filter_chains[0]!.transport_socket).toBeUndefined();
    const tls = renderGatewayConfig(spec, { ...gatewayInput, tls: { sdsFile: '/etc/agentd/gateway/sds/tls.sds.json' } });
    expect(tls.static_resources.listeners.map((l) => l.name)).toEqual(['gateway', 'gateway_stats']);
    const chains = tls.static_resources.listeners[0]!.filter_chains;
    expect(chains.length).toBe(1);
    const ctx = (chains[0]!.transport_socket!.typed_config as unknown as { common_tls_context: Record<string, unknown> }).common_tls_context;
    expect(ctx['alpn_protocols']).toEqual(['h2', 'http/1.1']);
    expect(ctx['tls_params']).toEqual({ tls_minimum_protocol_version: 'TLSv1_2' });
    expect(JSON.stringify(ctx['tls_certificate_sds_secret_configs'])).toContain('/etc/agentd/gateway/sds/tls.sds.json');
    expect(toYaml(tls)).not.toMatch(/BEGIN|private_key:/);
  });

  it('authorizes on headers before it buffers a body', () => {
    const hcm = cfg.static_resources.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config as unknown as { http_filters: { name: string }[] };
    const names = hcm.http_filters.map((f) => f.name);
    expect(names.indexOf('envoy.filters.http.ext_authz')).toBeLessThan(names.indexOf('envoy.filters.http.lua'));
    expect(names).not.toContain('envoy.filters.http.buffer');
    expect(text).not.toContain('with_request_body');
  });

  it('sends agentd its per-deploy token from an SDS file, never inline', () => {
    const clusters = cfg.static_resources.clusters.filter((c) => c.name.startsWith('agentd_'));
    expect(clusters.map((c) => c.name)).toEqual(['agentd_http', 'agentd_grpc']);
    for (const c of clusters) {
      const opts = JSON.stringify(c.typed_extension_protocol_options);
      expect(opts).toContain('x-agentd-gateway-token');
      expect(opts).toContain(gatewayInput.agentdTokenSdsFile);
    }
  });

  it('has an overload manager (heap, connections) and request timeouts', () => {
    expect(text).toContain('envoy.resource_monitors.fixed_heap');
    expect(text).toContain('envoy.overload_actions.stop_accepting_requests');
    expect(text).toContain('max_active_downstream_connections');
    expect(text).toMatch(/request_timeout: \d+s/);
  });
});

describe('egress Envoy config', () => {
  const cfg = renderEgressConfig(spec, egressInput);
  const text = toYaml(cfg);

  it('matches the golden file', () => golden('egress.envoy.yaml', text));

  it('has one virtual host per service plus a JSON 404 for unknown hosts', () => {
    const listener = cfg.static_resources.listeners[0]!;
    const hcm = listener.filter_chains[0]!.filters[0]!.typed_config as unknown as { route_config: { virtual_hosts: { name: string; domains: string[] }[] } };
    const names = hcm.route_config.virtual_hosts.map((v) => v.name);
    expect(names).toEqual([...Object.keys(spec.egressServices), 'unknown_service']);
    expect(hcm.route_config.virtual_hosts.at(-1)?.domains).toEqual(['*']);
    expect(text).toContain('unknown_service');
  });

  it('injects each credential from its own file-based secret, never inline', () => {
    for (const s of Object.values(spec.egressServices)) {
      if (s.credential && egressInput.configuredCredentials.includes(s.id)) expect(text).toContain(`/etc/agentd/egress/sds/${s.id}.sds.json`);
    }
    expect(json(credentialSds('openai', '/c'))).toContain('"filename":"/c/openai.credential"');
    expect(json(credentialSds('openai', '/c'))).not.toContain('inline_string');
  });

  it('answers 503 for a service whose credential is not configured', () => {
    const c = toYaml(renderEgressConfig(spec, { ...egressInput, configuredCredentials: [] }));
    expect(c).toContain('credential_not_configured');
    expect(c).toContain('pulumi config set --secret egress:openai-api-key');
  });

  it('verifies the sandbox token in Envoy and hands the claims to OPA', () => {
    expect(text).toContain('x-agentd-sandbox-token');
    expect(text).toContain('forward: false');
    expect(text).toContain('envoy.filters.http.jwt_authn');
    expect(text).toMatch(/metadata_context_namespaces:\n\s+- envoy.filters.http.jwt_authn/);
  });

  it('rate-limits per sandbox with the tier budget of each service', () => {
    // standard grants openai at 60/min: its vhost has a 60-token bucket for tier standard.
    expect(text).toMatch(/value: standard\n\s+- key: sandbox\n\s+value: ""\n\s+token_bucket:\n\s+max_tokens: 60\n/);
  });

  it('verifies upstream TLS with SNI against the CA bundle', () => {
    expect(text).toContain('sni: api.openai.com');
    expect(text).toContain('filename: /etc/ssl/certs/ca-certificates.crt');
  });

  it('sends a service to an overridden upstream (stand-ins)', () => {
    const c = toYaml(renderEgressConfig(spec, { ...egressInput, upstreams: { httpbin: { scheme: 'http', host: 'standin', port: 8080 } } }));
    expect(c).toContain('address: standin');
    expect(c).toContain('host_rewrite_literal: standin:8080');
  });
});

describe('bundle server Envoy config', () => {
  const input = {
    listen: { traffic: { host: '0.0.0.0', port: 8380 }, adminPort: 9901, stats: { host: '0.0.0.0', port: 9902 } },
    bundles: [{ path: '/bundles/agentd.tar.gz', file: '/etc/agentd/bundles/agentd-bundle.tar.gz', revision: 'rev-1' }],
    maxBundleBytes: 1 << 20,
  };
  const cfg = renderBundleServerConfig(input);
  const text = toYaml(cfg);

  it('matches the golden file', () => golden('bundles.envoy.yaml', text));

  it('answers 304 to the ETag it serves, the bundle with its ETag and OPA media type otherwise, 404 elsewhere', () => {
    const hcm = cfg.static_resources.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config as any;
    const routes = hcm.route_config.virtual_hosts[0].routes;
    expect(routes.map((r: any) => [r.match.path ?? r.match.prefix, r.match.headers?.[0]?.string_match.exact, r.direct_response.status])).toEqual([
      ['/bundles/agentd.tar.gz', '"rev-1"', 304],
      ['/bundles/agentd.tar.gz', undefined, 200],
      ['/', undefined, 404],
    ]);
    expect(routes[1].direct_response.body).toEqual({ filename: '/etc/agentd/bundles/agentd-bundle.tar.gz' });
    expect(routes[1].response_headers_to_add.map((h: any) => [h.header.key, h.header.value])).toEqual([
      ['etag', '"rev-1"'],
      ['content-type', BUNDLE_CONTENT_TYPE],
    ]);
    expect(hcm.route_config.max_direct_response_body_size_bytes).toBe(1 << 20);
    expect(cfg.admin.address.socket_address.address).toBe('127.0.0.1');
  });
});
