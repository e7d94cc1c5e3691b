// Component tests with Pulumi mocks: the Platform on the Docker target, resources and wiring,
// hardening, and secrets that stay secret. They complement the real `pulumi up` of the e2e.
import { beforeAll, describe, expect, it } from 'vitest';
import * as pulumi from '@pulumi/pulumi';
import { checkAgainstSpec, parseStackConfig, specIds } from '../../components/config.ts';
import { generateKeyPairSync, verify } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { Platform, keyResourceName } from '../../components/platform.ts';
import { sha256Hex } from '../../policy/bundle.ts';
import { DockerTarget, HASH_LABEL } from '../../components/targets/docker.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { installMocks, isSecret, isSecretValue, testImages, unwrap, value, type Created } from './mocks.ts';

const created = installMocks();
const images = testImages;

const TLS_CERT = '-----BEGIN CERTIFICATE-----\nMIIBcert-plaintext\n-----END CERTIFICATE-----\n';
const TLS_KEY = '-----BEGIN PRIVATE KEY-----\nMIIBkey-plaintext\n-----END PRIVATE KEY-----\n';

function build(spec = shippedSpec(), configRaw: Record<string, string> = {}, prefix = 'agentd-test', policySigningKey?: string) {
  const config = parseStackConfig({ 'agentd:target': 'docker', ...configRaw });
  const target = new DockerTarget(`docker-${prefix}`, {
    prefix,
    bindAddress: config.gateway.bindAddress,
    extraEdgeNetworks: [],
    liveWriterImage: images.agentd.ref,
  });
  const credentials = { openai: pulumi.secret('sk-openai-plaintext'), github: pulumi.secret('github-plaintext') };
  const gatewayTls = config.gateway.tls ? { gatewayTls: { certificate: pulumi.secret(TLS_CERT), privateKey: pulumi.secret(TLS_KEY) } } : {};
  const signing = policySigningKey ? { policySigningKey: pulumi.secret(policySigningKey) } : {};
  return new Platform(`agentd-${prefix}`, { spec, config, images, target, credentials, ...gatewayTls, ...signing });
}

let platform: Platform;
const allContainers = () => created.filter((c) => c.type === 'docker:index/container:Container' && String(c.inputs.name).startsWith('agentd-test-'));
const role = (c: Created) => c.inputs.labels.find((l: any) => l.label === 'agentd.role')?.value;
const containers = () => allContainers().filter((c) => role(c) === 'workload');
const seed = (name: string) =>
  allContainers().find((c) => role(c) === 'files' && c.inputs.labels.some((l: any) => l.label === 'agentd.workload' && l.value === name))!;
const uploads = (c: Created): any[] => unwrap(c.inputs.uploads).map(unwrap);
const workloadOf = (c: Created) => c.inputs.labels.find((l: any) => l.label === 'agentd.workload').value;
const container = (name: string) => containers().find((c) => c.inputs.name === `agentd-test-${name}`)!;
/** The writer that installs a workload's live files (one per revision). */
const writer = (name: string) =>
  allContainers().find((c) => role(c) === 'live' && c.inputs.labels.some((l: any) => l.label === 'agentd.workload' && l.value === name))!;

beforeAll(async () => {
  platform = build();
  await value(platform.contentHashes);
  await new Promise((r) => setTimeout(r, 50));
});

