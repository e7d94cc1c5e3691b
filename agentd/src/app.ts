// Assembly: storage, tokens, egress client, the domain core, and the two transports; and the
// graceful shutdown that takes them down in order. main.ts wraps this for the command line;
// tests start it in-process.
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import {
  PURGE_INTERVAL_MS,
  REGISTRY_ACK_TIMEOUT_MS,
  REGISTRY_MAX_WAIT_SECONDS,
  REGISTRY_POLLER_SEEN_MS,
  formatAddress,
  readSecretFile,
  type AgentdConfig,
} from './config.ts';
import { ENV, METRICS_PATH } from './contract.ts';
import { CallerAuthenticator } from './core/caller.ts';
import { EgressClient } from './core/egress.ts';
import { SandboxRegistry } from './core/registry.ts';
import { Retention } from './core/retention.ts';
import { AgentdService } from './core/service.ts';
import { TokenService, generateJwks } from './core/tokens.ts';
import { startGrpcServer, type GrpcHandle } from './grpc/server.ts';
import { loadAgentdProtos } from './grpc/protos.ts';
import { startMetricsServer, type MetricsServer } from './http/metrics-server.ts';
import { buildHttpServer, trackConnections } from './http/server.ts';
import { createLogger, type Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { Storage } from './storage/sqlite.ts';
import { VERSION } from './version.ts';

export interface StartOptions {
  logger?: Logger;
  /** Use these keys instead of AGENTD_TOKEN_KEY_FILE (tests). */
  tokens?: TokenService;
  version?: string;
}

export interface Agentd {
  readonly config: AgentdConfig;
  readonly logger: Logger;
  readonly service: AgentdService;
  /** The Prometheus registry and the metric objects. */
  readonly prom: Metrics;
  readonly tokens: TokenService;
  readonly registry: SandboxRegistry;
  readonly retention: Retention;
  /** Path of the SQLite database file. */
  readonly databaseFile: string;
  /** Bound addresses (the real ports when the configuration asked for port 0). */
  readonly http: { host: string; port: number; url: string };
  readonly grpc: { host: string; port: number; address: string };
  /** The metrics listener; `url` is the full URL of /metrics. */
  readonly metrics: { host: string; port: number; url: string };
  /** Graceful shutdown: drain HTTP and gRPC (bounded by AGENTD_SHUTDOWN_GRACE_MS), close storage. */
  close(reason?: string): Promise<void>;
}

export async function startAgentd(config: AgentdConfig, opts: StartOptions = {}): Promise<Agentd> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const version = opts.version ?? VERSION;
  const tokens = opts.tokens ?? (await loadTokens(config, logger));
  // Secrets are read once, at start; a missing or short one stops the start (naming the variable).
  const gatewayToken = config.gatewayTokenFile === null ? null : readSecretFile(config.gatewayTokenFile, ENV.gatewayTokenFile);
  const registryToken = config.registryTokenFile === null ? null : readSecretFile(config.registryTokenFile, ENV.registryTokenFile);
  if (gatewayToken === null) {
    logger.warn(
      { variable: ENV.gatewayTokenFile },
      `${ENV.gatewayTokenFile} is not set (development): API requests without identity headers act as a local admin`,
    );
  }
  if (registryToken === null) {
    logger.warn(
      { variable: ENV.registryTokenFile },
      `${ENV.registryTokenFile} is not set (development): the sandbox registry answers loopback clients only, without a token`,
    );
  }

  const storage = new Storage(config.dataDir);
  const interrupted = storage.interruptRunningIntents(Date.now(), 'interrupted: agentd stopped before the intent completed');
  if (interrupted > 0) logger.warn({ count: interrupted }, 'intents left running by a previous process are now interrupted');

  const metrics = new Metrics({ version, countActiveSandboxes: () => storage.countActiveSandboxes(Date.now()) });
  const egress = new EgressClient({ egressUrl: config.egressUrl, maxBytes: config.fetchMaxBytes });
  const registry = new SandboxRegistry({
    storage,
    logger,
    ackTimeoutMs: REGISTRY_ACK_TIMEOUT_MS,
    pollerSeenMs: REGISTRY_POLLER_SEEN_MS,
    expectPoller: config.registryTokenFile !== null,
    maxWaitSeconds: REGISTRY_MAX_WAIT_SECONDS,
  });
  const service = new AgentdService({ config, storage, tokens, egress, metrics, logger, version, registry });
  const auth = new CallerAuthenticator({ gatewayToken, allTiers: config.sandboxTiers, logger });
  const retention = new Retention({ storage, metrics, logger, retentionDays: config.retentionDays, intentsPerSandbox: config.retentionIntentsPerSandbox });

  let http: FastifyInstance | undefined;
  let grpcHandle: GrpcHandle | undefined;
  let metricsServer: MetricsServer | undefined;
  let connections: ReturnType<typeof trackConnections> | undefined;
  try {
    http = await buildHttpServer({ config, service, metrics, logger, version, auth, registry, registryToken });
    connections = trackConnections(http.server);
    await http.listen({ host: config.http.host, port: config.http.port, listenTextResolver: (address) => `http listening at ${address}` });
    grpcHandle = await startGrpcServer({ service, auth, metrics, logger, listen: config.grpc, packageDefinition: loadAgentdProtos() });
    metricsServer = await startMetricsServer({ metrics, listen: config.metrics, logger });
  } catch (err) {
    grpcHandle?.forceShutdown();
    await http?.close().catch(() => undefined);
    await metricsServer?.close();
    await egress.close();
    storage.close();
    throw err;
  }
  registry.start();
  retention.start(PURGE_INTERVAL_MS);
  const httpPort = (http.server.address() as AddressInfo).port;
  const httpAddr = { host: config.http.host, port: httpPort };
  const grpcAddr = { host: config.grpc.host, port: grpcHandle.port };
  const clientHost = (h: string): string => (h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '::1' : h);
  const httpUrl = `http://${formatAddress({ host: clientHost(httpAddr.host), port: httpPort })}`;
  const metricsAddr = { host: config.metrics.host, port: metricsServer.port };
  const metricsUrl = `http://${formatAddress({ host: clientHost(metricsAddr.host), port: metricsAddr.port })}${METRICS_PATH}`;

  logger.info(
    {
      version,
      mode: config.mode,
      http: formatAddress(httpAddr),
      grpc: formatAddress(grpcAddr),
      metrics: formatAddress(metricsAddr),
      data_dir: config.dataDir,
      egress_url: config.egressUrl,
      token_kid: tokens.signingKid,
    },
    'agentd listening',
  );

  const httpServer = http;
  const grpcServer = grpcHandle;
  const httpConnections = connections;
  const metricsListener = metricsServer;
  let closing: Promise<void> | undefined;
  const close = (reason = 'close'): Promise<void> => {
    closing ??= (async () => {
      const grace = config.shutdownGraceMs;
      logger.info({ reason, grace_ms: grace, in_flight_intents: service.inFlightIntents }, 'shutting down: draining in-flight requests');
      service.beginDrain();
      // Held registry long polls answer now, so that they do not hold the drain open.
      registry.close();
      await retention.stop();
      const drained = Promise.allSettled([httpServer.close(), grpcServer.shutdown()]).then(() => 'drained' as const);
      // Connections without a request in flight do not hold the drain open.
      const idleSweep = setInterval(() => httpConnections.closeIdle(), 100);
      void drained.finally(() => clearInterval(idleSweep));
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<'expired'>((resolve) => {
        timer = setTimeout(() => resolve('expired'), grace);
      });
      const first = await Promise.race([drained, expired]);
      clearTimeout(timer);
      clearInterval(idleSweep);
      if (first === 'expired') {
        logger.warn({ in_flight_intents: service.inFlightIntents }, 'grace period over: interrupting what is still running');
        service.abortInFlight();
        // Handlers record their intents as interrupted and answer; then cut what remains.
        await Promise.race([drained, delay(500)]);
        grpcServer.forceShutdown();
        httpServer.server.closeAllConnections();
        await Promise.race([drained, delay(500)]);
      }
      await Promise.race([egress.close(), delay(500)]);
      egress.destroy();
      await metricsListener.close();
      storage.close();
      logger.info({ reason }, 'agentd stopped');
    })();
    return closing;
  };

  return {
    config,
    logger,
    service,
    prom: metrics,
    tokens,
    registry,
    retention,
    databaseFile: storage.file,
    http: { ...httpAddr, url: httpUrl },
    metrics: { ...metricsAddr, url: metricsUrl },
    grpc: { ...grpcAddr, address: formatAddress({ host: clientHost(grpcAddr.host), port: grpcAddr.port }) },
    close,
  };
}

async function loadTokens(config: AgentdConfig, logger: Logger): Promise<TokenService> {
  if (config.tokenKeyFile !== null) {
    const tokens = await TokenService.fromFile(config.tokenKeyFile, config.tokenKid);
    logger.info({ key_file: config.tokenKeyFile, signing_kid: tokens.signingKid, kids: tokens.kids }, 'sandbox token keys loaded');
    return tokens;
  }
  // Only reachable in development mode (the configuration requires a key file in production).
  logger.warn(
    { variable: ENV.tokenKeyFile },
    `${ENV.tokenKeyFile} is not set: signing sandbox tokens with an ephemeral key generated for this process; an egress proxy cannot verify them. Set ${ENV.tokenKeyFile} to a JWKS file for anything but local development`,
  );
  return new TokenService(generateJwks('dev-ephemeral'));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
