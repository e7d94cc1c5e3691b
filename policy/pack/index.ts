// The agentd policy pack (@pulumi/policy): the rules of rules.ts, mandatory, run by the Pulumi
// engine in `npm run preview`, `npm run up` and CI (`--policy-pack policy/pack/run`). Each rule
// takes the pack's config, `facts` (written from components/layout.ts by the npm scripts), so the
// pack refuses to run without it rather than check against guesses.
//
// Secrets: @pulumi/policy hands policies plain values, secrets unwrapped, so a rule could not
// tell a secret output from a plain one. The pack keeps, for each resource's properties, the
// paths the engine marked secret (read from the wire form before it is unwrapped).

import policy, { type ResourceValidationPolicy, type StackValidationPolicy } from '@pulumi/policy';
import deserializeModule from '@pulumi/policy/deserialize.js';
import proxyModule from '@pulumi/policy/proxy.js';
import {
  RULES,
  UNKNOWN,
  checkEgressAllowlists,
  checkGatewayTls,
  checkHardening,
  checkPlainSecrets,
  checkPublishedPorts,
  type PackFacts,
  type PackResource,
  type Plain,
  type RuleName,
  type Violation,
} from './rules.ts';

/** The wire marker of a secret value (Pulumi's RPC encoding). */
const SIG_KEY = '4dabf18193072939515e22adb298388d';
const SECRET_SIG = '1b47061264138c4ac30d75fd1eb44270';

/** Paths (keys joined by NUL) of secret values in properties, by the deserialized object. */
const secretPaths = new WeakMap<object, Set<string>>();
const key = (path: readonly (string | number)[]) => path.join('\0');

function markedSecret(wire: unknown, path: (string | number)[], found: Set<string>): void {
  if (Array.isArray(wire)) for (const [i, x] of wire.entries()) markedSecret(x, [...path, i], found);
  else if (wire && typeof wire === 'object') {
    const o = wire as Record<string, unknown>;
    if (o[SIG_KEY] === SECRET_SIG) found.add(key(path));
    else for (const [k, v] of Object.entries(o)) markedSecret(v, [...path, k], found);
  }
}

// Both modules are internal to @pulumi/policy (their exports are not in its type declarations).
type Deserialize = (struct: { toJavaScript(): unknown } | undefined, proxySecrets: boolean) => Record<string, unknown>;
const deserialize = deserializeModule as unknown as { deserializeProperties: Deserialize };
const proxy = proxyModule as unknown as Record<string, unknown> & { getSpecialProxyTarget: string };
const original = deserialize.deserializeProperties;
deserialize.deserializeProperties = (struct, proxySecrets) => {
  const props = original(struct, proxySecrets);
  const found = new Set<string>();
  if (struct) markedSecret(struct.toJavaScript(), [], found);
  if (props && typeof props === 'object') secretPaths.set(props, found);
  return props;
};

const UNKNOWNS: ReadonlySet<unknown> = new Set(
  [
    'unknownBooleanValue',
    'unknownNumberValue',
    'unknownStringValue',
    'unknownArrayValue',
    'unknownAssetValue',
    'unknownArchiveValue',
    'unknownObjectValue',
  ].map((n) => proxy[n]),
);

/** Properties as plain JSON, values unknown in a preview as UNKNOWN, read without the proxy that throws on them. */
function plain(v: unknown): Plain {
  if (UNKNOWNS.has(v)) return UNKNOWN;
  if (v === undefined || v === null) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, plain(x)]));
  return null;
}

function packResource(r: { type: string; name: string; props: Record<string, unknown> }): PackResource {
  const target = (r.props[proxy.getSpecialProxyTarget] as Record<string, unknown> | undefined) ?? r.props;
  const secrets = secretPaths.get(target) ?? new Set<string>();
  const isSecret = (path: readonly (string | number)[]) => {
    for (let n = path.length; n >= 0; n--) if (secrets.has(key(path.slice(0, n)))) return true;
    return false;
  };
  return { type: r.type, name: r.name, props: plain(target) as { [k: string]: Plain }, isSecret };
}

const configSchema = {
  properties: { facts: { type: 'object' as const, description: 'What the rules check against: written by the npm scripts (components/policy-pack.ts).' } },
  required: ['facts'],
};
const factsOf = (args: { getConfig<T extends object>(): T }) => args.getConfig<{ facts: PackFacts }>().facts;
const report = (rule: RuleName, violations: readonly Violation[], reportViolation: (message: string) => void) => {
  for (const v of violations) if (v.rule === rule) reportViolation(v.message);
};

const resourceRule = (name: RuleName, check: (r: PackResource, facts: PackFacts) => Violation[]): ResourceValidationPolicy => ({
  name,
  description: RULES[name],
  enforcementLevel: 'mandatory',
  configSchema,
  validateResource: (args, reportViolation) => report(name, check(packResource(args), factsOf(args)), reportViolation),
});

const stackRule = (name: RuleName, check: (rs: readonly PackResource[], facts: PackFacts) => Violation[]): StackValidationPolicy => ({
  name,
  description: RULES[name],
  enforcementLevel: 'mandatory',
  configSchema,
  validateStack: (args, reportViolation) => report(name, check(args.resources.map(packResource), factsOf(args)), reportViolation),
});

new policy.PolicyPack('agentd-platform', {
  policies: [
    resourceRule('internal-ports-stay-internal', checkPublishedPorts),
    resourceRule('workloads-hardened', checkHardening),
    stackRule('no-plain-secrets', checkPlainSecrets),
    stackRule('tls-beyond-loopback', checkGatewayTls),
    stackRule('egress-allowlists', checkEgressAllowlists),
  ],
});
