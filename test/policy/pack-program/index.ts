// Resources as the platform's targets make them, each breaking one rule of the policy pack
// (policy/pack) unless the config `good` is true, then each as the platform deploys it. Docker
// containers are only previewed (no engine needed); Kubernetes objects are rendered to a directory.
import * as docker from '@pulumi/docker';
import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';

const config = new pulumi.Config();
const good = config.getBoolean('good') === true;
const image = 'agentd-local/pack-check:1';
const labels = (workload: string, role = 'workload') => [
  { label: 'agentd.workload', value: workload },
  { label: 'agentd.role', value: role },
];
const hardened = { user: '10001:10001', readOnly: true, capabilities: { drops: ['ALL'] }, securityOpts: ['no-new-privileges'] };

// internal-ports-stay-internal: OPA's ext_authz port published on the host.
new docker.Container('opa', {
  name: 'pack-opa',
  image,
  labels: labels('opa'),
  ...hardened,
  ports: good ? [] : [{ internal: 9191, external: 19191, ip: '127.0.0.1' }],
});

// workloads-hardened: agentd as root with a writable root filesystem.
new docker.Container('agentd', { name: 'pack-agentd', image, labels: labels('agentd'), ...hardened, ...(good ? {} : { user: '0:0', readOnly: false }) });

// tls-beyond-loopback: the gateway on every address, its listener without TLS.
new docker.Container('gateway', {
  name: 'pack-gateway',
  image,
  labels: labels('gateway'),
  ...hardened,
  ports: [{ internal: 8080, external: 18080, ip: good ? '127.0.0.1' : '0.0.0.0' }],
});
new docker.Container('gateway-live', {
  name: 'pack-gateway-live',
  image,
  labels: labels('gateway', 'live'),
  networkMode: 'none',
  capabilities: { drops: ['ALL'] },
  mustRun: false,
  uploads: [{ file: '/staging/files/lds.yaml', content: 'resources:\n- name: gateway\n  filter_chains: []\n' }],
});

// egress-allowlists: the served bundle (config `bundle`, base64; the test builds it), whose
// service allows every path unless good.
new docker.Container('bundles-files', {
  name: 'pack-bundles-files',
  image,
  labels: labels('bundles', 'files'),
  start: false,
  mustRun: false,
  uploads: [{ file: '/etc/agentd/bundles/agentd-bundle.tar.gz', contentBase64: config.require('bundle') }],
});

// no-plain-secrets: a Secret's value also in a ConfigMap and a plain stack output.
const token = 'pack-check-secret-4f1c9a0e';
const provider = new k8s.Provider('render', { renderYamlToDirectory: config.require('renderDir') });
new k8s.core.v1.Secret('token', { metadata: { name: 'token' }, stringData: { token: pulumi.secret(token) } }, { provider });
new k8s.core.v1.ConfigMap(
  'config',
  { metadata: { name: 'config' }, data: { 'settings.json': JSON.stringify({ token: good ? 'not-the-token' : token }) } },
  { provider },
);
export const tokenHint = good ? pulumi.secret(token) : token;
