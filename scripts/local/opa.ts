// OPA (with the Envoy ext_authz gRPC plugin) as a child process serving a built bundle, and a
// client that calls it exactly as Envoy does: ext_authz v3 Check over gRPC. Also a stand-in for
// agentd's sandbox registry (the second bundle OPA long-polls), for tests without agentd.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { OPA_BUNDLE_FILE, opaRunArgs, opaRuntimeEnv, renderOpaConfig, type OpaRegistryInput } from '../../components/render/opa.ts';
import { MASK_POLICY_FILE, sha256Hex, stableJson, tarGz } from '../../policy/bundle.ts';
import { OPA_CONFIG_FILE } from '../../components/render/platform.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { REGISTRY_BUNDLE_PATH, REGISTRY_BUNDLE_ROOT } from '../../agentd/src/contract.ts';
import { ManagedProcess, answers, freePort } from './processes.ts';
import { REPO_ROOT, toolPath } from './tools.ts';

export interface RunningOpa {
  readonly process: ManagedProcess;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly dir: string;
}

export interface StartOpaOptions {
  readonly grpc?: number;
  readonly http?: number;
  /** The sandbox registry OPA polls (agentd, or a {@link RegistryServer}); rendered by renderOpaConfig. */
  readonly registry?: OpaRegistryInput;
  /**
   * When start() returns. `bundles` (default): `/health?bundles`, i.e. every configured bundle
   * is active, the registry included when one is configured (OPA has its answer to every
   * request). `policy`: the policy bundle's data is loaded, whatever the registry does (to test
   * an OPA whose registry is unreachable: it never gets healthy).
   */
  readonly readyWhen?: 'bundles' | 'policy';
  /** Changes the rendered config before OPA reads it (the benchmarks' diagnostic variants). */
  readonly editConfig?: (config: Record<string, unknown>) => void;
}

/** Writes config and bundle into `dir` and starts OPA; ready once the bundles are active. */
export async function startOpa(dir: string, bundle: Buffer, options: StartOpaOptions = {}): Promise<RunningOpa> {
  mkdirSync(dir, { recursive: true });
  const grpcPort = options.grpc ?? (await freePort());
  const httpPort = options.http ?? (await freePort());
  writeFileSync(join(dir, OPA_BUNDLE_FILE), bundle);
  const config = renderOpaConfig({
    grpc: { host: '127.0.0.1', port: grpcPort },
    bundle: { file: join(dir, OPA_BUNDLE_FILE) },
    ...(options.registry ? { registry: options.registry } : {}),
  }) as Record<string, unknown>;
  options.editConfig?.(config);
  writeFileSync(join(dir, OPA_CONFIG_FILE), toYaml(config));
  const base = `http://127.0.0.1:${httpPort}`;
  const ready =
    options.readyWhen === 'policy' ? async () => (await answers(`${base}/health`)) && (await policyLoaded(base)) : () => answers(`${base}/health?bundles`);
  const proc = new ManagedProcess(
    {
      name: 'opa',
      command: toolPath('opa'),
      args: opaRunArgs({ apiAddr: `127.0.0.1:${httpPort}`, configFile: join(dir, OPA_CONFIG_FILE), maskFile: MASK_POLICY_FILE }),
      ready,
      env: opaRuntimeEnv(),
    },
    join(dir, 'opa.log'),
  );
  try {
    await proc.start();
  } catch (e) {
    // Not ready in time (e.g. a bundle that does not compile): the caller gets no handle to stop it.
    await proc.kill();
    throw e;
  }
  return { process: proc, grpcPort, httpPort, dir };
}

async function policyLoaded(base: string): Promise<boolean> {
  const r = await fetch(`${base}/v1/data/agentd/config/gateway/roles`, { signal: AbortSignal.timeout(1000) });
  const body = (await r.json()) as { result?: unknown };
  return r.status === 200 && body.result !== undefined;
}

/** An entry of data.sandboxes.active, as agentd serves it. */
export interface RegistryEntry {
  readonly tier: string;
  /** Epoch seconds. */
  readonly exp: number;
}

/** The registry bundle's bytes for a set of active sandboxes (as agentd builds it). */
function registryBundle(active: Readonly<Record<string, RegistryEntry>>, opts: { manifest?: boolean } = {}): { bytes: Buffer; etag: string } {
  const data = stableJson({ active }) + '\n';
  const revision = sha256Hex(data).slice(0, 20);
  const files: Record<string, string> = { [`${REGISTRY_BUNDLE_ROOT}/data.json`]: data };
  if (opts.manifest !== false) files['.manifest'] = stableJson({ revision, roots: [REGISTRY_BUNDLE_ROOT] }) + '\n';
  return { bytes: tarGz(files), etag: `"${revision}"` };
}

