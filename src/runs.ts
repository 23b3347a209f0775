/**
 * The "Runs" view of a notebook: its past runs (parameters, status, duration, a link that
 * opens the executed notebook) and its jobs as the server keeps them (a restart marks the
 * ones it interrupted). A main-area widget; everything shown comes from the server routes.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { listJobs, listRuns } from './api';
import { element } from './dom';
import { errorMessage, formatSeconds, jobDuration } from './format';
import { shownParameters, shownTime } from './viewfmt';
import { IJob, IRunSummary } from './tokens';

function table(headers: string[], testid: string): [HTMLTableElement, HTMLTableSectionElement] {
  const node = element('table', { class: 'dsops-Table', 'data-testid': testid });
  const head = element('tr');
  head.append(...headers.map(header => element('th', {}, header)));
  node.append(element('thead'), element('tbody'));
  node.tHead!.appendChild(head);
  return [node, node.tBodies[0]];
}

function cell(text: string, attributes: Record<string, string> = {}): HTMLTableCellElement {
  return element('td', attributes, text);
}

/** Opens a run's executed notebook in JupyterLab (index.ts: as a document, else read-only). */
export type OpenNotebook = (run: IRunSummary) => Promise<void>;

/** The runs and jobs of one notebook. */
export class RunsView extends Widget {
  private readonly _body: HTMLElement;

  constructor(
    readonly path: string,
    private readonly _openNotebook: OpenNotebook
  ) {
    super();
    this.addClass('dsops-View');
    this.node.dataset.testid = 'dsops-runs-view';
    const bar = element('div', { class: 'dsops-View-bar' });
    bar.appendChild(element('span', { class: 'dsops-View-title' }, `Runs of ${path}`));
    const refresh = element('button', { class: 'jp-mod-styled', 'data-testid': 'dsops-refresh' });
    refresh.textContent = 'Refresh';
    refresh.addEventListener('click', () => void this.refresh());
    bar.appendChild(refresh);
    this._body = element('div', { class: 'dsops-View-body' });
    this.node.append(bar, this._body);
  }

  async refresh(): Promise<void> {
    this.node.dataset.state = 'loading';
    const [runs, jobs] = await Promise.all([
      listRuns(this.path).then(
        found => this._runs(found),
        error => this._error(error)
      ),
      listJobs(this.path).then(
        found => this._jobs(found),
        error => this._error(error)
      )
    ]);
    this._body.replaceChildren(element('h3', {}, 'Runs'), runs, element('h3', {}, 'Jobs'), jobs);
    this.node.dataset.state = 'ready';
  }

  private _error(reason: unknown): HTMLElement {
    return element('div', { class: 'dsops-Error' }, errorMessage(reason));
  }

  private _runs(runs: IRunSummary[]): HTMLElement {
    if (runs.length === 0) {
      return element('p', { class: 'dsops-View-empty' }, 'No runs yet: Run in the dsops panel.');
    }
    const [node, body] = table(
      ['Started', 'Status', 'Duration', 'Parameters', 'Steps', 'Executed notebook'],
      'dsops-runs'
    );
    for (const run of runs) {
      const row = element('tr', { 'data-testid': 'dsops-run', 'data-status': run.status });
      const steps = (run.steps ?? []).map(step => `${step.name}: ${step.status ?? step.state}`);
      row.append(
        cell(shownTime(run.started)),
        cell(run.status, { class: 'dsops-State', 'data-state': run.status }),
        cell(formatSeconds(run.duration ?? 0)),
        cell(shownParameters(run.parameters)),
        cell(steps.join(', ') || '—'),
        this._openCell(run)
      );
      body.appendChild(row);
    }
    return node;
  }

  private _openCell(run: IRunSummary): HTMLTableCellElement {
    const path = run.output_notebook;
    const td = cell('');
    if (!path) {
      td.textContent = '—';
      return td;
    }
    const link = element('a', { href: '#', 'data-testid': 'dsops-run-open', title: path });
    link.textContent = path.split('/').slice(-2).join('/');
    link.addEventListener('click', event => {
      event.preventDefault();
      void this._openNotebook(run);
    });
    td.appendChild(link);
    return td;
  }

  private _jobs(jobs: IJob[]): HTMLElement {
    if (jobs.length === 0) {
      return element('p', { class: 'dsops-View-empty' }, 'No jobs yet.');
    }
    const [node, body] = table(['Created', 'Kind', 'State', 'Duration', 'Outcome'], 'dsops-jobs');
    for (const job of jobs) {
      const state = job.interrupted ? 'interrupted' : job.state;
      const row = element('tr', { 'data-testid': 'dsops-job-row', 'data-state': state });
      const seconds = jobDuration(job);
      const outcome = job.error ?? (job.state === 'succeeded' ? 'succeeded' : job.stage);
      row.append(
        cell(shownTime(job.created)),
        cell(job.kind),
        cell(state, { class: 'dsops-State', 'data-state': state }),
        cell(seconds === null ? '—' : formatSeconds(seconds)),
        cell(outcome || '—')
      );
      body.appendChild(row);
    }
    return node;
  }
}

/** The Runs view in the main area, titled after the notebook. */
export function runsWidget(path: string, open: OpenNotebook): MainAreaWidget<RunsView> {
  const content = new RunsView(path, open);
  const widget = new MainAreaWidget({ content });
  widget.id = `dsops-runs-${path}`;
  widget.title.label = `Runs — ${path.split('/').pop()}`;
  widget.title.closable = true;
  void content.refresh();
  return widget;
}
