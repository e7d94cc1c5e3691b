// Grafana Alloy's configuration: ship the platform's container logs (Docker) or pod logs
// (Kubernetes) to Loki with two labels only, `service` and `level`. Everything else a log line
// carries (path, sandbox id, client id, duration, status) stays in the line, where LogQL parses
// it at query time: labels index streams, and an unbounded label value (one stream per sandbox
// or path) would explode Loki's index. Label values are bounded too: `service` is kept only
// for the platform's own workloads, `level` is normalised to a fixed set.

import type { Endpoint } from '../envoy/common.ts';
import { JOBS } from './prometheus.ts';
import { attr, block, comment, obj, ref, toRiver, type RiverStatement } from './river.ts';

/** The only labels a log stream carries. */
export const LOG_LABELS = ['service', 'level'] as const;
export type LogLabel = (typeof LOG_LABELS)[number];

/** The values `level` can take (`warning` becomes `warn`); lines without a level carry no `level` label. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'critical'] as const;

/**
 * The `service` label values: the workload names a target gives the platform's containers or
 * pods (in the label named by LogDiscovery.serviceLabel). The platform's four match their
 * Prometheus jobs; the monitoring workloads ship their own logs too.
 */
export const LOG_SERVICES = {
  ...JOBS,
  prometheus: 'prometheus',
  loki: 'loki',
  alloy: 'alloy',
  grafana: 'grafana',
} as const;

/** Where logs come from. */
export type LogDiscovery =
  | {
      readonly kind: 'docker';
      /** The Docker daemon, e.g. `unix:///var/run/docker.sock`. */
      readonly host: string;
      /** The container label whose value names the workload (it becomes `service`). */
      readonly serviceLabel: string;
      /** Only containers with this label value too (one stack of several on a host). */
      readonly stackLabel?: { readonly name: string; readonly value: string };
    }
  | {
      readonly kind: 'kubernetes';
      /** The namespace of the platform's pods. */
      readonly namespace: string;
      /** The pod label whose value names the workload (it becomes `service`), e.g. `app.kubernetes.io/name`. */
      readonly serviceLabel: string;
    };

export interface AlloyRenderInput {
  readonly discovery: LogDiscovery;
  /** Loki, as Alloy reaches it. */
  readonly loki: Endpoint;
  /** Workload names whose logs are shipped; any other container or pod is ignored. */
  readonly services: readonly string[];
}

export const ALLOY_CONFIG_FILE = 'config.alloy';
/** Alloy's HTTP server (its UI and /metrics; /-/ready for probes). */
export const ALLOY_HTTP_PORT = 12345;

/** The Prometheus discovery label of a Docker container label or a pod label (invalid characters become `_`). */
const metaLabel = (kind: LogDiscovery['kind'], label: string): string =>
  `${kind === 'docker' ? '__meta_docker_container_label_' : '__meta_kubernetes_pod_label_'}${label.replace(/[^a-zA-Z0-9_]/g, '_')}`;

