// Who is calling. The gateway authenticates API clients (through OPA) and forwards the caller's
// identity in IDENTITY_HEADERS (gRPC: the same names as metadata). agentd trusts those headers
// only from the gateway: when a gateway token is configured (always in production), every API
// request must carry GATEWAY_TOKEN_HEADER with the per-deploy secret, compared in constant time.
// Each transport reads its headers in one place and calls authenticate(); the core receives the
// resulting Caller on every method.
import { createHash, timingSafeEqual } from 'node:crypto';
import { CLIENT_SCOPES, GATEWAY_TOKEN_HEADER, IDENTITY_HEADERS, type ClientScope } from '../contract.ts';
import type { Logger } from '../log.ts';
import { unauthenticated } from './errors.ts';

export interface Caller {
  /** The API client: owner of the sandboxes it creates. */
  clientId: string;
  role: string;
  /** 'all': sees and acts on every client's sandboxes; 'own': only its own. */
  scope: ClientScope;
  /** Sandbox tiers this caller may create. */
  sandboxTiers: readonly string[];
}

/** The development-mode caller when no identity headers are sent (`npm run agentd`, tests). */
const LOCAL_ADMIN_CLIENT_ID = 'local-admin';

const CLIENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const ROLE_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;
const TIER_RE = /^[a-z][a-z0-9_-]{0,31}$/;

/** Reads one header (or metadata key): a string when given exactly once, else undefined / null. */
export type HeaderGetter = (name: string) => string | undefined | null;

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export class CallerAuthenticator {
  private readonly tokenDigest: Buffer | null;
  private readonly allTiers: readonly string[];
  private readonly logger: Logger;

  /**
   * gatewayToken: the secret the gateway sends (null: none configured, development only).
   * allTiers: every configured tier (what the local development admin may create).
   */
  constructor(opts: { gatewayToken: string | null; allTiers: readonly string[]; logger: Logger }) {
    this.tokenDigest = opts.gatewayToken === null ? null : digest(opts.gatewayToken);
    this.allTiers = [...opts.allTiers];
    this.logger = opts.logger;
  }

  /** Whether requests must carry the gateway token (production, or a token file configured). */
  get gatewayRequired(): boolean {
    return this.tokenDigest !== null;
  }

  /**
   * The caller of one request, or an `unauthenticated` AgentdError that says nothing about why
   * (the reason is logged at debug, never the values). A header given more than once is
   * treated as missing.
   */
  authenticate(get: HeaderGetter, reqId?: string): Caller {
    const refuse = (reason: string): never => {
      this.logger.debug({ reqId, reason }, 'request refused: unauthenticated');
      throw unauthenticated();
    };
    const clientId = get(IDENTITY_HEADERS.clientId);
    if (this.tokenDigest !== null) {
      const token = get(GATEWAY_TOKEN_HEADER);
      // Compare digests: constant time whatever the length of what was sent.
      if (typeof token !== 'string' || !timingSafeEqual(digest(token), this.tokenDigest)) refuse('gateway token missing or wrong');
      if (typeof clientId !== 'string' || clientId === '') refuse('client id missing');
    } else if (clientId === undefined) {
      // Development without a gateway: a local admin, unless identity headers are sent.
      return { clientId: LOCAL_ADMIN_CLIENT_ID, role: 'admin', scope: 'all', sandboxTiers: this.allTiers };
    }
    if (typeof clientId !== 'string' || !CLIENT_ID_RE.test(clientId)) return refuse('client id malformed');

    const role = get(IDENTITY_HEADERS.clientRole) ?? '';
    if (typeof role !== 'string' || (role !== '' && !ROLE_RE.test(role))) return refuse('role malformed');

    // A missing scope is the narrower one; an unknown one is refused (fail closed).
    const scopeRaw = get(IDENTITY_HEADERS.clientScope) ?? 'own';
    if (typeof scopeRaw !== 'string' || !(CLIENT_SCOPES as readonly string[]).includes(scopeRaw)) return refuse('scope malformed');

    const tiersRaw = get(IDENTITY_HEADERS.sandboxTiers) ?? '';
    if (typeof tiersRaw !== 'string') return refuse('sandbox tiers malformed');
    const tiers = tiersRaw
      .split(',')
      .map((t) => t.trim())
      .filter((t) => t !== '');
    if (tiers.some((t) => !TIER_RE.test(t))) return refuse('sandbox tiers malformed');

    return { clientId, role, scope: scopeRaw as ClientScope, sandboxTiers: [...new Set(tiers)] };
  }
}
