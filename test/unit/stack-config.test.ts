// Stack config validation: TLS at the gateway, plaintext exposure refused, nested keys set
// without --path, retention; and the passphrase rule of the npm scripts. Pure functions.
import { describe, expect, it } from 'vitest';
import {
  LOCAL_PASSPHRASE,
  StackConfigError,
  exposedBeyondLoopback,
  parseStackConfig,
  publicPassphraseProblem,
  rateLimitWarnings,
} from '../../components/config.ts';
import { passphraseProblem } from '../../scripts/pulumi-env.ts';

const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n';
const problems = (raw: Record<string, string>, stack = 'test'): string[] => {
  try {
    parseStackConfig(raw, stack);
  } catch (e) {
    if (e instanceof StackConfigError) return [...e.problems];
    throw e;
  }
  return [];
};

describe('TLS at the gateway', () => {
  it('is off by default, and on with a certificate and key in secret config', () => {
    expect(parseStackConfig({}).gateway.tls).toBeUndefined();
    expect(parseStackConfig({ 'gateway:tlsCertificate': CERT, 'gateway:tlsPrivateKey': KEY }).gateway.tls).toEqual({ source: 'config' });
  });

  it('takes an existing Kubernetes TLS Secret by name (cert-manager)', () => {
    const c = parseStackConfig({ 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ tls: { secretName: 'agentd-gateway-tls' } }) });
    expect(c.gateway.tls).toEqual({ source: 'secret', secretName: 'agentd-gateway-tls' });
  });

  it('refuses half a certificate, two sources, non-PEM values, and a Secret name on Docker', () => {
    expect(problems({ 'gateway:tlsCertificate': CERT })).toEqual([expect.stringContaining('gateway:tlsPrivateKey is not set')]);
    expect(problems({ 'gateway:tlsCertificate': 'not pem', 'gateway:tlsPrivateKey': KEY })[0]).toContain(
      'gateway:tlsCertificate must be a certificate chain in PEM',
    );
    expect(
      problems({
        'agentd:target': 'kubernetes',
        'gateway:tlsCertificate': CERT,
        'gateway:tlsPrivateKey': KEY,
        'agentd:gateway': JSON.stringify({ tls: { secretName: 's' } }),
      })[0],
    ).toContain('given twice');
    expect(problems({ 'agentd:gateway': JSON.stringify({ tls: { secretName: 'x' } }) })[0]).toContain('target is docker');
    expect(problems({ 'agentd:gateway': JSON.stringify({ tls: { certificate: CERT } }) })[0]).toContain('agentd:gateway.tls.certificate is not a known field');
  });
});

describe('exposure beyond loopback needs TLS', () => {
  it('knows what is beyond loopback', () => {
    expect(exposedBeyondLoopback('docker', { bindAddress: '127.0.0.1', exposure: 'ClusterIP' })).toBeUndefined();
    expect(exposedBeyondLoopback('docker', { bindAddress: '0.0.0.0', exposure: 'ClusterIP' })).toContain('bindAddress');
    expect(exposedBeyondLoopback('kubernetes', { bindAddress: '127.0.0.1', exposure: 'ClusterIP' })).toBeUndefined();
    expect(exposedBeyondLoopback('kubernetes', { bindAddress: '127.0.0.1', exposure: 'NodePort' })).toContain('NodePort');
    expect(exposedBeyondLoopback('kubernetes', { bindAddress: '127.0.0.1', exposure: 'LoadBalancer' })).toContain('LoadBalancer');
  });

  it.each([
    ['docker on every interface', { 'agentd:gateway': JSON.stringify({ bindAddress: '0.0.0.0' }) }],
    ['docker on a LAN address', { 'agentd:gateway': JSON.stringify({ bindAddress: '192.168.1.5' }) }],
    ['kubernetes NodePort', { 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ exposure: 'NodePort' }) }],
    ['kubernetes LoadBalancer', { 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ exposure: 'LoadBalancer' }) }],
  ])('stops %s without TLS, naming both fixes', (_name, raw) => {
    const p = problems(raw, 'prod');
    expect(p).toHaveLength(1);
    expect(p[0]).toContain('has no TLS');
    expect(p[0]).toContain('pulumi config set --secret gateway:tlsCertificate');
    expect(p[0]).toContain("pulumi config set --path 'agentd:gateway.allowPlaintext' true --stack prod");
  });

  it('accepts it with TLS, or with allowPlaintext said on purpose', () => {
    expect(problems({ 'agentd:gateway': JSON.stringify({ bindAddress: '0.0.0.0' }), 'gateway:tlsCertificate': CERT, 'gateway:tlsPrivateKey': KEY })).toEqual(
      [],
    );
    expect(problems({ 'agentd:gateway': JSON.stringify({ bindAddress: '0.0.0.0', allowPlaintext: true }) })).toEqual([]);
    expect(
      problems({ 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ exposure: 'LoadBalancer', tls: { secretName: 'agentd-gateway-tls' } }) }),
    ).toEqual([]);
  });
});

