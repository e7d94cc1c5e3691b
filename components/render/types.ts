// The shapes every renderer, component and target shares: where a workload is reached, where an
// external service is, and a workload's files. One definition each; the renderers re-export them.
import type { ServiceUrl } from '../../policy/url.ts';

/** host:port as a target gives it (loopback, Docker DNS name, Kubernetes service DNS). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** Where a service's requests go: the spec's base_url unless the stack overrides it. */
export type Upstream = ServiceUrl;

/**
 * A file's content: text, or binary as base64 (the OPA bundle). Plain data, not a Buffer, so it
 * passes through Pulumi outputs unchanged.
 */
export type FileContent = string | { readonly base64: string };

/** A workload's files, by path relative to its config directory. Nothing here is secret. */
export type WorkloadFiles = Readonly<Record<string, FileContent>>;
