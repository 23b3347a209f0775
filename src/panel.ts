/**
 * Side panel: the current notebook's steps in run order, their dependencies,
 * the parameters, and a "Run" button per step (a server run job).
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { getPipeline, startJob, watchJob } from './api';
import { element } from './dom';
import { cacheMark, errorMessage, formatSeconds, jobDuration } from './format';
import { dsopsIcon } from './icons';
import { CommandIDs, IJob, IPipeline, IStep } from './tokens';

interface IStepStatus {
  state: 'running' | 'succeeded' | 'failed';
  text: string;
}

function statusOf(job: IJob, step: string): IStepStatus {
  if (job.state === 'queued' || job.state === 'running') {
    return { state: 'running', text: job.stage ? `running: ${job.stage}` : 'running…' };
  }
  const record = job.kind === 'run' ? job.result : null;
  const fromRun = record?.steps.find(s => s.name === step)?.duration;
  const seconds = typeof fromRun === 'number' ? fromRun : jobDuration(job);
  const duration = seconds === null ? '' : ` in ${formatSeconds(seconds)}`;
  if (job.state === 'failed') {
    return { state: 'failed', text: `failed${duration}: ${job.error ?? 'see the run log'}` };
  }
  return { state: 'succeeded', text: `succeeded${duration}` };
}

export class PipelinePanel extends Widget {
  private readonly _title: HTMLElement;
  private readonly _body: HTMLElement;
  private readonly _statuses = new Map<string, IStepStatus>();
  private _watched: NotebookPanel | null = null;
  private _generation = 0;
  private _stale = true;
  private _shownPath = '';

  constructor(
    private readonly _tracker: INotebookTracker,
    private readonly _commands: CommandRegistry
  ) {
    super();
    this.id = 'dsops-pipeline-panel';
    this.addClass('dsops-Panel');
    this.title.icon = dsopsIcon;
    this.title.caption = 'dsops pipeline';
    this.node.dataset.testid = 'dsops-panel';

    const header = element('div', { class: 'dsops-Panel-header' });
    this._title = element('div', { class: 'dsops-Panel-title' }, 'Pipeline');
    const refresh = element(
      'button',
      { class: 'jp-Button jp-mod-styled jp-mod-reject' },
      'Refresh'
    );
    refresh.addEventListener('click', () => void this.refresh());
    const pack = element('button', { class: 'jp-Button jp-mod-styled jp-mod-accept' }, 'Package…');
    pack.addEventListener('click', () => void this._commands.execute(CommandIDs.packageNotebook));
    const buttons = element('div', { class: 'dsops-Panel-buttons' });
    buttons.append(refresh, pack);
    header.append(this._title, buttons);
    this._body = element('div', { class: 'dsops-Panel-body' });
    this.node.append(header, this._body);

    _tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._onCurrentChanged();
  }

  /** Ask the server for the current notebook's pipeline and redraw. */
  async refresh(): Promise<void> {
    this._stale = false;
    const panel = this._tracker.currentWidget;
    const generation = ++this._generation;
    if (panel === null) {
      this._title.textContent = 'Pipeline';
      this._message('Open a notebook to see its steps.');
      return;
    }
    await panel.context.ready;
    const path = panel.context.localPath;
    this._title.textContent = path;
    try {
      const pipeline = await getPipeline(path);
      if (generation === this._generation) {
        this._render(path, pipeline);
      }
    } catch (error) {
      if (generation === this._generation) {
        this._message(errorMessage(error), true);
      }
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    if (this._stale) {
      void this.refresh();
    }
  }

  private _refreshSoon(): void {
    this._stale = true;
    if (this.isVisible) {
      void this.refresh();
    }
  }

  private _onCurrentChanged(): void {
    this._watched?.context.saveState.disconnect(this._onSaveState, this);
    this._watched = this._tracker.currentWidget;
    this._watched?.context.saveState.connect(this._onSaveState, this);
    this._refreshSoon();
  }

  private _onSaveState(_: DocumentRegistry.Context, state: DocumentRegistry.SaveState): void {
    if (state === 'completed') {
      this._refreshSoon();
    }
  }

  private _message(text: string, isError = false): void {
    const node = element('div', { class: isError ? 'dsops-Error' : 'dsops-Panel-empty' }, text);
    if (isError) {
      node.dataset.testid = 'dsops-error';
    }
    this._shownPath = '';
    this._body.replaceChildren(node);
  }

  private _render(path: string, pipeline: IPipeline): void {
    this._shownPath = path;
    const steps = element('ol', { class: 'dsops-Panel-steps' });
    for (const step of pipeline.steps) {
      steps.appendChild(this._stepItem(path, step));
    }
    const summary = `${pipeline.name} · ${pipeline.steps.length} step(s)`;
    const name = element('div', { class: 'dsops-Panel-name' }, summary);
    const nodes: HTMLElement[] = [
      name,
      element('h3', { class: 'dsops-Panel-heading' }, 'Steps (run order)'),
      steps
    ];
    nodes.push(element('h3', { class: 'dsops-Panel-heading' }, 'Parameters'));
    nodes.push(this._parameters(pipeline));
    this._body.replaceChildren(...nodes);
  }

  private _stepItem(path: string, step: IStep): HTMLElement {
    const item = element('li', { class: 'dsops-Step' });
    item.dataset.testid = 'dsops-step';
    item.dataset.step = step.name;
    const head = element('div', { class: 'dsops-Step-head' });
    const name = element('span', { class: 'dsops-Step-name' }, step.name);
    if (step.cells.length > 0) {
      name.title = `Go to cell ${step.cells[0] + 1}`;
      name.addEventListener('click', () => this._reveal(path, step.cells[0]));
    }
    const run = element(
      'button',
      { class: 'jp-Button jp-mod-styled jp-mod-accept dsops-Step-run' },
      'Run'
    );
    run.dataset.testid = `dsops-run-${step.name}`;
    run.title = `Run step ${step.name} (and the steps it needs) with papermill`;
    run.addEventListener('click', () => void this._run(path, step.name));
    head.append(name);
    if (step.state) {
      const mark = cacheMark(step.state);
      const badge = element('span', { class: 'dsops-Step-cache' }, mark.text);
      badge.title = mark.title;
      badge.dataset.testid = 'dsops-step-cache';
      badge.dataset.fresh = String(step.state.fresh);
      head.append(badge);
    }
    head.append(run);
    item.appendChild(head);
    const deps = step.depends_on.length ? step.depends_on : step.after;
    if (deps.length) {
      item.appendChild(element('div', { class: 'dsops-Step-detail' }, `after: ${deps.join(', ')}`));
    }
    const io: string[] = [];
    if (step.reads.length) {
      io.push(`reads ${step.reads.join(', ')}`);
    }
    if (step.writes.length) {
      io.push(`writes ${step.writes.join(', ')}`);
    }
    if (io.length) {
      item.appendChild(element('div', { class: 'dsops-Step-detail' }, io.join(' · ')));
    }
    const status = element('div', { class: 'dsops-Step-status' });
    status.dataset.testid = 'dsops-step-status';
    item.appendChild(status);
    this._paintStatus(status, this._statuses.get(this._key(path, step.name)));
    return item;
  }

  /** Select and scroll to cell `index` of the notebook at `path`. */
  private _reveal(path: string, index: number): void {
    const panel = this._tracker.find(p => p.context.localPath === path);
    const cell = panel?.content.widgets[index];
    if (panel && cell) {
      panel.content.activeCellIndex = index;
      void panel.content.scrollToCell(cell);
    }
  }

  private _parameters(pipeline: IPipeline): HTMLElement {
    if (pipeline.parameters.length === 0) {
      return element('div', { class: 'dsops-Panel-empty' }, 'No parameters cell.');
    }
    const table = element('table', { class: 'dsops-Panel-parameters' });
    for (const parameter of pipeline.parameters) {
      const row = element('tr');
      row.append(
        element('td', { class: 'dsops-Param-name' }, parameter.name),
        element('td', { class: 'dsops-Param-type' }, parameter.type),
        element('td', { class: 'dsops-Param-default' }, JSON.stringify(parameter.default) ?? 'None')
      );
      table.appendChild(row);
    }
    return table;
  }

  private _key(path: string, step: string): string {
    return `${path}\u0000${step}`;
  }

  private _paintStatus(node: HTMLElement, status: IStepStatus | undefined): void {
    node.textContent = status?.text ?? '';
    node.title = status?.text ?? '';
    if (status) {
      node.dataset.state = status.state;
    } else {
      delete node.dataset.state;
    }
  }

  private _setStatus(path: string, step: string, status: IStepStatus): void {
    this._statuses.set(this._key(path, step), status);
    if (this._shownPath !== path) {
      return;
    }
    const item = Array.from(this._body.querySelectorAll<HTMLElement>('.dsops-Step')).find(
      node => node.dataset.step === step
    );
    const node = item?.querySelector<HTMLElement>('.dsops-Step-status');
    if (node) {
      this._paintStatus(node, status);
    }
  }

  private async _run(path: string, step: string): Promise<void> {
    this._setStatus(path, step, { state: 'running', text: 'starting…' });
    try {
      const panel = this._tracker.find(p => p.context.localPath === path);
      if (panel?.context.model.dirty) {
        await panel.context.save();
      }
      const job = await startJob('run', path, { steps: [step] });
      await watchJob(job, current => this._setStatus(path, step, statusOf(current, step)));
    } catch (error) {
      this._setStatus(path, step, { state: 'failed', text: `failed: ${errorMessage(error)}` });
    }
  }
}
