// A lean ext_authz v3 gRPC client for timing OPA: requests are encoded once up front (with the
// same proto as scripts/local/opa.ts) and sent as raw gRPC frames over one HTTP/2 connection,
// so a measured call costs little more than Envoy's own C++ client would add. Responses are
// decoded after the clock stops, to check every decision was the expected one.
import { connect, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { REPO_ROOT } from '../../scripts/local/tools.ts';
import type { AuthzRequest } from '../../scripts/local/opa.ts';
import { checkRequestOf } from '../../scripts/local/opa.ts';

const definition = protoLoader.loadSync(join(REPO_ROOT, 'policy/proto/ext_authz.proto'), { keepCase: true, longs: Number, defaults: false, oneofs: true });
const check = (
  definition['envoy.service.auth.v3.Authorization'] as unknown as Record<
    string,
    { requestSerialize: (v: object) => Buffer; responseDeserialize: (b: Buffer) => { ok_response?: unknown; status?: { code?: number } } }
  >
)['Check']!;

/** The CheckRequest Envoy would send, as the harness client builds it, as one gRPC frame. */
export function encodeCheck(req: AuthzRequest): Buffer {
  const msg = check.requestSerialize(checkRequestOf(req));
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  return frame;
}

/** Whether a CheckResponse frame says "allowed" (an OK response with gRPC status code 0). */
export function isAllowed(frame: Buffer): boolean {
  if (frame.length < 5) return false;
  const res = check.responseDeserialize(frame.subarray(5, 5 + frame.readUInt32BE(1)));
  return Boolean(res.ok_response) && (res.status?.code ?? 0) === 0;
}

export class RawExtAuthz {
  private readonly session: ClientHttp2Session;
  readonly ready: Promise<void>;

  constructor(port: number) {
    this.session = connect(`http://127.0.0.1:${port}`);
    this.session.on('error', () => undefined);
    this.ready = new Promise((resolve, reject) => {
      this.session.once('connect', () => resolve());
      this.session.once('error', reject);
    });
  }

  /** One Check call; resolves with the response frame. */
  call(frame: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = this.session.request({
        ':method': 'POST',
        ':path': '/envoy.service.auth.v3.Authorization/Check',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      const chunks: Buffer[] = [];
      let status: string | undefined;
      s.on('response', (h) => {
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      });
      s.on('trailers', (t) => {
        status = String(t['grpc-status']);
      });
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('end', () => (status === '0' ? resolve(Buffer.concat(chunks)) : reject(new Error(`Check failed: grpc-status ${status}`))));
      s.on('error', reject);
      s.end(frame);
    });
  }

  close(): void {
    this.session.close();
  }
}
