/**
 * Cell markers in the notebook UI: writing the tags of a cell and keeping a
 * visible badge ("step: NAME", "parameters", "skip") on every marked cell.
 */
import { Notebook, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';

import { element, setText } from './dom';
import { stepColor } from './stepcolor';
import {
  ICellMarkers,
  MarkerChoice,
  MarkerRole,
  magicLineAfter,
  markerLabel,
  markerLine,
  readMarkers,
  withMarker,
  withoutMagicMarker
} from './markers';

/**
 * Cell widget and model types as the notebook package sees them (taken from it
 * rather than from @jupyterlab/cells so that one copy of the types is used).
 */
export type Cell = Notebook['widgets'][number];
export type ICellModel = Cell['model'];

const BADGE_CLASS = 'dsops-CellBadge';
const CONTINUES_CLASS = 'dsops-CellContinues';
const MARKED_CLASS = 'dsops-marked';
const COLOR_VARIABLE = '--dsops-cell-step-color';
type BadgeKind = MarkerRole | 'error';
const KINDS: BadgeKind[] = ['step', 'parameters', 'skip', 'shared', 'metrics', 'injected', 'error'];

/** What the badge of a cell shows. */
interface IBadge {
  kind: BadgeKind;
  label: string;
  after: string;
  title: string;
  step: string | null;
}

/** The string tags of a cell (`metadata.tags`), [] when it has none. */
export function cellTags(model: ICellModel): string[] {
  const tags: unknown = model.getMetadata('tags');
  return Array.isArray(tags) ? tags.filter((tag): tag is string => typeof tag === 'string') : [];
}

/** The markers of a cell, from its tags and its `%%dsops` first line; throws MarkerError. */
export function cellMarkers(model: ICellModel): ICellMarkers {
  return readMarkers(cellTags(model), model.sharedModel.getSource());
}

/** The step a cell starts, '' when none (or its markers are refused). */
export function cellStepName(model: ICellModel): string {
  try {
    return cellMarkers(model).step ?? '';
  } catch {
    return '';
  }
}

/**
 * Set (or clear, with null) the marker of a cell in its tags. A `%%dsops`
 * marker line is removed at the same time so the cell keeps exactly one marker.
 */
export function applyMarker(model: ICellModel, choice: MarkerChoice): void {
  const source = model.sharedModel.getSource();
  const hasLine = markerLine(source) !== null;
  const tags = withMarker(cellTags(model), choice, magicLineAfter(source));
  model.sharedModel.transact(() => {
    if (hasLine) {
      model.sharedModel.setSource(withoutMagicMarker(source));
    }
    if (tags.length > 0) {
      model.setMetadata('tags', tags);
    } else {
      model.deleteMetadata('tags');
    }
  });
}

/** The badge of a cell: its marker, the core's refusal of it, or null for a plain cell. */
function badgeOf(model: ICellModel): IBadge | null {
  let markers: ICellMarkers;
  try {
    markers = cellMarkers(model);
  } catch (error) {
    const problem = error instanceof Error ? error.message : String(error);
    const title = `dsops refuses this marker: ${problem}`;
    return { kind: 'error', label: 'marker error', after: '', title, step: null };
  }
  const label = markerLabel(markers);
  if (label === null) {
    return null;
  }
  const after = markers.role === 'step' && markers.after.length > 0;
  return {
    kind: markers.role,
    label,
    after: after ? `after: ${markers.after.join(', ')}` : '',
    title:
      markerLine(model.sharedModel.getSource()) === null
        ? 'dsops marker from the cell tags'
        : 'dsops marker from the %%dsops first line',
    step: markers.step
  };
}

/**
 * Draw (or remove) the badge of one cell and mirror the marker on its node. `continues` is the
 * step an unmarked code cell belongs to (the step cell above it), shown as a faint label.
 * Returns the step the next cells continue: this cell's step, else `continues`.
 */
export function renderBadge(cell: Cell, continues: string | null = null): string | null {
  const badge = badgeOf(cell.model);
  const node = cell.node;
  node.classList.toggle(MARKED_CLASS, badge !== null);
  for (const kind of KINDS) {
    node.classList.toggle(`dsops-marker-${kind}`, badge?.kind === kind);
  }
  if (badge === null) {
    delete node.dataset.dsopsMarker;
  } else {
    node.dataset.dsopsMarker = badge.kind;
  }
  const isContinuation = badge === null && cell.model.type === 'code' && continues !== null;
  const step = badge?.step ?? (isContinuation ? continues : null);
  if (badge?.step) {
    node.dataset.dsopsStep = badge.step;
  } else {
    delete node.dataset.dsopsStep;
  }
  if (step) {
    node.style.setProperty(COLOR_VARIABLE, stepColor(step));
  } else {
    node.style.removeProperty(COLOR_VARIABLE);
  }
  node.classList.toggle('dsops-continues', isContinuation);
  updateBadgeElement(node, badge);
  updateContinuation(node, isContinuation ? continues : null);
  return badge?.kind === 'step' ? badge.step : continues;
}

/** The faint "↳ step" label of a cell that continues the step above it. */
function updateContinuation(node: HTMLElement, step: string | null): void {
  const existing = node.querySelector<HTMLElement>(`:scope > .jp-CellHeader > .${CONTINUES_CLASS}`);
  const header = node.querySelector<HTMLElement>(':scope > .jp-CellHeader');
  if (step === null || header === null) {
    existing?.remove();
    return;
  }
  const label =
    existing ??
    header.appendChild(
      element('div', { class: CONTINUES_CLASS, 'data-testid': 'dsops-continuation' })
    );
  setText(label, `↳ ${step}`);
  label.title = `Continues step ${step}: unmarked cells belong to the step cell above them`;
}

function updateBadgeElement(node: HTMLElement, badge: IBadge | null): void {
  const existing = node.querySelector<HTMLElement>(`:scope > .jp-CellHeader > .${BADGE_CLASS}`);
  if (badge === null) {
    existing?.remove();
    return;
  }
  // The cell header is an empty widget of the cell: a safe home for extra DOM.
  const header = node.querySelector<HTMLElement>(':scope > .jp-CellHeader');
  if (header === null) {
    return; // placeholder cell, not rendered yet: drawn when it is ready
  }
  let box = existing;
  if (box === null) {
    box = element('div', { class: BADGE_CLASS });
    box.append(
      element('span', { class: `${BADGE_CLASS}-label`, 'data-testid': 'dsops-badge' }),
      element('span', { class: `${BADGE_CLASS}-after` })
    );
    header.appendChild(box);
  }
  const [label, after] = [box.firstChild as HTMLElement, box.lastChild as HTMLElement];
  setText(label, badge.label);
  setText(after, badge.after);
  label.dataset.kind = badge.kind;
  if (badge.step) {
    label.style.background = stepColor(badge.step);
  } else {
    label.style.removeProperty('background');
  }
  box.title = badge.title;
}

/**
 * Keeps the badges of one notebook panel in sync: on load, on cell
 * insertion/removal, on any tag (metadata) change and on source edits
 * (for `%%dsops` first lines).
 */
export class BadgeManager implements IDisposable {
  private readonly _models = new WeakSet<ICellModel>();
  private readonly _widgets = new WeakSet<Cell>();
  private _timer: number | undefined;
  private _isDisposed = false;

  constructor(private readonly _panel: NotebookPanel) {
    const notebook = _panel.content;
    notebook.modelChanged.connect(this._onModelChanged, this);
    notebook.cellInViewportChanged.connect(this._schedule, this);
    this._onModelChanged();
    void _panel.context.ready.then(() => this._schedule());
    void _panel.revealed.then(() => this._schedule());
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._timer);
    Signal.clearData(this);
  }

  /** Redraw every badge of the notebook now. */
  refresh(): void {
    if (this._isDisposed || this._panel.isDisposed) {
      return;
    }
    let continues: string | null = null;
    for (const cell of this._panel.content.widgets) {
      if (!this._widgets.has(cell)) {
        this._widgets.add(cell);
        void cell.ready.then(() => this._schedule());
      }
      continues = renderBadge(cell, continues);
    }
  }

  private _onModelChanged(): void {
    const model = this._panel.content.model;
    if (model === null) {
      return;
    }
    model.cells.changed.connect(this._onCellsChanged, this);
    this._onCellsChanged();
  }

  private _onCellsChanged(): void {
    const model = this._panel.content.model;
    if (model === null) {
      return;
    }
    for (const cell of model.cells) {
      if (!this._models.has(cell)) {
        this._models.add(cell);
        cell.metadataChanged.connect(this._schedule, this);
        cell.contentChanged.connect(this._schedule, this);
      }
    }
    this._schedule();
  }

  private _schedule(): void {
    if (this._isDisposed || this._timer !== undefined) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = undefined;
      this.refresh();
    }, 30);
  }
}
