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
