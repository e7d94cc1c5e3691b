// The pure half of `npm run policy -- diff` (policy/decision-diff.ts): which requests are asked,
// and what two hand-made sets of answers make of them. test/policy/diff.test.ts asks the real OPA.
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  compareDecisions,
  formatChange,
  formatChanges,
  PATH_OUTSIDE_ALLOWLISTS,
  probeKey,
  probesOf,
  ROUTE_OUTSIDE_ROLES,
  type Decision,
  type PolicySide,
  type Probe,
} from '../../policy/decision-diff.ts';
import { roleRoutes, servicePaths } from '../../policy/probes.ts';
import { HTTP_METHODS, parsePolicySpec, type PolicySources, type PolicySpec } from '../../policy/spec.ts';

/** A small policy, as the YAML files would hold it; each test changes a copy. */
const data = () => ({
  clients: {
    clients: [
      { id: 'ci', role: 'operator', rate_limit_tier: 'standard' },
      { id: 'dashboard', role: 'reader', rate_limit_tier: 'default' },
    ],
  },
  roles: {
    roles: {
      operator: {
        sandbox_tiers: ['standard'],
        rules: [
          { methods: ['GET'], paths: ['/api/v1/status'] },
          { methods: ['POST'], paths: ['/api/v1/sandboxes/*/intents'] },
        ],
      },
      reader: { rules: [{ methods: ['GET'], paths: ['/api/v1/status'] }] },
    },
  },
  rateLimitTiers: {
    tiers: {
      default: { requests_per_minute: 60, requests_per_hour: 1800 },
      standard: { requests_per_minute: 120, requests_per_hour: 3600 },
      premium: { requests_per_minute: 600, requests_per_hour: 18000 },
    },
  },
  egressServices: {
    services: {
      openai: { base_url: 'https://api.openai.com', allowed_methods: ['GET', 'POST'], allowed_paths: ['/v1/models/*'] },
      github: { base_url: 'https://api.github.com', allowed_methods: ['GET'], allowed_paths: ['/repos/**'] },
    },
  },
  sandboxTiers: {
    tiers: {
      standard: { services: ['openai'], requests_per_minute: 60 },
      premium: { services: ['openai', 'github'], requests_per_minute: 300 },
    },
  },
});
type Data = ReturnType<typeof data>;

const specOf = (d: Data): PolicySpec =>
  parsePolicySpec(Object.fromEntries(Object.entries(d).map(([file, doc]) => [file, stringify(doc)])) as unknown as PolicySources);

/** How tests name a probe: `ci GET /api/v1/status`, `standard openai POST /v1/models/x1`. */
const labelOf = (p: Probe) => (p.kind === 'gateway' ? `${p.client} ${p.method} ${p.path}` : `${p.tier} ${p.service} ${p.method} ${p.path}`);

const deny = (reason: string): Decision => ({ allowed: false, reason });
const allowGateway = (role: string, rateLimitTier: string, sandboxTiers = '', scope = 'own'): Decision => ({
  allowed: true,
  reason: null,
  identity: { role, scope, sandboxTiers },
  rateLimitTier,
});
const allowEgress: Decision = { allowed: true, reason: null };

/**
 * One side's answers: `allowed` (and any other listed answer) by label, every other probe refused
 * with `otherwise`. A label that names no probe fails the test, so that a typo cannot pass.
 */
function sideOf(spec: PolicySpec, probes: readonly Probe[], answers: Record<string, Decision>, otherwise = deny('forbidden_route')): PolicySide {
  const decisions = new Map<string, Decision>();
  const used = new Set<string>();
  for (const p of probes) {
    const label = labelOf(p);
    if (answers[label]) used.add(label);
    decisions.set(probeKey(p), answers[label] ?? otherwise);
  }
  expect(Object.keys(answers).filter((l) => !used.has(l))).toEqual([]);
  return { spec, decisions };
}

/** The answers the small policy gets from OPA (what `data()` grants). */
const shippedAnswers = (): Record<string, Decision> => ({
  'ci GET /api/v1/status': allowGateway('operator', 'standard', 'standard'),
  'ci POST /api/v1/sandboxes/x1/intents': allowGateway('operator', 'standard', 'standard'),
  'dashboard GET /api/v1/status': allowGateway('reader', 'default'),
  'standard openai GET /v1/models/x1': allowEgress,
  'standard openai POST /v1/models/x1': allowEgress,
  'premium openai GET /v1/models/x1': allowEgress,
  'premium openai POST /v1/models/x1': allowEgress,
  'premium github GET /repos': allowEgress,
  'premium github GET /repos/deep/er': allowEgress,
});

