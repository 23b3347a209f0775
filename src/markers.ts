/**
 * Cell markers as the frontend reads and writes them.
 *
 * The core reads exactly these cell tags: `step:NAME`, `after:NAME`,
 * `parameters`, `skip` (plus Kale's aliases). The frontend only edits the tag
 * list of a cell and reads it back to draw a badge; what a marker means for the
 * pipeline is decided by the server.
 */

/** What the badge of a cell shows. */
export interface IMarker {
  kind: 'step' | 'parameters' | 'skip' | 'imports' | 'functions' | 'metrics';
  name?: string;
  after: string[];
  /** Where it comes from: cell tags or a first line `%%dsops ...`. */
  source: 'tags' | 'magic';
}

/** A marker the user can set from the UI; null clears. */
export type MarkerChoice =
  { kind: 'step'; name: string } | { kind: 'parameters' } | { kind: 'skip' } | null;

const KIND_TAGS = new Set([
  'parameters',
  'pipeline-parameters',
  'skip',
  'imports',
  'functions',
  'pipeline-metrics'
]);
const KIND_PREFIXES = ['step:', 'block:'];
const DEPENDENCY_PREFIXES = ['after:', 'prev:'];

const PYTHON_KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield'
  ).split(' ')
);

const MAGIC_LINE = /^%%dsops\s+(step|parameters|skip)\b(.*)$/;

function hasPrefix(tag: string, prefixes: string[]): boolean {
  return prefixes.some(prefix => tag.startsWith(prefix));
}

/** True for a tag that marks what a cell is (step, parameters, skip, Kale's kinds). */
export function isKindTag(tag: string): boolean {
  return KIND_TAGS.has(tag) || hasPrefix(tag, KIND_PREFIXES);
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
  return null;
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map(item => item.trim())
    .filter(item => item.length > 0);
}

function afterTags(tags: readonly string[]): string[] {
  return tags
    .filter(tag => hasPrefix(tag, DEPENDENCY_PREFIXES))
    .map(tag => tag.slice(tag.indexOf(':') + 1));
}

/** The marker given by the cell tags, if any. */
export function markerFromTags(tags: readonly string[]): IMarker | null {
  const after = afterTags(tags);
  for (const tag of tags) {
    if (hasPrefix(tag, KIND_PREFIXES)) {
      return { kind: 'step', name: tag.slice(tag.indexOf(':') + 1), after, source: 'tags' };
    }
  }
  const kinds: Array<[string, IMarker['kind']]> = [
    ['parameters', 'parameters'],
    ['pipeline-parameters', 'parameters'],
    ['skip', 'skip'],
    ['imports', 'imports'],
    ['functions', 'functions'],
    ['pipeline-metrics', 'metrics']
  ];
  for (const [tag, kind] of kinds) {
    if (tags.includes(tag)) {
      return { kind, after: [], source: 'tags' };
    }
  }
  return null;
}

/** The marker given by a first line `%%dsops step NAME [--after A,B]`, if any. */
export function markerFromSource(source: string): IMarker | null {
  const firstLine = source.split('\n', 1)[0].trim();
  const match = MAGIC_LINE.exec(firstLine);
  if (!match) {
    return null;
  }
  const kind = match[1] as 'step' | 'parameters' | 'skip';
  if (kind !== 'step') {
    return { kind, after: [], source: 'magic' };
  }
  const words = match[2].trim().split(/\s+/).filter(Boolean);
  let name = '';
  const after: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    if (word === '--after' && i + 1 < words.length) {
      after.push(...splitList(words[++i]));
    } else if (word.startsWith('--after=')) {
      after.push(...splitList(word.slice('--after='.length)));
    } else if (!word.startsWith('-') && name === '') {
      name = word;
    }
  }
  return { kind: 'step', name, after, source: 'magic' };
}

/** The marker a cell shows: tags win over a magic first line. */
export function markerOf(tags: readonly string[], source: string): IMarker | null {
  return markerFromTags(tags) ?? markerFromSource(source);
}

/** The text of a badge, e.g. "step: train" or "parameters". */
export function markerLabel(marker: IMarker): string {
  return marker.kind === 'step' ? `step: ${marker.name ?? ''}` : marker.kind;
}

/** True when the first line of `source` is a `%%dsops step|parameters|skip` marker. */
export function hasMagicMarker(source: string): boolean {
  return markerFromSource(source) !== null;
}

/** `source` without its `%%dsops` marker line (unchanged if it has none). */
export function withoutMagicMarker(source: string): string {
  if (!hasMagicMarker(source)) {
    return source;
  }
  const newline = source.indexOf('\n');
  return newline < 0 ? '' : source.slice(newline + 1);
}

/**
 * The tag list after choosing a marker: a cell has at most one of the
 * step / parameters / skip markers. A step keeps its `after:` dependencies
 * (and takes over those of a replaced `%%dsops step ... --after` line);
 * other markers and "clear" drop them.
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
    const kept = tags.filter(tag => !isKindTag(tag));
    for (const name of magicAfter) {
      if (!kept.includes(`after:${name}`)) {
        kept.push(`after:${name}`);
      }
    }
    return [`step:${choice.name}`, ...kept];
  }
  return [...tags.filter(tag => !isMarkerTag(tag)), choice.kind];
}
