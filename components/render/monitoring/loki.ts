// Loki's configuration: one process (all components), local filesystem storage, retention
// enforced by the compactor. Loki's own label discovery is switched off, so a stream carries
// exactly the labels Alloy sends (service, level) and nothing Loki infers.
// Keys follow Loki 3.x's configuration reference (docs/sources/shared/configuration.md).

export const LOKI_CONFIG_FILE = 'config.yaml';
export const LOKI_HTTP_PORT = 3100;
const LOKI_GRPC_PORT = 9095;

export interface LokiRenderInput {
  /** Data directory inside the workload (a volume): chunks, index, compactor state. */
  readonly dataDir: string;
  /** How long logs are kept, days (default 7). */
  readonly retentionDays?: number;
}

/** Loki's configuration (serialize with toYaml). */
export function renderLokiConfig(input: LokiRenderInput): object {
  const days = input.retentionDays ?? 7;
  if (!Number.isInteger(days) || days < 1) throw new Error(`retentionDays must be a whole number >= 1, got ${days}`);
  const retention = `${days * 24}h`;
  const dir = input.dataDir.replace(/\/+$/, '');
  return {
    // One tenant; Loki is reachable only inside the platform's network.
    auth_enabled: false,
    server: {
      http_listen_address: '0.0.0.0',
      http_listen_port: LOKI_HTTP_PORT,
      grpc_listen_address: '127.0.0.1',
      grpc_listen_port: LOKI_GRPC_PORT,
      log_level: 'warn',
    },
    common: {
      instance_addr: '127.0.0.1',
      path_prefix: dir,
      storage: { filesystem: { chunks_directory: `${dir}/chunks`, rules_directory: `${dir}/rules` } },
      replication_factor: 1,
      ring: { kvstore: { store: 'inmemory' } },
    },
    schema_config: {
      configs: [
        {
          // A fixed date, not "today": a later render must not start a new schema period.
          from: '2024-01-01',
          store: 'tsdb',
          object_store: 'filesystem',
          schema: 'v13',
          index: { prefix: 'index_', period: '24h' },
        },
      ],
    },
    compactor: {
      working_directory: `${dir}/compactor`,
      compaction_interval: '10m',
      retention_enabled: true,
      retention_delete_delay: '2h',
      delete_request_store: 'filesystem',
    },
    limits_config: {
      retention_period: retention,
      reject_old_samples: true,
      reject_old_samples_max_age: retention,
      // Streams keep the labels Alloy sent: no service_name or detected level added here.
      discover_service_name: [],
      discover_log_levels: false,
    },
    analytics: { reporting_enabled: false },
  };
}

/** Loki's command line. */
export const lokiArgs = (configDir: string): string[] => [`-config.file=${configDir}/${LOKI_CONFIG_FILE}`];
