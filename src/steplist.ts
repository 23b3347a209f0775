/**
 * One step of the panel's list: its name (go to its cell), cache mark, Run button, the values
 * it receives and passes, and its last status (a failed step links to its cell and line).
 */
import { element } from './dom';
import { cacheMark } from './format';
import { failureWhere, statusText } from './stepstatus';
import { IStep, IStepStatus } from './tokens';

export interface IStepActions {
  /** Go to cell `cell` of the notebook (and highlight its 1-based `line`). */
  reveal: (cell: number, line?: number) => void;
  run: () => void;
}

function detail(text: string, testid?: string): HTMLElement {
  const node = element('div', { class: 'dsops-Step-detail' }, text);
  if (testid) {
    node.dataset.testid = testid;
  }
  return node;
}

/** The list item of `step`; its status comes later through `paintStepStatus`. */
export function stepItem(step: IStep, actions: IStepActions): HTMLElement {
  const item = element('li', { class: 'dsops-Step' });
  item.dataset.testid = 'dsops-step';
  item.dataset.step = step.name;
  const head = element('div', { class: 'dsops-Step-head' });
  const name = element('span', { class: 'dsops-Step-name' }, step.name);
  if (step.cells.length > 0) {
    name.title = `Go to cell ${step.cells[0] + 1}`;
    name.addEventListener('click', () => actions.reveal(step.cells[0]));
  }
  head.append(name);
  if (step.state) {
    const mark = cacheMark(step.state);
    const badge = element('span', { class: 'dsops-Step-cache' }, mark.text);
    badge.title = mark.title;
    badge.dataset.testid = 'dsops-step-cache';
    badge.dataset.fresh = String(step.state.fresh);
    head.append(badge);
  }
  const run = element(
    'button',
    { class: 'jp-Button jp-mod-styled jp-mod-accept dsops-Step-run' },
    'Run'
  );
  run.dataset.testid = `dsops-run-${step.name}`;
  run.title = `Run step ${step.name} (and the steps it needs) with papermill`;
  run.addEventListener('click', actions.run);
  head.append(run);
  item.appendChild(head);
  const deps = step.depends_on.length ? step.depends_on : step.after;
  if (deps.length) {
    item.appendChild(detail(`after: ${deps.join(', ')}`));
  }
  const io: string[] = [];
  if (step.inputs?.length) {
    io.push(`receives ${step.inputs.join(', ')}`);
  }
  if (step.outputs?.length) {
    io.push(`passes ${step.outputs.join(', ')}`);
  }
  if (io.length) {
    item.appendChild(detail(io.join(' · '), 'dsops-step-io'));
  }
  const status = element('div', { class: 'dsops-Step-status' });
  status.dataset.testid = 'dsops-step-status';
  item.appendChild(status);
  return item;
}

/** Show `status` on a step's item (nothing: no status yet); a failure links to its line. */
export function paintStepStatus(
  item: HTMLElement,
  status: IStepStatus | undefined,
  reveal: IStepActions['reveal']
): void {
  const node = item.querySelector<HTMLElement>('.dsops-Step-status');
  if (!status || !node) {
    node?.replaceChildren();
    delete node?.dataset.state;
    delete item.dataset.state;
    return;
  }
  item.dataset.state = status.state;
  node.dataset.state = status.state;
  const line = element('span', { class: 'dsops-Step-state' }, statusText(status));
  line.dataset.testid = 'dsops-step-state';
  const parts: HTMLElement[] = [line];
  const where = failureWhere(status);
  if (where !== null) {
    const link = element('a', { href: '#', class: 'dsops-Step-where' }, where);
    link.dataset.testid = 'dsops-failure-link';
    link.addEventListener('click', event => {
      event.preventDefault();
      reveal(status.cell as number, status.line ?? undefined);
    });
    parts.push(link);
  }
  if (status.error) {
    const error = element('div', { class: 'dsops-Step-error' }, status.error);
    error.dataset.testid = 'dsops-step-error';
    parts.push(error);
  }
  node.replaceChildren(...parts);
}
