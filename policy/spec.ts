// The policy spec: policy/data parsed and validated into one immutable, typed object. Every
// config of the platform (OPA bundle, both Envoy configs, dashboards, alerts, NetworkPolicies)
// is rendered from this object, so bad data must stop here, before anything is rendered or
// deployed, with an error that names the file, the field and the fix.

import { parseServiceUrl, type ServiceUrl } from './url.ts';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parsePathPattern, type PathPattern } from './paths.ts';
import { CLIENT_SCOPES, type ClientScope } from '../agentd/src/contract.ts';

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** A client of the gateway. Its key is not here: keys exist only at deploy time. */
export interface ApiClient {
  readonly id: string;
  readonly description: string;
  readonly role: string;
  readonly rateLimitTier: string;
  readonly enabled: boolean;
}

export interface RoleRule {
  readonly methods: readonly HttpMethod[];
  readonly paths: readonly PathPattern[];
}

export interface Role {
  readonly description: string;
  readonly rules: readonly RoleRule[];
  /**
   * Sandbox tiers this role may create (sandbox-tiers.yaml ids), expanded from `all` and sorted;
   * empty: none. agentd enforces it (403 tier_not_allowed) from the header OPA sets.
   */
  readonly sandboxTiers: readonly string[];
  /** `all`: the role's clients see every client's sandboxes; `own` (default): only their own. */
  readonly scope: ClientScope;
}

/** A client rate-limit tier; `null` limits mean unlimited. */
export interface RateLimitTier {
  readonly requestsPerMinute: number | null;
  readonly requestsPerHour: number | null;
}

export interface EgressCredential {
  /** Name of the secret that holds the value (stack config `egress:<secret>`). */
  readonly secret: string;
  /** Header Envoy writes the credential into. */
  readonly header: string;
  /** Text before the credential in that header, e.g. `Bearer `. */
  readonly prefix: string;
}

export interface EgressService {
  readonly id: string;
  readonly displayName: string;
  /** Parsed base URL: scheme, host and port; no path. */
  readonly baseUrl: ServiceUrl;
  readonly allowedMethods: readonly HttpMethod[];
  readonly allowedPaths: readonly PathPattern[];
  readonly credential: EgressCredential | null;
  readonly timeoutSeconds: number;
  /**
   * The LLM API whose token usage the egress proxy reads from this service's responses and
   * charges to the sandbox's token budget (`llm_api` in egress-services.yaml), or null.
   */
  readonly llmApi: LlmApi | null;
}

/** The LLM APIs whose usage reports the egress proxy reads (plain JSON and streamed). */
export const LLM_APIS = ['openai', 'anthropic'] as const;
export type LlmApi = (typeof LLM_APIS)[number];

/** Tokens a sandbox may spend per LLM service and window; `null` means unlimited. */
export interface TokenBudget {
  readonly tokensPerHour: number | null;
  readonly tokensPerDay: number | null;
}

export interface SandboxTier {
  readonly id: string;
  /** Service ids, in the order of egress-services.yaml. */
  readonly services: readonly string[];
  readonly requestsPerMinute: number;
  /**
   * The token budget of a sandbox of this tier on each LLM service it may call (one budget per
   * sandbox x service), or null when the tier grants no LLM service.
   */
  readonly tokenBudget: TokenBudget | null;
}

export interface PolicySpec {
  readonly clients: readonly ApiClient[];
  readonly roles: Readonly<Record<string, Role>>;
  readonly rateLimitTiers: Readonly<Record<string, RateLimitTier>>;
  readonly egressServices: Readonly<Record<string, EgressService>>;
  readonly sandboxTiers: Readonly<Record<string, SandboxTier>>;
}

/** One problem in the policy data. */
export interface PolicyIssue {
  readonly file: string;
  readonly field: string;
  readonly message: string;
  readonly fix: string;
}

export class PolicyError extends Error {
  readonly issues: readonly PolicyIssue[];
  constructor(issues: readonly PolicyIssue[]) {
    super(
      `invalid policy data (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n` +
        issues.map((i) => `  ${i.file}: ${i.field}: ${i.message}\n    fix: ${i.fix}`).join('\n'),
    );
    this.name = 'PolicyError';
    this.issues = issues;
  }
}

