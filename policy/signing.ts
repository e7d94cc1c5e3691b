// Signed policy bundles: OPA activates the policy bundle only when its `.signatures.json` holds a
// JWT signed by the key its config pins, listing the SHA-256 digest of every file in the bundle
// (OPA v1/bundle: verify.go, hash.go). Pure: the key comes from a seed (a Pulumi RandomPassword
// at deploy time) or a PEM the stack gives; no clock, no randomness, so the same bundle and key
// always give the same bytes and an unchanged policy changes nothing at the next `pulumi up`.
//
// ES256 (ECDSA P-256) because OPA verifies RS*, PS*, ES* and HS* only (keys/keys.go): HS* would
// put the signing secret in OPA's config, and RSA keys cannot be derived from a seed. Node's own
// ECDSA signs with a random nonce (a different signature each render), so signatures are made
// with @noble/curves, whose ECDSA nonce is deterministic (RFC 6979).

import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { p256 } from '@noble/curves/nist.js';
import { stableJson, tarGz, type Bundle } from './bundle.ts';

/** The key id OPA's config pins for the policy bundle: it verifies with this key and no other, whatever the JWT says. */
export const POLICY_SIGNING_KEY_ID = 'agentd-policy';
/** The JWS algorithm, as OPA's `keys.<id>.algorithm` names it. */
export const POLICY_SIGNING_ALGORITHM = 'ES256';
/** The file OPA reads a bundle's signatures from. */
export const SIGNATURES_FILE = '.signatures.json';
/** The digest algorithm of each file, as the JWT's `files[].algorithm` names it. */
const FILE_DIGEST = 'SHA-256';

export interface BundleSigner {
  /** The public key OPA verifies with (PEM, SubjectPublicKeyInfo). Not secret. */
  readonly publicKeyPem: string;
  /** SHA-256 of the public key (DER), short: names the key in logs and docs without the key. */
  readonly fingerprint: string;
  /** The JWS signature (r || s, 64 bytes) of the signing input. */
  readonly sign: (signingInput: Buffer) => Buffer;
}

/** The domain separation of the seed: a seed used for anything else gives another key. */
const SEED_CONTEXT = 'agentd policy bundle signing key v1\0';

/**
 * The signer of a seed (at least 32 characters; at deploy time a 64-character RandomPassword):
 * the P-256 secret key is SHA-384(context || seed), 48 bytes, reduced into the curve's order
 * (FIPS 186-5 A.2.1, which @noble/curves' keygen implements), so the same seed always gives the same key.
 */
export function bundleSignerFromSeed(seed: string): BundleSigner {
  if (seed.length < 32) throw new Error('the policy signing seed must be at least 32 characters');
  const material = createHash('sha384').update(SEED_CONTEXT).update(seed, 'utf8').digest();
  return signerOfSecretKey(Buffer.from(p256.keygen(material).secretKey));
}

/**
 * The signer of a P-256 private key in PEM (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, e.g.
 * `openssl ecparam -name prime256v1 -genkey -noout`), for a stack that gives its own key.
 */
export function bundleSignerFromPem(pem: string, what = 'the policy signing key'): BundleSigner {
  let jwk: { crv?: string; d?: string; kty?: string };
  try {
    jwk = createPrivateKey(pem).export({ format: 'jwk' });
  } catch (e) {
    throw new Error(`${what} is not a PEM private key (${(e as Error).message}); make one with: openssl ecparam -name prime256v1 -genkey -noout`);
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.d)
    throw new Error(
      `${what} must be an ECDSA P-256 private key (OPA verifies ${POLICY_SIGNING_ALGORITHM}), not ${jwk.kty === 'EC' ? `a ${jwk.crv} key` : `an ${jwk.kty} key`}; make one with: openssl ecparam -name prime256v1 -genkey -noout`,
    );
  return signerOfSecretKey(Buffer.from(jwk.d, 'base64url'));
}