describe('Platform on the Docker target', () => {
  it('creates the five workloads, an internal network per workload and the edge, one API key per client, the token key and the two caller tokens', () => {
    expect(
      containers()
        .map((c) => c.inputs.name)
        .sort(),
    ).toEqual(['agentd-test-agentd', 'agentd-test-bundles', 'agentd-test-egress', 'agentd-test-gateway', 'agentd-test-opa']);
    const nets = created.filter((c) => c.type === 'docker:index/network:Network' && String(c.inputs.name).startsWith('agentd-test-'));
    expect(nets.map((n) => [n.inputs.name, n.inputs.internal ?? false]).sort()).toEqual([
      ['agentd-test-edge', false],
      ['agentd-test-to-agentd', true],
      ['agentd-test-to-bundles', true],
      ['agentd-test-to-egress', true],
      ['agentd-test-to-gateway', true],
      ['agentd-test-to-opa', true],
    ]);
    const keys = created.filter((c) => c.type === 'random:index/randomPassword:RandomPassword' && c.name.startsWith('agentd-agentd-test-'));
    const expected = [...shippedSpec().clients.map((c) => `key-${c.id}`), 'token-key', 'gateway-token', 'registry-token', 'policy-signing-seed'].map(
      (n) => `agentd-agentd-test-${n}`,
    );
    expect(keys.map((k) => k.name).sort()).toEqual(expected.sort());
  });

  it('hardens every container: non-root, read-only root, no capabilities, no new privileges, restart policy, health check', () => {
    for (const c of containers()) {
      expect(c.inputs.user, c.inputs.name).toBe('10001:10001');
      expect(c.inputs.readOnly).toBe(true);
      expect(c.inputs.capabilities).toEqual({ drops: ['ALL'] });
      expect(c.inputs.securityOpts).toContain('no-new-privileges:true');
      expect(c.inputs.restart).toBe('unless-stopped');
      expect(c.inputs.healthcheck.tests[0]).toBe('CMD');
      expect(c.inputs.privileged ?? false).toBe(false);
    }
  });

  it('publishes only the gateway, on 127.0.0.1 by default, and never an admin port', () => {
    const published = containers().filter((c) => (c.inputs.ports ?? []).length > 0);
    expect(published.map((c) => c.inputs.name)).toEqual(['agentd-test-gateway']);
    expect(published[0]!.inputs.ports).toEqual([{ internal: 8080, external: 8080, ip: '127.0.0.1', protocol: 'tcp' }]);
  });

  it('shares a network only between peers: a workload reaches only what it talks to; agentd and OPA stay off the edge', () => {
    const nets = (name: string) => container(name).inputs.networksAdvanced.map((n: any) => n.name);
    expect(nets('agentd')).toEqual(['agentd-test-to-agentd', 'agentd-test-to-egress']);
    expect(nets('opa')).toEqual(['agentd-test-to-opa', 'agentd-test-to-agentd', 'agentd-test-to-bundles']);
    // The bundle server serves OPA alone: nothing else shares its network.
    expect(nets('bundles')).toEqual(['agentd-test-to-bundles']);
    expect(
      containers()
        .filter((c) => nets(workloadOf(c)).includes('agentd-test-to-bundles'))
        .map(workloadOf)
        .sort(),
    ).toEqual(['bundles', 'opa']);
    expect(nets('egress')).toEqual(['agentd-test-to-egress', 'agentd-test-to-opa', 'agentd-test-edge']);
    expect(nets('gateway')).toEqual(['agentd-test-to-gateway', 'agentd-test-to-agentd', 'agentd-test-to-opa', 'agentd-test-edge']);
    // Each workload is known by its name only on its own network.
    for (const w of ['agentd', 'opa', 'bundles', 'egress', 'gateway']) {
      const own = container(w).inputs.networksAdvanced.filter((n: any) => (n.aliases ?? []).includes(w));
      expect(
        own.map((n: any) => n.name),
        w,
      ).toEqual([`agentd-test-to-${w}`, ...(['egress', 'gateway'].includes(w) ? ['agentd-test-edge'] : [])]);
    }
  });

  it('labels each container with its content hash and mounts its files from a volume named after it', () => {
    for (const c of containers()) {
      const hash = c.inputs.labels.find((l: any) => l.label === HASH_LABEL)?.value;
      expect(hash, c.inputs.name).toMatch(/^[0-9a-f]{16}$/);
      expect(c.inputs.mounts[0].source).toContain(hash);
      // Files arrive through a never-started seed container; the workload mounts them read-only.
      expect(c.inputs.mounts[0].readOnly).toBe(true);
      expect(c.inputs.uploads ?? []).toEqual([]);
      const s = seed(workloadOf(c));
      expect(s.inputs.start).toBe(false);
      expect(s.inputs.networkMode).toBe('none');
      expect(s.inputs.mounts[0]).toMatchObject({ source: c.inputs.mounts[0].source, readOnly: false });
    }
  });

  it('delivers the bundle to the bundle server, OPA its config, and the Envoy configs to the proxies (listeners, clusters, SDS files and credentials as live files)', () => {
    const files = (name: string) => uploads(seed(name)).map((u: any) => u.file);
    const liveFiles = (name: string) => uploads(writer(name)).map((u: any) => u.file);
    expect(files('bundles')).toEqual(['/etc/agentd/bundles/agentd-bundle.tar.gz', '/etc/agentd/bundles/envoy.yaml']);
    expect(files('opa').filter((f) => f.startsWith('/etc/'))).toEqual(['/etc/agentd/opa/config.yaml', '/etc/agentd/opa/mask.rego']);
    expect(files('gateway')).toEqual(['/etc/agentd/gateway/envoy.yaml']);
    expect(liveFiles('gateway')).toEqual([
      '/staging/files/cds.yaml',
      '/staging/files/lds.yaml',
      '/staging/files/sds/agentd-token.sds.json',
      '/staging/secrets/gateway-token',
    ]);
    expect(liveFiles('egress')).toEqual(
      expect.arrayContaining([
        '/staging/files/lds.yaml',
        '/staging/files/cds.yaml',
        '/staging/files/sds/openai.sds.json',
        '/staging/secrets/openai.credential',
      ]),
    );
    // The proxies mount their live volumes read-only; the writer is the only one that writes them.
    expect(container('gateway').inputs.mounts.filter((m: any) => String(m.source).includes('-live'))).toEqual([
      { type: 'volume', source: 'agentd-test-gateway-live', target: '/etc/agentd/gateway-live', readOnly: true },
      { type: 'volume', source: 'agentd-test-gateway-live-secrets', target: '/run/secrets/agentd-gateway-live', readOnly: true },
    ]);
    const w = writer('gateway').inputs;
    expect([w.user, w.networkMode, w.start, w.mustRun, w.attach, w.capabilities]).toEqual(['0:0', 'none', true, false, true, { drops: ['ALL'] }]);
    expect(files('agentd')).toEqual(['/run/secrets/agentd/gateway-token', '/run/secrets/agentd/jwks.json', '/run/secrets/agentd/registry-token']);
    expect(files('opa')).toHaveLength(4);
    expect(files('opa')).toContain('/run/secrets/agentd/registry-token');
    expect(files('opa')).toContain('/run/secrets/agentd/policy-verification-key.pem');
    expect(files('egress')).toEqual(['/etc/agentd/egress/envoy.yaml', '/run/secrets/agentd/jwks.json']);
  });

  it('never puts a credential or key into plain config: secrets only in secret uploads', () => {
    const seeds = allContainers().filter((c) => role(c) === 'files' || role(c) === 'live');
    const isSecretFile = (f: string) => f.startsWith('/run/secrets/') || f.startsWith('/staging/secrets/');
    const plain = JSON.stringify(seeds.map((c) => uploads(c).filter((u: any) => !isSecretFile(u.file))));
    // The uploads that carry secrets reach the provider as secrets.
    const withSecrets = seeds.filter((c) => uploads(c).some((u: any) => isSecretFile(u.file)));
    expect(withSecrets.map((c) => `${workloadOf(c)} ${role(c)}`).sort()).toEqual(['agentd files', 'egress files', 'egress live', 'gateway live', 'opa files']);
    expect(withSecrets.every((c) => isSecretValue(c.inputs.uploads))).toBe(true);
    expect(plain).not.toContain('sk-openai-plaintext');
    expect(plain).not.toContain('github-plaintext');
    expect(plain).not.toMatch(/agk_/);
  });

  it('with a certificate in stack config: the gateway serves TLS, the certificate and key only as secret files, the URL is https', async () => {
    const tlsPlatform = build(
      shippedSpec(),
      { 'gateway:tlsCertificate': TLS_CERT, 'gateway:tlsPrivateKey': TLS_KEY, 'agentd:gateway': JSON.stringify({ bindAddress: '0.0.0.0' }) },
      'agentd-tls',
    );
    expect(await value(tlsPlatform.gatewayUrl)).toBe('https://127.0.0.1:8080');
    await new Promise((r) => setTimeout(r, 50));
    // The certificate is a live secret: a new one reaches the running gateway without a restart.
    const gwWriter = created.find((c) => c.type === 'docker:index/container:Container' && String(c.inputs.name).startsWith('agentd-tls-gateway-live-'))!;
    const all = uploads(gwWriter);
    expect(all.map((u: any) => u.file)).toEqual([
      '/staging/files/cds.yaml',
      '/staging/files/lds.yaml',
      '/staging/files/sds/agentd-token.sds.json',
      '/staging/files/sds/tls.sds.json',
      '/staging/secrets/gateway-token',
      '/staging/secrets/tls.crt',
      '/staging/secrets/tls.key',
    ]);
    expect(isSecretValue(gwWriter.inputs.uploads)).toBe(true);
    const plain = JSON.stringify(all.filter((u: any) => !u.file.startsWith('/staging/secrets/')));
    expect(plain).not.toContain('key-plaintext');
    expect(plain).toContain('tls_certificate');
  });

  it('keeps the API keys output secret and the policy revision plain', async () => {
    expect(await isSecret(platform.apiKeys)).toBe(true);
    expect(await isSecret(platform.policyRevision)).toBe(false);
    const keys = await value(platform.apiKeys);
    expect(Object.keys(keys).sort()).toEqual(
      shippedSpec()
        .clients.map((c) => c.id)
        .sort(),
    );
    expect(await value(platform.gatewayUrl)).toBe('http://127.0.0.1:8080');
  });

  it('a new client changes only the bundle server: OPA and the proxies render without the API keys', async () => {
    const before = await value(platform.contentHashes);
    const spec = shippedSpec();
    const more = { ...spec, clients: [...spec.clients, { id: 'newcomer', role: 'reader', rateLimitTier: 'default', enabled: true, description: '' }] };
    const other = build(more as typeof spec);
    const after = await value(other.contentHashes);
    expect(Object.keys(await value(other.apiKeys))).toContain('newcomer');
    expect(after.bundles).not.toBe(before.bundles);
    for (const w of ['gateway', 'egress', 'opa', 'agentd'] as const) expect(after[w], w).toBe(before[w]);
  });

  it('a policy change touches only the bundle server: OPA and the rest keep their content hashes (nothing else restarts)', async () => {
    const before = await value(platform.contentHashes);
    const spec = shippedSpec();
    const changed = { ...spec, clients: spec.clients.map((c) => (c.id === 'ci' ? { ...c, rateLimitTier: 'premium' } : c)) };
    const other = build(changed as typeof spec);
    const after = await value(other.contentHashes);
    expect(after.bundles).not.toBe(before.bundles);
    for (const w of ['gateway', 'egress', 'opa', 'agentd'] as const) expect(after[w], w).toBe(before[w]);
  });
});

