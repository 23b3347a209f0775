/**
 * Building DOM nodes: the one helper the panel, the package dialog and the badges share.
 */

/** A new `tag` element with these attributes (`class` included) and, if given, its text. */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, value);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** Set a node's text (only when it changed: no needless DOM writes); hidden when empty. */
export function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
  node.hidden = text === '';
}
