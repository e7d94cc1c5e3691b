// The stand-in upstream of the Docker and node e2e suites (test/e2e/standin-server.mjs: HTTPS
// with a test CA, records what it gets): its image, and the check of the egress proxy's
// credential injection against it.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { httpFetchIntent } from '../../scripts/local/clients.ts';
import { makeTestCa, standinReceived, type TestCa } from '../../scripts/local/standin.ts';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

/**
 * Builds the stand-in's image TAG on BASE_IMAGE (the local Node image), serving a certificate for
 * DNS_NAME from a test CA made in DIR/ca; the image's context is DIR/image. Returns the CA, which
 * the stack must trust.
 */
export function buildStandinImage(dir: string, dnsName: string, baseImage: string, tag: string): TestCa {
  const caDir = join(dir, 'ca');
  const ctx = join(dir, 'image');
  mkdirSync(caDir, { recursive: true });
  mkdirSync(ctx, { recursive: true });
  const ca = makeTestCa(caDir, dnsName);
  cpSync(join(REPO_ROOT, 'test/e2e/standin-server.mjs'), join(ctx, 'server.mjs'));
  cpSync(ca.certFile, join(ctx, 'server.pem'));
  cpSync(ca.keyFile, join(ctx, 'server.key'));
  writeFileSync(join(ctx, 'Dockerfile'), `FROM ${baseImage}\nCOPY --chown=10001:10001 server.mjs server.pem server.key /app/\n`);
  execFileSync('docker', ['build', '-q', '-t', tag, ctx], { stdio: ['ignore', 'ignore', 'pipe'] });
  return ca;
}

/**
 * A sandbox's http_fetch through the gateway reaches the stand-in with the credential, and
 * neither the caller nor the upstream sees what it must not.
 */

export async function expectCredentialInjected(o: {
  /** The gateway's API port (and host, when not loopback). */
  gateway: { port: number; host?: string };
  /** An API key allowed to create sandboxes. */
  key: string;
  /** The stand-in upstream's base URL, as the test reads its record. */
  standin: string;
  /** A path unique to the test, so its record is the stand-in's only one. */
  path: string;
  /** The credential the egress proxy injects. */
  credential: string;
}): Promise<void> {
  const { sandbox, intent } = await httpFetchIntent(o.gateway, o.key, { service: 'github', method: 'GET', path: o.path });
  expect(sandbox.status, sandbox.body).toBe(201);
  if (!intent) throw new Error('no intent sent');
  expect(intent.status, intent.body).toBe(200);
  expect(intent.json().status).toBe(200);
  expect(intent.body).not.toContain(o.credential);
  const got = standinReceived(o.standin, o.path);
  expect(got).toHaveLength(1);
  expect(got[0]!.headers['authorization']).toBe(`Bearer ${o.credential}`);
  expect(got[0]!.headers['x-agentd-sandbox-token']).toBeUndefined();
}
