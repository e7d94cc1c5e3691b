// npm run dev: the development mode of the original, better. The gateway, egress proxy and OPA
// run as processes on this machine with the same generated configs as a deploy; agentd runs on
// the host from source and restarts when agentd/src changes; a change under policy/ rebuilds
// the bundle and the configs and restarts the stack (keys and ports stay). Ctrl-C stops it all.
//
// Upstreams are the real services of policy/data; credentials come from
// build/dev/credentials.json ({"openai": "sk-..."}, mode 0600, ignored by git) if present.
import { existsSync, readFileSync, watch } from 'node:fs';
import { join } from 'node:path';
import { loadPolicySpec, PolicyError, type PolicySpec } from '../policy/spec.ts';
import { startStack, type Stack } from './local/stack.ts';
import { devApiKeys } from './dev-keys.ts';
import { ensureToolsOrExit, ROOT, noArguments } from './pulumi-env.ts';
import { toolsFor } from './toolchain.ts';

const PORTS = {
  gateway: 8080,
  egress: 8443,
  opaGrpc: 9191,
  opaHttp: 8181,
  agentdHttp: 8090,
  agentdGrpc: 9500,
  gatewayAdmin: 9901,
  gatewayStats: 9902,
  egressAdmin: 9911,
  egressStats: 9912,
  upstream: 9443,
};
const CREDENTIALS_FILE = join(ROOT, 'build/dev/credentials.json');
const USAGE = `usage: npm run dev
  Runs the gateway, egress proxy, OPA and its bundle server on this machine with the generated configs, agentd from
  source (restarted when agentd/src changes); a change under policy/ rebuilds and restarts the stack. Ctrl-C stops it.
  Credentials: build/dev/credentials.json ({"openai": "sk-..."}, mode 0600), if present.`;
noArguments(process.argv.slice(2), USAGE);
await ensureToolsOrExit(toolsFor('dev'), 'npm run dev');
const log = (m: string) => process.stderr.write(`[dev] ${m}\n`);

let stack: Stack | undefined;
let restarting: Promise<void> = Promise.resolve();

async function start(): Promise<void> {
  let spec: PolicySpec;
  try {
    spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
  } catch (e) {
    log(e instanceof PolicyError ? e.message : String(e));
    log('fix the policy data; the stack restarts when you save');
    return;
  }
  const credentials = existsSync(CREDENTIALS_FILE) ? (JSON.parse(readFileSync(CREDENTIALS_FILE, 'utf8')) as Record<string, string>) : {};
  stack = await startStack({
    spec,
    dir: join(ROOT, 'build/dev/stack'),
    ports: PORTS,
    apiKeys: devApiKeys(spec),
    credentials,
    upstreams: 'real',
    watchAgentd: true,
  });
  log(`up: gateway ${stack.gatewayUrl} (HTTP and gRPC), egress ${stack.egressUrl}, agentd ${stack.agentdUrl}, OPA gRPC 127.0.0.1:${PORTS.opaGrpc}`);
  log(`policy revision ${stack.rendered.policyRevision}; logs in build/dev/stack/logs/`);
  log(`credentials configured for: ${Object.keys(credentials).join(', ') || 'none (add build/dev/credentials.json)'}`);
  process.stdout.write(`\n  curl -s -H "x-api-key: ${'$'}(node -p "require('./build/dev/api-keys.json').admin")" ${stack.gatewayUrl}/api/v1/status\n\n`);
}

async function restart(reason: string): Promise<void> {
  restarting = restarting.then(async () => {
    log(`${reason}: restarting the stack`);
    await stack?.stop();
    stack = undefined;
    await start().catch((e: Error) => log(`start failed: ${e.message}`));
  });
  await restarting;
}

let timer: NodeJS.Timeout | undefined;
watch(join(ROOT, 'policy'), { recursive: true }, (_event, file) => {
  clearTimeout(timer);
  timer = setTimeout(() => void restart(`policy/${file} changed`), 300);
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, async () => {
    log('stopping');
    await stack?.stop();
    process.exit(0);
  });
}
await start();
