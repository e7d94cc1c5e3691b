import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadPolicySpec, parsePolicySpec, PolicyError, POLICY_FILES, type PolicySources } from '../../policy/spec.ts';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const DATA = join(REPO_ROOT, 'policy/data');
const sources = (): Record<keyof typeof POLICY_FILES, string> =>
  Object.fromEntries(Object.entries(POLICY_FILES).map(([k, f]) => [k, readFileSync(join(DATA, f), 'utf8')])) as Record<keyof typeof POLICY_FILES, string>;

/** Parses the shipped data with one file's text edited, and returns the issues. */
function issuesWith(file: keyof PolicySources, edit: (text: string) => string) {
  const s = sources();
  s[file] = edit(s[file]);
  try {
    parsePolicySpec(s);
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    return (e as PolicyError).issues;
  }
  throw new Error('expected the edited policy data to be refused');
}

describe('policy spec: the shipped data', () => {
  const spec = loadPolicySpec(DATA);

  it('has the tiers of the original, with their limits', () => {
    expect(spec.rateLimitTiers['default']?.requestsPerMinute).toBe(60);
    expect(spec.rateLimitTiers['standard']?.requestsPerMinute).toBe(120);
    expect(spec.rateLimitTiers['premium']?.requestsPerMinute).toBe(600);
    expect(spec.rateLimitTiers['unlimited']).toEqual({ requestsPerMinute: null, requestsPerHour: null });
  });

  it('has the sandbox tiers of the original', () => {
    const t = spec.sandboxTiers;
    expect(t['default']).toMatchObject({ services: [], requestsPerMinute: 0 });
    expect(t['restricted']).toMatchObject({ services: ['httpbin'], requestsPerMinute: 10 });
    expect(t['standard']).toMatchObject({ services: ['openai', 'anthropic', 'github'], requestsPerMinute: 60 });
    expect(t['premium']).toMatchObject({ services: ['openai', 'anthropic', 'github', 'slack'], requestsPerMinute: 300 });
    expect(t['admin']?.services).toEqual(Object.keys(spec.egressServices));
    expect(t['admin']?.requestsPerMinute).toBe(1000);
  });

  it('has the egress services of the original, each with its own secret', () => {
    expect(Object.keys(spec.egressServices)).toEqual(['openai', 'anthropic', 'github', 'slack', 'httpbin']);
    expect(spec.egressServices['anthropic']?.credential).toEqual({ secret: 'anthropic-api-key', header: 'x-api-key', prefix: '' });
    expect(spec.egressServices['openai']?.baseUrl).toEqual({ scheme: 'https', host: 'api.openai.com', port: 443 });
  });

  it('gives httpbin no credential: it echoes request headers, so the agent would read it', () => {
    expect(spec.egressServices['httpbin']?.credential).toBeNull();
    const secrets = Object.values(spec.egressServices).flatMap((s) => (s.credential ? [s.credential.secret] : []));
    expect(secrets).toEqual(['openai-api-key', 'anthropic-api-key', 'github-token', 'slack-bot-token']);
  });

  it('narrows GitHub to contents, issues, pulls, search and /user', () => {
    const gh = spec.egressServices['github']!;
    expect(gh.allowedMethods).toEqual(['GET', 'POST', 'PATCH', 'PUT']);
    expect(gh.allowedPaths.map((p) => p.source)).toEqual([
      '/user',
      '/repos/*/*/contents/**',
      '/repos/*/*/issues',
      '/repos/*/*/issues/**',
      '/repos/*/*/pulls',
      '/repos/*/*/pulls/**',
      '/search/**',
    ]);
  });

  it('grants each role its sandbox tiers (sorted) and scope', () => {
    expect(spec.roles['admin']).toMatchObject({ sandboxTiers: ['admin', 'default', 'premium', 'restricted', 'standard'], scope: 'all' });
    expect(spec.roles['admin']?.sandboxTiers).toEqual(Object.keys(spec.sandboxTiers).sort());
    expect(spec.roles['operator']).toMatchObject({ sandboxTiers: ['default', 'premium', 'restricted', 'standard'], scope: 'own' });
    expect(spec.roles['reader']).toMatchObject({ sandboxTiers: [], scope: 'own' });
  });

  it('is immutable', () => {
    expect(Object.isFrozen(spec.clients)).toBe(true);
    expect(Object.isFrozen(spec.egressServices['openai']?.allowedPaths)).toBe(true);
  });

  it('holds no plaintext key anywhere', () => {
    expect(JSON.stringify(spec)).not.toMatch(/"key"/);
  });
});

