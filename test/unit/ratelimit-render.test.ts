// Global rate limits rendered from the policy spec: the rate-limit service's config and the
// proxies' descriptors come from the same shapes, so every descriptor a proxy sends has exactly
// the limit the policy gives it (and the goldens hold the files).
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  RATE_LIMIT_DOMAINS,
  egressLimitShapes,
  gatewayLimitShapes,
  renderRateLimitServiceFiles,
  serviceDomainConfig,
} from '../../components/render/ratelimit.ts';
import { rateLimitActions } from '../../components/render/envoy/global-ratelimit.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';

const spec = shippedSpec();

interface Level {
  key: string;
  value?: string;
  rate_limit?: { unit: string; requests_per_unit: number; name: string };
  descriptors?: Level[];
}

/** The limit the service applies to a descriptor, as it looks it up: exact value first, else the level without a value. */
function lookup(levels: Level[], entries: [string, string][]): Level['rate_limit'] | undefined {
  const [head, ...rest] = entries;
  if (!head) return undefined;
  const level = levels.find((l) => l.key === head[0] && l.value === head[1]) ?? levels.find((l) => l.key === head[0] && l.value === undefined);
  if (!level) return undefined;
  return rest.length === 0 ? level.rate_limit : lookup(level.descriptors ?? [], rest);
}

const files = renderRateLimitServiceFiles(spec);
const gateway = parse(files['config/gateway.yaml'] as string) as { domain: string; descriptors: Level[] };
const egress = parse(files['config/egress.yaml'] as string) as { domain: string; descriptors: Level[] };

describe('the rate-limit service config', () => {
  it('gives each key its tier per minute and per hour, and the unlimited tier nothing', () => {
    expect(gateway.domain).toBe(RATE_LIMIT_DOMAINS.gateway);
    for (const [tier, t] of Object.entries(spec.rateLimitTiers)) {
      const minute = lookup(gateway.descriptors, [
        ['window', 'minute'],
        ['tier', tier],
        ['client', 'any-client'],
      ]);
      const hour = lookup(gateway.descriptors, [
        ['window', 'hour'],
        ['tier', tier],
        ['client', 'any-client'],
      ]);
      expect(minute?.requests_per_unit).toBe(t.requestsPerMinute ?? undefined);
      expect(hour?.requests_per_unit).toBe(t.requestsPerHour ?? undefined);
      if (minute) expect(minute.unit).toBe('minute');
    }
  });

  it('gives each sandbox its tier per service, and on LLM services its token budget per hour and per day', () => {
    expect(egress.domain).toBe(RATE_LIMIT_DOMAINS.egress);
    let budgets = 0;
    for (const tier of Object.values(spec.sandboxTiers)) {
      for (const service of Object.values(spec.egressServices)) {
        const granted = tier.services.includes(service.id);
        const requests = lookup(egress.descriptors, [
          ['budget', 'requests'],
          ['service', service.id],
          ['tier', tier.id],
          ['sandbox', 'sbx_1'],
        ]);
        expect(requests?.requests_per_unit).toBe(granted ? tier.requestsPerMinute : undefined);
        for (const [window, perWindow] of [
          ['hour', tier.tokenBudget?.tokensPerHour],
          ['day', tier.tokenBudget?.tokensPerDay],
        ] as const) {
          const tokens = lookup(egress.descriptors, [
            ['budget', 'tokens'],
            ['service', service.id],
            ['window', window],
            ['tier', tier.id],
            ['sandbox', 'sbx_1'],
          ]);
          const expected = granted && service.llmApi && perWindow != null ? perWindow : undefined;
          expect(tokens?.requests_per_unit, `${tier.id} ${service.id} ${window}`).toBe(expected);
          if (tokens) {
            budgets++;
            expect(tokens.unit).toBe(window);
            expect(tokens.name).toBe(`tokens per ${window} to ${service.id}`);
          }
        }
      }
    }
    // standard and premium, on openai and anthropic, per hour and per day.
    expect(budgets).toBe(8);
  });

  it('refuses a shape whose per-value entry is not the tier', () => {
    expect(() =>
      serviceDomainConfig('d', [
        {
          entries: [
            { key: 'who', fromAuthz: 'client_id' },
            { key: 'tier', fromAuthz: 'tier' },
          ],
          perValueOf: 'tier',
          limits: { a: { requestsPerUnit: 1, unit: 'minute', name: 'n' } },
          charge: { kind: 'request' },
        },
      ]),
    ).toThrow(/only the tier and the last entry/);
  });
});

describe("the proxies' descriptors", () => {
  it('count a request once, check a token budget without counting, and charge the reported usage at the end of the stream', () => {
    expect(rateLimitActions(gatewayLimitShapes(spec)).every((r) => r.hits_addend === undefined && !r.apply_on_stream_done)).toBe(true);
    const shapes = egressLimitShapes(spec, 'openai');
    expect(rateLimitActions(shapes.requests)).toHaveLength(1);
    const openai = rateLimitActions(shapes.tokens);
    expect(openai).toHaveLength(4);
    expect(openai.filter((r) => r.hits_addend && 'number' in r.hits_addend && r.hits_addend.number === 0)).toHaveLength(2);
    const charges = openai.filter((r) => r.apply_on_stream_done);
    expect(charges).toHaveLength(2);
    for (const c of charges) expect(c.hits_addend).toEqual({ format: '%DYNAMIC_METADATA(agentd.llm:total_tokens)%' });
    // Services that are not LLM APIs have a request limit only.
    expect(egressLimitShapes(spec, 'github')).toEqual({ requests: [expect.anything()], tokens: [] });
  });

  it('take the tier and the identity from OPA, never from the request', () => {
    for (const r of [...rateLimitActions(gatewayLimitShapes(spec)), ...rateLimitActions(egressLimitShapes(spec, 'anthropic').tokens)]) {
      for (const a of r.actions) expect(a.generic_key ?? a.metadata?.metadata_key.key).toBeDefined();
      for (const a of r.actions) if (a.metadata) expect(a.metadata.metadata_key.key).toBe('envoy.filters.http.ext_authz');
    }
  });
});
