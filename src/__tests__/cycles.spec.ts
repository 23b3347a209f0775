/**
 * The mark dialog's `after` choices: a step that already runs after the one being marked
 * (through data or `after` edges) is refused with the path that would close the cycle.
 */
import { afterChoices, pathBetween, dependents } from '../cycles';
import { IPipeline, IStep } from '../tokens';

function step(name: string, dependsOn: string[] = [], after: string[] = []): IStep {
  return {
    name,
    cells: [],
    after,
    depends_on: dependsOn,
    reads: [],
    writes: [],
    inputs: [],
    outputs: []
  };
}

/** load → features → train → evaluate (data), report after evaluate, plot independent. */
const pipeline: IPipeline = {
  name: 'wine',
  notebook: 'wine.ipynb',
  content_hash: '',
  steps: [
    step('load'),
    step('features', ['load']),
    step('train', ['features']),
    step('evaluate', ['train']),
    step('report', [], ['evaluate']),
    step('plot', ['load'])
  ],
  edges: [
    { source: 'load', target: 'features', kind: 'data', names: ['df'] },
    { source: 'features', target: 'train', kind: 'data', names: ['X'] },
    { source: 'train', target: 'evaluate', kind: 'data', names: ['model'] }
  ],
  parameters: [],
  interactive: []
};

describe('after choices', () => {
  it('refuses exactly the steps downstream of the marked one', () => {
    const choices = afterChoices(pipeline, 'features');
    const refused = choices.filter(c => c.refused !== null).map(c => c.name);
    expect(refused).toEqual(['train', 'evaluate', 'report']);
    expect(choices.map(c => c.name)).not.toContain('features');
  });

  it('names the path that would close the loop, via after edges too', () => {
    const report = afterChoices(pipeline, 'train').find(c => c.name === 'report');
    expect(report?.refused).toBe('report already runs after train (train → evaluate → report)');
  });

  it('offers every other step to a step nothing depends on', () => {
    const choices = afterChoices(pipeline, 'report');
    expect(choices.every(c => c.refused === null)).toBe(true);
    expect(choices).toHaveLength(5);
  });

  it('finds no path against the edges', () => {
    expect(pathBetween(dependents(pipeline), 'evaluate', 'load')).toBeNull();
    expect(pathBetween(dependents(pipeline), 'load', 'plot')).toEqual(['load', 'plot']);
  });
});
