/**
 * The marker grammar of a cell (its tags and a `%%dsops` first line), as the core reads it.
 *
 * A port of `read_markers` in dsops_jupyter/markers.py: both run the cases of
 * tests/marker_cases.json (pytest and jest), so a badge never shows a marker the core refuses.
 * The frontend also edits the tag list of a cell; what the markers mean for the pipeline is
 * decided by the server. Pure module: no DOM, no JupyterLab.
 */

/** A cell's role, named as the core names it. */
export type MarkerRole =
  'step' | 'continue' | 'parameters' | 'skip' | 'shared' | 'metrics' | 'injected';

/** The markers of one cell: what `read_markers` returns in the core. */
export interface ICellMarkers {
  role: MarkerRole;
  /** The step this cell starts (role `step`), else null. */
  step: string | null;
  /** Explicit dependencies (`after:` / `prev:` tags, `--after`). */
  after: string[];
  /** Kale's per-step tags (`image:`, `limit:`, ...), kept for exporters. */
  extras: Record<string, string[]>;
}

/** A marker the core refuses; the message is one line. */
export class MarkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MarkerError';
  }
}

/** A marker the user can set from the UI; null clears. */
/** A step's `after` list, when given, replaces the cell's `after:`/`prev:` tags. */
export type MarkerChoice =
  | { kind: 'step'; name: string; after?: readonly string[] }
  | { kind: 'parameters' }
  | { kind: 'skip' }
  | null;

const MAX_NAME = 100;
const KALE_STEP_EXTRAS = new Set([
  'image',
  'limit',
  'cache',
  'label',
  'annotation',
  'secret',
  'volume'
]);
const ROLE_TAGS = new Map<string, MarkerRole>([
  ['parameters', 'parameters'],
  ['pipeline-parameters', 'parameters'],
  ['skip', 'skip'],
  ['imports', 'shared'],
  ['functions', 'shared'],
  ['pipeline-metrics', 'metrics'],
  ['injected-parameters', 'injected']
]);
const STEP_PREFIXES = ['step:', 'block:'];
const DEPENDENCY_PREFIXES = ['after:', 'prev:'];
const MAGIC = '%%dsops';
const USAGE = 'use %%dsops step NAME [--after A,B], %%dsops parameters or %%dsops skip';

const PYTHON_KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield'
  ).split(' ')
);

function hasPrefix(tag: string, prefixes: string[]): boolean {
  return prefixes.some(prefix => tag.startsWith(prefix));
}

/** True for a tag that marks what a cell is (step, parameters, skip, Kale's kinds). */
export function isKindTag(tag: string): boolean {
  return ROLE_TAGS.has(tag) || hasPrefix(tag, STEP_PREFIXES);
}

/** True for every tag that "Clear marker" removes. */
export function isMarkerTag(tag: string): boolean {
  return isKindTag(tag) || hasPrefix(tag, DEPENDENCY_PREFIXES);
}

/** Why `name` is not a valid step name, or null when it is one. */
export function stepNameProblem(name: string): string | null {
  if (name.length === 0) {
    return 'a step name cannot be empty';
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    return `"${name}" is not a Python identifier (letters, digits, _; not starting with a digit)`;
  }
  if (PYTHON_KEYWORDS.has(name)) {
    return `"${name}" is a Python keyword`;
  }
  if (name.length > MAX_NAME) {
    return `a step name has at most ${MAX_NAME} characters`;
  }
  return null;
}

function checkStepName(name: string): string {
  const problem = stepNameProblem(name);
  if (problem !== null) {
    throw new MarkerError(`step name: ${problem}`);
  }
  return name;
}

/**
 * The words of a line as Python's `shlex.split` reads them (POSIX quoting, whitespace
 * separated); throws MarkerError where shlex raises ValueError.
 */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  let i = 0;
  while (i < line.length) {
    const char = line[i];
    if (' \t\r\n'.includes(char)) {
      if (word !== null) {
        words.push(word);
      }
      word = null;
      i += 1;
    } else if (char === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) {
        throw new MarkerError(`cannot read ${line} (No closing quotation)`);
      }
      word = (word ?? '') + line.slice(i + 1, end);
      i = end + 1;
    } else if (char === '"') {
      [word, i] = doubleQuoted(line, i + 1, word ?? '');
    } else if (char === '\\') {
      if (i + 1 >= line.length) {
        throw new MarkerError(`cannot read ${line} (No escaped character)`);
      }
      word = (word ?? '') + line[i + 1];
      i += 2;
    } else {
      word = (word ?? '') + char;
      i += 1;
    }
  }
  if (word !== null) {
    words.push(word);
  }
  return words;
}

/** The rest of a double-quoted part from `start`: `\` escapes only `"` and `\` (POSIX shlex). */
function doubleQuoted(line: string, start: number, word: string): [string, number] {
  let i = start;
  while (i < line.length) {
    const char = line[i];
    if (char === '"') {
      return [word, i + 1];
    }
    const next = line[i + 1];
    if (char === '\\' && (next === '"' || next === '\\')) {
      word += next;
      i += 2;
    } else {
      word += char;
      i += 1;
    }
  }
  throw new MarkerError(`cannot read ${line} (No closing quotation)`);
}

