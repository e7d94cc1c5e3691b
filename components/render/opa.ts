// OPA's configuration: the bundle it loads, the sandbox registry it polls from agentd, the Envoy
// ext_authz gRPC plugin it serves, masked decision logs, and metrics. Pure: the bundle bytes are
// rendered by policy/bundle.ts.

import { AUTHZ_DECISION_PATH, AUTHZ_INPUT_PATHS, DECISION_LOG_MASK_PATH } from '../../policy/bundle.ts';
import { POLICY_SIGNING_ALGORITHM, POLICY_SIGNING_KEY_ID } from '../../policy/signing.ts';
import { REGISTRY_BUNDLE_PATH } from '../../agentd/src/contract.ts';
import type { Endpoint } from './envoy/common.ts';

export const OPA_BUNDLE_NAME = 'agentd';
export const OPA_BUNDLE_FILE = 'agentd-bundle.tar.gz';
/** The decision-log masking policy, a file of its own beside the config (not in the bundle). */
export const OPA_MASK_FILE = 'mask.rego';

/** The sandbox registry bundle (agentd's; root REGISTRY_BUNDLE_ROOT, data.sandboxes.active). */
export const OPA_REGISTRY_BUNDLE_NAME = 'sandboxes';
/** The OPA service (config `services.<name>`) the registry bundle is fetched from: agentd. */
export const OPA_REGISTRY_SERVICE = 'agentd';
/** How long agentd may hold a registry request open when nothing changed (OPA's `Prefer: wait=`). */
export const REGISTRY_LONG_POLLING_TIMEOUT_SECONDS = 10;
/**
 * Polling delays of the registry bundle, in whole seconds (OPA's unit). With long polling they
 * only apply after a failed request (OPA retries with a backoff from 100 ms capped at the max
 * delay, so a restarted agentd is polled again within REGISTRY_MAX_DELAY_SECONDS) or when agentd
 * answers without long-polling support (then OPA polls every min..max seconds).
 */
const REGISTRY_MIN_DELAY_SECONDS = 1;
const REGISTRY_MAX_DELAY_SECONDS = 1;

export interface OpaRegistryInput {
  /** agentd's base URL as OPA reaches it, e.g. http://agentd:8090 (no path). */
  readonly url: string;
  /** File inside the OPA workload holding the bearer token agentd expects (AGENTD_REGISTRY_TOKEN_FILE on its side). */
  readonly tokenFile: string;
  /** Long-poll timeout agentd is asked to honour; default REGISTRY_LONG_POLLING_TIMEOUT_SECONDS. */
  readonly longPollingTimeoutSeconds?: number;
}

/** The service (config `services.<name>`) OPA downloads the policy bundle from: the bundle server. */
export const OPA_POLICY_SERVICE = 'bundles';
/** The policy bundle's path at the bundle server. */
export const POLICY_BUNDLE_RESOURCE = '/bundles/agentd.tar.gz';
/** How often OPA asks the bundle server for a new revision, in whole seconds (OPA's unit). */
const POLICY_POLL_SECONDS = 1;

export interface OpaRenderInput {
  /** Where the Envoy ext_authz gRPC plugin listens. */
  readonly grpc: Endpoint;
  /**
   * Where OPA gets the policy bundle: the bundle server's base URL (a deploy: OPA takes every new
   * revision without a restart, and only a signed one, verified with the public key that
   * opaRunArgs' `verificationKeyFile` gives OPA), or a file it loads once at start (tests and
   * benchmarks that run OPA alone; unsigned).
   */
  readonly bundle: { readonly url: string } | { readonly file: string };
  /**
   * The sandbox registry served by agentd. Without it data.sandboxes.active is never loaded and
   * the egress policy refuses every sandbox (503 sandbox_registry_unavailable): fail closed.
   */
  readonly registry?: OpaRegistryInput;
}

/** Decisions the cache holds at most (it is emptied and refilled beyond): about 1 KiB each. */
const DECISION_CACHE_MAX_ENTRIES = 10_000;
/** How long a cached decision is reused at most (changes of data and time end it sooner). */
const DECISION_CACHE_MAX_AGE_SECONDS = 60;
/** Decision log entries waiting to be written at most (a burst of a few seconds at full rate). */
const DECISION_LOG_QUEUE_ENTRIES = 10_000;

