// Structured JSON logs (pino). Tokens, keys and credential headers are redacted wherever they
// could appear; the code also never passes them to the logger on purpose.
import { pino, type DestinationStream, type Logger } from 'pino';
import { GATEWAY_TOKEN_HEADER, SANDBOX_TOKEN_HEADER } from './contract.ts';

export type { Logger };

const SENSITIVE = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', SANDBOX_TOKEN_HEADER, GATEWAY_TOKEN_HEADER, 'x-api-key'];

const REDACT_PATHS: string[] = [
  'token',
  '*.token',
  'key',
  'k',
  '*.k',
  'keys',
  '*.keys',
  ...SENSITIVE.flatMap((h) => [`headers["${h}"]`, `req.headers["${h}"]`, `res.headers["${h}"]`, `*.headers["${h}"]`]),
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'agentd' },
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options);
}
