// Where an external service is: scheme, host and port, parsed from a base URL. One parser for
// the policy data (egress-services.yaml base_url) and the stack's upstream overrides. Pure.

export interface ServiceUrl {
  readonly scheme: 'http' | 'https';
  readonly host: string;
  readonly port: number;
}

/** The parsed URL, or why it is not a base URL (scheme and host, optionally a port; nothing else). */
export function parseServiceUrl(text: string): ServiceUrl | { readonly problem: string } {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return { problem: `"${text}" is not a URL` };
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return { problem: `"${text}" must use https (or http for local stand-ins)` };
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username || u.password || text.endsWith('/')) {
    return { problem: `"${text}" must not carry a path, query, trailing "/" or user info` };
  }
  const scheme = u.protocol === 'https:' ? 'https' : 'http';
  return { scheme, host: u.hostname, port: u.port ? Number(u.port) : scheme === 'https' ? 443 : 80 };
}
