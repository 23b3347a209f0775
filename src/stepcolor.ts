/**
 * The colour of a step: the same hue for the same name in every notebook and session, so a
 * step is recognised at a glance on its cells, in the panel and in the mark dialog. Pure.
 */

/** A hue (0-359) from the step's name: FNV-1a, spread over the colour wheel. */
export function stepHue(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return Math.round(((hash % 3600) * 0.1 * 7) % 360); // x7: neighbours in hash land apart
}

/** The badge colour of a step: readable white text on it in light and dark themes. */
export function stepColor(name: string): string {
  return `hsl(${stepHue(name)}, 60%, 38%)`;
}
