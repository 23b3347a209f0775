/**
 * What the panel does to the notebook's cells: mark each step's cells with the step's status
 * (`data-dsops-state`, coloured by style/panel.css), go to a cell and highlight a line in
 * its CodeMirror editor, and notice edits (sources, and the tags that mark steps).
 */
import { StateEffect, StateField } from '@codemirror/state';
import { Decoration, DecorationSet, EditorView } from '@codemirror/view';
import { CodeMirrorEditor } from '@jupyterlab/codemirror';
import { NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';

import { IPipeline, StepState } from './tokens';

/** The cell attribute style/panel.css colours (`.jp-Cell[data-dsops-state=failed]`). */
export const CELL_STATE_ATTRIBUTE = 'data-dsops-state';

/** Set every cell's `data-dsops-state` to its step's state; cells of no stated step lose it. */
export function paintCells(
  panel: NotebookPanel,
  pipeline: IPipeline,
  states: ReadonlyMap<string, StepState>
): void {
  const stateOfCell = new Map<number, StepState>();
  for (const step of pipeline.steps) {
    const state = states.get(step.name);
    if (state) {
      step.cells.forEach(index => stateOfCell.set(index, state));
    }
  }
  panel.content.widgets.forEach((cell, index) => {
    const state = stateOfCell.get(index);
    if (state === undefined) {
      cell.node.removeAttribute(CELL_STATE_ATTRIBUTE);
    } else if (cell.node.getAttribute(CELL_STATE_ATTRIBUTE) !== state) {
      cell.node.setAttribute(CELL_STATE_ATTRIBUTE, state);
    }
  });
}

const setMarkedLine = StateEffect.define<number | null>();
const markedLine = Decoration.line({ class: 'dsops-FailedLine' });

/** The line decoration of the line `reveal` highlights (follows edits, cleared on demand). */
const markedLineField = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(value, transaction) {
    let decorations = value.map(transaction.changes);
    for (const effect of transaction.effects) {
      if (effect.is(setMarkedLine)) {
        decorations =
          effect.value === null
            ? Decoration.none
            : Decoration.set([markedLine.range(transaction.state.doc.line(effect.value).from)]);
      }
    }
    return decorations;
  },
  provide: field => EditorView.decorations.from(field)
});

const withField = new WeakSet<CodeMirrorEditor>();
let marked: CodeMirrorEditor | null = null;

function markLine(editor: CodeMirrorEditor, line: number): void {
  if (marked && marked !== editor && !marked.isDisposed) {
    marked.editor.dispatch({ effects: setMarkedLine.of(null) });
  }
  if (!withField.has(editor)) {
    editor.injectExtension(markedLineField);
    withField.add(editor);
  }
  const view = editor.editor;
  const target = view.state.doc.line(Math.min(Math.max(1, line), view.state.doc.lines));
  view.dispatch({
    effects: [setMarkedLine.of(target.number), EditorView.scrollIntoView(target.from)],
    selection: { anchor: target.from, head: target.to }
  });
  marked = editor;
}

/** Select cell `index`, scroll to it and, given a 1-based `line`, select and highlight it. */
export async function revealCell(
  panel: NotebookPanel,
  index: number,
  line?: number
): Promise<void> {
  const cell = panel.content.widgets[index];
  if (!cell) {
    return;
  }
  panel.content.activeCellIndex = index;
  panel.content.deselectAll();
  await panel.content.scrollToCell(cell);
  if (line === undefined) {
    return;
  }
  await cell.ready;
  const editor = cell.editor;
  if (editor instanceof CodeMirrorEditor) {
    markLine(editor, line);
    editor.focus();
  }
}

/**
 * Call `onEdit` on every edit of the notebook's model: a cell's source, the cell list, and a
 * cell's tags or dsops metadata (what marks steps). Dispose to stop.
 */
export function watchEdits(panel: NotebookPanel, onEdit: () => void): IDisposable {
  const model = panel.model;
  let disposed = false;
  const onMetadata = (_: unknown, change: { key: string }): void => {
    if (change.key === 'tags' || change.key.startsWith('dsops')) {
      onEdit();
    }
  };
  const connectCells = (): void => {
    if (!model) {
      return;
    }
    for (const cell of model.cells) {
      cell.metadataChanged.connect(onMetadata); // connecting twice is a no-op in Lumino
    }
  };
  const onContent = (): void => {
    connectCells();
    onEdit();
  };
  model?.contentChanged.connect(onContent);
  connectCells();
  return {
    get isDisposed() {
      return disposed;
    },
    dispose() {
      if (disposed) {
        return;
      }
      disposed = true;
      model?.contentChanged.disconnect(onContent);
      if (model && !model.isDisposed) {
        for (const cell of model.cells) {
          cell.metadataChanged.disconnect(onMetadata);
        }
      }
    }
  };
}
