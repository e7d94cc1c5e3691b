// Development API keys for the local tools (policy bundle, dev mode): generated once, kept in
// build/dev/api-keys.json (mode 0600, ignored by git), never used by a deployed stack.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PolicySpec } from '../policy/spec.ts';
import { ROOT } from './pulumi-env.ts';

export const DEV_KEYS_FILE = join(ROOT, 'build/dev/api-keys.json');

export function devApiKeys(spec: PolicySpec): Record<string, string> {
  const keys: Record<string, string> = existsSync(DEV_KEYS_FILE) ? JSON.parse(readFileSync(DEV_KEYS_FILE, 'utf8')) : {};
  let changed = false;
  for (const c of spec.clients) {
    if (!keys[c.id]) {
      keys[c.id] = `agk_dev_${randomBytes(24).toString('base64url')}`;
      changed = true;
    }
  }
  if (changed) {
    mkdirSync(join(DEV_KEYS_FILE, '..'), { recursive: true });
    writeFileSync(DEV_KEYS_FILE, JSON.stringify(keys, null, 2) + '\n', { mode: 0o600 });
    chmodSync(DEV_KEYS_FILE, 0o600);
  }
  return Object.fromEntries(spec.clients.map((c) => [c.id, keys[c.id]!]));
}
