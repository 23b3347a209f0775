/**
 * Cell markers in the notebook UI: writing the tags of a cell and keeping a
 * visible badge ("step: NAME", "parameters", "skip") on every marked cell.
 */
import { Notebook, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';

import {
  IMarker,
  MarkerChoice,
  markerFromSource,
  markerLabel,
  markerOf,
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
const MARKED_CLASS = 'dsops-marked';
const KINDS: IMarker['kind'][] = ['step', 'parameters', 'skip', 'imports', 'functions', 'metrics'];

/** The string tags of a cell (`metadata.tags`), [] when it has none. */
export function cellTags(model: ICellModel): string[] {
  const tags: unknown = model.getMetadata('tags');
  return Array.isArray(tags) ? tags.filter((tag): tag is string => typeof tag === 'string') : [];
}

/** The marker a cell carries, from its tags or its `%%dsops` first line. */
export function cellMarker(model: ICellModel): IMarker | null {
  return markerOf(cellTags(model), model.sharedModel.getSource());
}

/**
 * Set (or clear, with null) the marker of a cell in its tags. A `%%dsops`
 * marker line is removed at the same time so the cell keeps exactly one marker.
 */
export function applyMarker(model: ICellModel, choice: MarkerChoice): void {
  const source = model.sharedModel.getSource();
  const magic = markerFromSource(source);
  const tags = withMarker(cellTags(model), choice, magic?.kind === 'step' ? magic.after : []);
  model.sharedModel.transact(() => {
    if (magic !== null) {
      model.sharedModel.setSource(withoutMagicMarker(source));
    }
    if (tags.length > 0) {
      model.setMetadata('tags', tags);
    } else {
      model.deleteMetadata('tags');
    }
  });
}

/** Draw (or remove) the badge of one cell and mirror the marker on its node. */
export function renderBadge(cell: Cell): void {
  const marker = cellMarker(cell.model);
  const node = cell.node;
  node.classList.toggle(MARKED_CLASS, marker !== null);
  for (const kind of KINDS) {
    node.classList.toggle(`dsops-marker-${kind}`, marker?.kind === kind);
  }
  if (marker === null) {
    delete node.dataset.dsopsMarker;
    delete node.dataset.dsopsStep;
  } else {
    node.dataset.dsopsMarker = marker.kind;
    if (marker.kind === 'step') {
      node.dataset.dsopsStep = marker.name ?? '';
    } else {
      delete node.dataset.dsopsStep;
    }
  }
  updateBadgeElement(node, marker);
}

function updateBadgeElement(node: HTMLElement, marker: IMarker | null): void {
  const existing = node.querySelector<HTMLElement>(`:scope > .jp-CellHeader > .${BADGE_CLASS}`);
  if (marker === null) {
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
    box = document.createElement('div');
    box.className = BADGE_CLASS;
    box.append(document.createElement('span'), document.createElement('span'));
    (box.firstChild as HTMLElement).dataset.testid = 'dsops-badge';
    (box.firstChild as HTMLElement).className = `${BADGE_CLASS}-label`;
    (box.lastChild as HTMLElement).className = `${BADGE_CLASS}-after`;
    header.appendChild(box);
  }
  const [label, after] = [box.firstChild as HTMLElement, box.lastChild as HTMLElement];
  setText(label, markerLabel(marker));
  setText(after, marker.after.length > 0 ? `after: ${marker.after.join(', ')}` : '');
  label.dataset.kind = marker.kind;
  box.title =
    marker.source === 'magic'
      ? 'dsops marker from the %%dsops first line'
      : 'dsops marker from the cell tags';
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
  node.hidden = text === '';
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
    for (const cell of this._panel.content.widgets) {
      if (!this._widgets.has(cell)) {
        this._widgets.add(cell);
        void cell.ready.then(() => this._schedule());
      }
      renderBadge(cell);
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
