// Sandbox tokens: HS256 JWTs signed with a key from a standard JWKS document (RFC 7517,
// "oct" keys). The same file is Envoy's jwt_authn local JWKS, so it must stay plain JWKS.
// The signing key is the one named by AGENTD_TOKEN_KID, else the first; every key verifies,
// which is what makes rotation possible (add the new key, roll the verifiers, then sign with it).
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SignJWT, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { ENV, TOKEN_ALGORITHM, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../contract.ts';

export interface OctJwk {
  kty: 'oct';
  kid: string;
  k: string;
  alg?: 'HS256';
  use?: 'sig';
}

export interface Jwks {
  keys: OctJwk[];
}

export interface SandboxTokenClaims {
  sandboxId: string;
  tier: string;
  issuedAt: number; // epoch seconds
  expiresAt: number; // epoch seconds
  kid: string;
}

/** Minimum HS256 key size (RFC 7518 §3.2: at least the hash output size). */
const MIN_KEY_BYTES = 32;

/** A fresh JWKS with one random 256-bit HS256 key. For dev mode, tests and tooling. */
export function generateJwks(kid: string = `agentd-${new Date().toISOString().slice(0, 10)}`, bytes = 32): Jwks {
  if (!kid) throw new Error('generateJwks: kid must not be empty');
  if (bytes < MIN_KEY_BYTES) throw new Error(`generateJwks: HS256 keys need at least ${MIN_KEY_BYTES} bytes`);
  return { keys: [{ kty: 'oct', kid, k: randomBytes(bytes).toString('base64url'), alg: 'HS256', use: 'sig' }] };
}

/** Validates a parsed JWKS document; throws an Error listing what is wrong (never the key bytes). */
export function parseJwks(doc: unknown, source = 'JWKS'): Jwks {
  const fail = (why: string): never => {
    throw new Error(`${source}: ${why}`);
  };
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
    fail('not a JWKS document: expected {"keys": [{"kty": "oct", "kid": "...", "k": "<base64url>", "alg": "HS256"}]}');
  }
  const keys = (doc as { keys: unknown[] }).keys;
  if (keys.length === 0) fail('"keys" is empty; add at least one HS256 "oct" key');
  const seen = new Set<string>();
  const out: OctJwk[] = [];
  keys.forEach((raw, i) => {
    const k = raw as Record<string, unknown>;
    if (typeof k !== 'object' || k === null) fail(`keys[${i}] is not an object`);
    if (k.kty !== 'oct') fail(`keys[${i}].kty must be "oct" (HS256 shared secret)`);
    if (typeof k.kid !== 'string' || k.kid === '') fail(`keys[${i}].kid must be a non-empty string`);
    const kid = k.kid as string;
    if (seen.has(kid)) fail(`keys[${i}].kid '${kid}' is used twice`);
    seen.add(kid);
    if (k.alg !== undefined && k.alg !== TOKEN_ALGORITHM) fail(`keys[${i}] (kid '${kid}') has alg '${String(k.alg)}'; only ${TOKEN_ALGORITHM} is supported`);
    if (typeof k.k !== 'string' || !/^[A-Za-z0-9_-]+$/.test(k.k)) fail(`keys[${i}] (kid '${kid}') needs "k": the key as base64url`);
    if (Buffer.from(k.k as string, 'base64url').length < MIN_KEY_BYTES) fail(`keys[${i}] (kid '${kid}') is shorter than ${MIN_KEY_BYTES} bytes`);
    out.push({ kty: 'oct', kid, k: k.k as string, ...(k.alg ? { alg: 'HS256' as const } : {}) });
  });
  return { keys: out };
}

export class TokenService {
  readonly signingKid: string;
  private readonly keys: Map<string, Uint8Array>;

  constructor(jwks: Jwks, signingKid?: string | null) {
    const parsed = parseJwks(jwks);
    this.keys = new Map(parsed.keys.map((k) => [k.kid, new Uint8Array(Buffer.from(k.k, 'base64url'))]));
    const kid = signingKid ?? (parsed.keys[0] as OctJwk).kid;
    if (!this.keys.has(kid)) {
      throw new Error(
        `${ENV.tokenKid}='${kid}' names no key in the JWKS (kids: ${[...this.keys.keys()].join(', ')}); set it to one of them or unset it to sign with the first`,
      );
    }
    this.signingKid = kid;
  }

  static async fromFile(file: string, signingKid?: string | null): Promise<TokenService> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new Error(`${ENV.tokenKeyFile}='${file}' cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); point it at a JWKS JSON file`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new Error(`${ENV.tokenKeyFile}='${file}' is not valid JSON; it must be a JWKS document {"keys": [...]}`);
    }
    return new TokenService(parseJwks(doc, `${ENV.tokenKeyFile}='${file}'`), signingKid);
  }

  get kids(): string[] {
    return [...this.keys.keys()];
  }

  /** Signs a token for a sandbox; exp is the sandbox's expiry. Times in epoch milliseconds. */
  async sign(input: { sandboxId: string; tier: string; expiresAtMs: number; issuedAtMs?: number }): Promise<string> {
    const iat = Math.floor((input.issuedAtMs ?? Date.now()) / 1000);
    const exp = Math.floor(input.expiresAtMs / 1000);
    return new SignJWT({ tier: input.tier })
      .setProtectedHeader({ alg: TOKEN_ALGORITHM, typ: 'JWT', kid: this.signingKid })
      .setSubject(input.sandboxId)
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(this.keys.get(this.signingKid) as Uint8Array);
  }

  /** Verifies signature (any key in the set, chosen by kid), issuer, audience and expiry. */
  async verify(token: string, options?: { currentDate?: Date }): Promise<SandboxTokenClaims> {
    const { payload, protectedHeader } = await jwtVerify(
      token,
      (header) => {
        const key = header.kid === undefined ? undefined : this.keys.get(header.kid);
        if (!key) throw new joseErrors.JWKSNoMatchingKey();
        return key;
      },
      {
        algorithms: [TOKEN_ALGORITHM],
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        requiredClaims: ['sub', 'iat', 'exp', 'tier'],
        ...(options?.currentDate ? { currentDate: options.currentDate } : {}),
      },
    );
    return toClaims(payload, protectedHeader.kid as string);
  }
}

/** Verifies a sandbox token against a JWKS document (what Envoy does). */
export async function verifySandboxToken(token: string, jwks: Jwks): Promise<SandboxTokenClaims> {
  return new TokenService(jwks).verify(token);
}

function toClaims(p: JWTPayload, kid: string): SandboxTokenClaims {
  if (typeof p.tier !== 'string') throw new joseErrors.JWTClaimValidationFailed('"tier" claim must be a string', p, 'tier', 'check_failed');
  return { sandboxId: p.sub as string, tier: p.tier, issuedAt: p.iat as number, expiresAt: p.exp as number, kid };
}
