/**
 * The "Mark cell as step" dialog: the step name and, as a multi-select, the steps it runs
 * after. The choices come from the pipeline as it would be with the marker written (the core
 * computes it from the unsaved notebook); a step that already runs after this one is disabled
 * with the path that would close the cycle, so a cycle cannot be picked.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { afterChoices, IAfterChoice } from './cycles';
import { element } from './dom';
import { errorMessage } from './format';
import { stepNameProblem } from './markers';
import { stepColor } from './stepcolor';
import { IPipeline } from './tokens';

/** What the dialog returns: the step name and the steps it runs after (null: keep as is). */
export interface IStepMark {
  name: string;
  after: string[] | null;
}

/** The pipeline of the notebook with the cell marked `step:NAME` (no `after`), from the core. */
export type PipelineWithStep = (name: string) => Promise<IPipeline>;

const ASK_DELAY_MS = 250;

/** The dialog's body: name input, problem line and the `after` choices. */
export class MarkStepForm extends Widget implements Dialog.IBodyWidget<IStepMark> {
  private readonly _name: HTMLInputElement;
  private readonly _problem: HTMLElement;
  private readonly _choices: HTMLElement;
  private readonly _picked: Set<string>;
  private _timer: number | undefined;
  private _asked = 0;

  constructor(
    initial: IStepMark,
    problem: string | null,
    private readonly _pipelineWith: PipelineWithStep
  ) {
    super();
    this.addClass('dsops-MarkForm');
    this.node.dataset.testid = 'dsops-mark-form';
    this._picked = new Set(initial.after ?? []);
    this._name = element('input', {
      type: 'text',
      class: 'jp-mod-styled',
      placeholder: 'e.g. train',
      'data-testid': 'dsops-step-name'
    });
    this._name.value = initial.name;
    const label = element('label', { class: 'dsops-MarkForm-row' });
    label.append(element('span', {}, 'Step name (a Python identifier)'), this._name);
    this._problem = element('div', { class: 'dsops-Error', 'data-testid': 'dsops-mark-problem' });
    this._problem.textContent = problem ?? '';
    this._problem.hidden = problem === null;
    const fieldset = element('fieldset', { class: 'dsops-MarkForm-after' });
    fieldset.appendChild(element('legend', {}, 'Runs after (on top of the data it reads)'));
    this._choices = element('div', { class: 'dsops-MarkForm-choices' });
    fieldset.appendChild(this._choices);
    this.node.append(label, this._problem, fieldset);
    this._name.addEventListener('input', () => this._scheduleChoices());
    this._loadChoices();
  }

  getValue(): IStepMark {
    const name = this._name.value.trim();
    if (this._choices.dataset.state !== 'ready') {
      return { name, after: null }; // choices not shown: the cell keeps its `after` tags
    }
    const checked = this._choices.querySelectorAll<HTMLInputElement>('input:checked:enabled');
    return { name, after: Array.from(checked, input => input.name) };
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    super.dispose();
  }

  private _scheduleChoices(): void {
    window.clearTimeout(this._timer);
    this._timer = window.setTimeout(() => this._loadChoices(), ASK_DELAY_MS);
  }

  /** Ask the core for the pipeline with this name, then redraw the choices. */
  private _loadChoices(): void {
    const name = this._name.value.trim();
    if (stepNameProblem(name) !== null) {
      this._showNote('Type a valid step name to choose the steps it runs after.');
      return;
    }
    const asked = ++this._asked;
    this._choices.dataset.state = 'loading';
    this._pipelineWith(name).then(
      pipeline => {
        if (asked === this._asked && !this.isDisposed) {
          this._renderChoices(afterChoices(pipeline, name));
        }
      },
      error => {
        if (asked === this._asked && !this.isDisposed) {
          this._showNote(`Cannot read the steps: ${errorMessage(error)}`);
        }
      }
    );
  }

  private _showNote(text: string): void {
    this._choices.dataset.state = 'note';
    this._choices.replaceChildren(element('div', { class: 'dsops-MarkForm-note' }, text));
  }

  private _renderChoices(choices: IAfterChoice[]): void {
    this._choices.replaceChildren(
      ...(choices.length > 0
        ? choices.map(choice => this._choice(choice))
        : [element('div', { class: 'dsops-MarkForm-note' }, 'No other steps yet.')])
    );
    this._choices.dataset.state = 'ready';
  }

  private _choice(choice: IAfterChoice): HTMLElement {
    const input = element('input', {
      type: 'checkbox',
      name: choice.name,
      'data-testid': `dsops-after-${choice.name}`
    });
    input.checked = this._picked.has(choice.name) && choice.refused === null;
    input.disabled = choice.refused !== null;
    input.addEventListener('change', () => {
      if (input.checked) {
        this._picked.add(choice.name);
      } else {
        this._picked.delete(choice.name);
      }
    });
    const row = element('label', { class: 'dsops-MarkForm-choice' });
    const chip = element('span', { class: 'dsops-MarkForm-step' }, choice.name);
    chip.style.background = stepColor(choice.name);
    row.append(input, chip);
    if (choice.refused !== null) {
      row.title = `Would make a cycle: ${choice.refused}`;
      row.dataset.refused = 'true';
      row.appendChild(
        element('span', { class: 'dsops-MarkForm-refused' }, `cycle: ${choice.refused}`)
      );
    }
    return row;
  }
}

/**
 * Ask for a step name and its `after` steps; asked again (choices kept) while the name is not
 * one the core accepts. Null when the user cancels.
 */
export async function askStepMark(
  initial: IStepMark,
  pipelineWith: PipelineWithStep
): Promise<IStepMark | null> {
  let value = initial;
  let problem: string | null = null;
  for (;;) {
    const result = await showDialog({
      title: 'Mark cell as step',
      body: new MarkStepForm(value, problem, pipelineWith),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Mark' })],
      focusNodeSelector: '[data-testid=dsops-step-name]'
    });
    if (!result.button.accept || result.value === null) {
      return null;
    }
    value = result.value;
    problem = stepNameProblem(value.name);
    if (problem === null) {
      return value;
    }
  }
}
