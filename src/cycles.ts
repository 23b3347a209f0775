/**
 * Which `after` choices would make the steps depend on each other in a cycle. Pure: reads the
 * pipeline's edges (data and `after`) and each step's `depends_on`, as the core computes them.
 */
import { IPipeline } from './tokens';

/** A step the mark dialog offers for `after`, with why it cannot be picked (null: it can). */
export interface IAfterChoice {
  name: string;
  refused: string | null;
}

/** For each step, the steps that run after it (data or `after`): the graph's out-edges. */
export function dependents(pipeline: IPipeline): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const link = (source: string, target: string): void => {
    if (source !== target) {
      (out.get(source) ?? out.set(source, new Set()).get(source)!).add(target);
    }
  };
  for (const edge of pipeline.edges ?? []) {
    link(edge.source, edge.target);
  }
  for (const step of pipeline.steps) {
    for (const source of [...step.depends_on, ...step.after]) {
      link(source, step.name);
    }
  }
  return out;
}

/** The path `from → ... → to` along `out`, or null when `to` does not run after `from`. */
export function pathBetween(
  out: Map<string, Set<string>>,
  from: string,
  to: string
): string[] | null {
  const previous = new Map<string, string>([[from, from]]);
  const queue = [from];
  while (queue.length > 0) {
    const current = queue.shift()!;
    if (current === to) {
      const path = [to];
      while (path[0] !== from) {
        path.unshift(previous.get(path[0])!);
      }
      return path;
    }
    for (const next of out.get(current) ?? []) {
      if (!previous.has(next)) {
        previous.set(next, current);
        queue.push(next);
      }
    }
  }
  return null;
}

/**
 * The steps `step` may be marked to run after, in the pipeline as it would be with the marker
 * written (the dialog asks the core for it). Picking X is refused when X already runs after
 * `step`: `after: X` would close a loop. Adding in-edges to one step never makes a path out of
 * it, so each choice stands alone and several can be picked together.
 */
export function afterChoices(pipeline: IPipeline, step: string): IAfterChoice[] {
  const out = dependents(pipeline);
  return pipeline.steps
    .filter(candidate => candidate.name !== step)
    .map(({ name }) => {
      const path = pathBetween(out, step, name);
      const refused = path ? `${name} already runs after ${step} (${path.join(' → ')})` : null;
      return { name, refused };
    });
}