const REGISTRY_CONTENT_TYPE = 'application/vnd.openpolicyagent.bundles';

/**
 * A stand-in for agentd's registry endpoint: serves the registry bundle at REGISTRY_BUNDLE_PATH
 * with a bearer token, an ETag and long polling (a request whose If-None-Match is the current
 * ETag is held until the registry changes or the `Prefer: wait=N` seconds pass, then 304).
 */
export class RegistryServer {
  readonly token: string;
  readonly tokenFile: string;
  private server: Server | undefined;
  private port = 0;
  private current: { bytes: Buffer; etag: string };
  private readonly manifest: boolean;
  private delayFirstMs: number;
  private waiting = new Set<() => void>();
  /** Requests seen, for assertions: method, If-None-Match, Prefer, Authorization, status. */
  readonly requests: { ifNoneMatch?: string; prefer?: string; authorization?: string; status: number }[] = [];

  /**
   * opts.manifest: false serves a bundle without .manifest (no roots), as a broken agentd would.
   * opts.delayFirstMs holds the first answer back (a slow agentd), e.g. to see that OPA is not
   * reported ready before it has the registry.
   */
  constructor(dir: string, active: Readonly<Record<string, RegistryEntry>>, opts: { manifest?: boolean; delayFirstMs?: number } = {}) {
    mkdirSync(dir, { recursive: true });
    this.token = `registry-token-${sha256Hex(dir).slice(0, 16)}`;
    this.tokenFile = join(dir, 'registry-token');
    writeFileSync(this.tokenFile, `${this.token}\n`, { mode: 0o600 });
    this.manifest = opts.manifest !== false;
    this.delayFirstMs = opts.delayFirstMs ?? 0;
    this.current = registryBundle(active, { manifest: this.manifest });
  }

  /** Listens on `port` (default: a free one). */
  async start(port?: number): Promise<this> {
    this.port = port ?? this.port ?? 0;
    if (this.port === 0) this.port = await freePort();
    const server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What OPA is configured with. */
  opaInput(longPollingTimeoutSeconds?: number): OpaRegistryInput {
    return { url: this.url, tokenFile: this.tokenFile, ...(longPollingTimeoutSeconds ? { longPollingTimeoutSeconds } : {}) };
  }

  get etag(): string {
    return this.current.etag;
  }

  /** Replaces the set of active sandboxes and answers the pending long polls. */
  set(active: Readonly<Record<string, RegistryEntry>>): void {
    this.current = registryBundle(active, { manifest: this.manifest });
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const wake of waiting) wake();
  }

  /** Requests held open right now (long polls). */
  get pending(): number {
    return this.waiting.size;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const wake of [...this.waiting]) wake();
    this.waiting.clear();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const record = (status: number) =>
      this.requests.push({
        ifNoneMatch: req.headers['if-none-match'],
        prefer: String(req.headers['prefer'] ?? ''),
        authorization: req.headers.authorization,
        status,
      });
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== REGISTRY_BUNDLE_PATH) {
      record(404);
      res.writeHead(404).end();
      return;
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      record(401);
      res.writeHead(401).end();
      return;
    }
    const answer = () => {
      if (res.destroyed) return;
      if (req.headers['if-none-match'] === this.current.etag) {
        record(304);
        res.writeHead(304, { ETag: this.current.etag }).end();
      } else {
        record(200);
        res.writeHead(200, { 'Content-Type': REGISTRY_CONTENT_TYPE, ETag: this.current.etag, 'Content-Length': this.current.bytes.length });
        res.end(this.current.bytes);
      }
    };
    if (this.delayFirstMs > 0) {
      const ms = this.delayFirstMs;
      this.delayFirstMs = 0;
      setTimeout(answer, ms);
      return;
    }
    const wait = Number(/(?:^|[;,\s])wait=(\d+)/.exec(String(req.headers['prefer'] ?? ''))?.[1] ?? 0);
    if (req.headers['if-none-match'] !== this.current.etag || wait === 0) {
      answer();
      return;
    }
    const wake = () => {
      clearTimeout(timer);
      this.waiting.delete(wake);
      answer();
    };
    const timer = setTimeout(wake, wait * 1000);
    this.waiting.add(wake);
    // The client went away (OPA stopped, or gave up): forget the request.
    res.once('close', () => {
      clearTimeout(timer);
      this.waiting.delete(wake);
    });
  }
}

