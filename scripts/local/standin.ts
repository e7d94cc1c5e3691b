// The stand-in upstream: an HTTPS server with a certificate from a test CA, in place of every
// external API. It records what it receives (the tests check the injected credential there)
// and answers a few special paths for fault tests.
import { createServer, type Server } from 'node:https';
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
        if (delay) setTimeout(reply, Number(delay[1]));
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
