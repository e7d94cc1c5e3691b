// Sandbox tokens: standard JWKS, HS256 with kid, claims; tampering fails verification; key
// rotation (sign with one, verify with all); the key file and AGENTD_TOKEN_KID.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { TOKEN_AUDIENCE, TOKEN_CLAIMS, TOKEN_ISSUER } from '../../agentd/src/contract.ts';
import { TokenService, generateJwks, parseJwks, verifySandboxToken, type Jwks } from '../../agentd/src/core/tokens.ts';
import { cleanupAll, startInProcess, tempDir } from './support.ts';

afterAll(cleanupAll);

const HOUR = 3600_000;
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const parts = (t: string) => t.split('.') as [string, string, string];

describe('generateJwks', () => {
  it('makes a standard JWKS with one 256-bit HS256 oct key', () => {
    const jwks = generateJwks('k1');
    expect(jwks.keys).toHaveLength(1);
    const [k] = jwks.keys;
    expect(k).toMatchObject({ kty: 'oct', kid: 'k1', alg: 'HS256', use: 'sig' });
    expect(Buffer.from(k!.k, 'base64url')).toHaveLength(32);
    expect(k!.k).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(generateJwks('k1').keys[0]!.k).not.toBe(k!.k);
    expect(() => parseJwks(JSON.parse(JSON.stringify(jwks)))).not.toThrow();
  });
});

describe('sign and verify', () => {
  const tokens = new TokenService(generateJwks('k1'));

  it('carries sub, tier, iat, exp, iss, aud and the kid', async () => {
    const now = Date.now();
    const token = await tokens.sign({ sandboxId: 'sbx_a', tier: 'premium', expiresAtMs: now + HOUR, issuedAtMs: now });
    const [h, p] = parts(token);
    expect(JSON.parse(Buffer.from(h, 'base64url').toString())).toEqual({ alg: 'HS256', typ: 'JWT', kid: 'k1' });
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    expect(payload).toEqual({
      [TOKEN_CLAIMS.sandboxId]: 'sbx_a',
      [TOKEN_CLAIMS.tier]: 'premium',
      [TOKEN_CLAIMS.issuedAt]: Math.floor(now / 1000),
      [TOKEN_CLAIMS.expiresAt]: Math.floor((now + HOUR) / 1000),
      [TOKEN_CLAIMS.issuer]: TOKEN_ISSUER,
      [TOKEN_CLAIMS.audience]: TOKEN_AUDIENCE,
    });
    expect(await tokens.verify(token)).toEqual({
      sandboxId: 'sbx_a',
      tier: 'premium',
      issuedAt: Math.floor(now / 1000),
      expiresAt: Math.floor((now + HOUR) / 1000),
      kid: 'k1',
    });
  });

  it('a token of sandbox A names A, and cannot be altered to name B', async () => {
    const a = await tokens.sign({ sandboxId: 'sbx_a', tier: 'default', expiresAtMs: Date.now() + HOUR });
    const b = await tokens.sign({ sandboxId: 'sbx_b', tier: 'default', expiresAtMs: Date.now() + HOUR });
    expect((await tokens.verify(a)).sandboxId).toBe('sbx_a');
    expect((await tokens.verify(b)).sandboxId).toBe('sbx_b');
    const [h, p, s] = parts(a);
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    // Payload changed (other sandbox, higher tier, later expiry): signature no longer matches.
    for (const change of [{ sub: 'sbx_b' }, { tier: 'admin' }, { exp: payload.exp + 86_400 }]) {
      await expect(tokens.verify(`${h}.${b64({ ...payload, ...change })}.${s}`)).rejects.toThrow(/signature/i);
    }
    // Signature swapped from another token, or flipped.
    await expect(tokens.verify(`${h}.${p}.${parts(b)[2]}`)).rejects.toThrow();
    const flipped = s.slice(0, -2) + (s.at(-2) === 'A' ? 'B' : 'A') + s.at(-1);
    await expect(tokens.verify(`${h}.${p}.${flipped}`)).rejects.toThrow();
    // alg "none" and an unknown kid are refused.
    await expect(tokens.verify(`${b64({ alg: 'none', typ: 'JWT' })}.${p}.`)).rejects.toThrow();
    await expect(tokens.verify(`${b64({ alg: 'HS256', typ: 'JWT', kid: 'other' })}.${p}.${s}`)).rejects.toThrow();
  });

  it('a token signed with another key fails', async () => {
    const other = new TokenService(generateJwks('k1'));
    const t = await other.sign({ sandboxId: 'sbx_a', tier: 'default', expiresAtMs: Date.now() + HOUR });
    await expect(tokens.verify(t)).rejects.toThrow(/signature/i);
  });

  it('expired tokens, wrong issuer or audience fail', async () => {
    const expired = await tokens.sign({ sandboxId: 'sbx_a', tier: 'default', expiresAtMs: Date.now() - 10_000, issuedAtMs: Date.now() - HOUR });
    await expect(tokens.verify(expired)).rejects.toThrow(/exp/);
    const key = new Uint8Array(Buffer.from((tokens as unknown as { keys: Map<string, Uint8Array> }).keys.get('k1')!));
    const forged = (iss: string, aud: string) =>
      new SignJWT({ tier: 'default' })
        .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
        .setSubject('sbx_a')
        .setIssuer(iss)
        .setAudience(aud)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(key);
    await expect(tokens.verify(await forged('someone-else', TOKEN_AUDIENCE))).rejects.toThrow(/iss/);
    await expect(tokens.verify(await forged(TOKEN_ISSUER, 'other-audience'))).rejects.toThrow(/aud/);
    await expect(tokens.verify(await forged(TOKEN_ISSUER, TOKEN_AUDIENCE))).resolves.toMatchObject({ sandboxId: 'sbx_a' });
  });
});

