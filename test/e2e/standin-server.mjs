// The e2e stand-in upstream, run in a container on the node image: HTTPS with a test CA,
// records every request; GET /__received (on the same port) returns them as JSON.
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';

const received = [];
const server = createServer({ cert: readFileSync('/app/server.pem'), key: readFileSync('/app/server.key') }, (req, res) => {
  if (req.url === '/__received') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(received));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    received.push({ method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, path: req.url }));
  });
});
server.listen(8443, '0.0.0.0');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
