// The end-to-end check of the egress proxy's credential injection, shared by the Docker and the
// node suites: a sandbox's http_fetch through the gateway reaches the stand-in upstream with the
// credential, and neither the caller nor the upstream sees what it must not.
import { expect } from 'vitest';
import { httpFetchIntent } from '../../scripts/local/clients.ts';
import { standinReceived } from '../../scripts/local/standin.ts';

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
