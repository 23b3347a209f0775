/**
 * "Package notebook": save, ask the server for the pipeline, ask the user for
 * options, start a package job and follow it to its result (or, when the notebook is busy,
 * follow the job already working on it).
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { ServerConnection } from '@jupyterlab/services';

import { activeJob, getPipeline, startJob, watchJob } from './api';
import { element } from './dom';
import { errorMessage } from './format';
import { ENGINE_LABELS, JobView, packageHeadline } from './jobview';
import {
  Builder,
  BUILDERS,
  EXPORT_ENGINES,
  ExportEngine,
  IJob,
  IJobOptions,
  IParameter,
  IPipeline
} from './tokens';

/** What the builder choice says (the layer assembler is the fast default). */
const BUILDER_LABELS: Record<Builder, string> = {
  assemble: 'Layer assembler (fast, default)',
  dockerfile: 'Dockerfile (docker build, slower)'
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
  private readonly _verify: HTMLInputElement;
  private readonly _builder: HTMLSelectElement;
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
    this._verify = this._checkbox(
      'Run the notebook first (no version unless it passes)',
      'dsops-verify',
      false
    );
    this._build = this._checkbox(
      'Build the Docker image (fast layer assembler)',
      'dsops-build',
      false
    );
    this._smoke = this._checkbox('Smoke-run the built image once', 'dsops-smoke', false);
    this._smoke.disabled = true;
    this._export = this._exportChoice();
    this._builder = this._builderChoice();
    this._build.addEventListener('change', () => {
      this._smoke.disabled = !this._build.checked;
      this._export.disabled = !this._build.checked;
      this._builder.disabled = !this._build.checked;
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
    const options: IJobOptions = {
      name: this._name.value.trim() || this.pipeline.name,
      commit: this._commit.checked,
      build: this._build.checked,
      smoke: this._build.checked && this._smoke.checked,
      export:
        this._build.checked && this._export.value ? (this._export.value as ExportEngine) : null,
      parameters
    };
    if (this._verify.checked) {
      options.verify = true;
    }
    if (this._build.checked && this._builder.value !== BUILDERS[0]) {
      options.builder = this._builder.value as Builder;
    }
    return options;
  }

  /** Advanced: the image builder; the layer assembler is the default on every surface. */
  private _builderChoice(): HTMLSelectElement {
    const select = element('select', { class: 'jp-mod-styled', 'data-testid': 'dsops-builder' });
    for (const builder of BUILDERS) {
      select.appendChild(element('option', { value: builder }, BUILDER_LABELS[builder]));
    }
    select.disabled = true;
    const advanced = element('details', { class: 'dsops-PackageForm-advanced' });
    advanced.appendChild(element('summary', {}, 'Advanced'));
    advanced.appendChild(this._row('Image builder', select));
    this.node.appendChild(advanced);
    return select;
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
    fieldset.appendChild(
      element(
        'p',
        { class: 'dsops-PackageForm-hint', 'data-testid': 'dsops-parameters-note' },
        "Values given here become the image's defaults (the script's parameter defaults)."
      )
    );
    for (const parameter of parameters) {
      const [input, read] = parameterInput(parameter);
      this._readers.set(parameter.name, read);
      fieldset.appendChild(this._row(parameter.name, input, parameter.type));
    }
    this.node.appendChild(fieldset);
  }
}

/** Follow a package job in a dialog (`notice`: why it is shown); notify at the end if closed. */
async function followPackageJob(
  job: IJob,
  title: string,
  commands: CommandRegistry,
  notice?: string
): Promise<void> {
  const view = new JobView(commands);
  if (notice) {
    view.notice(notice);
  }
  const dialog = new Dialog({
    title,
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

/** The job already working on `path` when the server answered 409 (busy), else null. */
async function busyWith(error: unknown, path: string): Promise<IJob | null> {
  if (!(error instanceof ServerConnection.ResponseError) || error.response.status !== 409) {
    return null;
  }
  return activeJob(path);
}

function notifyFinished(job: IJob, commands: CommandRegistry): void {
  if (job.state === 'failed' || job.state === 'cancelled') {
    Notification.error(`dsops: ${job.error ?? `packaging ${job.state}`}`, { autoClose: false });
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
  const title = `Package notebook — ${choice.value.name ?? pipeline.name}`;
  let job: IJob;
  try {
    job = await startJob('package', context.localPath, choice.value);
  } catch (error) {
    const running = await busyWith(error, context.localPath).catch(() => null);
    if (running === null) {
      await showDsopsError(`Cannot package ${context.localPath}`, error);
      return;
    }
    const notice = `${context.localPath} is busy: this ${running.kind} job is working on it.`;
    await followPackageJob(running, `Busy — ${context.localPath}`, commands, notice);
    return;
  }
  await followPackageJob(job, title, commands);
}
