// The policy pack's rules (policy/pack/rules.ts) on resources as Pulumi shows them to a pack:
// each rule passes what the targets deploy and refuses a crafted bad resource, and a value a
// preview does not know yet is never a violation. The engine running the pack: test/policy/pack.
import { describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { policyPackConfig, policyPackFacts } from '../../components/policy-pack.ts';
import { BUNDLE_DATA_PATH, tarGz } from '../../policy/bundle.ts';
import {
  UNKNOWN,
  checkEgressAllowlists,
  checkGatewayTls,
  checkHardening,
  checkPlainSecrets,
  checkPublishedPorts,
  type PackResource,
  type Plain,
} from '../../policy/pack/rules.ts';

const facts = policyPackFacts();
const res = (type: string, name: string, props: Record<string, Plain>, secretPaths: string[] = []): PackResource => ({
  type,
  name,
  props,
  isSecret: (path) => secretPaths.some((p) => path.join('.') === p || path.join('.').startsWith(`${p}.`)),
});
const CONTAINER = 'docker:index/container:Container';
const labels = (workload: string, role = 'workload') => [
  { label: 'agentd.workload', value: workload },
  { label: 'agentd.role', value: role },
];
const hardened = { user: '10001:10001', readOnly: true, capabilities: { drops: ['ALL'] }, securityOpts: ['no-new-privileges'] };
const container = (workload: string, extra: Record<string, Plain> = {}, role = 'workload') =>
  res(CONTAINER, `agentd-${workload}`, { labels: labels(workload, role), ...hardened, ...extra });
const rulesOf = (vs: readonly { rule: string }[]) => vs.map((v) => v.rule);

describe('facts and config', () => {
  it('lets the gateway publish its API port and the monitoring UIs theirs, nothing else; every rule mandatory, TLS advisory only when plaintext is acknowledged', () => {
    expect(facts.publishable).toEqual({ gateway: [8080], grafana: [3000], prometheus: [9090] });
    expect(facts.portNames['9901']).toBe('Envoy admin');
    const strict = policyPackConfig({ allowPlaintext: false });
    expect(Object.values(strict).map((c) => c.enforcementLevel)).toEqual(['mandatory', 'mandatory', 'mandatory', 'mandatory', 'mandatory']);
    expect(policyPackConfig({ allowPlaintext: true })['tls-beyond-loopback'].enforcementLevel).toBe('advisory');
    expect(policyPackConfig({ allowPlaintext: true })['workloads-hardened'].enforcementLevel).toBe('mandatory');
  });
});

describe('internal-ports-stay-internal', () => {
  it('passes the gateway API port; refuses an admin port, any OPA or agentd port, an unlabelled container publishing anything', () => {
    expect(checkPublishedPorts(container('gateway', { ports: [{ internal: 8080, external: 8080, ip: '127.0.0.1' }] }), facts)).toEqual([]);
    const admin = checkPublishedPorts(container('gateway', { ports: [{ internal: 9901, external: 19901, ip: '127.0.0.1' }] }), facts);
    expect(admin.map((v) => v.message)).toEqual([
      'Container agentd-gateway publishes port 9901 (Envoy admin) of workload gateway on the host (127.0.0.1): only port 8080 of gateway may be published',
    ]);
    expect(rulesOf(checkPublishedPorts(container('opa', { ports: [{ internal: 9191, external: 9191 }] }), facts))).toEqual(['internal-ports-stay-internal']);
    expect(checkPublishedPorts(container('agentd', { ports: [{ internal: 8090, external: 8090 }] }), facts)[0]!.message).toMatch(
      /agentd HTTP API.*only nothing of agentd/,
    );
    expect(rulesOf(checkPublishedPorts(res(CONTAINER, 'x', { ports: [{ internal: 80, external: 80 }] }), facts))).toEqual(['internal-ports-stay-internal']);
    expect(checkPublishedPorts(container('opa', { ports: [{ internal: UNKNOWN, external: 1 }] }), facts)).toEqual([]);
  });

  it('on Kubernetes: a ClusterIP Service is internal; a NodePort or LoadBalancer Service may carry only the gateway API port', () => {
    const svc = (type: string, selector: string, ports: Plain[]) =>
      res('kubernetes:core/v1:Service', `${selector}-svc`, { spec: { type, selector: { 'app.kubernetes.io/name': selector }, ports } });
    expect(checkPublishedPorts(svc('ClusterIP', 'opa', [{ port: 9191, targetPort: 9191 }]), facts)).toEqual([]);
    expect(checkPublishedPorts(svc('LoadBalancer', 'gateway', [{ name: 'http', port: 443, targetPort: 8080 }]), facts)).toEqual([]);
    expect(checkPublishedPorts(svc('NodePort', 'gateway', [{ name: 'stats', port: 9902, targetPort: 9902 }]), facts)[0]!.message).toMatch(
      /exposes port 9902 \(Envoy stats\) of workload gateway outside the cluster/,
    );
    expect(rulesOf(checkPublishedPorts(svc('LoadBalancer', 'agentd', [{ port: 8091 }]), facts))).toEqual(['internal-ports-stay-internal']);
  });
});

describe('workloads-hardened', () => {
  it('passes a hardened workload, a never-started file seed and a network-less writer', () => {
    expect(checkHardening(container('opa'), facts)).toEqual([]);
    expect(checkHardening(res(CONTAINER, 'seed', { labels: labels('opa', 'files'), start: false, user: '' }), facts)).toEqual([]);
    expect(
      checkHardening(
        res(CONTAINER, 'writer', { labels: labels('gateway', 'live'), user: '0:0', networkMode: 'none', capabilities: { drops: ['ALL'] } }),
        facts,
      ),
    ).toEqual([]);
  });

  it('refuses root, a writable root, kept capabilities, privilege escalation, privileged; a seed that starts, a writer on a network', () => {
    const messages = (extra: Record<string, Plain>) => checkHardening(container('opa', extra), facts).map((v) => v.message);
    expect(messages({ user: '0:0' })).toEqual(['Container agentd-opa (workload) runs as root (user "0:0"): set a non-root uid:gid']);
    expect(messages({ user: 'root' })).toHaveLength(1);
    expect(messages({ readOnly: false })).toEqual(['Container agentd-opa (workload) has a writable root filesystem: set readOnly true']);
    expect(messages({ capabilities: { drops: ['NET_RAW'] } })[0]).toMatch(/keeps Linux capabilities/);
    expect(messages({ securityOpts: [] })[0]).toMatch(/no-new-privileges/);
    expect(messages({ privileged: true })).toEqual(['Container agentd-opa (workload) is privileged']);
    expect(checkHardening(res(CONTAINER, 'seed', { labels: labels('opa', 'files'), start: true }), facts)[0]!.message).toMatch(/file seed but would start/);
    expect(
      checkHardening(res(CONTAINER, 'w', { labels: labels('gateway', 'live'), networkMode: 'bridge', capabilities: { drops: ['ALL'] } }), facts)[0]!.message,
    ).toMatch(/file writer with a network/);
    expect(messages({ user: UNKNOWN, readOnly: UNKNOWN })).toEqual([]);
  });

  it('on Kubernetes: every container and init container of a pod template, with the pod-level context counted', () => {
    const good = { runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } };
    const deployment = (containers: Plain[], podCtx: Plain = { runAsNonRoot: true, runAsUser: 10001 }) =>
      res('kubernetes:apps/v1:Deployment', 'opa', { spec: { template: { spec: { securityContext: podCtx, containers } } } });
    expect(checkHardening(deployment([{ name: 'opa', securityContext: { ...good, runAsNonRoot: undefined as never } }]), facts)).toEqual([]);
    expect(checkHardening(deployment([{ name: 'opa', securityContext: good }], {}), facts)).toEqual([]);
    const bad = checkHardening(deployment([{ name: 'opa', securityContext: { readOnlyRootFilesystem: false } }], {}), facts).map((v) => v.message);
    expect(bad).toEqual([
      'Deployment opa container opa may run as root: set securityContext.runAsNonRoot true and a non-zero runAsUser',
      'Deployment opa container opa has a writable root filesystem: set securityContext.readOnlyRootFilesystem true',
      'Deployment opa container opa keeps Linux capabilities: set securityContext.capabilities.drop ["ALL"]',
      'Deployment opa container opa allows privilege escalation: set securityContext.allowPrivilegeEscalation false',
    ]);
    const cron = res('kubernetes:batch/v1:CronJob', 'job', {
      spec: { jobTemplate: { spec: { template: { spec: { containers: [{ name: 'c', securityContext: { ...good, runAsUser: 0 } }] } } } } },
    });
    expect(checkHardening(cron, facts)[0]!.message).toMatch(/CronJob job container c may run as root/);
  });
});

