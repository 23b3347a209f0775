/**
 * The live view of a package job: its stage ("Building: step 3 of 13"), a determinate progress
 * bar, the log, a Cancel button while it works and, at the end, its result or its one-line
 * error (what was done and what was rolled back, as the core says it).
 */
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { cancelJob, isFinished } from './api';
import { element } from './dom';
import { errorMessage, formatSeconds } from './format';
import { ExportEngine, IJob, IPackageResult } from './tokens';

/** The names the Package dialog shows for each export engine. */
export const ENGINE_LABELS: Record<ExportEngine, string> = {
  kfp: 'Kubeflow Pipelines (KFP v2)',
  airflow: 'Apache Airflow',
  argo: 'Argo Workflows'
};

/** Live view of a job: stage, progress bar, log and, at the end, its result. */
export class JobView extends Widget {
  /** Called when the user opens the generated script (the dialog closes). */
  onOpenScript: (() => void) | null = null;
  private readonly _stage: HTMLElement;
  private readonly _progress: HTMLProgressElement;
  private readonly _percent: HTMLElement;
  private readonly _log: HTMLPreElement;
  private readonly _result: HTMLElement;
  private readonly _notice: HTMLElement;
  private readonly _cancel: HTMLButtonElement;
  private _job: IJob | null = null;
  private _logLength = -1;

  constructor(private readonly _commands: CommandRegistry) {
    super();
    this.addClass('dsops-Job');
    this.node.dataset.testid = 'dsops-job';
    this._stage = element('div', { class: 'dsops-Job-stage', 'data-testid': 'dsops-stage' });
    const bar = element('div', { class: 'dsops-Job-bar' });
    this._progress = element('progress', { max: '1', value: '0', 'data-testid': 'dsops-progress' });
    this._percent = element('span', { class: 'dsops-Job-percent' }, '0%');
    bar.append(this._progress, this._percent);
    this._log = element('pre', { class: 'dsops-Job-log', 'data-testid': 'dsops-log' });
    this._result = element('div', { class: 'dsops-Job-result' });
    this._notice = element('div', { class: 'dsops-Job-notice', 'data-testid': 'dsops-busy' });
    this._notice.hidden = true;
    this._cancel = element('button', {
      class: 'jp-mod-styled jp-mod-warn dsops-Job-cancel',
      'data-testid': 'dsops-cancel'
    });
    this._cancel.textContent = 'Cancel job';
    this._cancel.title = 'Stop this job: nothing is versioned, the build is stopped';
    this._cancel.addEventListener('click', () => void this._cancelJob());
    bar.appendChild(this._cancel);
    this.node.append(this._notice, this._stage, bar, this._log, this._result);
  }

  /** Say why this job is shown (e.g. the notebook was busy with it). */
  notice(text: string): void {
    this._notice.textContent = text;
    this._notice.hidden = false;
  }

  render(job: IJob): void {
    this._job = job;
    this.node.dataset.state = job.state;
    this.node.dataset.kind = job.kind;
    this._cancel.hidden = isFinished(job);
    this._stage.textContent = stageText(job);
    const fraction = job.state === 'succeeded' ? 1 : Math.min(1, Math.max(0, job.progress || 0));
    this._progress.value = fraction;
    this._progress.dataset.state = job.state;
    this._percent.textContent = `${Math.round(fraction * 100)}%`;
    this._updateLog(job.log ?? []);
    if (job.state === 'failed') {
      this.showError(job.error ?? 'the job failed');
    } else if (job.state === 'cancelled') {
      this._showCancelled(job);
    } else if (job.state === 'succeeded' && job.kind === 'package' && job.result) {
      this._showResult(job.result);
    }
  }

  showError(message: string): void {
    this.node.dataset.state = 'failed';
    this._result.replaceChildren(
      element('div', { class: 'dsops-Error', 'data-testid': 'dsops-error' }, message.split('\n')[0])
    );
  }

