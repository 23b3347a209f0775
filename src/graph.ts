/**
 * The step graph: steps as nodes, data edges labelled with the names passed, `after` edges
 * dashed; laid out by dagre and drawn as SVG, each node coloured by its step's status.
 */
import * as dagre from '@dagrejs/dagre';

import { IEdge, IPipeline, StepState } from './tokens';

const SVG = 'http://www.w3.org/2000/svg';
const NODE_HEIGHT = 26;
const CHAR_WIDTH = 7.2;
const LABEL_HEIGHT = 14;

export interface IPoint {
  x: number;
  y: number;
}

export interface INodeLayout {
  step: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface IEdgeLayout {
  edge: IEdge;
  label: string;
  points: IPoint[];
  /** Where the label's centre sits (dagre keeps room for it). */
  labelAt: IPoint | null;
}

export interface IGraphLayout {
  width: number;
  height: number;
  nodes: INodeLayout[];
  edges: IEdgeLayout[];
}

/** The label of an edge: the names a data edge passes; an `after` edge has none. */
export function edgeLabel(edge: IEdge): string {
  return edge.kind === 'data' ? edge.names.join(', ') : '';
}

/** Place the pipeline's steps and edges top to bottom (dagre's layered layout). */
export function layoutGraph(pipeline: IPipeline): IGraphLayout {
  const graph = new dagre.graphlib.Graph({ multigraph: true });
  graph.setGraph({ rankdir: 'TB', nodesep: 24, ranksep: 36, edgesep: 12, marginx: 4, marginy: 4 });
  for (const step of pipeline.steps) {
    const width = Math.max(48, step.name.length * CHAR_WIDTH + 20);
    graph.setNode(step.name, { width, height: NODE_HEIGHT });
  }
  const edges = (pipeline.edges ?? []).filter(
    edge => graph.hasNode(edge.source) && graph.hasNode(edge.target)
  );
  edges.forEach((edge, index) => {
    const label = edgeLabel(edge);
    const size = label ? { width: label.length * CHAR_WIDTH * 0.9, height: LABEL_HEIGHT } : {};
    graph.setEdge(edge.source, edge.target, { ...size, labelpos: 'c', index }, String(index));
  });
  dagre.layout(graph);
  const nodes = graph.nodes().map(step => {
    const node = graph.node(step);
    return { step, x: node.x, y: node.y, width: node.width, height: node.height };
  });
  const placed = graph.edges().map(key => {
    const value = graph.edge(key);
    const edge = edges[Number(key.name)];
    const label = edgeLabel(edge);
    const labelAt = label && typeof value.x === 'number' ? { x: value.x, y: value.y } : null;
    return { edge, label, points: value.points ?? [], labelAt };
  });
  const size = graph.graph();
  return { width: size.width ?? 0, height: size.height ?? 0, nodes, edges: placed };
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number> = {}
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, String(value));
  }
  return node;
}

function pathOf(points: IPoint[]): string {
  return points
    .map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x.toFixed(1)},${p.y.toFixed(1)}`)
    .join(' ');
}

function arrowMarker(): SVGDefsElement {
  const defs = svg('defs');
  const marker = svg('marker', {
    id: 'dsops-graph-arrow',
    viewBox: '0 0 10 10',
    refX: 9,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: 'auto-start-reverse'
  });
  marker.appendChild(svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'dsops-Graph-arrow' }));
  defs.appendChild(marker);
  return defs;
}

function edgeNode(edge: IEdgeLayout): SVGGElement {
  const group = svg('g', { class: 'dsops-Graph-edge' });
  group.dataset.source = edge.edge.source;
  group.dataset.target = edge.edge.target;
  group.dataset.kind = edge.edge.kind;
  group.dataset.names = edge.edge.names.join(',');
  const path = svg('path', { d: pathOf(edge.points), 'marker-end': 'url(#dsops-graph-arrow)' });
  group.appendChild(path);
  const title = svg('title');
  title.textContent =
    edge.edge.kind === 'data'
      ? `${edge.edge.source} → ${edge.edge.target}: ${edge.label}`
      : `${edge.edge.target} runs after ${edge.edge.source}`;
  group.appendChild(title);
  if (edge.labelAt) {
    const text = svg('text', { x: edge.labelAt.x, y: edge.labelAt.y, class: 'dsops-Graph-label' });
    text.textContent = edge.label;
    group.appendChild(text);
  }
  return group;
}

function stepNode(
  node: INodeLayout,
  state: StepState | undefined,
  onSelect: (step: string) => void
): SVGGElement {
  const group = svg('g', {
    class: 'dsops-Graph-node',
    transform: `translate(${node.x - node.width / 2},${node.y - node.height / 2})`
  });
  group.dataset.step = node.step;
  group.dataset.testid = 'dsops-graph-node';
  if (state) {
    group.dataset.state = state;
  }
  group.appendChild(svg('rect', { width: node.width, height: node.height, rx: 5 }));
  const text = svg('text', { x: node.width / 2, y: node.height / 2 });
  text.textContent = node.step;
  group.appendChild(text);
  const title = svg('title');
  title.textContent = `${node.step}${state ? `: ${state}` : ''} (click: select its first cell)`;
  group.appendChild(title);
  group.addEventListener('click', () => onSelect(node.step));
  return group;
}

/** The graph as an SVG element; `onSelect(step)` when a node is clicked. */
export function renderGraph(
  layout: IGraphLayout,
  states: ReadonlyMap<string, StepState>,
  onSelect: (step: string) => void
): SVGSVGElement {
  const root = svg('svg', {
    class: 'dsops-Graph',
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    width: layout.width,
    height: layout.height
  });
  root.dataset.testid = 'dsops-graph';
  root.appendChild(arrowMarker());
  layout.edges.forEach(edge => root.appendChild(edgeNode(edge)));
  layout.nodes.forEach(node => root.appendChild(stepNode(node, states.get(node.step), onSelect)));
  return root;
}

/** Recolour the nodes of a drawn graph (no new layout while a job reports progress). */
export function paintGraph(root: Element, states: ReadonlyMap<string, StepState>): void {
  root.querySelectorAll<SVGGElement>('.dsops-Graph-node').forEach(group => {
    const state = states.get(group.dataset.step ?? '');
    if (state) {
      group.dataset.state = state;
    } else {
      delete group.dataset.state;
    }
  });
}
