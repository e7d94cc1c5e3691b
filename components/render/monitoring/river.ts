// A tiny typed model of the Alloy configuration syntax (formerly "River") and its serializer.
// Configs are built as blocks, attributes and values; only this module turns them into text,
// so every string is escaped, every identifier checked, and the layout is that of `alloy fmt`
// (two-space indents, aligned `=` in runs of attributes, trailing commas in multi-line
// literals). Same input, same bytes.

/** A reference to another component's export, e.g. `loki.write.default.receiver`: written bare. */
export interface RiverRef {
  readonly kind: 'ref';
  readonly path: string;
}

/** An object literal `{ key = value, ... }` (keys are quoted when they are not identifiers). */
export interface RiverObject {
  readonly kind: 'object';
  readonly fields: Readonly<Record<string, RiverValue>>;
}

export type RiverValue = string | number | boolean | null | RiverRef | RiverObject | readonly RiverValue[];

export interface RiverAttribute {
  readonly kind: 'attr';
  readonly name: string;
  readonly value: RiverValue;
}

export interface RiverBlock {
  readonly kind: 'block';
  /** Dotted block name, e.g. `loki.source.docker` or `rule`. */
  readonly name: string;
  /** Label of a component block (`loki.write "default"`). */
  readonly label?: string;
  readonly body: readonly RiverStatement[];
}

/** A `//` comment line: why a block is there. */
export interface RiverComment {
  readonly kind: 'comment';
  readonly text: string;
}

export type RiverStatement = RiverAttribute | RiverBlock | RiverComment;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function ident(s: string, what: string): string {
  if (!IDENT.test(s)) throw new Error(`invalid Alloy ${what} ${JSON.stringify(s)}: letters, digits and _ only, not starting with a digit`);
  return s;
}

const dotted = (s: string, what: string) =>
  s
    .split('.')
    .map((p) => ident(p, what))
    .join('.');

export const attr = (name: string, value: RiverValue): RiverAttribute => ({ kind: 'attr', name: ident(name, 'attribute name'), value });
export const block = (name: string, body: readonly RiverStatement[], label?: string): RiverBlock => ({
  kind: 'block',
  name: dotted(name, 'block name'),
  ...(label === undefined ? {} : { label: ident(label, 'block label') }),
  body,
});
export const ref = (path: string): RiverRef => ({ kind: 'ref', path: dotted(path, 'reference') });
export const obj = (fields: Readonly<Record<string, RiverValue>>): RiverObject => ({ kind: 'object', fields });
export const comment = (text: string): RiverComment => {
  if (/[\r\n]/.test(text)) throw new Error('a comment is one line');
  return { kind: 'comment', text };
};

/** An Alloy string literal: `"..."` with `\\`, `\"` and control characters escaped. */
export function riverString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else if (c >= 0xd800 && c <= 0xdfff) throw new Error(`string ${JSON.stringify(s)} holds a lone surrogate`);
    else out += ch;
  }
  return `${out}"`;
}

const isScalar = (v: RiverValue) => v === null || typeof v !== 'object' || (!Array.isArray(v) && (v as RiverRef | RiverObject).kind === 'ref');
const key = (k: string) => (IDENT.test(k) ? k : riverString(k));
const pad = (depth: number) => '  '.repeat(depth);

function value(v: RiverValue, depth: number): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return riverString(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`number ${v} cannot be written in Alloy syntax`);
    return String(v);
  }
  if (Array.isArray(v)) {
    const items = v as readonly RiverValue[];
    if (items.length === 0) return '[]';
    // Short lists of scalars stay on one line, as `alloy fmt` leaves them.
    if (items.every(isScalar)) return `[${items.map((i) => value(i, depth)).join(', ')}]`;
    return `[\n${items.map((i) => `${pad(depth + 1)}${value(i, depth + 1)},\n`).join('')}${pad(depth)}]`;
  }
  const o = v as RiverRef | RiverObject;
  if (o.kind === 'ref') return o.path;
  const entries = Object.entries(o.fields);
  if (entries.length === 0) return '{}';
  const width = Math.max(...entries.map(([k]) => key(k).length));
  return `{\n${entries.map(([k, fv]) => `${pad(depth + 1)}${key(k).padEnd(width)} = ${value(fv, depth + 1)},\n`).join('')}${pad(depth)}}`;
}

function statements(body: readonly RiverStatement[], depth: number): string {
  let out = '';
  let prev: RiverStatement['kind'] | undefined;
  for (let i = 0; i < body.length; i++) {
    const s = body[i]!;
    // A blank line before a block (or its leading comment) that follows something else.
    if (prev !== undefined && prev !== 'comment' && s.kind !== 'attr') out += '\n';
    if (s.kind === 'comment') {
      out += `${pad(depth)}// ${s.text}\n`;
    } else if (s.kind === 'attr') {
      // Align `=` across a run of consecutive attributes.
      let end = i;
      while (end < body.length && body[end]!.kind === 'attr') end++;
      const run = body.slice(i, end) as RiverAttribute[];
      const width = Math.max(...run.map((a) => a.name.length));
      for (const a of run) out += `${pad(depth)}${a.name.padEnd(width)} = ${value(a.value, depth)}\n`;
      i = end - 1;
      prev = 'attr';
      continue;
    } else {
      const head = `${pad(depth)}${s.name}${s.label === undefined ? '' : ` ${riverString(s.label)}`}`;
      out += s.body.length === 0 ? `${head} {}\n` : `${head} {\n${statements(s.body, depth + 1)}${pad(depth)}}\n`;
    }
    prev = s.kind;
  }
  return out;
}

/** The text of an Alloy configuration file. */
export function toRiver(body: readonly RiverStatement[]): string {
  return statements(body, 0);
}
