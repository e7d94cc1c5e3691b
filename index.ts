// The Pulumi program: stack config + policy data -> the platform on the stack's target.
// Everything is validated before the first resource is declared, so bad input stops
// `pulumi preview` with a message that names the key or file and the fix.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as pulumi from '@pulumi/pulumi';
import {
  checkAgainstSpec,
  specIds,
  GATEWAY_TLS_CONFIG,
  parseStackConfig,
  publicPassphraseProblem,
  rateLimitWarnings,
  StackConfigError,
} from './components/config.ts';
import { hasTokenBudgets } from './components/render/ratelimit.ts';
import { chooseImages } from './components/images.ts';
import { Platform } from './components/platform.ts';
import { DockerTarget, dockerPrefixOf } from './components/targets/docker.ts';
import { KubernetesTarget, kubernetesProviderArgs } from './components/targets/kubernetes.ts';
import * as k8s from '@pulumi/kubernetes';
import type { Target } from './components/target.ts';
import { loadPolicySpec, PolicyError } from './policy/spec.ts';

const ROOT = fileURLToPath(new URL('.', import.meta.url));
const stack = pulumi.getStack();

function load() {
  try {
    const passphrase = publicPassphraseProblem(stack, process.env['PULUMI_CONFIG_PASSPHRASE']);
    if (passphrase) throw new StackConfigError([passphrase]);
    const config = parseStackConfig(pulumi.runtime.allConfig(), stack);
    const spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
    checkAgainstSpec(config, specIds(spec));
    const images = chooseImages(config.images, ROOT, pulumi.runtime.isDryRun() ? { warn: (m) => pulumi.log.warn(m) } : undefined);
    return { config, spec, images };
  } catch (e) {
    // A clean message without a stack trace: the problem is the input, not the program.
    if (e instanceof PolicyError || e instanceof StackConfigError || e instanceof Error) throw new pulumi.RunError(e.message);
    throw e;
  }
}

const { config, spec, images } = load();
for (const warning of rateLimitWarnings(config, hasTokenBudgets(spec))) pulumi.log.warn(warning);

// Egress credentials: `pulumi config set --secret egress:<secret> VALUE`, one per service.
const egressConfig = new pulumi.Config('egress');
const credentials: Record<string, pulumi.Output<string>> = {};
for (const s of Object.values(spec.egressServices)) {
  const value = s.credential ? egressConfig.getSecret(s.credential.secret) : undefined;
  if (value) credentials[s.id] = value;
  else if (s.credential)
    pulumi.log.warn(
      `egress service ${s.id} has no credential; it answers 503 until you run: pulumi config set --secret egress:${s.credential.secret} VALUE --stack ${stack}`,
    );
}

/** A private key from stack config, refused when it is stored in plaintext in the stack file. */
function privateKeyConfig(namespace: string, name: string): pulumi.Output<string> {
  // The engine passes the names of secret config keys to the program in this variable.
  const secretKeys = process.env['PULUMI_CONFIG_SECRET_KEYS'];
  const key = `${namespace}:${name}`;
  if (secretKeys !== undefined && !(JSON.parse(secretKeys) as string[]).includes(key)) {
    throw new pulumi.RunError(
      `${key} is stored in plaintext in the stack file; set it again as a secret: pulumi config set --secret ${key} "$(cat key.pem)" --stack ${stack}`,
    );
  }
  return new pulumi.Config(namespace).requireSecret(name);
}

// The gateway's certificate, when it comes from stack config: secret values only.
const gatewayTls =
  config.gateway.tls?.source === 'config'
    ? {
        certificate: new pulumi.Config(GATEWAY_TLS_CONFIG.namespace).requireSecret(GATEWAY_TLS_CONFIG.certificate),
        privateKey: privateKeyConfig(GATEWAY_TLS_CONFIG.namespace, GATEWAY_TLS_CONFIG.privateKey),
      }
    : undefined;

// The policy bundle's signing key, when the stack gives its own (else the Platform makes one):
// `pulumi config set --secret policy:signingKey "$(cat key.pem)"`, an ECDSA P-256 key.
const policySigningKey = new pulumi.Config('policy').get('signingKey') === undefined ? undefined : privateKeyConfig('policy', 'signingKey');

function makeTarget(): Target {
  if (config.target === 'docker') {
    return new DockerTarget('docker', {
      prefix: dockerPrefixOf(stack),
      bindAddress: config.gateway.bindAddress,
      extraEdgeNetworks: config.docker.egressNetworks,
      liveWriterImage: images.agentd.ref,
    });
  }
  const k = config.kubernetes;
  // Without renderYamlTo the provider uses the ambient kubeconfig (KUBECONFIG, ~/.kube/config).
  const provider = new k8s.Provider('kubernetes', kubernetesProviderArgs(k.renderYamlTo));
  if (k.renderYamlTo && !k.renderSecrets) {
    pulumi.log.warn(
      `rendering manifests to ${k.renderYamlTo} without Secrets (they would be plaintext); create the Secrets out of band or set agentd:kubernetes.renderSecrets true`,
    );
  }
  return new KubernetesTarget('kubernetes', {
    namespace: k.namespace,
    provider,
    exposure: config.gateway.exposure,
    skipAwait: k.skipAwait,
    createSecrets: !k.renderYamlTo || k.renderSecrets,
    egressPeers: k.egressPeers,
  });
}
const target = makeTarget();

const platform = new Platform('agentd', {
  spec,
  config,
  images,
  target,
  credentials,
  ...(gatewayTls ? { gatewayTls } : {}),
  ...(policySigningKey ? { policySigningKey } : {}),
});

// Stack outputs. Optional ones are left out, not exported as undefined (which Pulumi warns about).
const monitoring = platform.monitoring;
export default {
  gatewayUrl: platform.gatewayUrl,
  grpcEndpoint: platform.grpcEndpoint,
  ...(platform.gatewayNodePort ? { gatewayNodePort: platform.gatewayNodePort } : {}),
  apiKeys: platform.apiKeys,
  policyRevision: platform.policyRevision,
  contentHashes: platform.contentHashes,
  ...(monitoring ? { grafanaUrl: monitoring.grafanaUrl, prometheusUrl: monitoring.prometheusUrl, grafanaAdminPassword: monitoring.grafanaAdminPassword } : {}),
};