/** The first line of `source` when it is a `%%dsops` marker line, else null. */
export function markerLine(source: string): string | null {
  const first = source.split('\n', 1)[0].trim();
  return first.startsWith(MAGIC) ? first : null;
}

function setRole(markers: ICellMarkers, role: MarkerRole): void {
  if (markers.role !== 'continue' && markers.role !== role) {
    throw new MarkerError(`marked both ${markers.role} and ${role}; keep one marker`);
  }
  markers.role = role;
}

function setStep(markers: ICellMarkers, name: string): void {
  if (markers.step !== null && markers.step !== name) {
    throw new MarkerError(`starts two steps ("${markers.step}" and "${name}"); keep one`);
  }
  setRole(markers, 'step');
  markers.step = name;
}

function applyTag(markers: ICellMarkers, tag: string): void {
  const colon = tag.indexOf(':');
  const kind = colon < 0 ? tag : tag.slice(0, colon);
  const value = colon < 0 ? null : tag.slice(colon + 1);
  if (value !== null && (kind === 'step' || kind === 'block')) {
    if (value !== '') {
      setStep(markers, checkStepName(value)); // an empty `block:` continues the step above
    }
  } else if (value !== null && (kind === 'after' || kind === 'prev')) {
    markers.after.push(checkStepName(value));
  } else if (value !== null && KALE_STEP_EXTRAS.has(kind)) {
    (markers.extras[kind] ??= []).push(value);
  } else if (ROLE_TAGS.has(tag)) {
    setRole(markers, ROLE_TAGS.get(tag) as MarkerRole);
  }
}

function applyMagicLine(markers: ICellMarkers, line: string): void {
  const words = shellWords(line).slice(1);
  if (words.length === 0) {
    throw new MarkerError(`${line} says nothing; ${USAGE}`);
  }
  const [kind, name, option, list] = words;
  if ((kind === 'parameters' || kind === 'skip') && words.length === 1) {
    setRole(markers, kind);
  } else if (
    kind === 'step' &&
    (words.length === 2 || (words.length === 4 && option === '--after'))
  ) {
    setStep(markers, checkStepName(name));
    for (const dependency of list === undefined ? [] : list.split(',')) {
      markers.after.push(checkStepName(dependency.trim()));
    }
  } else {
    throw new MarkerError(`cannot read ${line}; ${USAGE}`);
  }
}

/**
 * The markers of a cell: its tags, then a `%%dsops` first line of its source.
 * Throws MarkerError for what the core refuses (bad names, conflicting markers, a bad line).
 */
export function readMarkers(tags: readonly string[], source: string): ICellMarkers {
  const markers: ICellMarkers = { role: 'continue', step: null, after: [], extras: {} };
  for (const tag of tags) {
    applyTag(markers, tag);
  }
  const line = markerLine(source);
  if (line !== null) {
    applyMagicLine(markers, line);
  }
  return markers;
}

/** The `--after` list of a readable `%%dsops step` first line of `source`, else []. */
export function magicLineAfter(source: string): string[] {
  try {
    const markers = readMarkers([], source);
    return markers.role === 'step' ? markers.after : [];
  } catch {
    return []; // a line the core refuses: nothing worth keeping
  }
}

/** The text of a badge, e.g. "step: train" or "parameters"; null for a continuing cell. */
export function markerLabel(markers: ICellMarkers): string | null {
  switch (markers.role) {
    case 'continue':
      return null;
    case 'step':
      return `step: ${markers.step ?? ''}`;
    case 'injected':
      return 'injected parameters';
    default:
      return markers.role;
  }
}

/** `source` without its `%%dsops` marker line (unchanged if it has none). */
export function withoutMagicMarker(source: string): string {
  if (markerLine(source) === null) {
    return source;
  }
  const newline = source.indexOf('\n');
  return newline < 0 ? '' : source.slice(newline + 1);
}

/**
 * The tag list after choosing a marker: a cell has at most one of the
 * step / parameters / skip markers. A step keeps its `after:` dependencies
 * (and takes over those of a replaced `%%dsops step ... --after` line);
 * other markers and "clear" drop them. A step choice with its own `after` list writes exactly
 * that list (`after:NAME` tags, in order).
 */
export function withMarker(
  tags: readonly string[],
  choice: MarkerChoice,
  magicAfter: readonly string[] = []
): string[] {
  if (choice === null) {
    return tags.filter(tag => !isMarkerTag(tag));
  }
  if (choice.kind === 'step') {
    const chosen = choice.after;
    const kept = tags.filter(tag => (chosen === undefined ? !isKindTag(tag) : !isMarkerTag(tag)));
    for (const name of chosen ?? magicAfter) {
      if (!kept.includes(`after:${name}`)) {
        kept.push(`after:${name}`);
      }
    }
    return [`step:${choice.name}`, ...kept];
  }
  return [...tags.filter(tag => !isMarkerTag(tag)), choice.kind];
}