/** The files of policy/data, by role. */
export const POLICY_FILES = {
  clients: 'clients.yaml',
  roles: 'roles.yaml',
  rateLimitTiers: 'rate-limit-tiers.yaml',
  egressServices: 'egress-services.yaml',
  sandboxTiers: 'sandbox-tiers.yaml',
} as const;

export type PolicySources = Readonly<Record<keyof typeof POLICY_FILES, string>>;

/** Reads policy/data (or another directory of the same shape) and validates it. */
export function loadPolicySpec(dir: string, displayDir = relative(process.cwd(), dir) || '.'): PolicySpec {
  const present = new Set(readdirSync(dir));
  const issues: PolicyIssue[] = [];
  const sources: Partial<Record<keyof typeof POLICY_FILES, string>> = {};
  for (const [key, file] of Object.entries(POLICY_FILES) as [keyof typeof POLICY_FILES, string][]) {
    if (!present.has(file)) {
      issues.push({ file: join(displayDir, file), field: '(file)', message: 'is missing', fix: `create ${file} (see README, "Policy data")` });
      continue;
    }
    sources[key] = readFileSync(join(dir, file), 'utf8');
  }
  for (const name of present) {
    if (/\.(ya?ml|json)$/.test(name) && !Object.values(POLICY_FILES).includes(name as never)) {
      issues.push({
        file: join(displayDir, name),
        field: '(file)',
        message: 'is not a policy file, so nothing would read it',
        fix: `move its content into one of ${Object.values(POLICY_FILES).join(', ')}, or remove it`,
      });
    }
  }
  if (issues.length > 0) throw new PolicyError(issues);
  return parsePolicySpec(sources as PolicySources, displayDir);
}

type Json = unknown;