describe('no-plain-secrets', () => {
  const secret = 'Zq3vN8pXrT2wLm5K';
  const password = res('random:index/randomPassword:RandomPassword', 'agentd-token-key', { result: secret }, ['result']);

  it('passes secrets in Secrets, secret uploads and secret outputs', () => {
    const ok = [
      password,
      res('kubernetes:core/v1:Secret', 's', { stringData: { token: secret } }, ['stringData']),
      res(CONTAINER, 'seed', { labels: labels('agentd', 'files'), uploads: [{ file: '/run/secrets/agentd/gateway-token', content: secret }] }, [
        'uploads.0.content',
      ]),
      res('pulumi:pulumi:Stack', 'stack', { apiKeys: { ci: `agk_${secret}` }, gatewayUrl: 'http://127.0.0.1:8080' }, ['apiKeys']),
      res('kubernetes:core/v1:ConfigMap', 'cm', { data: { 'envoy.yaml': 'static_resources: {}' } }),
    ];
    expect(checkPlainSecrets(ok)).toEqual([]);
  });

  it('refuses a secret in a ConfigMap (plain or base64), a plain env, a plain upload, a label and a non-secret output, naming where and never the value', () => {
    const bad = [
      password,
      res('kubernetes:core/v1:ConfigMap', 'cm', { data: { token: `x${secret}x` }, binaryData: { blob: Buffer.from(secret).toString('base64') } }),
      res(CONTAINER, 'agentd', {
        envs: [`AGENTD_TOKEN=${secret}`],
        uploads: [{ file: '/etc/agentd/config.json', content: `{"t":"${secret}"}` }],
        labels: [{ label: 'k', value: secret }],
      }),
      res('kubernetes:apps/v1:Deployment', 'dep', { spec: { template: { spec: { containers: [{ name: 'c', env: [{ name: 'TOKEN', value: secret }] }] } } } }),
      res('pulumi:pulumi:Stack', 'stack', { leaked: secret, apiKeys: { ci: secret } }, ['apiKeys']),
    ];
    const messages = checkPlainSecrets(bad).map((v) => v.message);
    expect(messages).toEqual([
      'ConfigMap cm data.token holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'ConfigMap cm binaryData.blob holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'Container agentd env AGENTD_TOKEN holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'Container agentd upload /etc/agentd/config.json holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'Container agentd label k holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'Deployment dep container c env TOKEN holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
      'stack output leaked holds a secret value in plain text: deliver it as a secret (a Secret, a secret file)',
    ]);
    for (const m of messages) expect(m).not.toContain(secret);
  });

  it('does not take the file paths around a secret upload for secrets (the engine marks the whole list secret)', () => {
    const seed = res(
      CONTAINER,
      'seed',
      {
        labels: labels('agentd', 'files'),
        uploads: [
          { file: '/run/secrets/agentd/gateway-token', content: secret },
          { file: '/etc/agentd/x', content: '/run/secrets/agentd/jwks.json' },
        ],
      },
      ['uploads'],
    );
    const env = res(CONTAINER, 'agentd', {
      envs: ['AGENTD_GATEWAY_TOKEN_FILE=/run/secrets/agentd/gateway-token', 'AGENTD_TOKEN_KEY_FILE=/run/secrets/agentd/jwks.json'],
    });
    expect(checkPlainSecrets([seed, env])).toEqual([]);
    expect(rulesOf(checkPlainSecrets([seed, res(CONTAINER, 'leak', { envs: [`T=${secret}`] })]))).toEqual(['no-plain-secrets']);
  });

  it('finds the values of Kubernetes Secrets too, and ignores short values that would match by chance', () => {
    const fromSecret = [
      res('kubernetes:core/v1:Secret', 's', { data: { k: Buffer.from(secret).toString('base64') } }),
      res('kubernetes:core/v1:ConfigMap', 'cm', { data: { k: secret } }),
    ];
    expect(rulesOf(checkPlainSecrets(fromSecret))).toEqual(['no-plain-secrets']);
    const short = [
      res('random:index/randomPassword:RandomPassword', 'p', { result: 'abc' }, ['result']),
      res('kubernetes:core/v1:ConfigMap', 'cm', { data: { k: 'abc' } }),
    ];
    expect(checkPlainSecrets(short)).toEqual([]);
  });
});

