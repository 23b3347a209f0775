/**
 * Side panel: the current notebook's steps in run order with their status (live from the
 * notebook's job, final from its run record), the step graph, the running job (progress,
 * Cancel) and a Run with typed parameters. It follows every edit, not only saves.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { ServerConnection } from '@jupyterlab/services';
import { CommandRegistry } from '@lumino/commands';
import { IDisposable } from '@lumino/disposable';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  busyJob,
  cancelJob,
  describePipeline,
  getPipeline,
  listJobs,
  startJob,
  watchJob
} from './api';
import { paintCells, revealCell, watchEdits } from './cells';
import { element } from './dom';
import { errorMessage } from './format';
import { layoutGraph, paintGraph, renderGraph } from './graph';
import { dsopsIcon } from './icons';
import { JobBox } from './jobbox';
import { ParameterForm } from './paramform';
import { paintStepStatus, stepItem } from './steplist';
import { isActive, jobStepStatuses } from './stepstatus';
import { CommandIDs, IJob, IPipeline, IStepStatus, StepState } from './tokens';

/** Edits wait this long for the next keystroke before the pipeline is described again. */
const EDIT_DEBOUNCE_MS = 400;
/** While shown, the panel looks this often for a job started elsewhere (Package dialog, CLI). */
const JOB_POLL_MS = 4000;

/** The notebook as the server needs it to describe the pipeline: sources and tags, no outputs. */
function withoutOutputs(content: unknown): unknown {
  const notebook = content as { cells?: Array<Record<string, unknown>> };
  const cells = (notebook.cells ?? []).map(cell =>
    cell.cell_type === 'code' ? { ...cell, outputs: [], execution_count: null } : cell
  );
  return { ...notebook, cells };
}

function responseStatus(error: unknown): number | null {
  return error instanceof ServerConnection.ResponseError ? error.response.status : null;
}

export class PipelinePanel extends Widget {
  private readonly _title: HTMLElement;
  private readonly _body: HTMLElement;
  private readonly _runAll: HTMLButtonElement;
  private readonly _package: HTMLButtonElement;
  private readonly _jobBox: JobBox;
  private readonly _notice: HTMLElement;
  /** Per notebook path: the step statuses of its latest job, and that job. */
  private readonly _statuses = new Map<string, Map<string, IStepStatus>>();
  private readonly _jobs = new Map<string, IJob>();
  private readonly _watching = new Set<string>();
  private readonly _starting = new Set<string>();
  private _pipeline: IPipeline | null = null;
  private _form: ParameterForm | null = null;
  private _formKey = '';
  private _watched: NotebookPanel | null = null;
  private _edits: IDisposable | null = null;
  private _editTimer: ReturnType<typeof setTimeout> | null = null;
  private _jobPoll: ReturnType<typeof setInterval> | null = null;
  /** The server has no POST /dsops/pipeline (404): describe the saved file on save instead. */
  private _postMissing = false;
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
    this._runAll = element('button', { class: 'jp-Button jp-mod-styled jp-mod-accept' }, 'Run');
    this._runAll.dataset.testid = 'dsops-run-all';
    this._runAll.title = 'Run the whole notebook with papermill, with the parameters below';
    this._runAll.addEventListener('click', () => void this._run(this._shownPath, undefined));
    this._package = element('button', { class: 'jp-Button jp-mod-styled' }, 'Package…');
    this._package.addEventListener('click', () => {
      void this._commands.execute(CommandIDs.packageNotebook);
    });
    const buttons = element('div', { class: 'dsops-Panel-buttons' });
    buttons.append(refresh, this._runAll, this._package);
    this._jobBox = new JobBox(job => void this._cancel(job));
    this._notice = element('div', { class: 'dsops-Error' });
    this._notice.dataset.testid = 'dsops-error';
    this._notice.hidden = true;
    header.append(this._title, buttons, this._jobBox.node, this._notice);
    this._body = element('div', { class: 'dsops-Panel-body' });
    this.node.append(header, this._body);