/** Validation context: collects issues against one file. */
class FileCheck {
  readonly issues: PolicyIssue[];
  readonly file: string;
  constructor(issues: PolicyIssue[], file: string) {
    this.issues = issues;
    this.file = file;
  }
  fail(field: string, message: string, fix: string): undefined {
    this.issues.push({ file: this.file, field, message, fix });
    return undefined;
  }
  object(v: Json, field: string, fix: string): Record<string, Json> | undefined {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, Json>;
    return this.fail(field, `must be a mapping, found ${describe(v)}`, fix);
  }
  string(v: Json, field: string, fix: string): string | undefined {
    if (typeof v === 'string') return v;
    return this.fail(field, `must be a string, found ${describe(v)}`, fix);
  }
  int(v: Json, field: string, min: number, fix: string): number | undefined {
    if (typeof v === 'number' && Number.isInteger(v) && v >= min) return v;
    return this.fail(field, `must be a whole number >= ${min}, found ${describe(v)}`, fix);
  }
  list(v: Json, field: string, fix: string): Json[] | undefined {
    if (Array.isArray(v)) return v;
    return this.fail(field, `must be a list, found ${describe(v)}`, fix);
  }
  /**
   * Two limits over a short and a longer window (`keys`, e.g. requests_per_minute and
   * requests_per_hour), or `unlimited: true` ([null, null]). The longer may not be below the
   * shorter: the shorter could then never be reached. `noun` names them in messages.
   */
  windowLimits(obj: Record<string, Json>, field: string, keys: readonly [string, string], noun: 'limit' | 'budget'): [number | null, number | null] {
    const [short, long] = keys;
    const window = (k: string) => k.slice(k.indexOf('_per_') + '_per_'.length);
    if (obj['unlimited'] === true) {
      if (short in obj || long in obj) this.fail(field, `is unlimited and also sets ${noun}s`, `remove the ${noun}s, or remove \`unlimited: true\``);
      return [null, null];
    }
    if ('unlimited' in obj && obj['unlimited'] !== false) this.fail(`${field}.unlimited`, 'must be true or false', 'write unlimited: true, or remove it');
    const fix = `set a ${noun} of at least 1, or \`unlimited: true\``;
    const a = this.int(obj[short], `${field}.${short}`, 1, fix);
    const b = this.int(obj[long], `${field}.${long}`, 1, fix);
    if (a !== undefined && b !== undefined && b < a) {
      this.fail(
        `${field}.${long}`,
        `(${b}) is below ${short} (${a}), so the ${window(short)} ${noun} could never be reached`,
        `raise ${long} to at least ${short}`,
      );
    }
    return [a ?? 1, b ?? 1];
  }
  /** Reports keys other than `allowed`. */
  keys(obj: Record<string, Json>, field: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) {
        this.fail(`${field}.${k}`, 'is not a known field', `remove it or use one of: ${allowed.join(', ')}`);
      }
    }
  }
  methods(v: Json, field: string): HttpMethod[] {
    const list = this.list(v, field, `list HTTP methods, e.g. [GET, POST]`) ?? [];
    const out: HttpMethod[] = [];
    for (const [i, m] of list.entries()) {
      if (typeof m === 'string' && (HTTP_METHODS as readonly string[]).includes(m)) {
        if (out.includes(m as HttpMethod)) this.fail(`${field}[${i}]`, `lists ${m} twice`, 'remove the duplicate');
        else out.push(m as HttpMethod);
      } else {
        this.fail(`${field}[${i}]`, `${describe(m)} is not an HTTP method`, `use one of ${HTTP_METHODS.join(', ')} (upper case)`);
      }
    }
    if (list.length === 0) this.fail(field, 'is empty, so it grants nothing', 'list at least one method');
    return out;
  }
  patterns(v: Json, field: string): PathPattern[] {
    const list = this.list(v, field, 'list path patterns, e.g. [/v1/messages, /repos/**]') ?? [];
    const out: PathPattern[] = [];
    for (const [i, p] of list.entries()) {
      if (typeof p !== 'string') {
        this.fail(`${field}[${i}]`, `must be a path pattern string, found ${describe(p)}`, 'write a path such as /v1/messages');
        continue;
      }
      const parsed = parsePathPattern(p);
      if ('error' in parsed) {
        this.fail(`${field}[${i}]`, `pattern "${p}" ${parsed.error}`, 'write "/exact/path", "/one/*/segment" or "/prefix/**" (everything below /prefix)');
      } else if (out.some((q) => q.source === p)) {
        this.fail(`${field}[${i}]`, `pattern "${p}" is listed twice`, 'remove the duplicate');
      } else {
        out.push(parsed);
      }
    }
    if (list.length === 0) this.fail(field, 'is empty, so it allows nothing', 'list at least one path pattern');
    return out;
  }
}

function describe(v: Json): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const ID = /^[a-z][a-z0-9-]{0,62}$/;
const ID_FIX = 'use lowercase letters, digits and "-", starting with a letter (at most 63 characters)';
const HEADER = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const FORBIDDEN_CREDENTIAL_HEADERS = ['host', ':authority', ':path', ':method', 'content-length', 'transfer-encoding', 'x-agentd-sandbox-token'];

function parseYamlFile(issues: PolicyIssue[], file: string, text: string): Json {
  try {
    return parseYaml(text, { uniqueKeys: true, prettyErrors: true });
  } catch (e) {
    issues.push({ file, field: '(syntax)', message: (e as Error).message.split('\n')[0] ?? String(e), fix: 'correct the YAML syntax' });
    return undefined;
  }
}