describe('API key rotation (agentd:keys)', () => {
  it('keeps the previous generation as the same client until its grace period ends; the current key is the output', async () => {
    created.length = 0;
    const until = '2031-01-01T00:00:00Z';
    const p = build(
      shippedSpec(),
      { 'agentd:keys': JSON.stringify({ ci: { generation: 3, previousValidUntil: until }, admin: { generation: 2 } }) },
      'agentd-rot',
    );
    const keys = await value(p.apiKeys);
    await new Promise((r) => setTimeout(r, 50));
    const passwords = created.filter((c) => c.type === 'random:index/randomPassword:RandomPassword').map((c) => c.name);
    const platform = 'agentd-agentd-rot';
    expect(passwords).toContain(keyResourceName(platform, 'ci', 3));
    expect(passwords).toContain(keyResourceName(platform, 'ci', 2));
    expect(passwords).not.toContain(keyResourceName(platform, 'ci', 1));
    expect(passwords).toContain(keyResourceName(platform, 'admin', 2));
    expect(passwords).not.toContain(keyResourceName(platform, 'admin', 1)); // no grace period: the old key is gone
    expect(keyResourceName(platform, 'ci', 1)).toBe(`${platform}-key-ci`); // the first generation keeps its URN
    // The bundle the bundle server serves holds both of ci's keys, the previous one with its end.
    const bundleUpload = uploads(
      created.find(
        (c) =>
          c.type === 'docker:index/container:Container' &&
          c.inputs.labels.some((l: any) => l.value === 'files') &&
          c.inputs.name.includes('agentd-rot-bundles'),
      )!,
    ).find((u: any) => u.file.endsWith('agentd-bundle.tar.gz'));
    const tar = gunzipSync(Buffer.from(bundleUpload.contentBase64, 'base64')).toString('latin1');
    const data = JSON.parse(tar.slice(tar.indexOf('{"egress"'), tar.indexOf('\n', tar.indexOf('{"egress"'))));
    const ci = Object.entries(data.gateway.keys as Record<string, { id: string; not_after?: string }>).filter(([, v]) => v.id === 'ci');
    expect(ci.map(([, v]) => v.not_after ?? 'current').sort()).toEqual([until, 'current']);
    const [current] = ci.find(([, v]) => !v.not_after)!;
    expect(current).toBe(sha256Hex(keys['ci']!));
  });

  it('signs the served bundle with a key whose public half OPA gets (generated, or the stack own)', async () => {
    /** The bundle a Platform's bundle server serves, its JWS verified with the public key its OPA gets; the key. */
    const check = async (prefix: string) => {
      await new Promise((r) => setTimeout(r, 50));
      const filesOf = (w: string) =>
        uploads(
          created.find(
            (c) =>
              c.type === 'docker:index/container:Container' &&
              c.inputs.labels.some((l: any) => l.value === 'files') &&
              String(c.inputs.name).startsWith(`${prefix}-${w}-files-`),
          )!,
        );
      const bundle = filesOf('bundles').find((u: any) => u.file.endsWith('agentd-bundle.tar.gz'));
      const key = unwrap(filesOf('opa').find((u: any) => u.file.endsWith('policy-verification-key.pem')).content) as string;
      const tar = gunzipSync(Buffer.from(bundle.contentBase64, 'base64')).toString('latin1');
      const token = /"signatures": \[\s*"([^"]+)"/.exec(tar)![1]!;
      const [h, p, sig] = token.split('.') as [string, string, string];
      const signed = verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));
      expect(signed, prefix).toBe(true);
      return key;
    };
    expect(await check('agentd-test')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const own = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const p = build(shippedSpec(), {}, 'agentd-own', own.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    await value(p.contentHashes);
    expect(await check('agentd-own')).toBe(own.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const passwords = created.filter((c) => c.type === 'random:index/randomPassword:RandomPassword').map((c) => c.name);
    expect(passwords.filter((n) => n.startsWith('agentd-agentd-own-')).length).toBeGreaterThan(3);
    expect(passwords, 'no seed for a stack that gives its key').not.toContain('agentd-agentd-own-policy-signing-seed');
  });

  it('refuses a rotation for a client the policy does not have, and a grace period without a previous key', () => {
    expect(() => checkAgainstSpec(parseStackConfig({ 'agentd:keys': JSON.stringify({ nobody: { generation: 2 } }) }), specIds(shippedSpec()))).toThrow(
      /agentd:keys.nobody names no client; known: .*admin/,
    );
    expect(() => parseStackConfig({ 'agentd:keys': JSON.stringify({ ci: { generation: 1, previousValidUntil: '2031-01-01T00:00:00Z' } }) })).toThrow(
      /agentd:keys.ci.previousValidUntil needs a previous key, but generation is 1/,
    );
    expect(() => parseStackConfig({ 'agentd:keys': JSON.stringify({ ci: { generation: 2, previousValidUntil: 'tomorrow' } }) })).toThrow(
      /agentd:keys.ci.previousValidUntil must be an RFC 3339 instant/,
    );
  });
});
