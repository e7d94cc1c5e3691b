// Every generated Envoy config, for every target's addressing and every option, passes
// `envoy --mode validate` of the pinned Envoy.
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStackConfig } from '../../components/config.ts';
import { platformRenderInput } from '../../components/render/workloads.ts';
import { ENVOY_CONFIG_FILE, GATEWAY_SDS_FILES, fileBytes, jwksDocument, renderPlatform, type PlatformRenderInput } from '../../components/render/platform.ts';
import { dockerAddress } from '../../components/targets/docker.ts';
import { kubernetesAddress } from '../../components/targets/kubernetes.ts';
import { sha256Hex } from '../../policy/bundle.ts';
import { makeTestCa } from '../../scripts/local/standin.ts';
import { run, toolPath } from '../../scripts/local/tools.ts';
import { ephemeralBundleSigner, shippedSpec } from '../../scripts/local/fixtures.ts';

const spec = shippedSpec();
const hashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(`k-${c.id}`)]));
const k8sAddress = kubernetesAddress('agentd');
const loopback = (_w: string, port: number) => ({ host: '127.0.0.1', port });

/** Points every file path at a temp dir holding real files, so validation can open them. */
function materialise(input: PlatformRenderInput, dir: string): PlatformRenderInput {
  const f = (name: string, content: string) => {
    const p = join(dir, name);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, content);
    return p;
  };
  const jwks = f('secrets/jwks.json', jwksDocument('k', 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0'));
  const credDir = join(dir, 'secrets/credentials');
  for (const id of input.egress.configuredCredentials) f(`secrets/credentials/${id}.credential`, 'x');
  const token = f('secrets/gateway-token', 'gateway-token-value');
  let tls: { certificateChain: string; privateKey: string } | undefined;
  if (input.gateway.tls) {
    mkdirSync(join(dir, 'ca'), { recursive: true });
    const ca = makeTestCa(join(dir, 'ca'), 'gateway');
    tls = { certificateChain: ca.certFile, privateKey: ca.keyFile };
  }
  return {
    ...input,
    gateway: {
      ...input.gateway,
      agentdTokenSdsFile: join(dir, 'gateway-live', GATEWAY_SDS_FILES.agentdToken),
      ...(tls ? { tls: { sdsFile: join(dir, 'gateway-live', GATEWAY_SDS_FILES.tls) } } : {}),
    },
    gatewaySecrets: { agentdTokenFile: token, ...(tls ? { tls } : {}) },
    egress: {
      ...input.egress,
      jwksFile: jwks,
      sdsDir: join(dir, 'egress-live/sds'),
      credentialDir: credDir,
      caBundleFile: '/etc/ssl/certs/ca-certificates.crt',
    },
    bundles: { ...input.bundles, configDir: join(dir, 'bundles') },
    live: { gateway: { dir: join(dir, 'gateway-live'), secretDir: join(dir, 'secrets') }, egress: { dir: join(dir, 'egress-live'), secretDir: credDir } },
  };
}

const TLS_CONFIG = { 'gateway:tlsCertificate': '-----BEGIN CERTIFICATE-----', 'gateway:tlsPrivateKey': '-----BEGIN PRIVATE KEY-----' };
const variants: [string, (w: string, p: number) => { host: string; port: number }, Record<string, string>, string[]][] = [
  ['docker, all credentials', dockerAddress, {}, ['openai', 'anthropic', 'github', 'slack']],
  ['docker, no credentials, stand-in upstream', dockerAddress, { 'agentd:egress': JSON.stringify({ upstreams: { httpbin: 'http://standin:8080' } }) }, []],
  [
    'docker, TLS from stack config, published on every interface',
    dockerAddress,
    { ...TLS_CONFIG, 'agentd:gateway': JSON.stringify({ bindAddress: '0.0.0.0' }) },
    ['openai'],
  ],
  [
    'kubernetes service DNS, TLS from a Secret',
    k8sAddress,
    { 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ exposure: 'LoadBalancer', tls: { secretName: 'agentd-gateway-tls' } }) },
    ['openai'],
  ],
  [
    'kubernetes, global rate limits and token budgets (the rate-limit service)',
    k8sAddress,
    { 'agentd:target': 'kubernetes', 'agentd:rateLimits': JSON.stringify({ mode: 'global', whenUnavailable: { gateway: 'deny' } }) },
    ['openai', 'anthropic'],
  ],
  ['loopback (harness)', loopback, {}, ['github']],
];

describe('envoy --mode validate on every generated config', () => {
  it.each(variants)('%s', (_name, address, raw, creds) => {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-validate-'));
    const config = parseStackConfig({ 'agentd:target': 'docker', ...raw });
    const input = materialise({ ...platformRenderInput(config, address, creds), keyHashes: hashes, bundleSigner: ephemeralBundleSigner() }, dir);
    const rendered = renderPlatform(spec, input);
    let sdsFiles = 0;
    // The live files (listeners, clusters, SDS files) where the bootstrap loads them from.
    for (const proxy of ['gateway', 'egress'] as const) {
      for (const [p, c] of Object.entries(rendered.live![proxy])) {
        mkdirSync(join(dir, `${proxy}-live`, p, '..'), { recursive: true });
        writeFileSync(join(dir, `${proxy}-live`, p), fileBytes(c));
        if (p.startsWith('sds/')) sdsFiles++;
      }
    }
    // The gateway's token to agentd, its certificate when TLS is on, and a file per credential.
    expect(sdsFiles).toBe(1 + (config.gateway.tls ? 1 : 0) + creds.length);
    // The bundle server reads its bundle when it loads the config: the file must be there.
    mkdirSync(join(dir, 'bundles'), { recursive: true });
    for (const [p, c] of Object.entries(rendered.bundles)) writeFileSync(join(dir, 'bundles', p), fileBytes(c));
    // Each bootstrap as deployed (the proxies load their listeners and clusters from the live
    // files), and the proxies with everything in the bootstrap, which validate mode checks in full.
    const whole = renderPlatform(spec, { ...input, live: undefined });
    const configs = {
      gateway: rendered.gateway,
      egress: rendered.egress,
      bundles: rendered.bundles,
      'gateway-whole': whole.gateway,
      'egress-whole': whole.egress,
    };
    for (const [name, files] of Object.entries(configs)) {
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, fileBytes(files[ENVOY_CONFIG_FILE]!));
      const r = run(toolPath('envoy'), ['--mode', 'validate', '-c', file, '--log-level', 'error']);
      expect(r.code, `${name}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('OK');
    }
  });
});