describe('other settings', () => {
  it('shows the --path form for a nested key set without it', () => {
    const p = problems({ 'agentd:kubernetes.renderYamlTo': 'out' }, 'staging');
    expect(p).toEqual([expect.stringContaining("pulumi config set --path 'agentd:kubernetes.renderYamlTo' VALUE --stack staging")]);
  });

  it('reads retention and per-client limits with defaults and ranges', () => {
    expect(parseStackConfig({}).agentd).toMatchObject({ retentionDays: 30, retentionIntentsPerSandbox: 1000, maxActiveSandboxesPerClient: 100 });
    expect(parseStackConfig({ 'agentd:agentd': JSON.stringify({ retentionDays: 7, retentionIntentsPerSandbox: 0 }) }).agentd).toMatchObject({
      retentionDays: 7,
      retentionIntentsPerSandbox: 0,
    });
    expect(problems({ 'agentd:agentd': JSON.stringify({ retentionDays: -1 }) })[0]).toContain(
      'agentd:agentd.retentionDays must be a whole number from 0 to 3650',
    );
  });
});

describe('the public development passphrase is for the dev stack only', () => {
  const noPassphrase = {} as NodeJS.ProcessEnv;
  it('lets dev use it', () => {
    expect(passphraseProblem('dev', noPassphrase, {})).toBeUndefined();
    expect(publicPassphraseProblem('dev', LOCAL_PASSPHRASE)).toBeUndefined();
  });

  it('stops any other stack without a passphrase of its own, with the commands that fix it', () => {
    const p = passphraseProblem('staging', noPassphrase, {});
    expect(p).toContain('stack staging has no passphrase: nothing was encrypted or changed');
    expect(p).toContain('export PULUMI_CONFIG_PASSPHRASE_FILE=');
    expect(passphraseProblem('staging', { PULUMI_CONFIG_PASSPHRASE: LOCAL_PASSPHRASE } as NodeJS.ProcessEnv, {})).toContain('public development passphrase');
    expect(publicPassphraseProblem('prod', LOCAL_PASSPHRASE)).toContain('public development passphrase');
  });

  it('accepts a passphrase, a passphrase file, a secrets provider, or a managed backend', () => {
    expect(passphraseProblem('prod', { PULUMI_CONFIG_PASSPHRASE: 'mine' } as NodeJS.ProcessEnv, {})).toBeUndefined();
    expect(passphraseProblem('prod', { PULUMI_CONFIG_PASSPHRASE_FILE: '/p' } as NodeJS.ProcessEnv, {})).toBeUndefined();
    expect(passphraseProblem('prod', noPassphrase, { secretsprovider: 'awskms://alias/agentd' })).toBeUndefined();
    expect(passphraseProblem('prod', { PULUMI_BACKEND_URL: 's3://bucket' } as NodeJS.ProcessEnv, {})).toBeUndefined();
    expect(passphraseProblem('prod', { PULUMI_BACKEND_URL: 'file:///tmp/x' } as NodeJS.ProcessEnv, {})).toContain('has no passphrase');
  });
});