  private async _cancelJob(): Promise<void> {
    const job = this._job;
    if (job === null || isFinished(job)) {
      return;
    }
    this._cancel.disabled = true;
    this._cancel.textContent = 'Cancelling…';
    try {
      this.render(await cancelJob(job.id));
    } catch (error) {
      this._cancel.disabled = false;
      this._cancel.textContent = 'Cancel job';
      this._result.replaceChildren(element('div', { class: 'dsops-Error' }, errorMessage(error)));
    }
  }

  private _showCancelled(job: IJob): void {
    this._result.replaceChildren(
      element(
        'div',
        { class: 'dsops-Job-cancelled', 'data-testid': 'dsops-cancelled' },
        job.error ? job.error.split('\n')[0] : `Cancelled at: ${job.stage || 'start'}`
      )
    );
  }

  private _updateLog(lines: string[]): void {
    if (lines.length === this._logLength) {
      return;
    }
    this._logLength = lines.length;
    const log = this._log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    log.textContent = lines.join('\n');
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }

  private _showResult(result: IPackageResult): void {
    const box = element('div', { class: 'dsops-Result', 'data-testid': 'dsops-result' });
    box.appendChild(this._headline(result));
    const facts = element('dl', { class: 'dsops-Result-facts' });
    const fact = (label: string, value: string, testid: string): void => {
      facts.append(element('dt', {}, label), element('dd', { 'data-testid': testid }, value));
    };
    if (result.version) {
      fact('Version', result.version.tag, 'dsops-result-tag');
      fact('Commit', result.version.short, 'dsops-result-commit');
    }
    if (result.package_dir) {
      fact('Package', result.package_dir, 'dsops-result-dir');
    }
    if (result.image) {
      fact('Image', result.image.id.replace(/^sha256:/, '').slice(0, 12), 'dsops-result-image');
      fact('Image tags', result.image.tags.join(', ') || '(none)', 'dsops-result-image-tags');
    }
    if (result.image?.size) {
      fact('Image size', `${(result.image.size / 1e6).toFixed(1)} MB`, 'dsops-result-image-size');
    }
    if (result.smoke) {
      const code = result.smoke.exit_code;
      fact(
        'Smoke run',
        code === 0 ? 'succeeded (exit 0)' : `failed (exit ${code})`,
        'dsops-result-smoke'
      );
    }
    if (result.exported) {
      fact(`${ENGINE_LABELS[result.exported.engine]}`, result.exported.path, 'dsops-result-export');
    }
    if (result.unresolved_imports.length) {
      fact('Unresolved imports', result.unresolved_imports.join(', '), 'dsops-result-unresolved');
    }
    box.appendChild(facts);
    if (result.script) {
      box.appendChild(this._openLink(result.script));
    }
    this._result.replaceChildren(box);
  }

  private _headline(result: IPackageResult): HTMLElement {
    const headline = element('div', {
      class: 'dsops-Result-headline',
      'data-testid': 'dsops-result-headline'
    });
    headline.textContent = packageHeadline(result);
    return headline;
  }

  private _openLink(script: string): HTMLElement {
    const link = element('a', {
      href: '#',
      class: 'dsops-Result-open',
      'data-testid': 'dsops-open-script'
    });
    link.textContent = 'Open generated script';
    link.title = script;
    link.addEventListener('click', event => {
      event.preventDefault();
      void this._commands.execute('docmanager:open', { path: script });
      this.onOpenScript?.();
    });
    return link;
  }
}

/** The stage line: the core's stage message and, while it runs, the seconds spent in it. */
export function stageText(job: IJob): string {
  const current = job.stages?.[job.stages.length - 1];
  const stage = job.stage || job.state;
  const text = job.detail && !isFinished(job) ? `${stage}: ${job.detail}` : stage;
  if (isFinished(job) || !current || current.duration !== null) {
    return text;
  }
  const seconds = Math.max(0, Date.now() / 1000 - current.started);
  return `${text} (${formatSeconds(seconds)})`;
}

/** The one-line outcome of a package job: the dialog's headline and the notification. */
export function packageHeadline(result: IPackageResult): string {
  if (result.version === null) {
    return 'Generated (no Git version)';
  }
  return result.created
    ? `Packaged as v${result.version.number}`
    : `unchanged: still ${result.version.tag}`;
}
