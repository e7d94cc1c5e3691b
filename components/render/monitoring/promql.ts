// PromQL, built from typed pieces rather than pasted together: metric and label names are
// checked, label values are quoted and escaped, regex alternations escape their members. Alert
// rules and dashboards both build their expressions here, so a value that would break a query
// (a quote, a backslash, a regex metacharacter in an id) fails or is escaped in one place.

/** A label matcher operator. */
export type MatchOp = '=' | '!=' | '=~' | '!~';

/** One label matcher of a selector. */
export interface Matcher {
  readonly label: string;
  readonly op: MatchOp;
  readonly value: string;
}

/**
 * A range: a fixed duration such as `5m`, or a Grafana interval variable that Grafana replaces
 * before the query reaches Prometheus (`$__rate_interval`, `$__interval`, `$__range`).
 */
export type Window = `${number}${'ms' | 's' | 'm' | 'h' | 'd' | 'w'}` | '$__rate_interval' | '$__interval' | '$__range';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const WINDOW = /^(\d+(ms|s|m|h|d|w)|\$__rate_interval|\$__interval|\$__range)$/;

function checkLabel(name: string): string {
  if (!LABEL_NAME.test(name)) throw new Error(`invalid Prometheus label name ${JSON.stringify(name)}`);
  return name;
}

function checkMetric(name: string): string {
  if (!METRIC_NAME.test(name)) throw new Error(`invalid Prometheus metric name ${JSON.stringify(name)}`);
  return name;
}

/**
 * A PromQL string literal. PromQL reads double-quoted strings with Go's escapes; JSON's escapes
 * (`\"`, `\\`, `\n`, `\uXXXX`) are a subset of those, so JSON.stringify quotes correctly.
 */
export function promString(value: string): string {
  if (/[\uD800-\uDFFF]/.test(value.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''))) {
    throw new Error(`label value ${JSON.stringify(value)} holds a lone surrogate`);
  }
  return JSON.stringify(value);
}

/** A regex (RE2) that matches `value` literally. */
export function regexLiteral(value: string): string {
  return value.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&');
}

/** A regex that matches exactly one of `values` (Prometheus anchors regex matchers). */
export function regexOneOf(values: readonly string[]): string {
  if (values.length === 0) throw new Error('regexOneOf needs at least one value');
  return [...values].map(regexLiteral).join('|');
}

export const eq = (label: string, value: string): Matcher => ({ label, op: '=', value });
export const ne = (label: string, value: string): Matcher => ({ label, op: '!=', value });
export const re = (label: string, regex: string): Matcher => ({ label, op: '=~', value: regex });
export const nre = (label: string, regex: string): Matcher => ({ label, op: '!~', value: regex });
/** Matches one of the literal values. */
export const oneOf = (label: string, values: readonly string[]): Matcher => re(label, regexOneOf(values));

/** An instant vector selector: `metric{label="value",...}`. */
export function selector(metric: string, matchers: readonly Matcher[] = []): string {
  checkMetric(metric);
  if (matchers.length === 0) return metric;
  return `${metric}{${matchers.map((m) => `${checkLabel(m.label)}${m.op}${promString(m.value)}`).join(',')}}`;
}

function checkWindow(w: Window): Window {
  if (!WINDOW.test(w)) throw new Error(`invalid range ${JSON.stringify(w)}`);
  return w;
}

/** `rate(selector[window])`: per-second increase of a counter. */
export const rate = (sel: string, w: Window): string => `rate(${sel}[${checkWindow(w)}])`;

const grouping = (kind: 'by' | 'without', labels: readonly string[]) => `${kind} (${labels.map(checkLabel).join(', ')})`;

/** `sum by (labels) (expr)`, or `sum(expr)` without labels. */
export const sumBy = (labels: readonly string[], expr: string): string => (labels.length === 0 ? `sum(${expr})` : `sum ${grouping('by', labels)} (${expr})`);

/** `max by (labels) (expr)`, or `max(expr)`. */
export const maxBy = (labels: readonly string[], expr: string): string => (labels.length === 0 ? `max(${expr})` : `max ${grouping('by', labels)} (${expr})`);

/**
 * The q-quantile of a histogram's buckets: `histogram_quantile(q, sum by (le, ...) (rate(bucket[w])))`.
 * `bucketMetric` is the `_bucket` series.
 */
export function histogramQuantile(q: number, bucketMetric: string, matchers: readonly Matcher[], w: Window, by: readonly string[] = []): string {
  if (!(q > 0 && q < 1)) throw new Error(`quantile ${q} is not in (0, 1)`);
  if (!bucketMetric.endsWith('_bucket')) throw new Error(`${bucketMetric} is not a histogram bucket series`);
  return `histogram_quantile(${q}, ${sumBy(['le', ...by], rate(selector(bucketMetric, matchers), w))})`;
}

/**
 * `label_replace(expr, dst, "$1", src, regex)`: copies the part of `src` that the regex's first
 * group matches into `dst`.
 */
export function labelReplace(expr: string, dst: string, src: string, regex: string): string {
  return `label_replace(${expr}, ${promString(checkLabel(dst))}, "$1", ${promString(checkLabel(src))}, ${promString(regex)})`;
}

/** `a / b` with both sides parenthesised, so operator precedence never surprises. */
export const ratio = (numerator: string, denominator: string): string => `(${numerator}) / (${denominator})`;
