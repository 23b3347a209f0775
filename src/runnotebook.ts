/**
 * A run's executed notebook, read-only, rendered by JupyterLab's own notebook widget. The
 * default run folders sit under `.dsops/`, which JupyterLab's contents API hides (and the
 * user's `allow_hidden` stays theirs), so the notebook JSON comes from the server's runs
 * route, which serves only the runs it lists.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { INotebookContent } from '@jupyterlab/nbformat';
import { NotebookModel, StaticNotebook } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { getRunNotebook } from './api';
import { element } from './dom';
import { IRunSummary } from './tokens';

/** What JupyterLab's notebook widget needs to render outputs and highlight code. */
export interface IRunNotebookServices {
  rendermime: IRenderMimeRegistry;
  editorServices: IEditorServices;
}

/** A notebook widget over `content` whose cells cannot be edited; outputs rendered. */
function readOnlyNotebook(
  content: INotebookContent,
  services: IRunNotebookServices
): StaticNotebook {
  const { rendermime, editorServices } = services;
  const notebook = new StaticNotebook({
    rendermime,
    mimeTypeService: editorServices.mimeTypeService,
    contentFactory: new StaticNotebook.ContentFactory({
      editorFactory: editorServices.factoryService.newInlineEditor
    }),
    // Every cell rendered at once: a finished run's notebook does not grow.
    notebookConfig: { ...StaticNotebook.defaultNotebookConfig, windowingMode: 'none' }
  });
  const model = new NotebookModel();
  model.fromJSON(content);
  model.readOnly = true;
  notebook.model = model;
  for (const cell of notebook.widgets) {
    cell.readOnly = true;
  }
  notebook.disposed.connect(() => model.dispose());
  notebook.addClass('jp-NotebookPanel-notebook');
  notebook.node.dataset.testid = 'dsops-run-notebook';
  return notebook;
}

/** The last part of a posix path (a run folder's stamp, a notebook's file name). */
function baseName(path: string): string {
  return path.split('/').filter(Boolean).pop() ?? path;
}

/**
 * The executed notebook of `run` (a run of the notebook at `path`) in a main-area widget
 * titled e.g. `wine.ipynb @ 20261202-101500`; rejects with the server's one-line reason.
 */
export async function openRunNotebook(
  path: string,
  run: IRunSummary,
  services: IRunNotebookServices
): Promise<MainAreaWidget<StaticNotebook>> {
  const answer = await getRunNotebook(path, run.dir);
  const content = readOnlyNotebook(answer.content as unknown as INotebookContent, services);
  const widget = new MainAreaWidget({ content });
  widget.id = `dsops-run-notebook-${run.dir}`;
  widget.title.label = `${baseName(answer.output_notebook)} @ ${baseName(run.dir)}`;
  widget.title.caption = `${answer.output_notebook} (read-only: the notebook as the run left it)`;
  widget.title.closable = true;
  const note = element('span', { class: 'dsops-ReadOnly', 'data-testid': 'dsops-read-only' });
  note.textContent = 'read-only';
  widget.toolbar.addItem('read-only', new Widget({ node: note }));
  return widget;
}
