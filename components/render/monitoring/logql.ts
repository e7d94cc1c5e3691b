// LogQL for the dashboards' log panels, built like the PromQL: stream selectors can only name
// the labels Alloy ships (service, level), values are quoted, and fields a query parses out of
// a JSON line are named explicitly (they stay fields, never labels of the stream).

import { LOG_LABELS, type LogLabel } from './alloy.ts';
import { promString, regexOneOf, type Window } from './promql.ts';

/** A stream selector matcher: a literal value or a set of values. */
export type StreamMatch = string | { readonly oneOf: readonly string[] } | { readonly regex: string };

/** `{service="egress", level=~"error|warn"}`: only the shipped labels can be selected. */
export function stream(matchers: Partial<Record<LogLabel, StreamMatch>>): string {
  const parts = LOG_LABELS.flatMap((label) => {
    const m = matchers[label];
    if (m === undefined) return [];
    if (typeof m === 'string') return [`${label}=${promString(m)}`];
    if ('oneOf' in m) return [`${label}=~${promString(regexOneOf(m.oneOf))}`];
    return [`${label}=~${promString(m.regex)}`];
  });
  if (parts.length === 0) throw new Error('a LogQL stream selector needs at least one matcher');
  return `{${parts.join(', ')}}`;
}

const FIELD = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** `| json a="a", b="b"`: parses only these fields of a JSON line, ignores lines that are not JSON. */
export function json(fields: readonly string[]): string {
  for (const f of fields) if (!FIELD.test(f)) throw new Error(`invalid LogQL field name ${JSON.stringify(f)}`);
  return `| json ${fields.map((f) => `${f}=${promString(f)}`).join(', ')} | __error__=""`;
}

/** A LogQL range (Grafana's `$__auto` picks one from the panel's resolution). */
export type LogWindow = Window | '$__auto';

/** `count_over_time(<query> [w])`, summed by the given fields. */
export function countBy(by: readonly string[], query: string, w: LogWindow): string {
  return `sum${by.length ? ` by (${by.join(', ')})` : ''} (count_over_time(${query} [${w}]))`;
}

/** A quantile of a numeric field over time, by the given fields. */
export function quantileOf(q: number, field: string, query: string, w: LogWindow, by: readonly string[] = []): string {
  if (!FIELD.test(field)) throw new Error(`invalid LogQL field name ${JSON.stringify(field)}`);
  return `quantile_over_time(${q}, ${query} | unwrap ${field} [${w}])${by.length ? ` by (${by.join(', ')})` : ''}`;
}

/** A label filter on a parsed field: `| field op value` (strings quoted, numbers compared numerically). */
export function where(field: string, op: '=' | '!=' | '>=' | '>' | '<' | '<=', value: string | number): string {
  if (!FIELD.test(field)) throw new Error(`invalid LogQL field name ${JSON.stringify(field)}`);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`invalid LogQL number ${value}`);
    return `| ${field} ${op} ${value}`;
  }
  if (op !== '=' && op !== '!=') throw new Error(`${op} compares numbers, not strings`);
  return `| ${field} ${op} ${promString(value)}`;
}
