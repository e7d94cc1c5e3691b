// npm run up [-- --stack NAME]: deploys a stack (default dev) and prints its endpoints and a
// curl that works. Tools and npm packages were installed by scripts/run before this runs.
import { passThroughArgs, policyPackArgs, prepareStack, pulumi, pulumiEnv, selectStack, stackArg } from './pulumi-env.ts';

const USAGE =
  'usage: npm run up [-- --stack NAME [--create]] [-- PULUMI_UP_FLAGS...]\n  Deploys a stack (default dev; one of stacks/Pulumi.<name>.yaml, or a new one with --create) and prints its endpoints and a curl; flags such as --target go to `pulumi up`.';
const { stack, rest: args } = stackArg(process.argv.slice(2), USAGE);
const rest = passThroughArgs(args, USAGE);
const env = pulumiEnv(stack);
const t0 = Date.now();
await prepareStack('up', stack);
selectStack(stack, env);
process.stderr.write(`[agentd] deploying stack ${stack} (pulumi up)\n`);
// With its preview (no --skip-preview): the policy pack's stack-wide rules run at the end of a
// preview, so a violation stops the deploy before any resource changes.
const up = pulumi(['up', '--yes', '--non-interactive', '--stack', stack, ...policyPackArgs(stack), ...rest], { env });
if (up.status !== 0) process.exit(up.status);
const out = pulumi(['stack', 'output', '--json', '--stack', stack], { env, stdio: ['ignore', 'pipe', 'inherit'] });
const outputs = JSON.parse(out.stdout) as { gatewayUrl: string; grpcEndpoint: string; gatewayNodePort?: number; policyRevision: string; grafanaUrl?: string };
const keyCmd = `npm run -s key${stack === 'dev' ? '' : ` -- --stack ${stack}`} -- admin`;
process.stdout.write(`
agentd platform "${stack}" is up (${((Date.now() - t0) / 1000).toFixed(0)} s).

  gateway (HTTP)   ${outputs.gatewayUrl}
  gateway (gRPC)   ${outputs.grpcEndpoint}${outputs.gatewayNodePort ? `\n  node port        ${outputs.gatewayNodePort} (on any node's address)` : ''}${outputs.grafanaUrl ? `\n  Grafana          ${outputs.grafanaUrl}` : ''}
  policy revision  ${outputs.policyRevision}
  API keys         pulumi stack output apiKeys --show-secrets --stack ${stack}

Try it:
${tryIt(outputs.gatewayUrl)}
`);

/** The curl to paste; a cluster-internal address first needs a port-forward from here. */
function tryIt(url: string): string {
  const inCluster = /^http:\/\/([^.]+)\.([^.]+)\.svc\.cluster\.local:(\d+)$/.exec(url);
  if (!inCluster) return `  curl -s -H "x-api-key: $(${keyCmd})" ${url}/api/v1/status`;
  const [, service, namespace, port] = inCluster;
  return [
    `  kubectl port-forward -n ${namespace} svc/${service} 8080:${port} &`,
    `  curl -s -H "x-api-key: $(${keyCmd})" http://127.0.0.1:8080/api/v1/status`,
  ].join('\n');
}