function signerOfSecretKey(secretKey: Buffer): BundleSigner {
  const point = Buffer.from(p256.getPublicKey(secretKey, false)); // 0x04 || x || y
  const publicKey = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33, 65).toString('base64url') },
    format: 'jwk',
  });
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    fingerprint: createHash('sha256').update(der).digest('hex').slice(0, 16),
    sign: (input) => Buffer.from(p256.sign(input, secretKey, { prehash: true, format: 'compact' })),
  };
}

/**
 * Whether OPA reads the file as a structured document (data.json, data.yaml/yml, .manifest) and
 * digests its parsed value rather than its bytes (bundle.go IsStructuredDoc).
 */
function isStructuredDoc(path: string): boolean {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base === 'data.json' || base === 'data.yaml' || base === 'data.yml' || base === '.manifest';
}

/**
 * A string as Go's encoding/json writes it with HTML escaping off, which is what OPA digests:
 * JSON.stringify's output except for U+2028 and U+2029 (escaped by Go) and lone surrogates
 * (Go writes U+FFFD).
 */
function goJsonString(s: string): string {
  const wellFormed = s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
  return JSON.stringify(wellFormed).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

/** Byte order of the UTF-8 encodings, Go's string order (JS sorts by UTF-16 code units). */
const byUtf8 = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/**
 * The text OPA digests for a structured document's value (hash.go walk): objects with keys in
 * byte order, no whitespace. Numbers are written as JSON.stringify writes them; OPA keeps each
 * number's literal from the file, and every data file we sign is JSON.stringify's output, so the
 * two agree (a file written by hand with `1.0` or `1e3` would not).
 */
function opaCanonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(opaCanonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort(byUtf8)
      .map((k) => `${goJsonString(k)}:${opaCanonicalJson(o[k])}`)
      .join(',')}}`;
  }
  if (typeof value === 'string') return goJsonString(value);
  return JSON.stringify(value);
}

/** The SHA-256 digest (hex) OPA expects for a bundle file: of its parsed value if structured, else of its bytes. */
export function bundleFileDigest(path: string, content: string): string {
  if (isStructuredDoc(path)) {
    if (!path.endsWith('.json') && path !== '.manifest') throw new Error(`${path}: only JSON data files can be signed here`);
    let value: unknown;
    try {
      value = JSON.parse(content);
    } catch (e) {
      throw new Error(`${path} is not JSON, so it cannot be signed: ${(e as Error).message}`);
    }
    return createHash('sha256').update(opaCanonicalJson(value), 'utf8').digest('hex');
  }
  return createHash('sha256').update(content, 'utf8').digest('hex');
}

/**
 * The `.signatures.json` of a bundle's files: one compact JWS, header `{alg, kid}`, payload
 * `{files: [{name, hash, algorithm}], iss}` with every file in name order and no time claim (the
 * same files give the same bytes; OPA ignores `iat`).
 */
export function signaturesFile(files: Readonly<Record<string, string>>, signer: BundleSigner): string {
  const names = Object.keys(files)
    .filter((n) => n !== SIGNATURES_FILE)
    .sort();
  if (names.length === 0) throw new Error('a bundle with no files cannot be signed');
  const b64 = (o: object) => Buffer.from(JSON.stringify(o), 'utf8').toString('base64url');
  const header = b64({ alg: POLICY_SIGNING_ALGORITHM, kid: POLICY_SIGNING_KEY_ID, typ: 'JWT' });
  const payload = b64({ files: names.map((name) => ({ name, hash: bundleFileDigest(name, files[name]!), algorithm: FILE_DIGEST })), iss: 'agentd' });
  const input = `${header}.${payload}`;
  const token = `${input}.${signer.sign(Buffer.from(input, 'ascii')).toString('base64url')}`;
  return `${stableJson({ signatures: [token] }, 1)}\n`;
}

/** The bundle with its `.signatures.json`: the same files and revision, signed by `signer`. */
export function signBundle(bundle: Bundle, signer: BundleSigner): Bundle {
  const files = { ...bundle.files, [SIGNATURES_FILE]: signaturesFile(bundle.files, signer) };
  return { bytes: tarGz(files), revision: bundle.revision, files };
}