describe('the requests asked (probesOf)', () => {
  it('every client x role route (plus one outside) x method, every tier x service x path (plus one outside) x method', () => {
    const spec = specOf(data());
    const probes = probesOf(spec, spec);
    const gateway = probes.filter((p) => p.kind === 'gateway');
    const egress = probes.filter((p) => p.kind === 'egress');
    // Routes: /api/v1/status, /api/v1/sandboxes/x1/intents and the one no role grants.
    expect(roleRoutes(spec)).toEqual(['/api/v1/sandboxes/x1/intents', '/api/v1/status']);
    expect(gateway).toHaveLength(2 * 3 * HTTP_METHODS.length);
    expect(gateway.filter((p) => p.path === ROUTE_OUTSIDE_ROLES)).toHaveLength(2 * HTTP_METHODS.length);
    // Paths: openai /v1/models/x1; github /repos and /repos/deep/er; each service also the one outside.
    expect(servicePaths(spec.egressServices['github']!)).toEqual(['/repos', '/repos/deep/er']);
    expect(egress).toHaveLength(2 * (2 + 3) * HTTP_METHODS.length);
    expect(egress.filter((p) => p.path === PATH_OUTSIDE_ALLOWLISTS)).toHaveLength(2 * 2 * HTTP_METHODS.length);
    expect(new Set(probes.map(probeKey)).size).toBe(probes.length);
  });

  it('asks both sides what either side names: clients, routes, tiers, services and paths of one side only', () => {
    const base = specOf(data());
    const d = data();
    d.clients.clients.push({ id: 'new-bot', role: 'reader', rate_limit_tier: 'default' });
    d.roles.roles.reader.rules.push({ methods: ['GET'], paths: ['/api/v1/sandboxes'] });
    d.egressServices.services.openai.allowed_paths.push('/v1/embeddings');
    (d.sandboxTiers.tiers as Record<string, unknown>)['gold'] = { services: ['github'], requests_per_minute: 5 };
    const head = specOf(d);
    const probes = probesOf(base, head);
    expect(probes).toEqual(probesOf(head, base));
    const labels = new Set(probes.map(labelOf));
    for (const l of ['new-bot DELETE /api/v1/status', 'ci GET /api/v1/sandboxes', 'standard openai POST /v1/embeddings', 'gold openai GET /v1/embeddings']) {
      expect(labels, l).toContain(l);
    }
    expect(probes.filter((p) => p.kind === 'gateway')).toHaveLength(3 * 4 * HTTP_METHODS.length);
    expect(probes.filter((p) => p.kind === 'egress')).toHaveLength(3 * (3 + 3) * HTTP_METHODS.length);
  });
});