describe('rotation', () => {
  it('signs with the first key by default, or the kid named; every key verifies', async () => {
    const jwks: Jwks = { keys: [...generateJwks('new').keys, ...generateJwks('old').keys] };
    const byFirst = new TokenService(jwks);
    const byOld = new TokenService(jwks, 'old');
    expect(byFirst.signingKid).toBe('new');
    expect(byOld.signingKid).toBe('old');
    const t1 = await byFirst.sign({ sandboxId: 'sbx_1', tier: 'default', expiresAtMs: Date.now() + HOUR });
    const t2 = await byOld.sign({ sandboxId: 'sbx_2', tier: 'default', expiresAtMs: Date.now() + HOUR });
    expect(await verifySandboxToken(t1, jwks)).toMatchObject({ sandboxId: 'sbx_1', kid: 'new' });
    expect(await verifySandboxToken(t2, jwks)).toMatchObject({ sandboxId: 'sbx_2', kid: 'old' });
    // After the old key is removed, its tokens stop verifying.
    await expect(verifySandboxToken(t2, { keys: [jwks.keys[0]!] })).rejects.toThrow();
    expect(() => new TokenService(jwks, 'missing')).toThrow(/AGENTD_TOKEN_KID='missing' names no key/);
  });

  it('the daemon reads AGENTD_TOKEN_KEY_FILE and AGENTD_TOKEN_KID', async () => {
    const dir = tempDir();
    const jwks: Jwks = { keys: [...generateJwks('a').keys, ...generateJwks('b').keys] };
    const file = path.join(dir, 'keys.json');
    writeFileSync(file, JSON.stringify(jwks));
    const d = await startInProcess({ AGENTD_TOKEN_KEY_FILE: file, AGENTD_TOKEN_KID: 'b' });
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    expect(await verifySandboxToken(s.token, jwks)).toMatchObject({ sandboxId: s.id, kid: 'b' });
    // The key never appears in the logs.
    for (const k of jwks.keys) expect(d.logs.join('\n')).not.toContain(k.k);
  });
});

describe('parseJwks rejects what Envoy could not use', () => {
  const key = generateJwks('k').keys[0]!;
  it.each([
    [{}, /not a JWKS document/],
    [{ keys: [] }, /empty/],
    [{ keys: [{ ...key, kty: 'RSA' }] }, /kty must be "oct"/],
    [{ keys: [{ ...key, kid: '' }] }, /kid must be a non-empty string/],
    [{ keys: [key, key] }, /used twice/],
    [{ keys: [{ ...key, alg: 'HS512' }] }, /only HS256/],
    [{ keys: [{ ...key, k: Buffer.alloc(16).toString('base64url') }] }, /shorter than 32 bytes/],
    [{ keys: [{ ...key, k: 'not base64!' }] }, /base64url/],
  ])('%j', (doc, message) => {
    expect(() => parseJwks(doc)).toThrow(message);
  });
  it('never puts key material in the error', () => {
    try {
      parseJwks({ keys: [{ ...key, alg: 'HS512' }] });
    } catch (err) {
      expect((err as Error).message).not.toContain(key.k);
    }
  });
});