/** Validates the policy sources (file texts) into a spec, or throws one {@link PolicyError} with every problem. */
export function parsePolicySpec(sources: PolicySources, dir = 'policy/data'): PolicySpec {
  const issues: PolicyIssue[] = [];
  const path = (k: keyof typeof POLICY_FILES) => join(dir, POLICY_FILES[k]);

  // Load order follows the references: clients name a rate-limit tier and a role, roles name
  // sandbox tiers, sandbox tiers name egress services. Each file is checked after what it names.
  const rateLimitTiers: Record<string, RateLimitTier> = {};
  {
    const c = new FileCheck(issues, path('rateLimitTiers'));
    const doc = c.object(parseYamlFile(issues, c.file, sources.rateLimitTiers), '(document)', 'write `tiers:` with one entry per tier');
    const tiers = doc && c.object(doc['tiers'], 'tiers', 'write `tiers:` with one entry per tier');
    if (doc) c.keys(doc, '(document)', ['tiers']);
    for (const [id, raw] of Object.entries(tiers ?? {})) {
      const f = `tiers.${id}`;
      if (!ID.test(id)) c.fail(f, `tier id "${id}" is not valid`, ID_FIX);
      const t = c.object(raw, f, 'give requests_per_minute and requests_per_hour, or unlimited: true');
      if (!t) continue;
      c.keys(t, f, ['requests_per_minute', 'requests_per_hour', 'unlimited']);
      const [requestsPerMinute, requestsPerHour] = c.windowLimits(t, f, ['requests_per_minute', 'requests_per_hour'], 'limit');
      rateLimitTiers[id] = { requestsPerMinute, requestsPerHour };
    }
    if (tiers && Object.keys(tiers).length === 0) c.fail('tiers', 'defines no tier', 'define at least one tier');
  }

  const egressServices: Record<string, EgressService> = {};
  {
    const c = new FileCheck(issues, path('egressServices'));
    const doc = c.object(parseYamlFile(issues, c.file, sources.egressServices), '(document)', 'write `services:` with one entry per service');
    if (doc) c.keys(doc, '(document)', ['services']);
    const raw = (doc && c.object(doc['services'], 'services', 'write `services:` with one entry per service')) ?? {};
    const secrets = new Map<string, string>();
    for (const [id, r] of Object.entries(raw)) {
      const f = `services.${id}`;
      if (!ID.test(id)) c.fail(f, `service id "${id}" is not valid (it becomes the Host agents call)`, ID_FIX);
      const s = c.object(r, f, 'give display_name, base_url, allowed_methods, allowed_paths');
      if (!s) continue;
      c.keys(s, f, ['display_name', 'base_url', 'allowed_methods', 'allowed_paths', 'credential', 'timeout_seconds', 'llm_api']);
      const displayName = c.string(s['display_name'] ?? id, `${f}.display_name`, 'quote the name') ?? id;
      const baseUrl = parseBaseUrl(c, s['base_url'], `${f}.base_url`);
      const allowedMethods = c.methods(s['allowed_methods'], `${f}.allowed_methods`);
      const allowedPaths = c.patterns(s['allowed_paths'], `${f}.allowed_paths`);
      const timeoutSeconds = c.int(s['timeout_seconds'] ?? 30, `${f}.timeout_seconds`, 1, 'set a timeout in whole seconds, e.g. 30') ?? 30;
      let credential: EgressCredential | null = null;
      if (s['credential'] !== undefined && s['credential'] !== null) {
        const cr = c.object(s['credential'], `${f}.credential`, 'write {secret, header, prefix}');
        if (cr) {
          c.keys(cr, `${f}.credential`, ['secret', 'header', 'prefix']);
          const secret = c.string(cr['secret'], `${f}.credential.secret`, 'name the secret, e.g. openai-api-key');
          if (secret !== undefined && !ID.test(secret)) c.fail(`${f}.credential.secret`, `"${secret}" is not a valid secret name`, ID_FIX);
          if (secret !== undefined && secrets.has(secret)) {
            c.fail(
              `${f}.credential.secret`,
              `secret "${secret}" is already used by service "${secrets.get(secret)}"`,
              'give every service its own secret, so one leak does not open another service',
            );
          }
          if (secret !== undefined) secrets.set(secret, id);
          const header = c.string(cr['header'] ?? 'Authorization', `${f}.credential.header`, 'name a header, e.g. Authorization');
          if (header !== undefined && (!HEADER.test(header) || FORBIDDEN_CREDENTIAL_HEADERS.includes(header.toLowerCase()))) {
            c.fail(`${f}.credential.header`, `"${header}" cannot carry a credential`, 'use a plain header name such as Authorization or x-api-key');
          }
          const prefix = c.string(cr['prefix'] ?? '', `${f}.credential.prefix`, 'write the text before the credential, e.g. "Bearer "');
          if (prefix !== undefined && /[\r\n]/.test(prefix)) c.fail(`${f}.credential.prefix`, 'contains a line break', 'remove it');
          if (secret && header && prefix !== undefined) credential = { secret, header, prefix };
        }
      }
      let llmApi: LlmApi | null = null;
      if (s['llm_api'] !== undefined && s['llm_api'] !== null) {
        if ((LLM_APIS as readonly unknown[]).includes(s['llm_api'])) llmApi = s['llm_api'] as LlmApi;
        else c.fail(`${f}.llm_api`, `${describe(s['llm_api'])} is not an LLM API the proxy can meter`, `write one of ${LLM_APIS.join(', ')}, or remove it`);
      }
      egressServices[id] = {
        id,
        displayName,
        baseUrl: baseUrl ?? { scheme: 'https', host: 'invalid', port: 443 },
        allowedMethods,
        allowedPaths,
        credential,
        timeoutSeconds,
        llmApi,
      };
    }
    if (Object.keys(raw).length === 0 && doc) c.fail('services', 'defines no service', 'define at least one egress service');
  }

  const sandboxTiers: Record<string, SandboxTier> = {};
  // False when sandbox-tiers.yaml itself is unreadable: roles then cannot be checked against it
  // (that file's problem is reported; every tier a role names would only add noise).
  let sandboxTiersLoaded = false;
  {
    const c = new FileCheck(issues, path('sandboxTiers'));
    const doc = c.object(parseYamlFile(issues, c.file, sources.sandboxTiers), '(document)', 'write `tiers:` with one entry per sandbox tier');
    if (doc) c.keys(doc, '(document)', ['tiers']);
    const tiersDoc = doc && c.object(doc['tiers'], 'tiers', 'write `tiers:` with one entry per sandbox tier');
    sandboxTiersLoaded = tiersDoc !== undefined;
    const raw = tiersDoc ?? {};
    const known = Object.keys(egressServices);
    for (const [id, r] of Object.entries(raw)) {
      const f = `tiers.${id}`;
      if (!ID.test(id)) c.fail(f, `tier id "${id}" is not valid`, ID_FIX);
      const t = c.object(r, f, 'give services and requests_per_minute');
      if (!t) continue;
      c.keys(t, f, ['services', 'requests_per_minute', 'token_budget']);
      let services: string[] = [];
      if (t['services'] === 'all') {
        services = [...known];
      } else {
        const list = c.list(t['services'], `${f}.services`, 'list service ids, or write `services: all`') ?? [];
        for (const [i, s] of list.entries()) {
          if (typeof s !== 'string' || !(s in egressServices)) {
            c.fail(`${f}.services[${i}]`, `unknown service ${describe(s)}`, `use one of ${known.join(', ')} (defined in ${path('egressServices')})`);
          } else if (services.includes(s)) {
            c.fail(`${f}.services[${i}]`, `lists "${s}" twice`, 'remove the duplicate');
          } else {
            services.push(s);
          }
        }
        services.sort((a, b) => known.indexOf(a) - known.indexOf(b));
      }
      const rpm = c.int(t['requests_per_minute'], `${f}.requests_per_minute`, 0, 'set requests per minute per service, e.g. 60') ?? 0;
      if (rpm === 0 && services.length > 0) {
        c.fail(`${f}.requests_per_minute`, 'is 0 although the tier grants services', 'set a limit above 0, or grant no services');
      }
      const llmServices = services.filter((s) => egressServices[s]?.llmApi);
      const tokenBudget = parseTokenBudget(c, t['token_budget'], `${f}.token_budget`, llmServices);
      sandboxTiers[id] = { id, services, requestsPerMinute: rpm, tokenBudget };
    }
    if (Object.keys(raw).length === 0 && doc) c.fail('tiers', 'defines no tier', 'define at least one sandbox tier (e.g. default with no services)');
  }

  const roles: Record<string, Role> = {};
  {
    const c = new FileCheck(issues, path('roles'));
    const doc = c.object(parseYamlFile(issues, c.file, sources.roles), '(document)', 'write `roles:` with one entry per role');
    const raw = doc && c.object(doc['roles'], 'roles', 'write `roles:` with one entry per role');
    if (doc) c.keys(doc, '(document)', ['roles']);
    for (const [id, r] of Object.entries(raw ?? {})) {
      const f = `roles.${id}`;
      if (!ID.test(id)) c.fail(f, `role id "${id}" is not valid`, ID_FIX);
      const role = c.object(r, f, 'give a description and rules');
      if (!role) continue;
      c.keys(role, f, ['description', 'rules', 'sandbox_tiers', 'scope']);
      const rules: RoleRule[] = [];
      const list = c.list(role['rules'], `${f}.rules`, 'list rules of methods and paths') ?? [];
      for (const [i, rr] of list.entries()) {
        const rf = `${f}.rules[${i}]`;
        const rule = c.object(rr, rf, 'write {methods: [...], paths: [...]}');
        if (!rule) continue;
        c.keys(rule, rf, ['methods', 'paths']);
        rules.push({ methods: c.methods(rule['methods'], `${rf}.methods`), paths: c.patterns(rule['paths'], `${rf}.paths`) });
      }
      if (list.length === 0) c.fail(`${f}.rules`, 'is empty: this role grants nothing', 'add a rule, or remove the role and its clients');
      const sandboxTierIds = parseRoleSandboxTiers(
        c,
        role['sandbox_tiers'],
        `${f}.sandbox_tiers`,
        sandboxTiersLoaded ? Object.keys(sandboxTiers) : undefined,
        path('sandboxTiers'),
      );
      const scope = role['scope'] ?? 'own';
      if (!(CLIENT_SCOPES as readonly unknown[]).includes(scope)) {
        c.fail(
          `${f}.scope`,
          `${describe(scope)} is not a scope`,
          "write `scope: own` (the role sees the sandboxes its client created; the default) or `scope: all` (every client's sandboxes)",
        );
      }
      roles[id] = {
        description: typeof role['description'] === 'string' ? role['description'] : '',
        rules,
        sandboxTiers: sandboxTierIds,
        scope: (CLIENT_SCOPES as readonly unknown[]).includes(scope) ? (scope as ClientScope) : 'own',
      };
    }
  }

  const clients: ApiClient[] = [];
  {
    const c = new FileCheck(issues, path('clients'));
    const doc = c.object(parseYamlFile(issues, c.file, sources.clients), '(document)', 'write `clients:` with a list of clients');
    if (doc) c.keys(doc, '(document)', ['clients']);
    const list = (doc && c.list(doc['clients'], 'clients', 'write `clients:` with a list of clients')) ?? [];
    const seen = new Set<string>();
    for (const [i, raw] of list.entries()) {
      const f = `clients[${i}]`;
      const cl = c.object(raw, f, 'write {id, role, rate_limit_tier, enabled, description}');
      if (!cl) continue;
      c.keys(cl, f, ['id', 'role', 'rate_limit_tier', 'enabled', 'description', 'key']);
      if ('key' in cl) {
        c.fail(
          `${f}.key`,
          'holds a plaintext API key: keys never belong in policy data',
          'delete it; keys are generated at deploy time (stack output `apiKeys`) or set with `pulumi config set --secret`',
        );
      }
      const id = c.string(cl['id'], `${f}.id`, 'give the client an id');
      if (id !== undefined && !ID.test(id)) c.fail(`${f}.id`, `"${id}" is not a valid id`, ID_FIX);
      if (id !== undefined && seen.has(id)) c.fail(`${f}.id`, `duplicate client id "${id}"`, 'give every client its own id');
      if (id !== undefined) seen.add(id);
      const role = c.string(cl['role'], `${f}.role`, `set a role: ${Object.keys(roles).join(', ')}`);
      if (role !== undefined && !(role in roles)) {
        c.fail(`${f}.role`, `unknown role "${role}"`, `use one of ${Object.keys(roles).join(', ')} (defined in ${path('roles')})`);
      }
      const tier = c.string(cl['rate_limit_tier'], `${f}.rate_limit_tier`, `set a tier: ${Object.keys(rateLimitTiers).join(', ')}`);
      if (tier !== undefined && !(tier in rateLimitTiers)) {
        c.fail(`${f}.rate_limit_tier`, `unknown tier "${tier}"`, `use one of ${Object.keys(rateLimitTiers).join(', ')} (defined in ${path('rateLimitTiers')})`);
      }
      const enabled = cl['enabled'] ?? true;
      if (typeof enabled !== 'boolean') c.fail(`${f}.enabled`, `must be true or false, found ${describe(enabled)}`, 'write enabled: true or enabled: false');
      const description = cl['description'] ?? '';
      if (typeof description !== 'string') c.fail(`${f}.description`, 'must be a string', 'quote the description');
      clients.push({ id: id ?? '', description: String(description), role: role ?? '', rateLimitTier: tier ?? '', enabled: enabled === true });
    }
  }

  if (issues.length > 0) throw new PolicyError(issues);
  return deepFreeze({ clients, roles, rateLimitTiers, egressServices, sandboxTiers });
}