describe('comparing two sets of answers (compareDecisions, formatChanges)', () => {
  const compare = (baseData: Data, headData: Data, baseAnswers: Record<string, Decision>, headAnswers: Record<string, Decision>) => {
    const base = specOf(baseData);
    const head = specOf(headData);
    const probes = probesOf(base, head);
    return compareDecisions(probes, sideOf(base, probes, baseAnswers), sideOf(head, probes, headAnswers));
  };
  const lines = (changes: ReturnType<typeof compare>) => formatChanges(changes).split('\n');

  it('the same answers: no change, said as `no decision changes`', () => {
    const changes = compare(data(), data(), shippedAnswers(), shippedAnswers());
    expect(changes).toEqual([]);
    expect(formatChanges(changes)).toBe('no decision changes');
  });

  it('a gateway request allowed before and refused after, and the reverse, with the reasons', () => {
    const head = shippedAnswers();
    head['ci POST /api/v1/sandboxes/x1/intents'] = deny('method_not_allowed');
    head['dashboard HEAD /api/v1/status'] = allowGateway('reader', 'default');
    const changes = compare(data(), data(), shippedAnswers(), head);
    expect(changes).toEqual([
      {
        kind: 'gateway',
        subject: 'client ci',
        aspect: 'access',
        service: null,
        method: 'POST',
        path: '/api/v1/sandboxes/x1/intents',
        before: 'allow',
        after: 'deny',
        reasons: { before: null, after: 'method_not_allowed' },
      },
      expect.objectContaining({ subject: 'client dashboard', method: 'HEAD', before: 'deny', after: 'allow' }),
    ]);
    expect(lines(changes)).toEqual([
      'client ci: POST /api/v1/sandboxes/x1/intents allow -> deny (method_not_allowed)',
      'client dashboard: HEAD /api/v1/status deny (forbidden_route) -> allow',
    ]);
  });

  it('a refusal whose reason changes is still a refusal: not a change', () => {
    const head = shippedAnswers();
    head['dashboard POST /api/v1/status'] = deny('method_not_allowed');
    head['standard github GET /repos'] = deny('service_not_allowed');
    expect(compare(data(), data(), shippedAnswers(), head)).toEqual([]);
  });

  it('egress: newly allowed, and no longer allowed with the reason', () => {
    const head = shippedAnswers();
    head['standard github GET /repos'] = allowEgress;
    head['premium openai POST /v1/models/x1'] = deny('method_not_allowed');
    const changes = compare(data(), data(), shippedAnswers(), head);
    // The github grant also gives standard a budget for github (see the limit tests).
    expect(lines(changes)).toEqual([
      'tier premium: openai POST /v1/models/x1 no longer allowed (method_not_allowed)',
      'tier standard: github GET /repos newly allowed',
      'tier standard: github not granted -> 60/min',
    ]);
    expect(changes[1]).toMatchObject({
      kind: 'egress',
      subject: 'tier standard',
      service: 'github',
      method: 'GET',
      path: '/repos',
      before: 'deny',
      after: 'allow',
    });
  });

  it('a client only one side has: added or removed, with what it is allowed', () => {
    const headData = data();
    headData.clients.clients = [
      { id: 'ci', role: 'operator', rate_limit_tier: 'standard' },
      { id: 'new-bot', role: 'reader', rate_limit_tier: 'default' },
    ];
    const head = shippedAnswers();
    delete head['dashboard GET /api/v1/status'];
    head['new-bot GET /api/v1/status'] = allowGateway('reader', 'default');
    head['new-bot HEAD /api/v1/status'] = allowGateway('reader', 'default');
    head['new-bot POST /api/v1/sandboxes/x1/intents'] = allowGateway('reader', 'default');
    const changes = compare(data(), headData, shippedAnswers(), head);
    expect(lines(changes)).toEqual([
      'client dashboard: removed, allowed GET on /api/v1/status',
      'client new-bot: added, allows POST on /api/v1/sandboxes/x1/intents; GET HEAD on /api/v1/status',
      'client dashboard: rate limit default (60/min, 1800/h) -> none',
      'client new-bot: rate limit none -> default (60/min, 1800/h)',
    ]);
    expect(changes[1]).toMatchObject({
      kind: 'gateway',
      aspect: 'presence',
      before: 'absent',
      after: 'present',
      allowed: [
        { service: null, method: 'POST', path: '/api/v1/sandboxes/x1/intents' },
        { service: null, method: 'GET', path: '/api/v1/status' },
        { service: null, method: 'HEAD', path: '/api/v1/status' },
      ],
    });
  });

  it('a sandbox tier only one side has: added with its services, removed with nothing allowed', () => {
    const headData = data();
    (headData.sandboxTiers.tiers as Record<string, unknown>)['gold'] = { services: ['github'], requests_per_minute: 5 };
    const head = { ...shippedAnswers(), 'gold github GET /repos': allowEgress, 'gold github GET /repos/deep/er': allowEgress };
    expect(lines(compare(data(), headData, shippedAnswers(), head))).toEqual([
      'tier gold: added, allows github GET on /repos, /repos/deep/er',
      'tier gold: github not granted -> 5/min',
    ]);
    expect(lines(compare(headData, data(), head, shippedAnswers()))).toEqual([
      'tier gold: removed, allowed github GET on /repos, /repos/deep/er',
      'tier gold: github 5/min -> not granted',
    ]);
  });

  it("the identity OPA hands agentd: role, scope and sandbox tiers, from the client's allowed answers", () => {
    const head = shippedAnswers();
    for (const l of ['ci GET /api/v1/status', 'ci POST /api/v1/sandboxes/x1/intents'])
      head[l] = allowGateway('operator', 'standard', 'premium,standard', 'all');
    expect(lines(compare(data(), data(), shippedAnswers(), head))).toEqual([
      'client ci: scope own -> all',
      'client ci: sandbox tiers standard -> premium,standard',
    ]);
    const none = shippedAnswers();
    for (const l of ['ci GET /api/v1/status', 'ci POST /api/v1/sandboxes/x1/intents']) none[l] = allowGateway('operator', 'standard', '');
    expect(lines(compare(data(), data(), shippedAnswers(), none))).toEqual(['client ci: sandbox tiers standard -> none']);
  });

  it("limits: a client's rate-limit tier as OPA names it, the tiers' numbers, a sandbox tier's budget per service", () => {
    const headData = data();
    headData.rateLimitTiers.tiers.premium = { requests_per_minute: 1200, requests_per_hour: 36000 };
    (headData.rateLimitTiers.tiers as Record<string, unknown>)['unlimited'] = { unlimited: true };
    headData.sandboxTiers.tiers.premium.requests_per_minute = 600;
    headData.clients.clients[0]!.rate_limit_tier = 'premium';
    const head = shippedAnswers();
    for (const l of ['ci GET /api/v1/status', 'ci POST /api/v1/sandboxes/x1/intents']) head[l] = allowGateway('operator', 'premium', 'standard');
    const changes = compare(data(), headData, shippedAnswers(), head);
    expect(lines(changes)).toEqual([
      'client ci: rate limit standard (120/min, 3600/h) -> premium (1200/min, 36000/h)',
      'tier premium: github 300/min -> 600/min',
      'tier premium: openai 300/min -> 600/min',
      'rate-limit tier premium: 600/min -> 1200/min',
      'rate-limit tier premium: 18000/h -> 36000/h',
      'rate-limit tier unlimited: added (unlimited, unlimited)',
    ]);
    expect(changes.every((c) => c.kind === 'limit')).toBe(true);
    expect(changes[2]).toMatchObject({ subject: 'tier premium', service: 'openai', aspect: 'requests per minute', before: '300/min', after: '600/min' });
  });

  it('every line names its subject first', () => {
    const change = compare(data(), data(), shippedAnswers(), { ...shippedAnswers(), 'dashboard GET /api/v1/status': deny('disabled_api_key') })[0]!;
    expect(formatChange(change)).toBe('client dashboard: GET /api/v1/status allow -> deny (disabled_api_key)');
  });
});