describe('policy spec: bad data fails with file, field and fix', () => {
  it('unknown rate-limit tier', () => {
    const [i] = issuesWith('clients', (t) => t.replace('rate_limit_tier: standard', 'rate_limit_tier: gold'));
    expect(i).toMatchObject({ file: 'policy/data/clients.yaml', field: 'clients[1].rate_limit_tier' });
    expect(i?.message).toContain('unknown tier "gold"');
    expect(i?.fix).toContain('default, standard, premium, unlimited');
  });

  it('unknown role', () => {
    const [i] = issuesWith('clients', (t) => t.replace('role: reader', 'role: viewer'));
    expect(i).toMatchObject({ field: 'clients[2].role' });
    expect(i?.fix).toContain('admin, operator, reader');
  });

  it('duplicate client id', () => {
    const [i] = issuesWith('clients', (t) => t.replace('id: dashboard', 'id: ci'));
    expect(i).toMatchObject({ field: 'clients[2].id', message: 'duplicate client id "ci"' });
  });

  it('a plaintext key in policy data', () => {
    const [i] = issuesWith('clients', (t) => t.replace('  - id: ci\n', '  - id: ci\n    key: hunter2\n'));
    expect(i?.field).toBe('clients[1].key');
    expect(i?.message).toContain('plaintext API key');
  });

  it('unknown service in a sandbox tier', () => {
    const [i] = issuesWith('sandboxTiers', (t) => t.replace('services: [httpbin]', 'services: [httpbin, gitlab]'));
    expect(i).toMatchObject({ file: 'policy/data/sandbox-tiers.yaml', field: 'tiers.restricted.services[1]' });
    expect(i?.fix).toContain('openai, anthropic, github, slack, httpbin');
  });

  it.each([
    ['/v1/**/x', '"**" may only be the last segment'],
    ['v1/messages', 'must start with "/"'],
    ['/v1/messages?x=1', 'query'],
    ['/v1/mess*', 'mixes "*" with text'],
    ['/v1//messages', 'empty segment'],
    ['/v1/%2e%2e', 'percent-encoded'],
  ])('invalid path pattern %s', (pattern, message) => {
    const [i] = issuesWith('egressServices', (t) => t.replace('[/v1/messages, /v1/messages/count_tokens]', `["${pattern}"]`));
    expect(i?.field).toBe('services.anthropic.allowed_paths[0]');
    expect(i?.message).toContain(message);
  });

  it('a role that grants nothing', () => {
    const issues = issuesWith('roles', (t) => t + '  nobody:\n    description: grants nothing\n    rules: []\n');
    expect(issues.map((i) => i.field)).toContain('roles.nobody.rules');
  });

  it('a method that is not HTTP', () => {
    const [i] = issuesWith('egressServices', (t) => t.replace('allowed_methods: [POST]', 'allowed_methods: [post]'));
    expect(i?.fix).toContain('upper case');
  });

  it('a base URL with a path', () => {
    const [i] = issuesWith('egressServices', (t) => t.replace('https://api.github.com', 'https://api.github.com/v3'));
    expect(i?.field).toBe('services.github.base_url');
  });

  it('a secret shared by two services', () => {
    const [i] = issuesWith('egressServices', (t) => t.replace('secret: slack-bot-token', 'secret: github-token'));
    expect(i?.message).toContain('already used by service "github"');
  });

  it('a misspelt field is not silently ignored', () => {
    const [i] = issuesWith('egressServices', (t) => t.replace('timeout_seconds: 10', 'timeout_secs: 10'));
    expect(i?.field).toBe('services.httpbin.timeout_secs');
  });

  it('YAML syntax errors name the file', () => {
    const [i] = issuesWith('roles', (t) => t + '\n  bad: [unclosed\n');
    expect(i).toMatchObject({ file: 'policy/data/roles.yaml', field: '(syntax)' });
  });

  it('an unknown sandbox tier in a role', () => {
    const issues = issuesWith('roles', (t) => t.replace('sandbox_tiers: [default, restricted, standard, premium]', 'sandbox_tiers: [default, gold]'));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: 'policy/data/roles.yaml', field: 'roles.operator.sandbox_tiers[1]', message: 'unknown sandbox tier "gold"' });
    expect(issues[0]?.fix).toContain('use one of default, restricted, standard, premium, admin (defined in policy/data/sandbox-tiers.yaml)');
    expect(issues[0]?.fix).toContain('sandbox_tiers: all');
  });

  it('a role naming a sandbox tier twice', () => {
    const [i] = issuesWith('roles', (t) => t.replace('sandbox_tiers: [default, restricted, standard, premium]', 'sandbox_tiers: [default, default]'));
    expect(i).toMatchObject({ field: 'roles.operator.sandbox_tiers[1]', message: 'lists "default" twice' });
  });

  it('sandbox_tiers that is neither a list nor `all`', () => {
    const [i] = issuesWith('roles', (t) => t.replace('sandbox_tiers: all', 'sandbox_tiers: everything'));
    expect(i).toMatchObject({ field: 'roles.admin.sandbox_tiers' });
    expect(i?.message).toContain('must be a list');
    expect(i?.fix).toContain('`all`');
  });

  it('a role whose sandbox tier was removed from sandbox-tiers.yaml: checked after the tiers are known', () => {
    const issues = issuesWith('sandboxTiers', (t) => t.replace(/ {2}premium:\n.*\n.*\n.*\n/, ''));
    expect(issues.map((i) => `${i.file} ${i.field} ${i.message}`)).toEqual([
      'policy/data/roles.yaml roles.operator.sandbox_tiers[3] unknown sandbox tier "premium"',
    ]);
  });

  it('a tier that grants an LLM service without a token budget, and a budget on a tier without one', () => {
    const missing = issuesWith('sandboxTiers', (t) => t.replace(/\n {4}token_budget: \{tokens_per_hour: 200000, tokens_per_day: 1000000\}/, ''));
    expect(missing.map((i) => `${i.field} ${i.message}`)).toEqual([
      'tiers.standard.token_budget is missing, but the tier grants the LLM services openai, anthropic',
    ]);
    expect(missing[0]!.fix).toContain('unlimited: true');
    const stray = issuesWith('sandboxTiers', (t) =>
      t.replace('requests_per_minute: 10\n', 'requests_per_minute: 10\n    token_budget: {tokens_per_hour: 5, tokens_per_day: 5}\n'),
    );
    expect(stray.map((i) => `${i.field} ${i.message}`)).toEqual([
      'tiers.restricted.token_budget is set, but the tier grants no LLM service (llm_api in egress-services.yaml)',
    ]);
    const inverted = issuesWith('sandboxTiers', (t) => t.replace('tokens_per_day: 1000000', 'tokens_per_day: 10'));
    expect(inverted.map((i) => i.field)).toEqual(['tiers.standard.token_budget.tokens_per_day']);
  });

  it('an llm_api the proxy cannot meter', () => {
    const issues = issuesWith('egressServices', (t) => t.replace('llm_api: openai', 'llm_api: gemini'));
    expect(issues.map((i) => `${i.field} ${i.message}`)).toEqual(['services.openai.llm_api string "gemini" is not an LLM API the proxy can meter']);
  });

  it('reads LLM services and token budgets', () => {
    const spec = loadPolicySpec(DATA);
    expect(spec.egressServices['openai']!.llmApi).toBe('openai');
    expect(spec.egressServices['github']!.llmApi).toBeNull();
    expect(spec.sandboxTiers['standard']!.tokenBudget).toEqual({ tokensPerHour: 200000, tokensPerDay: 1000000 });
    expect(spec.sandboxTiers['admin']!.tokenBudget).toEqual({ tokensPerHour: null, tokensPerDay: null });
    expect(spec.sandboxTiers['restricted']!.tokenBudget).toBeNull();
  });

  it('an unreadable sandbox-tiers.yaml is reported once, not again for every tier a role names', () => {
    const issues = issuesWith('sandboxTiers', () => 'tiers: [unclosed\n');
    expect(issues.length).toBeGreaterThan(0);
    expect([...new Set(issues.map((i) => i.file))]).toEqual(['policy/data/sandbox-tiers.yaml']);
  });

  it('an unknown scope', () => {
    const [i] = issuesWith('roles', (t) => t.replace('scope: all', 'scope: everyone'));
    expect(i).toMatchObject({ file: 'policy/data/roles.yaml', field: 'roles.admin.scope', message: 'string "everyone" is not a scope' });
    expect(i?.fix).toContain('scope: own');
    expect(i?.fix).toContain('scope: all');
  });

  it('a role without sandbox_tiers and scope gets none and `own` (the safe defaults)', () => {
    const s = sources();
    s.roles = s.roles.replace('    sandbox_tiers: all\n    scope: all\n', '');
    const spec = parsePolicySpec(s);
    expect(spec.roles['admin']).toMatchObject({ sandboxTiers: [], scope: 'own' });
  });

  it('reports every problem at once, in one readable message', () => {
    const s = sources();
    s.clients = s.clients.replace('role: reader', 'role: viewer').replace('rate_limit_tier: standard', 'rate_limit_tier: gold');
    expect(() => parsePolicySpec(s)).toThrowError(/2 problems[\s\S]*clients\[1\]\.rate_limit_tier[\s\S]*fix:[\s\S]*clients\[2\]\.role/);
  });
});
