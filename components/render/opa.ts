// OPA's configuration: the bundle it loads, the Envoy ext_authz gRPC plugin it serves, masked
// decision logs, and metrics. Pure: the bundle bytes are rendered by policy/bundle.ts.

import { AUTHZ_DECISION_PATH, DECISION_LOG_MASK_PATH } from '../../policy/bundle.ts';
import type { Endpoint } from './envoy/common.ts';

export const OPA_BUNDLE_NAME = 'agentd';
export const OPA_BUNDLE_FILE = 'agentd-bundle.tar.gz';
/** The decision-log masking policy, a file of its own beside the config (not in the bundle). */
export const OPA_MASK_FILE = 'mask.rego';

export interface OpaRenderInput {
  /** Where the Envoy ext_authz gRPC plugin listens. */
  readonly grpc: Endpoint;
  /** Absolute path of the bundle file inside the OPA workload. */
  readonly bundlePath: string;
}

/**
 * OPA loads the bundle from a file with its bundle plugin (a `file://` resource), once at
 * start: a policy change is a new bundle file and a restart of OPA, which the targets do by
 * content hash. The plugin reports the revision (status, metrics) and `/health?bundles` stays
 * unhealthy until a bundle is active, so a missing or corrupt bundle means refusals (Envoy
 * fails closed), never an open door.
 */
export function renderOpaConfig(input: OpaRenderInput): object {
  return {
    bundles: {
      [OPA_BUNDLE_NAME]: { resource: `file://${input.bundlePath}` },
    },
    plugins: {
      envoy_ext_authz_grpc: {
        addr: `${input.grpc.host}:${input.grpc.port}`,
        path: AUTHZ_DECISION_PATH,
        'dry-run': false,
        'enable-reflection': false,
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
