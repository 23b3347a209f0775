/**
 * "Package notebook": save, ask the server for the pipeline, ask the user for
 * options, start a package job and follow it to its result.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { getPipeline, startJob, watchJob } from './api';
import { element } from './dom';
import { errorMessage } from './format';
import {
  EXPORT_ENGINES,
  ExportEngine,
  IJob,
  IJobOptions,
  IPackageResult,
  IParameter,
  IPipeline
} from './tokens';

/** The names the Package dialog shows for each export engine. */
const ENGINE_LABELS: Record<ExportEngine, string> = {
  kfp: 'Kubeflow Pipelines (KFP v2)',
  airflow: 'Apache Airflow',
  argo: 'Argo Workflows'
};

/** Show a one-line error in a dialog. */
export async function showDsopsError(title: string, error: unknown): Promise<void> {
  const body = element('div', { class: 'dsops-Error', 'data-testid': 'dsops-error' });
  body.textContent = errorMessage(error);
  await showDialog({
    title,
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}

/** Reads one parameter input: undefined when the user kept the default. */
type ParameterReader = () => unknown | undefined;

function literalText(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  if (value === undefined) {
    return '';
  }
  return JSON.stringify(value);
}

function parameterInput(parameter: IParameter): [HTMLElement, ParameterReader] {
  const id = `dsops-param-${parameter.name}`;
  const testid = { 'data-testid': id, name: parameter.name, id };
  if (parameter.type === 'bool') {
    const input = element('input', { ...testid, type: 'checkbox' });
    const initial = parameter.default === true;
    input.checked = initial;
    return [input, () => (input.checked === initial ? undefined : input.checked)];
  }
  const isNumber = parameter.type === 'int' || parameter.type === 'float';
  const input = element('input', {
    ...testid,
    type: isNumber ? 'number' : 'text',
    class: 'jp-mod-styled'
  });
  if (isNumber) {
    input.step = parameter.type === 'int' ? '1' : 'any';
  }
  const initial = literalText(parameter.default);
  input.value = initial;
  const read = (): unknown => {
    const text = input.value.trim();
    if (text === initial.trim()) {
      return undefined;
    }
    if (isNumber) {
      const value = Number(text);
      return text !== '' && Number.isFinite(value) ? value : text;
    }
    if (parameter.type === 'str') {
      return input.value;
    }
    try {
      return JSON.parse(text); // lists, dicts, numbers; the core coerces strings too
    } catch {
      return text;
    }
  };
  return [input, read];
}

/** The body of the "Package notebook" dialog. */
export class PackageForm extends Widget implements Dialog.IBodyWidget<IJobOptions> {
  private readonly _name: HTMLInputElement;
  private readonly _commit: HTMLInputElement;
  private readonly _build: HTMLInputElement;
  private readonly _smoke: HTMLInputElement;
  private readonly _export: HTMLSelectElement;
  private readonly _readers = new Map<string, ParameterReader>();

  constructor(readonly pipeline: IPipeline) {
    super();
    this.addClass('dsops-PackageForm');
    this.node.dataset.testid = 'dsops-package-form';
    const summary = element('p', { class: 'dsops-PackageForm-summary' });
    summary.textContent = pipeline.steps.length
      ? `${pipeline.steps.length} step(s): ${pipeline.steps.map(s => s.name).join(' → ')}`
      : 'No steps.';
    this.node.appendChild(summary);

    this._name = element('input', {
      type: 'text',
      class: 'jp-mod-styled',
      'data-testid': 'dsops-name',
      id: 'dsops-name'
    });
    this._name.value = pipeline.name;
    this.node.appendChild(this._row('Pipeline name', this._name));

    this._commit = this._checkbox('Commit a Git version (tag dsops/NAME/vN)', 'dsops-commit', true);
    this._build = this._checkbox('Build the Docker image', 'dsops-build', false);
    this._smoke = this._checkbox('Smoke-run the built image once', 'dsops-smoke', false);
    this._smoke.disabled = true;
    this._export = this._exportChoice();
    this._build.addEventListener('change', () => {
      this._smoke.disabled = !this._build.checked;
      this._export.disabled = !this._build.checked;
      if (!this._build.checked) {
        this._smoke.checked = false;
        this._export.value = '';
      }
    });
    this._addParameters(pipeline.parameters);
  }

  getValue(): IJobOptions {
    const parameters: Record<string, unknown> = {};
    for (const [name, read] of this._readers) {
      const value = read();
      if (value !== undefined) {
        parameters[name] = value;
      }
    }
    return {
      name: this._name.value.trim() || this.pipeline.name,
      commit: this._commit.checked,
      build: this._build.checked,
      smoke: this._build.checked && this._smoke.checked,
      export:
        this._build.checked && this._export.value ? (this._export.value as ExportEngine) : null,
      parameters
    };
  }

  /** "Export": the engine to write the version's pipeline for; it runs the built image. */
  private _exportChoice(): HTMLSelectElement {
    const select = element('select', { class: 'jp-mod-styled', 'data-testid': 'dsops-export' });
    select.appendChild(element('option', { value: '' }, 'No export'));
    for (const engine of EXPORT_ENGINES) {
      select.appendChild(element('option', { value: engine }, ENGINE_LABELS[engine]));
    }
    select.disabled = true;
    this.node.appendChild(this._row('Export', select, 'needs the image'));
    return select;
  }

  private _row(label: string, input: HTMLElement, hint?: string): HTMLElement {
    const row = element('label', { class: 'dsops-PackageForm-row' });
    row.appendChild(element('span', { class: 'dsops-PackageForm-label' }, label));
    row.appendChild(input);
    if (hint) {
      row.appendChild(element('span', { class: 'dsops-PackageForm-hint' }, hint));
    }
    return row;
  }

  private _checkbox(label: string, testid: string, checked: boolean): HTMLInputElement {
    const input = element('input', { type: 'checkbox', 'data-testid': testid });
    input.checked = checked;
    const row = element('label', { class: 'dsops-PackageForm-check' });
    row.appendChild(input);
    row.appendChild(element('span', {}, label));
    this.node.appendChild(row);
    return input;
  }

  private _addParameters(parameters: IParameter[]): void {
    if (parameters.length === 0) {
      return;
    }
    const fieldset = element('fieldset', { class: 'dsops-PackageForm-parameters' });
    fieldset.appendChild(element('legend', {}, 'Parameters'));
    for (const parameter of parameters) {
      const [input, read] = parameterInput(parameter);
      this._readers.set(parameter.name, read);
      fieldset.appendChild(this._row(parameter.name, input, parameter.type));
    }
    this.node.appendChild(fieldset);
  }
}

/** Live view of a job: stage, progress bar, log and, at the end, its result. */
export class JobView extends Widget {
  /** Called when the user opens the generated script (the dialog closes). */
  onOpenScript: (() => void) | null = null;
  private readonly _stage: HTMLElement;
  private readonly _progress: HTMLProgressElement;
  private readonly _percent: HTMLElement;
  private readonly _log: HTMLPreElement;
  private readonly _result: HTMLElement;
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
    this.node.append(this._stage, bar, this._log, this._result);
  }

  render(job: IJob): void {
    this.node.dataset.state = job.state;
    this._stage.textContent = job.stage || job.state;
    const fraction = job.state === 'succeeded' ? 1 : Math.min(1, Math.max(0, job.progress || 0));
    this._progress.value = fraction;
    this._progress.dataset.state = job.state;
    this._percent.textContent = `${Math.round(fraction * 100)}%`;
    this._updateLog(job.log ?? []);
    if (job.state === 'failed') {
      this.showError(job.error ?? 'the job failed');
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

/** The one-line outcome of a package job: the dialog's headline and the notification. */
function packageHeadline(result: IPackageResult): string {
  if (result.version === null) {
    return 'Generated (no Git version)';
  }
  return result.created
    ? `Packaged as v${result.version.number}`
    : `unchanged: still ${result.version.tag}`;
}

/** Follow a started package job in a dialog; notify at the end if it was closed. */
async function followPackageJob(job: IJob, name: string, commands: CommandRegistry): Promise<void> {
  const view = new JobView(commands);
  const dialog = new Dialog({
    title: `Package notebook — ${name}`,
    body: view,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
  dialog.addClass('dsops-JobDialog');
  let open = true;
  view.onOpenScript = () => dialog.resolve(0);
  void dialog.launch().then(() => {
    open = false;
  });
  let final: IJob;
  try {
    final = await watchJob(job, current => view.render(current));
  } catch (error) {
    view.showError(errorMessage(error));
    return;
  }
  if (!open) {
    notifyFinished(final, commands);
  }
}

function notifyFinished(job: IJob, commands: CommandRegistry): void {
  if (job.state === 'failed') {
    Notification.error(`dsops: ${job.error ?? 'packaging failed'}`, { autoClose: false });
    return;
  }
  const result = job.kind === 'package' ? job.result : null;
  const script = result?.script;
  const text = result ? packageHeadline(result) : 'Packaged';
  Notification.success(`dsops: ${text}`, {
    autoClose: 8000,
    actions: script
      ? [
          {
            label: 'Open generated script',
            callback: () => void commands.execute('docmanager:open', { path: script })
          }
        ]
      : []
  });
}

/** The whole "Package notebook" flow for one notebook panel. */
export async function packageNotebook(
  panel: NotebookPanel,
  commands: CommandRegistry
): Promise<void> {
  const context = panel.context;
  await context.ready;
  let pipeline: IPipeline;
  try {
    await context.save();
    pipeline = await getPipeline(context.localPath);
  } catch (error) {
    await showDsopsError(`Cannot package ${context.localPath}`, error);
    return;
  }
  const form = new PackageForm(pipeline);
  const choice = await showDialog({
    title: `Package notebook — ${pipeline.name}`,
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Package' })],
    focusNodeSelector: 'input'
  });
  if (!choice.button.accept || choice.value === null) {
    return;
  }
  let job: IJob;
  try {
    job = await startJob('package', context.localPath, choice.value);
  } catch (error) {
    await showDsopsError(`Cannot package ${context.localPath}`, error);
    return;
  }
  await followPackageJob(job, choice.value.name ?? pipeline.name, commands);
}