    _tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._onCurrentChanged();
    this._updateButtons();
  }

  /** Ask the server for the current notebook's pipeline and its jobs, and redraw. */
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
      const [pipeline, jobs] = await Promise.all([this._describe(panel), listJobs(path)]);
      if (generation === this._generation) {
        this._render(path, pipeline);
        this._adopt(path, jobs[0]);
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
    this._jobPoll ??= setInterval(() => void this._lookForJob(), JOB_POLL_MS);
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this._stopPolling();
  }

  dispose(): void {
    this._stopPolling();
    this._edits?.dispose();
    super.dispose();
  }

  private _stopPolling(): void {
    if (this._jobPoll !== null) {
      clearInterval(this._jobPoll);
      this._jobPoll = null;
    }
  }

  /** Follow a job another surface started on the shown notebook (its buttons then wait). */
  private async _lookForJob(): Promise<void> {
    const path = this._shownPath;
    if (path === '' || this._busy(path)) {
      return;
    }
    const active = (await listJobs(path).catch(() => [])).find(isActive);
    if (active && this._shownPath === path) {
      this._follow(path, active);
    }
  }

  /** The pipeline of the notebook as edited (POST), or as saved when the server lacks POST. */
  private async _describe(panel: NotebookPanel): Promise<IPipeline> {
    const path = panel.context.localPath;
    if (!this._postMissing && panel.model) {
      try {
        return await describePipeline(path, withoutOutputs(panel.model.toJSON()));
      } catch (error) {
        if (responseStatus(error) !== 404 && responseStatus(error) !== 405) {
          throw error;
        }
        this._postMissing = true;
      }
    }
    return getPipeline(path);
  }

  private _refreshSoon(): void {
    this._stale = true;
    if (this.isVisible) {
      void this.refresh();
    }
  }

  private _onCurrentChanged(): void {
    this._watched?.context.saveState.disconnect(this._onSaveState, this);
    this._edits?.dispose();
    this._watched = this._tracker.currentWidget;
    this._watched?.context.saveState.connect(this._onSaveState, this);
    this._edits = this._watched ? watchEdits(this._watched, () => this._onEdit()) : null;
    this._refreshSoon();
  }

  private _onEdit(): void {
    if (this._postMissing) {
      return; // only the saved file can be described: wait for the save
    }
    if (this._editTimer !== null) {
      clearTimeout(this._editTimer);
    }
    this._editTimer = setTimeout(() => {
      this._editTimer = null;
      this._refreshSoon();
    }, EDIT_DEBOUNCE_MS);
  }

  private _onSaveState(_: DocumentRegistry.Context, state: DocumentRegistry.SaveState): void {
    if (state === 'completed') {
      this._refreshSoon();
    }
  }

  private _message(text: string, isError = false): void {
    this._shownPath = '';
    this._pipeline = null;
    this._jobBox.show(null);
    this._notice.hidden = true;
    this._body.replaceChildren(element('div', { class: 'dsops-Panel-empty' }, isError ? '' : text));
    if (isError) {
      this._showNotice(text);
    }
    this._updateButtons();
  }

  private _showNotice(text: string): void {
    this._notice.textContent = text;
    this._notice.hidden = text === '';
  }

  private _render(path: string, pipeline: IPipeline): void {
    if (this._shownPath !== path) {
      this._jobBox.show(this._jobs.get(path) ?? null);
      this._showNotice('');
    }
    this._shownPath = path;
    this._pipeline = pipeline;
    const steps = element('ol', { class: 'dsops-Panel-steps' });
    for (const step of pipeline.steps) {
      steps.appendChild(
        stepItem(step, {
          reveal: cell => void this._reveal(path, cell),
          run: () => void this._run(path, [step.name])
        })
      );
    }
    const summary = `${pipeline.name} · ${pipeline.steps.length} step(s)`;
    const heading = (text: string): HTMLElement =>
      element('h3', { class: 'dsops-Panel-heading' }, text);
    this._body.replaceChildren(
      element('div', { class: 'dsops-Panel-name' }, summary),
      heading('Steps (run order)'),
      steps,
      heading('Graph'),
      this._graph(path, pipeline),
      heading('Run with parameters'),
      this._parameters(pipeline)
    );
    this._paint(path);
  }

  private _states(path: string): Map<string, StepState> {
    const states = new Map<string, StepState>();
    this._statuses.get(path)?.forEach((status, step) => states.set(step, status.state));
    return states;
  }

  private _graph(path: string, pipeline: IPipeline): HTMLElement {
    const box = element('div', { class: 'dsops-Panel-graph' });
    if (pipeline.steps.length === 0) {
      return box;
    }
    const onSelect = (name: string): void => {
      const step = pipeline.steps.find(s => s.name === name);
      if (step && step.cells.length > 0) {
        void this._reveal(path, step.cells[0]);
      }
    };
    box.appendChild(renderGraph(layoutGraph(pipeline), this._states(path), onSelect));
    return box;
  }

  private _parameters(pipeline: IPipeline): HTMLElement {
    if (pipeline.parameters.length === 0) {
      this._form = null;
      this._formKey = '';
      return element('div', { class: 'dsops-Panel-empty' }, 'No parameters cell.');
    }
    const key = JSON.stringify(pipeline.parameters);
    if (this._form === null || key !== this._formKey) {
      this._form = new ParameterForm(pipeline.parameters); // typed values survive live refreshes
      this._formKey = key;
    }
    return this._form.node;
  }

  /** Show the statuses of `path` on its step list, graph and cells. */
  private _paint(path: string): void {
    if (this._shownPath !== path || this._pipeline === null) {
      return;
    }
    const statuses = this._statuses.get(path) ?? new Map<string, IStepStatus>();
    this._body.querySelectorAll<HTMLElement>('.dsops-Step').forEach(item => {
      const status = statuses.get(item.dataset.step ?? '');
      paintStepStatus(item, status, (cell, line) => void this._reveal(path, cell, line));
    });
    const states = this._states(path);
    const graph = this._body.querySelector('.dsops-Graph');
    if (graph) {
      paintGraph(graph, states);
    }
    const notebook = this._tracker.find(p => p.context.localPath === path);
    if (notebook) {
      paintCells(notebook, this._pipeline, states);
    }
    this._updateButtons();
  }

  private async _reveal(path: string, index: number, line?: number): Promise<void> {
    const panel = this._tracker.find(p => p.context.localPath === path);
    if (panel) {
      await revealCell(panel, index, line);
    }
  }

  private _busy(path: string): boolean {
    const job = this._jobs.get(path);
    return this._starting.has(path) || (job !== undefined && isActive(job));
  }

  /** While the notebook's job works, its Run and Package buttons wait. */
  private _updateButtons(): void {
    const busy = this._shownPath === '' || this._busy(this._shownPath);
    const why = busy && this._shownPath ? 'A job is working on this notebook' : '';
    const buttons = [
      this._runAll,
      this._package,
      ...this._body.querySelectorAll('.dsops-Step-run')
    ];
    for (const button of buttons as HTMLButtonElement[]) {
      button.disabled = busy;
      button.dataset.busyReason = why;
    }
  }

  /** Show the notebook's latest job: follow it while it works, else show how it ended. */
  private _adopt(path: string, job: IJob | undefined): void {
    if (job === undefined) {
      return;
    }
    if (isActive(job)) {
      this._follow(path, job);
    } else if (!this._watching.has(job.id)) {
      this._onJob(path, job);
    }
  }

  private _follow(path: string, job: IJob): void {
    if (this._watching.has(job.id)) {
      return;
    }
    this._watching.add(job.id);
    watchJob(job, current => this._onJob(path, current))
      .then(() => this._refreshSoon()) // a run may have filled the step cache: new marks
      .catch(error => this._shownPath === path && this._showNotice(errorMessage(error)))
      .finally(() => this._watching.delete(job.id));
  }

  private _onJob(path: string, job: IJob): void {
    this._jobs.set(path, job);
    const statuses = jobStepStatuses(job);
    if (statuses.size > 0 || job.kind === 'run') {
      this._statuses.set(path, statuses);
    }
    if (this._shownPath === path) {
      this._jobBox.show(job);
      this._paint(path);
    }
  }

  private async _run(path: string, steps: string[] | undefined): Promise<void> {
    const parameters = this._form ? this._form.values() : {};
    if (path === '' || parameters === null || this._busy(path)) {
      return; // the form says which value it refused
    }
    this._starting.add(path);
    this._showNotice('');
    this._updateButtons();
    try {
      const panel = this._tracker.find(p => p.context.localPath === path);
      if (panel?.context.model.dirty) {
        await panel.context.save();
      }
      const options = steps ? { steps, parameters } : { parameters };
      const job = await startJob('run', path, options);
      this._statuses.set(path, new Map());
      this._follow(path, job);
    } catch (error) {
      const busy = busyJob(error);
      if (busy !== null) {
        this._adopt(path, busy); // the notebook is busy: show that job, not an error
      } else if (this._shownPath === path) {
        this._showNotice(errorMessage(error));
      }
    } finally {
      this._starting.delete(path);
      this._updateButtons();
    }
  }

  private async _cancel(job: IJob): Promise<void> {
    try {
      await cancelJob(job.id);
    } catch (error) {
      if (this._shownPath === job.path) {
        this._showNotice(errorMessage(error));
      }
    }
  }
}
