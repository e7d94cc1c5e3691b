// policy/signing.ts without OPA: keys from seeds and PEMs, the JWS itself (checked with Node's
// own ECDSA verification), determinism, and the errors a stack's key can meet.
import { describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { POLICY_SIGNING_KEY_ID, SIGNATURES_FILE, bundleSignerFromPem, bundleSignerFromSeed, signaturesFile } from '../../policy/signing.ts';

const seed = 'a'.repeat(64);
const files = { '.manifest': '{"revision":"r","roots":["agentd"]}\n', 'agentd/p.rego': 'package agentd\n' };

const tokenOf = (signatures: string) => (JSON.parse(signatures) as { signatures: string[] }).signatures[0]!;

describe('bundle signers', () => {
  it('a seed always gives the same key, and another seed another key', () => {
    const a = bundleSignerFromSeed(seed);
    expect(bundleSignerFromSeed(seed).publicKeyPem).toBe(a.publicKeyPem);
    const b = bundleSignerFromSeed('b'.repeat(64));
    expect(b.publicKeyPem).not.toBe(a.publicKeyPem);
    expect(b.fingerprint).not.toBe(a.fingerprint);
    expect(createPublicKey(a.publicKeyPem).asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
  });

  it('refuses a short seed, a key that is not P-256, and text that is not a key, saying what to do', () => {
    expect(() => bundleSignerFromSeed('short')).toThrow(/at least 32 characters/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => bundleSignerFromPem(rsa, 'agentd:policySigningKey')).toThrow(/agentd:policySigningKey must be an ECDSA P-256 private key .*not an RSA key/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => bundleSignerFromPem(p384)).toThrow(/P-256.*not a P-384 key/);
    expect(() => bundleSignerFromPem('not a key')).toThrow(/is not a PEM private key.*openssl ecparam -name prime256v1/);
  });
});

describe('signaturesFile', () => {
  it('is one ES256 JWS over every file, with the pinned key id, that the public key verifies', () => {
    const signer = bundleSignerFromSeed(seed);
    const token = tokenOf(signaturesFile(files, signer));
    const [h, p, sig] = token.split('.') as [string, string, string];
    expect(JSON.parse(Buffer.from(h, 'base64url').toString())).toEqual({ alg: 'ES256', kid: POLICY_SIGNING_KEY_ID, typ: 'JWT' });
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as { files: { name: string; algorithm: string }[] };
    expect(payload.files.map((f) => [f.name, f.algorithm])).toEqual([
      ['.manifest', 'SHA-256'],
      ['agentd/p.rego', 'SHA-256'],
    ]);
    const ok = verify('sha256', Buffer.from(`${h}.${p}`), { key: signer.publicKeyPem, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));
    expect(ok).toBe(true);
    const tampered = verify('sha256', Buffer.from(`${h}.${p}x`), { key: signer.publicKeyPem, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));
    expect(tampered).toBe(false);
  });

  it('gives the same bytes for the same files and key (no clock, deterministic ECDSA), so an unchanged policy changes nothing', () => {
    const signer = bundleSignerFromSeed(seed);
    expect(signaturesFile(files, signer)).toBe(signaturesFile(files, bundleSignerFromSeed(seed)));
    expect(signaturesFile({ ...files, 'agentd/p.rego': 'package agentd\n\nx := 1\n' }, signer)).not.toBe(signaturesFile(files, signer));
  });

  it('leaves an existing signatures file out of what it signs, and refuses an empty bundle', () => {
    const signer = bundleSignerFromSeed(seed);
    expect(signaturesFile({ ...files, [SIGNATURES_FILE]: 'old' }, signer)).toBe(signaturesFile(files, signer));
    expect(() => signaturesFile({}, signer)).toThrow(/no files/);
  });
});