/**
 * The policy bundle: downloaded from the bundle server (service `bundles`, polled every second
 * with the ETag OPA holds; the server answers 304 until its revision changes), so a policy
 * change reaches OPA without restarting it. OPA activates a new revision only when the whole
 * bundle parses and compiles and its signature verifies; otherwise it keeps the active one and
 * reports the error (status, metrics, log): never fail open, never an outage.
 *
 * Signatures (always with `url`): the bundle must carry a `.signatures.json` whose JWT, signed
 * with the key of id POLICY_SIGNING_KEY_ID (ES256), lists the digest of every file in it
 * (policy/signing.ts). The config names the key id in the bundle's `signing` block, so OPA
 * verifies with that key whatever `kid` the JWT claims, and refuses an unsigned bundle (OPA
 * before 1.21.3 accepted unsigned bundles under a signing config without a key id,
 * GHSA-g2pf-6v5v-qcc8; we pin the id and run 1.22.3). The key itself is not in this file: opaRunArgs adds it from its own file
 * (`--set-file keys.<id>.key=...`), so the config stays the same for every deploy and key. Not persisted: a restarted OPA refuses until
 * the server has answered once. With a `file` instead, OPA loads the bundle once at start (a
 * `file://` resource; the tests and benchmarks that run OPA alone). Either way the plugin
 * reports the active revision (status, metrics) and `/health?bundles` stays unhealthy until a
 * bundle is active, so a missing or corrupt first bundle means refusals (Envoy fails closed).
 *
 * The sandbox registry (with `registry`): a second bundle, `sandboxes`, downloaded from agentd
 * (service `agentd`, resource REGISTRY_BUNDLE_PATH, bearer token from a file) with long polling,
 * so that a terminated sandbox's token stops working at the egress proxy within a second. What
 * OPA 1.x needs for that (v1/download/download.go, v1/plugins/rest, v1/plugins/bundle):
 * - long polling is on from the first request when `polling.long_polling_timeout_seconds` is
 *   set: OPA sends `If-None-Match: <last ETag>` and `Prefer: modes=snapshot,delta;wait=<s>`, with
 *   no response-header timeout. agentd answers 200 with the bundle as soon as its ETag differs
 *   from If-None-Match, or holds the request until something changes or `wait` seconds pass and
 *   then answers 304 (with the ETag); after a 200 or 304 OPA asks again at once;
 * - OPA keeps long polling only while agentd's 200 answers carry
 *   `Content-Type: application/vnd.openpolicyagent.bundles` exactly (no parameters): any other
 *   content type (application/gzip, octet-stream) still loads the bundle, but silently turns
 *   long polling off and OPA falls back to polling every min..max delay seconds;
 * - every 200 must carry an ETag (OPA sends it back as If-None-Match; without one OPA asks for
 *   the full bundle each time) and a `.manifest` with `"roots": ["sandboxes"]` (a bundle without
 *   roots claims all of data and OPA refuses it, as it overlaps the policy bundle's `agentd`);
 * - `persist: false`: OPA never writes the registry to disk, so after a restart it refuses
 *   egress until agentd has answered, rather than trusting a stale list. A registry loaded once
 *   stays in force while agentd is unreachable (tokens still expire at their exp);
 * - `/health?bundles` waits for every configured bundle, so OPA is ready only once agentd has
 *   served the registry once (agentd must not wait for OPA to become ready);
 * - decision_logs keeps `console: true` and status `prometheus: true`: with a service configured
 *   and neither set, OPA would upload decision logs or status to its first service, agentd.
 *
 * The ext_authz plugin runs with agentd's two extensions (docs/benchmarks.md, "Authorization at
 * the speed of the proxy"; upstream's plugin ignores both keys):
 * - `decision-cache`: a decision is reused for an identical input (AUTHZ_INPUT_PATHS, on which
 *   the policy is then evaluated) until the store changes (a bundle, the registry), its
 *   `cache_until_ns` passes (a key's grace period, a token's exp) or DECISION_CACHE_MAX_AGE_SECONDS;
 * - `decision-log-queue`: decision logs are masked and written after the answer, by one writer;
 *   a full queue drops entries and counts them (decision_logs_dropped_total, alert
 *   DecisionLogsDropped).
 */