const packageDefinition = protoLoader.loadSync(join(REPO_ROOT, 'policy/proto/ext_authz.proto'), {
  keepCase: true,
  longs: Number,
  defaults: false,
  oneofs: true,
});
const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
};

type StructValue = {
  nullValue?: 0;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: Struct;
  listValue?: { values: StructValue[] };
};
type Struct = { fields: Record<string, StructValue> };

function toStruct(obj: Record<string, unknown>): Struct {
  const val = (v: unknown): StructValue => {
    if (v === null || v === undefined) return { nullValue: 0 };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'string') return { stringValue: v };
    if (typeof v === 'boolean') return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(val) } };
    return { structValue: toStruct(v as Record<string, unknown>) };
  };
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, val(v)])) };
}

function fromStruct(s: Struct | undefined | null): Record<string, unknown> {
  const val = (v: StructValue): unknown => {
    if (v.structValue) return fromStruct(v.structValue);
    if (v.listValue) return (v.listValue.values ?? []).map(val);
    if (v.stringValue !== undefined) return v.stringValue;
    if (v.numberValue !== undefined) return v.numberValue;
    if (v.boolValue !== undefined) return v.boolValue;
    return null;
  };
  return Object.fromEntries(Object.entries(s?.fields ?? {}).map(([k, v]) => [k, val(v)]));
}

/** A request as Envoy describes it to ext_authz. */
export interface AuthzRequest {
  readonly contextExtensions?: Record<string, string>;
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly host?: string;
  /** Verified JWT claims, as jwt_authn puts them under payload_in_metadata. */
  readonly jwtClaims?: Record<string, unknown>;
}

export interface AuthzAnswer {
  readonly allowed: boolean;
  readonly status: number;
  readonly body?: { error?: { code?: string; message?: string } };
  readonly headers: Record<string, string>;
  readonly headersToRemove: string[];
  readonly dynamicMetadata: Record<string, unknown>;
}

/** The CheckRequest Envoy sends for `req` (ext_authz v3, protobuf field names). */
export function checkRequestOf(req: AuthzRequest): object {
  return {
    attributes: {
      request: {
        http: {
          method: req.method,
          path: req.path,
          headers: { ':path': req.path, ':method': req.method, ...(req.headers ?? {}) },
          host: req.host ?? 'gateway',
          scheme: 'http',
          protocol: 'HTTP/1.1',
        },
      },
      context_extensions: req.contextExtensions ?? {},
      ...(req.jwtClaims ? { metadata_context: { filter_metadata: { 'envoy.filters.http.jwt_authn': toStruct({ sandbox: req.jwtClaims }) } } } : {}),
    },
  };
}

export class ExtAuthzClient {
  private readonly client: grpc.Client & { Check: (...args: unknown[]) => unknown };
  constructor(port: number) {
    this.client = new proto.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as never;
  }

  check(req: AuthzRequest): Promise<AuthzAnswer> {
    const request = checkRequestOf(req);
    return new Promise((resolve, reject) => {
      this.client.Check(request, { deadline: Date.now() + 5000 }, (err: Error | null, res: any) => {
        if (err) return reject(err);
        // proto3: an empty string is not on the wire, so an empty header value arrives absent.
        const headerMap = (opts: any[] | undefined) => Object.fromEntries((opts ?? []).map((o) => [o.header.key, o.header.value ?? '']));
        if (res.ok_response) {
          resolve({
            allowed: (res.status?.code ?? 0) === 0,
            status: 200,
            headers: headerMap(res.ok_response.headers),
            headersToRemove: res.ok_response.headers_to_remove ?? [],
            dynamicMetadata: fromStruct(res.dynamic_metadata),
          });
        } else {
          const d = res.denied_response ?? {};
          let body: AuthzAnswer['body'];
          try {
            body = d.body ? JSON.parse(d.body) : undefined;
          } catch {
            body = undefined;
          }
          resolve({
            allowed: false,
            status: d.status?.code ?? 403,
            body,
            headers: headerMap(d.headers),
            headersToRemove: [],
            dynamicMetadata: fromStruct(res.dynamic_metadata),
          });
        }
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
