// The agentd command line: `node agentd/src/main.ts` (or `node dist/agentd.mjs`) runs the
// daemon; `... healthcheck` probes a running one (for container HEALTHCHECKs, where there is
// no curl or shell) and exits 0 when it is alive.
//
// Exit codes: 0 stopped cleanly, 1 failed, 2 invalid configuration.
import { ConfigError, formatAddress, loadConfig, type AgentdConfig } from './config.ts';
import { HEALTH_PATH } from './contract.ts';
import { startAgentd } from './app.ts';
import { createLogger } from './log.ts';

const USAGE = `usage: agentd [healthcheck]
  Runs the daemon; \`healthcheck\` probes a running one (exit 0 when alive). Configuration comes from
  AGENTD_* environment variables (agentd/README.md).`;

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  let config: AgentdConfig;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`agentd: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  if (argv[0] === 'healthcheck') {
    const host = config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host === '::' ? '::1' : config.http.host;
    const url = `http://${formatAddress({ host, port: config.http.port })}${HEALTH_PATH}`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
      process.exit(res.ok ? 0 : 1);
    } catch {
      process.exit(1);
    }
  }
  if (argv.length > 0) {
    process.stderr.write(`agentd: unknown argument '${argv[0]}'\n${USAGE}\n`);
    process.exit(2);
  }

  const logger = createLogger(config.logLevel);
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception');
    logger.flush();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    logger.fatal({ err }, 'unhandled promise rejection');
    logger.flush();
    process.exit(1);
  });

  let agentd: Awaited<ReturnType<typeof startAgentd>>;
  try {
    agentd = await startAgentd(config, { logger });
  } catch (err) {
    logger.fatal({ err: { message: (err as Error).message, code: (err as NodeJS.ErrnoException).code } }, 'agentd failed to start');
    logger.flush();
    process.exit(1);
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal during shutdown: exiting now');
      logger.flush();
      process.exit(1);
    }
    agentd.close(signal).then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (err: unknown) => {
        logger.fatal({ err }, 'shutdown failed');
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

await main(process.argv.slice(2));