/**
 * A role's `sandbox_tiers`: `all`, or a list of sandbox tier ids; absent means none (a role may
 * create no sandbox unless the policy grants it tiers). `known` is undefined when
 * sandbox-tiers.yaml could not be read. Returns the ids expanded and sorted.
 */
function parseRoleSandboxTiers(c: FileCheck, v: Json, field: string, known: readonly string[] | undefined, tiersFile: string): string[] {
  const all = [...(known ?? [])].sort();
  const fix = known
    ? `use one of ${known.join(', ')} (defined in ${tiersFile}), or write \`sandbox_tiers: all\``
    : `name tiers defined in ${tiersFile}, or write \`sandbox_tiers: all\``;
  if (v === undefined || v === null) return [];
  if (v === 'all') return all;
  const list = c.list(v, field, `list sandbox tiers, e.g. [default, standard], write \`all\`, or \`[]\` for none`);
  if (!list) return [];
  const out: string[] = [];
  for (const [i, t] of list.entries()) {
    if (typeof t !== 'string') {
      c.fail(`${field}[${i}]`, `must be a sandbox tier id, found ${describe(t)}`, fix);
    } else if (known && !known.includes(t)) {
      c.fail(`${field}[${i}]`, `unknown sandbox tier "${t}"`, fix);
    } else if (out.includes(t)) {
      c.fail(`${field}[${i}]`, `lists "${t}" twice`, 'remove the duplicate');
    } else {
      out.push(t);
    }
  }
  return out.sort();
}