export function renderOpaConfig(input: OpaRenderInput): object {
  const registry = input.registry;
  const served = 'url' in input.bundle ? input.bundle : undefined;
  // OPA joins url + '/' + resource: no trailing slash on the one, no leading one on the other.
  const base = (url: string) => url.replace(/\/+$/, '');
  const services = {
    ...(served ? { [OPA_POLICY_SERVICE]: { url: base(served.url) } } : {}),
    ...(registry ? { [OPA_REGISTRY_SERVICE]: { url: base(registry.url), credentials: { bearer: { token_path: registry.tokenFile } } } } : {}),
  };
  return {
    ...(Object.keys(services).length > 0 ? { services } : {}),
    ...(served ? { keys: { [POLICY_SIGNING_KEY_ID]: { algorithm: POLICY_SIGNING_ALGORITHM } } } : {}),
    bundles: {
      [OPA_BUNDLE_NAME]:
        'url' in input.bundle
          ? {
              service: OPA_POLICY_SERVICE,
              resource: POLICY_BUNDLE_RESOURCE.replace(/^\//, ''),
              persist: false,
              polling: { min_delay_seconds: POLICY_POLL_SECONDS, max_delay_seconds: POLICY_POLL_SECONDS },
              signing: { keyid: POLICY_SIGNING_KEY_ID },
            }
          : { resource: `file://${input.bundle.file}` },
      ...(registry
        ? {
            [OPA_REGISTRY_BUNDLE_NAME]: {
              service: OPA_REGISTRY_SERVICE,
              resource: REGISTRY_BUNDLE_PATH.replace(/^\//, ''),
              persist: false,
              polling: {
                min_delay_seconds: REGISTRY_MIN_DELAY_SECONDS,
                max_delay_seconds: REGISTRY_MAX_DELAY_SECONDS,
                long_polling_timeout_seconds: registry.longPollingTimeoutSeconds ?? REGISTRY_LONG_POLLING_TIMEOUT_SECONDS,
              },
            },
          }
        : {}),
    },
    plugins: {
      envoy_ext_authz_grpc: {
        addr: `${input.grpc.host}:${input.grpc.port}`,
        path: AUTHZ_DECISION_PATH,
        'dry-run': false,
        'enable-reflection': false,
        'decision-cache': {
          'max-entries': DECISION_CACHE_MAX_ENTRIES,
          'max-age-seconds': DECISION_CACHE_MAX_AGE_SECONDS,
          input: AUTHZ_INPUT_PATHS.map((p) => [...p]),
        },
        'decision-log-queue': DECISION_LOG_QUEUE_ENTRIES,
      },
    },
    decision_logs: {
      console: true,
      mask_decision: DECISION_LOG_MASK_PATH,
    },
    status: { console: false, prometheus: true },
  };
}

/** OPA's memory limit on every target. */
export const OPA_MEMORY_MIB = 256;

/**
 * The Go runtime settings OPA runs with (same in the test harness and the benchmarks). A policy
 * decision allocates a lot of short-lived garbage: with Go's default GOGC=100 the collector
 * runs every few hundred decisions, and each cycle also shrinks the goroutine stacks that Rego
 * evaluation then grows (copies) again. GOGC=400 with a soft memory limit below the container
 * limit (the collector works harder only near it) and no stack shrinking cut OPA's CPU per
 * decision by about a quarter in a side-by-side run (docs/benchmarks.md).
 */
export function opaRuntimeEnv(memoryMiB: number = OPA_MEMORY_MIB): Record<string, string> {
  return {
    GOGC: '400',
    GOMEMLIMIT: `${Math.floor(memoryMiB * 0.7)}MiB`,
    GODEBUG: 'gcshrinkstackoff=1',
  };
}

/**
 * OPA's command line after the binary, the same wherever OPA runs (a workload, the test harness,
 * the benchmarks): the REST API on `apiAddr` (loopback in a workload), health and metrics on the
 * diagnostic address when given, JSON logs, and the decision-log mask loaded from its own file,
 * apart from the bundle, so that it applies before any bundle does. `verificationKeyFile`: the
 * PEM public key signed bundles are verified with, set as the pinned key's value (renderOpaConfig).
 */
export function opaRunArgs(o: {
  apiAddr: string;
  diagnosticAddr?: string;
  configFile: string;
  maskFile?: string;
  verificationKeyFile?: string;
  logLevel?: 'debug' | 'info' | 'error';
}): string[] {
  return [
    'run',
    '--server',
    '--addr',
    o.apiAddr,
    ...(o.diagnosticAddr ? ['--diagnostic-addr', o.diagnosticAddr] : []),
    '--config-file',
    o.configFile,
    ...(o.verificationKeyFile ? ['--set-file', `keys.${POLICY_SIGNING_KEY_ID}.key=${o.verificationKeyFile}`] : []),
    '--log-format',
    'json',
    '--log-level',
    o.logLevel ?? 'info',
    ...(o.maskFile ? [o.maskFile] : []),
  ];
}
