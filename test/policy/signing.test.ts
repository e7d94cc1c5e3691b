// Bundle signatures against the real OPA: the digests policy/signing.ts puts in a signature are
// the ones `opa sign` computes for the same files (the shipped bundle, and data chosen where JS
// and Go write JSON differently), and `opa run` activates a bundle we signed only with our key.
// The refusals of a running OPA (unsigned, another key, tampered) are in test/security/faults.
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { buildBundle, sha256Hex, stableJson } from '../../policy/bundle.ts';
import { POLICY_SIGNING_KEY_ID, SIGNATURES_FILE, bundleFileDigest, bundleSignerFromPem, signBundle, signaturesFile } from '../../policy/signing.ts';
import { ephemeralBundleSigner, shippedSpec } from '../../scripts/local/fixtures.ts';
import { run, toolPath } from '../../scripts/local/tools.ts';

const opa = toolPath('opa');
const spec = shippedSpec();
const keyHashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(`key-of-${c.id}`)]));

const writeFiles = (dir: string, files: Readonly<Record<string, string>>) => {
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), text);
  }
};

/** The files and digests in the JWT payload of a `.signatures.json`. */
function payloadOf(signatures: string): { name: string; hash: string; algorithm: string }[] {
  const token = (JSON.parse(signatures) as { signatures: string[] }).signatures;
  expect(token).toHaveLength(1);
  return (JSON.parse(Buffer.from(token[0]!.split('.')[1]!, 'base64url').toString('utf8')) as { files: { name: string; hash: string; algorithm: string }[] })
    .files;
}

/** What `opa sign` writes for the files, with a throwaway key. */
function opaSign(files: Readonly<Record<string, string>>): { name: string; hash: string; algorithm: string }[] {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-opa-sign-'));
  writeFiles(join(dir, 'bundle'), files);
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  writeFileSync(join(dir, 'key.pem'), key);
  mkdirSync(join(dir, 'out'));
  const r = run(opa, ['sign', '.', '--bundle', '--signing-key', join(dir, 'key.pem'), '--signing-alg', 'ES256', '-o', join(dir, 'out')], {
    cwd: join(dir, 'bundle'),
  });
  expect(r.code, r.stderr).toBe(0);
  return payloadOf(readFileSync(join(dir, 'out', SIGNATURES_FILE), 'utf8'));
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1);

describe('file digests: ours are the ones opa sign computes', () => {
  it('for every file of the shipped bundle (Rego as bytes, data.json and .manifest as parsed JSON)', () => {
    const { files } = buildBundle(spec, keyHashes);
    const ours = payloadOf(signaturesFile(files, ephemeralBundleSigner()));
    expect(ours.map((f) => f.name)).toEqual(Object.keys(files).sort());
    expect(ours.length).toBeGreaterThan(5);
    expect(ours).toEqual(opaSign(files).sort(byName));
  });

  it('for JSON where JS and Go differ: U+2028/U+2029, keys sorted by UTF-8 bytes, HTML characters, lone surrogates, numbers', () => {
    const data = {
      b: 1,
      a: 'line\u2028separator\u2029<&>',
      é: [1.5, -0, 1e21, 0.1],
      '\uFFFF': 'last in UTF-16 order, first before an astral key in UTF-8 order',
      '\u{1F600}': 'astral',
      lone: 'x\uD800y',
      z: { q: null, p: true, control: '\b\f\n\r\t\u0001' },
    };
    const files = {
      '.manifest': `${stableJson({ revision: 'r1', roots: ['x'] })}\n`,
      'x/data.json': `${JSON.stringify(data, null, 2)}\n`,
      'x/p.rego': 'package x\n\np := "é"\n',
    };
    const theirs = opaSign(files).sort(byName);
    expect(theirs.map((f) => [f.name, f.hash])).toEqual(Object.keys(files).map((n) => [n, bundleFileDigest(n, files[n as keyof typeof files])]));
  });
});

describe('OPA verifying with the pinned key id', () => {
  const start = (bundle: Buffer, publicKeyPem: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-opa-verify-'));
    writeFileSync(join(dir, 'bundle.tar.gz'), bundle);
    writeFileSync(join(dir, 'key.pem'), publicKeyPem);
    // `opa build` reads and verifies a signed bundle the way `opa run` does, with the same flags.
    return run(opa, [
      'build',
      '--bundle',
      join(dir, 'bundle.tar.gz'),
      '--output',
      join(dir, 'rebuilt.tar.gz'),
      '--verification-key',
      join(dir, 'key.pem'),
      '--verification-key-id',
      POLICY_SIGNING_KEY_ID,
      '--signing-alg',
      'ES256',
    ]);
  };

  it('loads the bundle we signed, and refuses it with another public key', () => {
    const signer = ephemeralBundleSigner();
    const signed = signBundle(buildBundle(spec, keyHashes), signer);
    const ok = start(signed.bytes, signer.publicKeyPem);
    expect(ok.code, ok.stderr).toBe(0);
    const other = start(signed.bytes, ephemeralBundleSigner().publicKeyPem);
    expect(other.code).not.toBe(0);
    expect(other.stdout + other.stderr).toContain('failed to verify JWT signature');
  });

  it('loads a bundle signed with a key the stack gives (PEM), the same key as its public half', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = bundleSignerFromPem(privateKey.export({ type: 'sec1', format: 'pem' }).toString());
    expect(signer.publicKeyPem).toBe(publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const ok = start(signBundle(buildBundle(spec, keyHashes), signer).bytes, signer.publicKeyPem);
    expect(ok.code, ok.stderr).toBe(0);
  });
});
