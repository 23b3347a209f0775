/** The step graph: dagre places every step and edge; data edges carry the names passed. */
import { edgeLabel, layoutGraph, renderGraph } from '../graph';
import { IPipeline, IStep } from '../tokens';

function step(name: string): IStep {
  return {
    name,
    cells: [0],
    after: [],
    depends_on: [],
    reads: [],
    writes: [],
    inputs: [],
    outputs: []
  };
}

const pipeline: IPipeline = {
  name: 'p',
  notebook: 'p.ipynb',
  content_hash: '',
  steps: ['load', 'features', 'train', 'report'].map(step),
  edges: [
    { source: 'load', target: 'features', kind: 'data', names: ['df'] },
    { source: 'features', target: 'train', kind: 'data', names: ['X', 'y'] },
    { source: 'load', target: 'train', kind: 'after', names: [] },
    { source: 'train', target: 'report', kind: 'data', names: ['model'] }
  ],
  parameters: [],
  interactive: []
};

describe('layoutGraph', () => {
  const layout = layoutGraph(pipeline);

  it('places every step, upstream above downstream', () => {
    const y = new Map(layout.nodes.map(node => [node.step, node.y]));
    expect([...y.keys()].sort()).toEqual(['features', 'load', 'report', 'train']);
    expect(y.get('load')!).toBeLessThan(y.get('features')!);
    expect(y.get('features')!).toBeLessThan(y.get('train')!);
    expect(y.get('train')!).toBeLessThan(y.get('report')!);
  });

  it('routes every edge and labels data edges with the names passed', () => {
    expect(layout.edges).toHaveLength(4);
    for (const edge of layout.edges) {
      expect(edge.points.length).toBeGreaterThanOrEqual(2);
    }
    const labels = layout.edges.map(edge => edge.label).sort();
    expect(labels).toEqual(['', 'X, y', 'df', 'model']);
    expect(edgeLabel(pipeline.edges[2])).toBe('');
  });

  it('draws an SVG with the states as node colours and edge kinds', () => {
    const clicked: string[] = [];
    const root = renderGraph(layout, new Map([['train', 'failed']]), name => clicked.push(name));
    const node = root.querySelector('[data-step=train]') as SVGGElement;
    expect(node.dataset.state).toBe('failed');
    node.dispatchEvent(new MouseEvent('click'));
    expect(clicked).toEqual(['train']);
    expect(root.querySelectorAll('.dsops-Graph-edge[data-kind=after]')).toHaveLength(1);
    expect(root.querySelector('[data-source=features][data-target=train] text')?.textContent).toBe(
      'X, y'
    );
  });

  it('leaves out edges to steps the pipeline does not have', () => {
    const broken = {
      ...pipeline,
      edges: [{ source: 'x', target: 'load', kind: 'data' as const, names: ['a'] }]
    };
    expect(layoutGraph(broken).edges).toEqual([]);
  });
});
