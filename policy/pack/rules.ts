// The rules of the policy pack, as pure functions over resources as Pulumi shows them to a policy
// pack (plain JSON; values unknown in a preview are UNKNOWN and never count as a violation; which
// property paths hold secrets is given). index.ts wires them into @pulumi/policy. What the rules
// check against (which ports are internal, which workload may publish which) is the pack's
// config, written from components/layout.ts by the npm scripts: one definition of each fact.

import { gunzipSync } from 'node:zlib';
import { BUNDLE_DATA_PATH } from '../bundle.ts';

/** A value a preview does not know yet. */
export const UNKNOWN: unique symbol = Symbol('unknown');
export type Plain = string | number | boolean | null | typeof UNKNOWN | Plain[] | { [k: string]: Plain };

export interface PackResource {
  /** e.g. docker:index/container:Container, kubernetes:apps/v1:Deployment. */
  readonly type: string;
  /** The resource's name in the stack (Pulumi's, not the container's or object's). */
  readonly name: string;
  readonly props: { readonly [k: string]: Plain };
  /** Whether the property at this path (keys and indexes from props) is a Pulumi secret, or lies inside one. */
  readonly isSecret: (path: readonly (string | number)[]) => boolean;
}

/** What the rules check against: from the deploy's layout (components/policy-pack.ts). */
export interface PackFacts {
  /** The ports a workload may publish outside its internal network, by workload name. Any other published port is refused. */
  readonly publishable: Readonly<Record<string, readonly number[]>>;
  /** What each internal port is, by number, for the messages (e.g. 9901: Envoy admin). */
  readonly portNames: Readonly<Record<string, string>>;
  /** The gateway's workload name: exposed beyond loopback, its listener must terminate TLS. */
  readonly gateway: string;
  /** The bundle server's workload name: it serves the policy bundle whose egress services need allowlists. */
  readonly bundleServer: string;
  /** The label (Docker) and Kubernetes label that name a resource's workload. */
  readonly workloadLabel: { readonly docker: string; readonly kubernetes: string };
  /** The Docker label saying what a container is (`workload`, or a never-started `files` seed, or a `live` file writer). */
  readonly roleLabel: string;
}

export type RuleName = 'internal-ports-stay-internal' | 'workloads-hardened' | 'no-plain-secrets' | 'tls-beyond-loopback' | 'egress-allowlists';

/** Each rule and what it demands (the pack's policy descriptions). */
export const RULES: Readonly<Record<RuleName, string>> = {
  'internal-ports-stay-internal':
    'No admin, stats, OPA, agentd, bundle server or egress port is published outside the internal network: only the gateway API port (and the monitoring UIs) may be.',
  'workloads-hardened':
    'Every workload runs as a non-root user, with a read-only root filesystem, all Linux capabilities dropped, no privilege escalation and not privileged.',
  'no-plain-secrets': 'No secret value in a ConfigMap, a plain environment variable, a plain file upload, a label or a non-secret stack output.',
  'tls-beyond-loopback': 'A gateway reachable beyond loopback (a published port on another address, a NodePort or LoadBalancer Service) terminates TLS.',
  'egress-allowlists':
    'Every egress service in the deployed policy bundle has a method allowlist and a path allowlist, and no path pattern that matches every path.',
};

export interface Violation {
  readonly rule: RuleName;
  readonly message: string;
}

// ---- reading resources -----------------------------------------------------------------------------

