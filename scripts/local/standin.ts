// The stand-in upstream: an HTTPS server with a certificate from a test CA, in place of every
// external API. It records what it receives (the tests check the injected credential there)
// and answers a few special paths for fault tests.
import { createServer, type Server } from 'node:https';
import type { ServerResponse } from 'node:http';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
}

export interface TestCa {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** A CA and a server certificate for `dnsName` (default localhost), made with openssl in `dir`. */
export function makeTestCa(dir: string, dnsName = 'localhost'): TestCa {
  const f = (n: string) => join(dir, n);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ossl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=agentd test CA',
  );
  return { caFile: f('ca.pem'), ...issueServerCert({ caFile: f('ca.pem'), caKeyFile: f('ca.key') }, dir, [dnsName]) };
}

/** A server certificate and key for `names` (the first is its CN), signed by the CA, made with openssl in `dir`. */
export function issueServerCert(ca: { caFile: string; caKeyFile: string }, dir: string, names: readonly string[]): { certFile: string; keyFile: string } {
  const f = (n: string) => join(dir, n);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ossl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    f('server.key'),
    '-out',
    f('server.csr'),
    '-subj',
    `/CN=${names[0]}`,
  );
  writeFileSync(f('san.ext'), `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\n`);
  ossl(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    ca.caFile,
    '-CAkey',
    ca.caKeyFile,
    '-CAcreateserial',
    '-CAserial',
    f('ca.srl'),
    '-out',
    f('server.pem'),
    '-days',
    '2',
    '-extfile',
    f('san.ext'),
  );
  return { certFile: f('server.pem'), keyFile: f('server.key') };
}

export class StandInUpstream {
  readonly received: ReceivedRequest[] = [];
  private server: Server | undefined;
  port = 0;

  async start(ca: TestCa, port = 0): Promise<void> {
    this.server = createServer({ cert: readFileSync(ca.certFile), key: readFileSync(ca.keyFile) }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const path = req.url ?? '/';
        this.received.push({ method: req.method ?? '', path, headers: req.headers, body });
        const status = /^\/status\/(\d{3})/.exec(path);
        const delay = /^\/delay\/(\d+)/.exec(path);
        const reply = () => {
          if (path.startsWith('/redirect')) {
            res.writeHead(302, { location: 'https://elsewhere.invalid/steal' });
            res.end();
            return;
          }
          res.writeHead(status ? Number(status[1]) : 200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ok: true, method: req.method, path, host: req.headers.host }));
        };
        const llm = llmReply(path, body);
        if (llm) void llm(res);
        else if (delay) setTimeout(reply, Number(delay[1]));
        else reply();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  clear(): void {
    this.received.length = 0;
  }
}

/**
 * The stand-in as an LLM API: a request whose JSON body has `standin_usage: {input, output}` is
 * answered as OpenAI (/v1/chat/completions) or Anthropic (/v1/messages) answer, reporting that
 * usage, in one JSON body or, with `stream: true`, as server-sent events written a few
 * milliseconds apart (the usage where each API puts it: OpenAI's last chunk, Anthropic's
 * message_start and running message_delta counts). Other requests get the plain echo.
 */
function llmReply(path: string, body: string): ((res: ServerResponse) => Promise<void>) | undefined {
  let req: { model?: string; stream?: boolean; standin_usage?: { input: number; output: number } };
  try {
    req = JSON.parse(body);
  } catch {
    return undefined;
  }
  const usage = req?.standin_usage;
  if (!usage || (path !== '/v1/chat/completions' && path !== '/v1/messages')) return undefined;
  const model = req.model ?? 'standin-model';
  const anthropic = path === '/v1/messages';
  if (!req.stream) {
    const reply = anthropic
      ? {
          id: 'msg_1',
          type: 'message',
          model,
          content: [{ type: 'text', text: 'output_tokens: 999999 is a quoted "input_tokens": 999999' }],
          usage: { input_tokens: usage.input, output_tokens: usage.output },
        }
      : {
          id: 'chatcmpl-1',
          object: 'chat.completion',
          model,
          choices: [{ index: 0, message: { role: 'assistant', content: 'a quoted "prompt_tokens": 999999' } }],
          usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output },
        };
    return async (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(reply));
    };
  }
  const events = anthropic
    ? [
        `event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { id: 'msg_1', model, usage: { input_tokens: usage.input, output_tokens: 1 } } })}\n\n`,
        `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', delta: { type: 'text_delta', text: 'a quoted "output_tokens": 999999' } })}\n\n`,
        `event: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', usage: { output_tokens: Math.floor(usage.output / 2) } })}\n\n`,
        `event: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', usage: { output_tokens: usage.output } })}\n\n`,
        `event: message_stop\ndata: ${JSON.stringify({ type: 'message_stop' })}\n\n`,
      ]
    : [
        `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: { content: 'a quoted "completion_tokens": 999999' } }], usage: null })}\n\n`,
        `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: null })}\n\n`,
        `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model, choices: [], usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output } })}\n\n`,
        'data: [DONE]\n\n',
      ];
  return async (res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const e of events) {
      // Split each event in two writes, so a usage field may straddle two chunks.
      const half = Math.floor(e.length / 2);
      res.write(e.slice(0, half));
      await new Promise((r) => setTimeout(r, 5));
      res.write(e.slice(half));
      await new Promise((r) => setTimeout(r, 5));
    }
    res.end();
  };
}

/**
 * The requests for PATH that the e2e stand-in (test/e2e/standin-server.mjs, in a container or a
 * pod) recorded, read from its /__received at BASE (https://host:port; its certificate is the
 * test CA's, not checked here).
 */
export function standinReceived(base: string, path: string): ReceivedRequest[] {
  const all = JSON.parse(execFileSync('curl', ['-sSk', '--max-time', '10', `${base}/__received`], { encoding: 'utf8' })) as ReceivedRequest[];
  return all.filter((r) => r.path === path);
}
