// Locating and loading the proto files. From source they are in agentd/proto (two levels up
// from this file); in the bundle (dist/agentd.mjs) they are in dist/proto next to it.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_FILES, PROTO_ROOT } from '../contract.ts';

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: false,
  oneofs: true,
};

/** The proto root directory: next to the bundle, or agentd/proto from source. */
function protoDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, PROTO_ROOT), path.resolve(here, '..', '..', PROTO_ROOT)];
  for (const dir of candidates) {
    if (existsSync(path.join(dir, PROTO_FILES.agentd))) return dir;
  }
  throw new Error(`agentd proto files not found (looked in ${candidates.join(', ')}); the bundle needs dist/proto next to agentd.mjs`);
}

export function loadAgentdProtos(dir: string = protoDir()): protoLoader.PackageDefinition {
  return protoLoader.loadSync([PROTO_FILES.agentd, PROTO_FILES.health], { ...LOADER_OPTIONS, includeDirs: [dir] });
}