const anchoredOneOf = (values: readonly string[]) => values.map((v) => v.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&')).join('|');

/** Keep only the platform's workloads, and copy the workload name into `service`. */
function serviceRules(source: string, services: readonly string[]): RiverStatement[] {
  if (services.length === 0) throw new Error('Alloy needs at least one service to ship logs from');
  return [
    block('rule', [attr('source_labels', [source]), attr('regex', anchoredOneOf(services)), attr('action', 'keep')]),
    block('rule', [attr('source_labels', [source]), attr('target_label', 'service')]),
  ];
}

function sources(d: LogDiscovery, services: readonly string[]): RiverStatement[] {
  const receiver = [ref('loki.process.platform.receiver')];
  if (d.kind === 'docker') {
    const filters = [d.serviceLabel, ...(d.stackLabel ? [`${d.stackLabel.name}=${d.stackLabel.value}`] : [])];
    return [
      comment('Containers that carry the workload label (Docker filters them on the daemon side).'),
      block(
        'discovery.docker',
        [
          attr('host', d.host),
          attr('refresh_interval', '15s'),
          // Docker ANDs the values of a `label` filter: the workload label, and the stack's if given.
          block('filter', [attr('name', 'label'), attr('values', filters)]),
        ],
        'platform',
      ),
      // Filtering happens on targets: loki.source.docker ignores a `keep` in its own relabel rules.
      block(
        'discovery.relabel',
        [attr('targets', ref('discovery.docker.platform.targets')), ...serviceRules(metaLabel('docker', d.serviceLabel), services)],
        'platform',
      ),
      block('loki.source.docker', [attr('host', d.host), attr('targets', ref('discovery.relabel.platform.output')), attr('forward_to', receiver)], 'platform'),
    ];
  }
  return [
    comment('Pods of the platform namespace that carry the workload label.'),
    block(
      'discovery.kubernetes',
      [attr('role', 'pod'), block('namespaces', [attr('names', [d.namespace])]), block('selectors', [attr('role', 'pod'), attr('label', d.serviceLabel)])],
      'platform',
    ),
    block(
      'discovery.relabel',
      [
        attr('targets', ref('discovery.kubernetes.platform.targets')),
        block('rule', [attr('source_labels', ['__meta_kubernetes_pod_container_init']), attr('regex', 'true'), attr('action', 'drop')]),
        ...serviceRules(metaLabel('kubernetes', d.serviceLabel), services),
      ],
      'platform',
    ),
    block('loki.source.kubernetes', [attr('targets', ref('discovery.relabel.platform.output')), attr('forward_to', receiver)], 'platform'),
  ];
}

/** Alloy's configuration as statements (serialize with toRiver). */
export function renderAlloyConfig(input: AlloyRenderInput): RiverStatement[] {
  return [
    comment('Generated by the agentd platform (components/render/monitoring/alloy.ts). Do not edit.'),
    block('logging', [attr('level', 'warn'), attr('format', 'logfmt')]),
    ...sources(input.discovery, input.services),
    comment('Labels: service (above) and level (below), nothing else.'),
    block(
      'loki.process',
      [
        attr('forward_to', [ref('loki.write.loki.receiver')]),
        comment('agentd (pino) and OPA write JSON lines with a "level" field.'),
        block('stage.json', [attr('expressions', obj({ raw_level: 'level' }))]),
        comment("Envoy's own log lines: [time][thread][level][logger] message."),
        block('stage.regex', [attr('expression', '^\\[[^\\]]*\\]\\[[^\\]]*\\]\\[(?P<raw_level>[a-z]+)\\]')]),
        // All three write lower-case levels; anchoring the set (and matching "warning" by its
        // prefix) keeps the label to LOG_LEVELS whatever a line claims.
        comment('Only the fixed set of levels becomes a label ("warning" becomes "warn"); anything else gets none.'),
        block('stage.regex', [attr('source', 'raw_level'), attr('expression', `^(?P<level>${LOG_LEVELS.join('|')})`)]),
        block('stage.labels', [attr('values', obj({ level: '' }))]),
        comment('Whatever a source added (job, instance, container): dropped.'),
        block('stage.label_keep', [attr('values', [...LOG_LABELS])]),
      ],
      'platform',
    ),
    block('loki.write', [block('endpoint', [attr('url', `http://${input.loki.host}:${input.loki.port}/loki/api/v1/push`)])], 'loki'),
  ];
}

/** The configuration file's text. */
export const renderAlloyFile = (input: AlloyRenderInput): string => toRiver(renderAlloyConfig(input));

/** Alloy's command line: run the config, keep positions in the data directory, no usage reporting. */
export function alloyArgs(opts: { configDir: string; dataDir: string }): string[] {
  return [
    'run',
    `${opts.configDir}/${ALLOY_CONFIG_FILE}`,
    `--storage.path=${opts.dataDir}`,
    `--server.http.listen-addr=0.0.0.0:${ALLOY_HTTP_PORT}`,
    '--disable-reporting',
  ];
}
