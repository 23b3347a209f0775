/**
 * The marker grammar: the cases of tests/marker_cases.json, which the core's pytest test reads
 * too, and the tag editing the UI does.
 */
import grammar from '../../tests/marker_cases.json';
import {
  ICellMarkers,
  isMarkerTag,
  magicLineAfter,
  MarkerError,
  markerLabel,
  readMarkers,
  shellWords,
  stepNameProblem,
  withMarker,
  withoutMagicMarker
} from '../markers';

interface ICase {
  name: string;
  tags?: string[];
  line?: string;
  expect: Partial<ICellMarkers> | 'refused';
}

const cases = grammar.cases as ICase[];

describe('the marker cases shared with the core', () => {
  it.each(cases.map(c => [c.name, c]))('%s', (_, c) => {
    const test = c as ICase;
    // the line is the first line of a real cell: code follows it
    const read = () => readMarkers(test.tags ?? [], `${test.line ?? ''}\nx = 1\n`);
    if (test.expect === 'refused') {
      expect(read).toThrow(MarkerError);
    } else {
      expect(read()).toEqual({ step: null, after: [], extras: {}, ...test.expect });
    }
  });

  it('has refused cases and accepted ones', () => {
    const refused = cases.filter(c => c.expect === 'refused').length;
    expect(refused).toBeGreaterThanOrEqual(20);
    expect(cases.length - refused).toBeGreaterThanOrEqual(20);
  });
});

describe('shellWords', () => {
  it.each([
    ['a  b\tc', ['a', 'b', 'c']],
    [`'a b' "c d"`, ['a b', 'c d']],
    [`x'y'"z"`, ['xyz']],
    [`"a\\"b" "c\\d"`, ['a"b', 'c\\d']],
    [`a\\ b`, ['a b']],
    [`''`, ['']],
    ['', []]
  ])('splits %j as shlex.split', (line, words) => {
    expect(shellWords(line)).toEqual(words);
  });

  it.each([`'a`, `"a`, `a\\`, `"a\\"`])('refuses %j', line => {
    expect(() => shellWords(line)).toThrow(MarkerError);
  });
});

describe('stepNameProblem', () => {
  it('accepts identifiers', () => {
    expect(stepNameProblem('train_2')).toBeNull();
  });

  it.each(['', '2train', 'my-step', 'class', 'a'.repeat(101)])('refuses %j', name => {
    expect(stepNameProblem(name)).not.toBeNull();
  });
});

describe('markerLabel', () => {
  const markers = (role: ICellMarkers['role'], step: string | null = null): ICellMarkers => ({
    role,
    step,
    after: [],
    extras: {}
  });

  it('names the step, the role, or nothing for a continuing cell', () => {
    expect(markerLabel(markers('step', 'train'))).toBe('step: train');
    expect(markerLabel(markers('parameters'))).toBe('parameters');
    expect(markerLabel(markers('shared'))).toBe('shared');
    expect(markerLabel(markers('injected'))).toBe('injected parameters');
    expect(markerLabel(markers('continue'))).toBeNull();
  });
});

describe('editing the tags of a cell', () => {
  it('sets a step, keeping after: tags and other tags', () => {
    expect(
      withMarker(['skip', 'after:load', 'hide-input'], { kind: 'step', name: 'train' })
    ).toEqual(['step:train', 'after:load', 'hide-input']);
  });

  it('takes over the --after list of a replaced first line', () => {
    const after = magicLineAfter('%%dsops step old --after load,features\nx = 1');
    expect(after).toEqual(['load', 'features']);
    expect(withMarker(['after:load'], { kind: 'step', name: 'train' }, after)).toEqual([
      'step:train',
      'after:load',
      'after:features'
    ]);
  });

  it('keeps nothing of a first line the core refuses', () => {
    expect(magicLineAfter('%%dsops step old --after=load')).toEqual([]);
  });

  it('replaces step and dependencies by parameters or skip', () => {
    expect(withMarker(['block:a', 'prev:b', 'x'], { kind: 'parameters' })).toEqual([
      'x',
      'parameters'
    ]);
  });

  it('clears every marker tag, Kale and papermill ones included', () => {
    const tags = ['step:a', 'after:b', 'pipeline-metrics', 'injected-parameters', 'image:py'];
    expect(withMarker(tags, null)).toEqual(['image:py']);
    expect(tags.filter(isMarkerTag)).toHaveLength(4);
  });

  it('removes only a %%dsops first line', () => {
    expect(withoutMagicMarker('%%dsops skip\nx = 1')).toBe('x = 1');
    expect(withoutMagicMarker('%%dsops skip')).toBe('');
    expect(withoutMagicMarker('x = 1\n%%dsops skip')).toBe('x = 1\n%%dsops skip');
  });

  it('reads what it wrote', () => {
    const tags = withMarker([], { kind: 'step', name: 'train' }, ['load']);
    expect(readMarkers(tags, 'x = 1')).toEqual({
      role: 'step',
      step: 'train',
      after: ['load'],
      extras: {}
    });
  });
});