describe('tls-beyond-loopback', () => {
  const writer = (lds: string) =>
    res(CONTAINER, 'gw-live', { labels: labels('gateway', 'live'), uploads: [{ file: '/staging/files/lds.yaml', content: lds }] });
  const plainListener = 'resources:\n- name: gateway\n  filter_chains: []\n';
  const tlsListener = `${plainListener}  transport_socket:\n    typed_config:\n      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n`;
  const gateway = (ip: Plain) => container('gateway', { ports: [{ internal: 8080, external: 8443, ip }] });

  it('passes a loopback gateway without TLS and an exposed one with TLS', () => {
    expect(checkGatewayTls([gateway('127.0.0.1'), writer(plainListener)], facts)).toEqual([]);
    expect(checkGatewayTls([gateway('0.0.0.0'), writer(tlsListener)], facts)).toEqual([]);
  });

  it('refuses a gateway published on another address, or behind a LoadBalancer, whose listener has no TLS', () => {
    expect(checkGatewayTls([gateway('0.0.0.0'), writer(plainListener)], facts).map((v) => v.message)).toEqual([
      'the gateway is reachable beyond loopback (Container agentd-gateway publishes port 8443 on 0.0.0.0) but its listener has no TLS: give it a certificate (see README, "Security for production")',
    ]);
    const svc = res('kubernetes:core/v1:Service', 'gateway-public', {
      spec: { type: 'LoadBalancer', selector: { 'app.kubernetes.io/name': 'gateway' }, ports: [{ port: 80 }] },
    });
    const cm = res('kubernetes:core/v1:ConfigMap', 'gateway-live', {
      metadata: { labels: { 'app.kubernetes.io/name': 'gateway' } },
      data: { 'lds.yaml': plainListener },
    });
    expect(rulesOf(checkGatewayTls([svc, cm], facts))).toEqual(['tls-beyond-loopback']);
    expect(checkGatewayTls([svc, { ...cm, props: { ...cm.props, data: { 'lds.yaml': tlsListener } } }], facts)).toEqual([]);
  });
});

