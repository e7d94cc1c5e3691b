// grafana.ini out of typed sections. Values are checked rather than quoted: Grafana's INI reader
// treats quotes, `;` and `#` specially, and nothing the platform writes needs them, so anything
// unusual is refused here instead of being misread by Grafana.

export type IniValue = string | number | boolean;
export type IniSections = Readonly<Record<string, Readonly<Record<string, IniValue>>>>;

const KEY = /^[a-z_][a-z0-9_]*$/;
const SECTION = /^[a-z_][a-z0-9_.]*$/;
const SAFE_VALUE = /^[A-Za-z0-9_./:@{}$+=,-]*$/;

export function toIni(sections: IniSections): string {
  const out: string[] = [];
  for (const [name, entries] of Object.entries(sections)) {
    if (!SECTION.test(name)) throw new Error(`invalid grafana.ini section ${JSON.stringify(name)}`);
    out.push(`[${name}]`);
    for (const [key, v] of Object.entries(entries)) {
      if (!KEY.test(key)) throw new Error(`invalid grafana.ini key ${JSON.stringify(key)}`);
      const text = typeof v === 'string' ? v : String(v);
      if (!SAFE_VALUE.test(text))
        throw new Error(`grafana.ini value of ${name}.${key} holds characters Grafana's INI reader treats specially: ${JSON.stringify(text)}`);
      out.push(`${key} = ${text}`);
    }
    out.push('');
  }
  return out.join('\n');
}
