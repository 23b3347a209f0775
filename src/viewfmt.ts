/**
 * Text of the Runs and Versions views: times and parameter lists. Pure: no DOM, no JupyterLab.
 */

/** "2026-12-02 20:31:05" from an ISO time or epoch seconds; the text itself otherwise. */
export function shownTime(value: string | number): string {
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) {
    return String(value);
  }
  const pad = (n: number): string => String(n).padStart(2, '0');
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** `a=1, b="x"`: the parameters a run was given. */
export function shownParameters(parameters: Record<string, unknown>): string {
  const entries = Object.entries(parameters ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ') : '—';
}
