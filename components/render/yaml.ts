// YAML out of typed objects: the only way rendered configs become text. Key order is the
// insertion order of the renderers (fixed), lines are never folded, so the same input always
// gives the same bytes.
import { stringify } from 'yaml';

export function toYaml(value: unknown): string {
  return stringify(value, { lineWidth: 0, minContentWidth: 0, aliasDuplicateObjects: false });
}
