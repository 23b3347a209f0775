/**
 * Pure helpers of the views: step colours, shown times and parameters, and the `after` list
 * the mark dialog writes into the tags.
 */
import { withMarker } from '../markers';
import { stepColor, stepHue } from '../stepcolor';
import { shownParameters, shownTime } from '../viewfmt';

describe('step colours', () => {
  it('gives a name the same hue every time, and wine steps distinct hues', () => {
    expect(stepHue('train')).toBe(stepHue('train'));
    const names = ['load', 'features', 'train', 'evaluate', 'scale'];
    const hues = names.map(stepHue);
    expect(new Set(hues).size).toBe(names.length);
    hues.forEach(hue => expect(hue >= 0 && hue < 360).toBe(true));
    expect(stepColor('train')).toBe(`hsl(${stepHue('train')}, 60%, 38%)`);
  });
});

describe('the text of the views', () => {
  it('shows epoch seconds and ISO times alike, other text as is', () => {
    const epoch = Date.UTC(2026, 11, 2, 20, 31, 5) / 1000;
    expect(shownTime(epoch)).toBe(shownTime(new Date(epoch * 1000).toISOString()));
    expect(shownTime(epoch)).toMatch(/^2026-12-0[23] \d\d:31:05$/);
    expect(shownTime('soon')).toBe('soon');
  });

  it('lists parameters as name=JSON', () => {
    expect(shownParameters({ alpha: 0.5, label: 'x' })).toBe('alpha=0.5, label="x"');
    expect(shownParameters({})).toBe('—');
  });
});

describe('the after list the mark dialog writes', () => {
  it('replaces after: and prev: tags, keeps other tags', () => {
    const tags = ['step:old', 'after:load', 'prev:x', 'image:py'];
    const chosen = withMarker(tags, { kind: 'step', name: 'scale', after: ['features', 'load'] });
    expect(chosen).toEqual(['step:scale', 'image:py', 'after:features', 'after:load']);
  });

  it('keeps the after tags when the dialog did not choose', () => {
    expect(withMarker(['after:load'], { kind: 'step', name: 'scale' })).toEqual([
      'step:scale',
      'after:load'
    ]);
  });
});