const isObj = (v: Plain | undefined): v is { [k: string]: Plain } => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: Plain | undefined): Plain[] => (Array.isArray(v) ? v : []);
const obj = (v: Plain | undefined): { [k: string]: Plain } => (isObj(v) ? v : {});
const str = (v: Plain | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

const CONTAINER = 'docker:index/container:Container';
const SERVICE = 'kubernetes:core/v1:Service';
const CONFIG_MAP = 'kubernetes:core/v1:ConfigMap';
const K8S_SECRET = 'kubernetes:core/v1:Secret';
const STACK = 'pulumi:pulumi:Stack';
/** Kubernetes kinds with a pod template, and where the pod spec is in each. */
const POD_SPECS: Readonly<Record<string, readonly string[]>> = {
  'kubernetes:apps/v1:Deployment': ['spec', 'template', 'spec'],
  'kubernetes:apps/v1:StatefulSet': ['spec', 'template', 'spec'],
  'kubernetes:apps/v1:DaemonSet': ['spec', 'template', 'spec'],
  'kubernetes:apps/v1:ReplicaSet': ['spec', 'template', 'spec'],
  'kubernetes:batch/v1:Job': ['spec', 'template', 'spec'],
  'kubernetes:batch/v1:CronJob': ['spec', 'jobTemplate', 'spec', 'template', 'spec'],
  'kubernetes:core/v1:Pod': ['spec'],
};

const at = (v: Plain | undefined, path: readonly string[]): Plain | undefined => path.reduce<Plain | undefined>((x, k) => (isObj(x) ? x[k] : undefined), v);

/** A Docker container's label value. */
const dockerLabel = (r: PackResource, label: string) => str(obj(arr(r.props['labels']).find((l) => obj(l)['label'] === label))['value']);
const k8sLabel = (r: PackResource, label: string) => str(obj(at(r.props['metadata'], ['labels']))[label]);
const describe = (r: PackResource) => `${r.type.split(':').pop()} ${r.name}`;

/** The role of a Docker container: workload unless the target says it is a seed or a writer. */
const dockerRole = (r: PackResource, facts: PackFacts) => dockerLabel(r, facts.roleLabel) ?? 'workload';

const isLoopback = (ip: string) => ip.startsWith('127.') || ip === '::1' || ip === 'localhost';

// ---- internal-ports-stay-internal -------------------------------------------------------------------

const portName = (facts: PackFacts, port: Plain | undefined) =>
  typeof port === 'number' && facts.portNames[String(port)] ? ` (${facts.portNames[String(port)]})` : '';

/** Published ports a workload may not publish. */
export function checkPublishedPorts(r: PackResource, facts: PackFacts): Violation[] {
  const out: Violation[] = [];
  const refuse = (message: string) => out.push({ rule: 'internal-ports-stay-internal', message });
  if (r.type === CONTAINER) {
    const workload = dockerLabel(r, facts.workloadLabel.docker) ?? '(unlabelled)';
    const allowed = facts.publishable[workload] ?? [];
    for (const p of arr(r.props['ports'])) {
      const internal = obj(p)['internal'];
      if (internal === UNKNOWN) continue;
      if (!allowed.includes(internal as number))
        refuse(
          `${describe(r)} publishes port ${String(internal)}${portName(facts, internal)} of workload ${workload} on the host` +
            `${str(obj(p)['ip']) ? ` (${str(obj(p)['ip'])})` : ''}: only ${allowed.length > 0 ? `port ${allowed.join(', ')}` : 'nothing'} of ${workload} may be published`,
        );
    }
  }
  if (r.type === SERVICE) {
    const spec = obj(r.props['spec']);
    const type = spec['type'];
    const external = type === 'NodePort' || type === 'LoadBalancer' || arr(spec['externalIPs']).length > 0;
    if (!external) return out;
    const workload = str(obj(spec['selector'])[facts.workloadLabel.kubernetes]) ?? '(no workload selector)';
    const allowed = facts.publishable[workload] ?? [];
    for (const p of arr(spec['ports'])) {
      const target = obj(p)['targetPort'] ?? obj(p)['port'];
      if (target === UNKNOWN) continue;
      if (!allowed.includes(target as number))
        refuse(
          `${describe(r)} (${String(type)}) exposes port ${String(target)}${portName(facts, target)} of workload ${workload} outside the cluster: only ${allowed.length > 0 ? `port ${allowed.join(', ')}` : 'nothing'} of ${workload} may be`,
        );
    }
  }
  return out;
}

// ---- workloads-hardened -----------------------------------------------------------------------------

const rootUser = (user: string) => /^(0|root)(:.*)?$/.test(user.trim()) || user.trim() === '';

/** Workload containers that could run as root, write their root filesystem or keep capabilities. */
export function checkHardening(r: PackResource, facts: PackFacts): Violation[] {
  const out: Violation[] = [];
  const refuse = (what: string, why: string) => out.push({ rule: 'workloads-hardened', message: `${what} ${why}` });
  if (r.type === CONTAINER) {
    const role = dockerRole(r, facts);
    const p = r.props;
    const drops = p['capabilities'] === UNKNOWN ? [UNKNOWN] : arr(obj(p['capabilities'])['drops']);
    const dropsAll = drops.includes(UNKNOWN) || drops.some((d) => typeof d === 'string' && d.toUpperCase() === 'ALL');
    const what = `${describe(r)} (${role})`;
    if (role === 'files') {
      // A seed that only holds files for a volume: it never starts, so it runs nothing at all.
      if (p['start'] !== false && p['start'] !== UNKNOWN) refuse(what, 'is a file seed but would start: set start false');
      return out;
    }
    if (p['privileged'] === true) refuse(what, 'is privileged');
    if (!dropsAll) refuse(what, 'keeps Linux capabilities: set capabilities.drops to ["ALL"]');
    if (role === 'live') {
      // The writer that installs live files: it runs once, as the volume owner, with no network.
      if (p['networkMode'] !== 'none' && p['networkMode'] !== UNKNOWN) refuse(what, 'is a file writer with a network: set networkMode none');
      if (arr(p['ports']).length > 0) refuse(what, 'is a file writer that publishes ports');
      return out;
    }
    const user = p['user'];
    if (user !== UNKNOWN && (typeof user !== 'string' || rootUser(user)))
      refuse(what, `runs as root (user ${JSON.stringify(user ?? '')}): set a non-root uid:gid`);
    if (p['readOnly'] !== true && p['readOnly'] !== UNKNOWN) refuse(what, 'has a writable root filesystem: set readOnly true');
    const opts = arr(p['securityOpts']);
    if (!opts.includes(UNKNOWN) && !opts.some((o) => typeof o === 'string' && /^no-new-privileges(:true)?$/.test(o)))
      refuse(what, 'allows privilege escalation: add securityOpts no-new-privileges');
    return out;
  }
  const podPath = POD_SPECS[r.type];
  if (!podPath) return out;
  const pod = at(r.props, podPath);
  if (pod === UNKNOWN || !isObj(pod)) return out;
  const podCtx = obj(pod['securityContext']);
  for (const c of [...arr(pod['initContainers']), ...arr(pod['containers'])]) {
    const ctx = obj(obj(c)['securityContext']);
    const what = `${describe(r)} container ${str(obj(c)['name']) ?? '?'}`;
    const pick = (k: string) => (ctx[k] !== undefined ? ctx[k] : podCtx[k]);
    const nonRoot = pick('runAsNonRoot');
    const uid = pick('runAsUser');
    if (nonRoot !== UNKNOWN && uid !== UNKNOWN && (uid === 0 || (nonRoot !== true && !(typeof uid === 'number' && uid > 0))))
      refuse(what, 'may run as root: set securityContext.runAsNonRoot true and a non-zero runAsUser');
    if (ctx['readOnlyRootFilesystem'] !== true && ctx['readOnlyRootFilesystem'] !== UNKNOWN)
      refuse(what, 'has a writable root filesystem: set securityContext.readOnlyRootFilesystem true');
    const drops = arr(obj(ctx['capabilities'])['drop']);
    if (ctx['capabilities'] !== UNKNOWN && !drops.includes(UNKNOWN) && !drops.some((d) => d === 'ALL'))
      refuse(what, 'keeps Linux capabilities: set securityContext.capabilities.drop ["ALL"]');
    if (ctx['allowPrivilegeEscalation'] !== false && ctx['allowPrivilegeEscalation'] !== UNKNOWN)
      refuse(what, 'allows privilege escalation: set securityContext.allowPrivilegeEscalation false');
    if (ctx['privileged'] === true) refuse(what, 'is privileged');
  }
  return out;
}

// ---- no-plain-secrets -------------------------------------------------------------------------------

/** Secrets shorter than this are not looked for (they would match by chance). */
const MIN_SECRET_LENGTH = 8;

/**
 * Whether a string inside a secret is itself part of the secret. The engine marks a whole list
 * secret when one element holds a secret (a container's uploads: every file's content and path),
 * so the file names and absolute paths around a secret are not taken for secrets.
 */
const partOfSecret = (key: string | number | undefined, s: string) => key !== 'file' && !/^\/[\w./-]*$/.test(s);

/** Every string a Pulumi secret holds in the stack, and the values of Kubernetes Secrets. */
function secretValues(resources: readonly PackResource[]): Set<string> {
  const found = new Set<string>();
  const add = (s: string) => {
    if (s.length >= MIN_SECRET_LENGTH) found.add(s);
  };
  const walk = (r: PackResource, v: Plain | undefined, path: (string | number)[], inSecret: boolean) => {
    const secret = inSecret || r.isSecret(path);
    if (typeof v === 'string' && secret && partOfSecret(path.at(-1), v)) add(v);
    else if (Array.isArray(v)) for (const [i, x] of v.entries()) walk(r, x, [...path, i], secret);
    else if (isObj(v)) for (const [k, x] of Object.entries(v)) walk(r, x, [...path, k], secret);
  };
  for (const r of resources) {
    walk(r, r.props, [], false);
    if (r.type === K8S_SECRET) {
      for (const v of Object.values(obj(r.props['stringData']))) if (typeof v === 'string') add(v);
      for (const v of Object.values(obj(r.props['data']))) if (typeof v === 'string') add(Buffer.from(v, 'base64').toString('utf8'));
    }
    if (r.type.startsWith('random:index/random') && typeof r.props['result'] === 'string') add(r.props['result']);
  }
  return found;
}

/** The places a value is plain text in, with the path of each (only places that are not Pulumi secrets). */
function plainPlaces(r: PackResource): { where: string; text: string }[] {
  const places: { where: string; text: string }[] = [];
  const take = (where: string, v: Plain | undefined, path: (string | number)[], decode = false) => {
    if (typeof v !== 'string' || r.isSecret(path)) return;
    places.push({ where, text: decode ? Buffer.from(v, 'base64').toString('latin1') : v });
  };
  if (r.type === CONFIG_MAP) {
    for (const [k, v] of Object.entries(obj(r.props['data']))) take(`${describe(r)} data.${k}`, v, ['data', k]);
    for (const [k, v] of Object.entries(obj(r.props['binaryData']))) take(`${describe(r)} binaryData.${k}`, v, ['binaryData', k], true);
  }
  if (r.type === CONTAINER) {
    for (const [i, e] of arr(r.props['envs']).entries()) take(`${describe(r)} env ${String(e).split('=')[0]}`, e, ['envs', i]);
    arr(r.props['uploads']).forEach((u, i) => {
      const file = str(obj(u)['file']) ?? '?';
      take(`${describe(r)} upload ${file}`, obj(u)['content'], ['uploads', i, 'content']);
      take(`${describe(r)} upload ${file}`, obj(u)['contentBase64'], ['uploads', i, 'contentBase64'], true);
    });
    for (const [i, l] of arr(r.props['labels']).entries()) take(`${describe(r)} label ${str(obj(l)['label'])}`, obj(l)['value'], ['labels', i, 'value']);
  }
  const podPath = POD_SPECS[r.type];
  if (podPath) {
    const pod = obj(at(r.props, podPath));
    for (const key of ['initContainers', 'containers']) {
      for (const [ci, c] of arr(pod[key]).entries())
        for (const [ei, e] of arr(obj(c)['env']).entries())
          take(`${describe(r)} container ${str(obj(c)['name'])} env ${str(obj(e)['name'])}`, obj(e)['value'], [...podPath, key, ci, 'env', ei, 'value']);
    }
  }
  if (r.type.startsWith('kubernetes:')) {
    for (const kind of ['labels', 'annotations'])
      for (const [k, v] of Object.entries(obj(at(r.props['metadata'], [kind])))) take(`${describe(r)} ${kind.slice(0, -1)} ${k}`, v, ['metadata', kind, k]);
  }
  if (r.type === STACK) {
    const walk = (v: Plain | undefined, path: (string | number)[]) => {
      if (r.isSecret(path)) return;
      if (typeof v === 'string') places.push({ where: `stack output ${path.join('.')}`, text: v });
      else if (Array.isArray(v)) for (const [i, x] of v.entries()) walk(x, [...path, i]);
      else if (isObj(v)) for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
    };
    walk(r.props, []);
  }
  return places;
}

/** Secret values found in plain places: ConfigMaps, environment variables, plain uploads, labels, non-secret outputs. */
export function checkPlainSecrets(resources: readonly PackResource[]): Violation[] {
  const secrets = [...secretValues(resources)];
  const out: Violation[] = [];
  for (const r of resources) {
    for (const { where, text } of plainPlaces(r)) {
      const hit = secrets.find((s) => text.includes(s) || text.includes(Buffer.from(s).toString('base64')));
      // The message names where the value is, never the value.
      if (hit) out.push({ rule: 'no-plain-secrets', message: `${where} holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)` });
    }
  }
  return out;
}

// ---- tls-beyond-loopback ----------------------------------------------------------------------------

/** The text of every file the gateway's resources hold (uploads, ConfigMaps). */
function gatewayFiles(resources: readonly PackResource[], facts: PackFacts): string[] {
  const texts: string[] = [];
  for (const r of resources) {
    if (r.type === CONTAINER && dockerLabel(r, facts.workloadLabel.docker) === facts.gateway) {
      for (const u of arr(r.props['uploads'])) {
        const c = obj(u)['content'];
        const b = obj(u)['contentBase64'];
        if (typeof c === 'string') texts.push(c);
        if (typeof b === 'string') texts.push(Buffer.from(b, 'base64').toString('utf8'));
      }
    }
    if (r.type === CONFIG_MAP && k8sLabel(r, facts.workloadLabel.kubernetes) === facts.gateway)
      for (const v of Object.values(obj(r.props['data']))) if (typeof v === 'string') texts.push(v);
  }
  return texts;
}

/** A gateway reachable beyond loopback whose listener does not terminate TLS. */
export function checkGatewayTls(resources: readonly PackResource[], facts: PackFacts): Violation[] {
  const exposures: string[] = [];
  for (const r of resources) {
    if (r.type === CONTAINER && dockerLabel(r, facts.workloadLabel.docker) === facts.gateway && dockerRole(r, facts) === 'workload') {
      for (const p of arr(r.props['ports'])) {
        const ip = obj(p)['ip'];
        if (ip === UNKNOWN) continue;
        if (typeof ip !== 'string' || !isLoopback(ip))
          exposures.push(`${describe(r)} publishes port ${String(obj(p)['external'])} on ${typeof ip === 'string' ? ip : 'every address'}`);
      }
    }
    if (r.type === SERVICE && str(obj(obj(r.props['spec'])['selector'])[facts.workloadLabel.kubernetes]) === facts.gateway) {
      const spec = obj(r.props['spec']);
      if (spec['type'] === 'NodePort' || spec['type'] === 'LoadBalancer' || arr(spec['externalIPs']).length > 0)
        exposures.push(`${describe(r)} is a ${String(spec['type'])} Service`);
    }
  }
  if (exposures.length === 0) return [];
  const files = gatewayFiles(resources, facts);
  // Every listener file known and none with a TLS context: plaintext. Unknown files (a first preview): no verdict.
  if (files.some((t) => t.includes('DownstreamTlsContext'))) return [];
  if (files.length === 0) return [];
  return [
    {
      rule: 'tls-beyond-loopback',
      message: `the gateway is reachable beyond loopback (${exposures.join('; ')}) but its listener has no TLS: give it a certificate (see README, "Security for production")`,
    },
  ];
}

// ---- egress-allowlists ------------------------------------------------------------------------------

/** Files of a tar archive (ustar, regular files only). */
function untar(tar: Buffer): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const field = (a: number, n: number) =>
      h
        .subarray(a, a + n)
        .toString('latin1')
        .replace(/\0.*$/s, '');
    const size = Number.parseInt(field(124, 12).trim() || '0', 8);
    if (field(156, 1) === '0' || field(156, 1) === '') files[field(0, 100)] = tar.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** The policy bundles the bundle server is given (tar.gz), from Docker uploads or ConfigMaps. */
function servedBundles(resources: readonly PackResource[], facts: PackFacts): { where: string; bytes: Buffer }[] {
  const out: { where: string; bytes: Buffer }[] = [];
  for (const r of resources) {
    if (r.type === CONTAINER && dockerLabel(r, facts.workloadLabel.docker) === facts.bundleServer) {
      for (const u of arr(r.props['uploads'])) {
        const b = obj(u)['contentBase64'];
        if (typeof b === 'string' && (str(obj(u)['file']) ?? '').endsWith('.tar.gz'))
          out.push({ where: `${describe(r)} ${str(obj(u)['file'])}`, bytes: Buffer.from(b, 'base64') });
      }
    }
    if (r.type === CONFIG_MAP && k8sLabel(r, facts.workloadLabel.kubernetes) === facts.bundleServer) {
      for (const [k, v] of Object.entries(obj(r.props['binaryData'])))
        if (typeof v === 'string' && k.endsWith('.tar.gz')) out.push({ where: `${describe(r)} ${k}`, bytes: Buffer.from(v, 'base64') });
    }
  }
  return out;
}

/** A compiled path pattern (policy/paths.ts) that matches every path: no segment before a trailing `**`. */
const matchesEverything = (p: Plain) => arr(obj(p)['segments']).length === 0 && obj(p)['prefix'] === true;

/** Egress services of the deployed bundle without a method or a path allowlist, or with a pattern that allows every path. */
export function checkEgressAllowlists(resources: readonly PackResource[], facts: PackFacts): Violation[] {
  const out: Violation[] = [];
  for (const { where, bytes } of servedBundles(resources, facts)) {
    let data: Plain;
    try {
      const file = untar(gunzipSync(bytes))[BUNDLE_DATA_PATH];
      if (!file) throw new Error(`no ${BUNDLE_DATA_PATH}`);
      data = JSON.parse(file.toString('utf8')) as Plain;
    } catch (e) {
      out.push({
        rule: 'egress-allowlists',
        message: `${where}: the policy bundle cannot be read (${(e as Error).message}), so its egress allowlists cannot be checked`,
      });
      continue;
    }
    for (const [id, s] of Object.entries(obj(at(data, ['egress', 'services'])))) {
      const methods = Object.keys(obj(obj(s)['methods']));
      const patterns = arr(obj(s)['patterns']);
      if (methods.length === 0) out.push({ rule: 'egress-allowlists', message: `egress service ${id} has no method allowlist (policy/data: allowed_methods)` });
      if (patterns.length === 0) out.push({ rule: 'egress-allowlists', message: `egress service ${id} has no path allowlist (policy/data: allowed_paths)` });
      for (const p of patterns.filter(matchesEverything))
        out.push({
          rule: 'egress-allowlists',
          message: `egress service ${id} allows every path (${str(obj(p)['source']) ?? '?'}): list the paths agents need`,
        });
    }
  }
  return out;
}