describe('rate limits: local or global', () => {
  const k8s = (extra: Record<string, unknown>) => ({
    'agentd:target': 'kubernetes',
    'agentd:gateway': JSON.stringify({ replicas: 3 }),
    ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [`agentd:${k}`, JSON.stringify(v)])),
  });

  it('are local by default; global fails the gateway open and the egress proxy closed unless told otherwise', () => {
    expect(parseStackConfig({}).rateLimits).toEqual({ mode: 'local', perReplica: false, whenUnavailable: { gateway: 'allow', egress: 'deny' } });
    const c = parseStackConfig({ 'agentd:rateLimits': JSON.stringify({ mode: 'global', whenUnavailable: { gateway: 'deny', egress: 'allow' } }) });
    expect(c.rateLimits).toEqual({ mode: 'global', perReplica: false, whenUnavailable: { gateway: 'deny', egress: 'allow' } });
  });

  it('refuses local limits with replicated proxies, naming both ways out', () => {
    const p = problems(k8s({}), 'prod');
    expect(p).toHaveLength(1);
    expect(p[0]).toContain('agentd:gateway.replicas is 3');
    expect(p[0]).toContain("pulumi config set --path 'agentd:rateLimits.mode' global --stack prod");
    expect(p[0]).toContain("pulumi config set --path 'agentd:rateLimits.perReplica' true --stack prod");
    expect(problems(k8s({ rateLimits: { mode: 'global' } }))).toEqual([]);
    expect(problems(k8s({ rateLimits: { perReplica: true } }))).toEqual([]);
  });

  it('warns of per-replica limits accepted on purpose, and of token budgets local mode cannot enforce', () => {
    const c = parseStackConfig(k8s({ rateLimits: { perReplica: true } }));
    const w = rateLimitWarnings(c, true);
    expect(w).toHaveLength(2);
    expect(w[0]).toContain('up to 3 times its tier');
    expect(w[1]).toContain('not enforced');
    expect(rateLimitWarnings(parseStackConfig(k8s({ rateLimits: { mode: 'global' } })), true)).toEqual([]);
    expect(rateLimitWarnings(parseStackConfig({}), false)).toEqual([]);
  });

  it('refuses unknown modes and failure behaviours', () => {
    expect(problems({ 'agentd:rateLimits': JSON.stringify({ mode: 'cluster' }) })[0]).toContain('agentd:rateLimits.mode must be local or global');
    expect(problems({ 'agentd:rateLimits': JSON.stringify({ whenUnavailable: { egress: 'open' } }) })[0]).toContain(
      'agentd:rateLimits.whenUnavailable.egress must be allow or deny',
    );
    expect(problems({ 'agentd:rateLimits': JSON.stringify({ whenUnavailable: { opa: 'deny' } }) })[0]).toContain('whenUnavailable.opa is not a known field');
  });
});

describe('egress peers on Kubernetes (agentd:kubernetes.egressPeers)', () => {
  const peers = (v: unknown) => ({ 'agentd:kubernetes': JSON.stringify({ egressPeers: v }) });

  it('reads pods of a namespace (optionally by label) or an address range, each with a port', () => {
    const got = parseStackConfig(
      peers([
        { namespace: 'llm-gateway', port: 8443 },
        { namespace: 'corp', podLabels: { app: 'proxy' }, port: '3128' },
        { cidr: '10.20.0.0/16', port: 443 },
      ]),
    ).kubernetes.egressPeers;
    expect(got).toEqual([
      { namespace: 'llm-gateway', port: 8443 },
      { namespace: 'corp', podLabels: { app: 'proxy' }, port: 3128 },
      { cidr: '10.20.0.0/16', port: 443 },
    ]);
    expect(parseStackConfig({}).kubernetes.egressPeers).toEqual([]);
  });

  it('names what is wrong with a peer', () => {
    expect(problems(peers({ namespace: 'x' }))).toEqual([expect.stringContaining('agentd:kubernetes.egressPeers must be a list')]);
    expect(problems(peers([{ namespace: 'x' }]))).toEqual(['agentd:kubernetes.egressPeers[0].port must be a port number from 1 to 65535, not undefined']);
    expect(problems(peers([{ namespace: 'x', cidr: '10.0.0.0/8', port: 1 }]))[0]).toContain('[0] must have exactly one of namespace');
    expect(problems(peers([{ cidr: '10.0.0.300/8', port: 1 }]))).toEqual([
      'agentd:kubernetes.egressPeers[0].cidr must be an IPv4 range like 10.1.2.0/24, not "10.0.0.300/8"',
    ]);
    expect(problems(peers([{ namespace: 'Bad_NS', port: 1 }]))[0]).toContain('[0].namespace must be a Kubernetes namespace name');
    expect(problems(peers([{ namespace: 'ok', podLabels: { app: 'a b' }, port: 1 }]))[0]).toContain('[0].podLabels must map label keys to label values');
    expect(problems(peers([{ namespace: 'ok', port: 1, host: 'x' }]))).toEqual([
      'agentd:kubernetes.egressPeers[0].host is not a known field; known: namespace, podLabels, cidr, port',
    ]);
  });
});