/**
 * A sandbox tier's `token_budget`: `{tokens_per_hour, tokens_per_day}` or `{unlimited: true}`.
 * A tier that grants an LLM service must state one (an unmetered LLM bill is never a default);
 * a tier that grants none must not (it would limit nothing).
 */
function parseTokenBudget(c: FileCheck, v: Json, field: string, llmServices: readonly string[]): TokenBudget | null {
  const fix = 'write token_budget: {tokens_per_hour: N, tokens_per_day: N}, or token_budget: {unlimited: true}';
  if (v === undefined || v === null) {
    if (llmServices.length > 0) c.fail(field, `is missing, but the tier grants the LLM services ${llmServices.join(', ')}`, fix);
    return null;
  }
  if (llmServices.length === 0) return c.fail(field, 'is set, but the tier grants no LLM service (llm_api in egress-services.yaml)', 'remove it') ?? null;
  const b = c.object(v, field, fix);
  if (!b) return null;
  c.keys(b, field, ['tokens_per_hour', 'tokens_per_day', 'unlimited']);
  const [tokensPerHour, tokensPerDay] = c.windowLimits(b, field, ['tokens_per_hour', 'tokens_per_day'], 'budget');
  return { tokensPerHour, tokensPerDay };
}

function parseBaseUrl(c: FileCheck, v: Json, field: string): EgressService['baseUrl'] | undefined {
  const fix = 'write scheme and host only, e.g. https://api.example.com or https://api.example.com:8443';
  const s = c.string(v, field, fix);
  if (s === undefined) return undefined;
  const u = parseServiceUrl(s);
  return 'problem' in u ? c.fail(field, u.problem, fix) : u;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