describe('egress-allowlists', () => {
  const bundleServer = (services: Record<string, Plain>) =>
    res(CONTAINER, 'bundles-seed', {
      labels: labels('bundles', 'files'),
      uploads: [
        {
          file: '/etc/agentd/bundles/agentd-bundle.tar.gz',
          contentBase64: tarGz({ [BUNDLE_DATA_PATH]: JSON.stringify({ egress: { services } }) }).toString('base64'),
        },
      ],
    });
  const github = { methods: { GET: true }, patterns: [{ source: '/repos/*/*/issues', segments: ['repos', '*', '*', 'issues'], prefix: false }] };

  it('passes services with methods and paths', () => {
    expect(checkEgressAllowlists([bundleServer({ github })], facts)).toEqual([]);
  });

  it('refuses a service without methods, without paths, or with a pattern matching every path; and a bundle it cannot read', () => {
    const messages = checkEgressAllowlists(
      [
        bundleServer({
          a: { methods: {}, patterns: github.patterns },
          b: { methods: github.methods, patterns: [] },
          c: { methods: github.methods, patterns: [{ source: '/**', segments: [], prefix: true }] },
        }),
      ],
      facts,
    ).map((v) => v.message);
    expect(messages).toEqual([
      'egress service a has no method allowlist (policy/data: allowed_methods)',
      'egress service b has no path allowlist (policy/data: allowed_paths)',
      'egress service c allows every path (/**): list the paths agents need',
    ]);
    const garbage = res(CONTAINER, 'x', {
      labels: labels('bundles', 'files'),
      uploads: [{ file: '/b.tar.gz', contentBase64: gzipSync('not a tar').toString('base64') }],
    });
    expect(checkEgressAllowlists([garbage], facts)[0]!.message).toMatch(/the policy bundle cannot be read \(no agentd\/config\/data.json\)/);
  });
});
