/**
 * The panel's view of the notebook's job: kind, stage, progress bar and a Cancel button while
 * it works; how it ended (state, wall time, one-line error) once it is done.
 */
import { element, setText } from './dom';
import { formatSeconds, jobDuration } from './format';
import { isActive } from './stepstatus';
import { IJob } from './tokens';

const ENDED: Record<string, string> = {
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'cancelled'
};

export class JobBox {
  readonly node: HTMLElement;
  private readonly _headline: HTMLElement;
  private readonly _progress: HTMLProgressElement;
  private readonly _percent: HTMLElement;
  private readonly _bar: HTMLElement;
  private readonly _cancel: HTMLButtonElement;
  private readonly _error: HTMLElement;
  private _job: IJob | null = null;

  constructor(onCancel: (job: IJob) => void) {
    this.node = element('div', { class: 'dsops-JobBox' });
    this.node.dataset.testid = 'dsops-panel-job';
    this._headline = element('div', { class: 'dsops-JobBox-headline' });
    this._headline.dataset.testid = 'dsops-panel-job-headline';
    this._progress = element('progress', { max: '1', value: '0' });
    this._progress.dataset.testid = 'dsops-panel-progress';
    this._percent = element('span', { class: 'dsops-Job-percent' });
    this._cancel = element('button', { class: 'jp-Button jp-mod-styled jp-mod-warn' }, 'Cancel');
    this._cancel.dataset.testid = 'dsops-panel-cancel';
    this._cancel.addEventListener('click', () => {
      if (this._job) {
        this._cancel.disabled = true;
        this._cancel.textContent = 'Cancelling…';
        onCancel(this._job);
      }
    });
    this._bar = element('div', { class: 'dsops-Job-bar' });
    this._bar.append(this._progress, this._percent, this._cancel);
    this._error = element('div', { class: 'dsops-Error' });
    this._error.dataset.testid = 'dsops-panel-job-error';
    this.node.append(this._headline, this._bar, this._error);
    this.show(null);
  }

  get job(): IJob | null {
    return this._job;
  }

  /** Show `job` (null: nothing, the box hides). */
  show(job: IJob | null): void {
    const changed = job?.id !== this._job?.id;
    this._job = job;
    this.node.hidden = job === null;
    if (job === null) {
      delete this.node.dataset.state;
      return;
    }
    this.node.dataset.state = job.state;
    this.node.dataset.kind = job.kind;
    this.node.dataset.job = job.id;
    const active = isActive(job);
    if (changed || !active) {
      this._cancel.disabled = false;
      this._cancel.textContent = 'Cancel';
    }
    this._bar.hidden = !active;
    const fraction = Math.min(1, Math.max(0, job.progress || 0));
    this._progress.value = fraction;
    setText(this._percent, `${Math.round(fraction * 100)} %`);
    setText(this._headline, headline(job));
    setText(this._error, job.state === 'failed' ? (job.error ?? '') : '');
  }
}

/** "run: Running notebook…" while working, "run failed after 8.4 s" once ended. */
export function headline(job: IJob): string {
  if (isActive(job)) {
    const stage = job.state === 'queued' ? 'queued' : job.stage || 'starting';
    return `${job.kind}: ${stage}`;
  }
  const seconds = jobDuration(job);
  const took = seconds === null ? '' : ` after ${formatSeconds(seconds)}`;
  return `${job.kind} ${ENDED[job.state] ?? job.state}${took}`;
}
