/**
 * dsops-jupyter frontend: a "Package notebook" toolbar button, cell marker
 * commands with badges, a pipeline side panel, the Runs and Versions views and a
 * "dsops" menu (main menu and cell context submenu). Every action calls the
 * dsops server routes; the pipeline logic lives in the Python core.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification, ToolbarButton } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { CommandRegistry } from '@lumino/commands';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Menu, Widget } from '@lumino/widgets';

import { describePipeline } from './api';
import { applyMarker, BadgeManager, Cell, cellMarkers, cellStepName, cellTags } from './badges';
import { dsopsIcon } from './icons';
import { askStepMark } from './markdialog';
import { MarkerChoice, markerLine, withMarker, withoutMagicMarker } from './markers';
import { packageNotebook } from './packaging';
import { PipelinePanel } from './panel';
import { useServerSettings } from './request';
import { errorMessage } from './format';
import { IRunNotebookServices, openRunNotebook } from './runnotebook';
import { runsWidget } from './runs';
import { CommandIDs, IPipeline, IRunSummary } from './tokens';
import { versionsWidget } from './versions';

const CELL_SELECTOR = '.jp-Notebook .jp-Cell';

/** Adds the toolbar button and the badge keeper to every notebook panel. */
class NotebookExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(private readonly _commands: CommandRegistry) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'dsops-PackageButton',
      icon: dsopsIcon,
      label: 'Package notebook',
      tooltip: 'Package this notebook: generated script, Git version, Docker image',
      onClick: () => void packageNotebook(panel, this._commands)
    });
    button.node.dataset.testid = 'dsops-package-button';
    panel.toolbar.insertItem(10, 'dsopsPackage', button);
    const badges = new BadgeManager(panel);
    return new DisposableDelegate(() => {
      button.dispose();
      badges.dispose();
    });
  }
}

interface ITarget {
  panel: NotebookPanel;
  cell: Cell;
}

/** The cell a command acts on: the right-clicked one, else the active one. */
function findTarget(app: JupyterFrontEnd, tracker: INotebookTracker): ITarget | null {
  const hit = app.contextMenuHitTest(node => node.classList.contains('jp-Cell'));
  if (hit) {
    let target: ITarget | null = null;
    tracker.forEach(panel => {
      const cell = panel.content.widgets.find(widget => widget.node === hit);
      if (cell && target === null) {
        target = { panel, cell };
      }
    });
    if (target) {
      return target;
    }
  }
  const panel = tracker.currentWidget;
  const cell = panel?.content.activeCell;
  return panel && cell ? { panel, cell } : null;
}

/** The target cell, or all selected cells when the target is part of a selection. */
function targetCells(target: ITarget): Cell[] {
  const notebook = target.panel.content;
  const selected = notebook.widgets.filter(cell => notebook.isSelectedOrActive(cell));
  return selected.length > 1 && selected.includes(target.cell) ? selected : [target.cell];
}

/**
 * The pipeline of the notebook as edited, with the target cell marked `step:NAME` (no `after`):
 * what the mark dialog offers `after` choices from.
 */
function pipelineWithStep(target: ITarget, name: string): Promise<IPipeline> {
  const { panel, cell } = target;
  const content = panel.content.model!.toJSON() as { cells: Record<string, unknown>[] };
  const index = panel.content.widgets.indexOf(cell);
  const source = cell.model.sharedModel.getSource();
  const tags = withMarker(cellTags(cell.model), { kind: 'step', name, after: [] });
  const marked = content.cells[index];
  marked.source = markerLine(source) === null ? source : withoutMagicMarker(source);
  marked.metadata = { ...(marked.metadata as object), tags };
  return describePipeline(panel.context.localPath, content);
}

/** The `after` list of a cell's markers ([] when they are refused). */
function cellAfter(cell: Cell): string[] {
  try {
    return cellMarkers(cell.model).after;
  } catch {
    return [];
  }
}

function addCellCommands(app: JupyterFrontEnd, tracker: INotebookTracker): void {
  const isCodeTarget = (): boolean => findTarget(app, tracker)?.cell.model.type === 'code';
  const label = (text: string) => (args: { isPalette?: unknown }) =>
    args.isPalette ? `dsops: ${text}` : text;
  const setMarker = (choice: MarkerChoice, many: boolean): void => {
    const target = findTarget(app, tracker);
    if (target) {
      const cells = many ? targetCells(target) : [target.cell];
      cells
        .filter(cell => cell.model.type === 'code')
        .forEach(cell => applyMarker(cell.model, choice));
    }
  };

  app.commands.addCommand(CommandIDs.markStep, {
    label: label('Mark cell as step…'),
    caption: 'Tag this cell step:NAME: it starts a pipeline step',
    isEnabled: isCodeTarget,
    execute: async () => {
      const target = findTarget(app, tracker);
      if (!target) {
        return;
      }
      const initial = { name: cellStepName(target.cell.model), after: cellAfter(target.cell) };
      const mark = await askStepMark(initial, name => pipelineWithStep(target, name));
      if (mark !== null && !target.cell.isDisposed) {
        const after = mark.after ?? undefined;
        applyMarker(target.cell.model, { kind: 'step', name: mark.name, after });
      }
    }
  });
  app.commands.addCommand(CommandIDs.markParameters, {
    label: label('Mark as parameters'),
    caption: "Tag this cell 'parameters': papermill's parameters cell",
    isEnabled: isCodeTarget,
    execute: () => setMarker({ kind: 'parameters' }, false)
  });
  app.commands.addCommand(CommandIDs.markSkip, {
    label: label('Skip cell'),
    caption: "Tag 'skip': never run by pipelines, never converted",
    isEnabled: isCodeTarget,
    execute: () => setMarker({ kind: 'skip' }, true)
  });
  app.commands.addCommand(CommandIDs.clearMarker, {
    label: label('Clear marker'),
    caption: 'Remove the dsops / Kale marker tags of this cell',
    isEnabled: isCodeTarget,
    execute: () => setMarker(null, true)
  });
}

const MARKER_COMMANDS = [
  CommandIDs.markStep,
  CommandIDs.markParameters,
  CommandIDs.markSkip,
  CommandIDs.clearMarker
];
const VIEW_COMMANDS = [
  CommandIDs.packageNotebook,
  CommandIDs.showPanel,
  CommandIDs.showRuns,
  CommandIDs.showVersions
];

/** A "dsops" menu of these commands, groups split by separators. */
function dsopsMenu(commands: CommandRegistry, groups: string[][]): Menu {
  const menu = new Menu({ commands });
  menu.title.label = 'dsops';
  menu.addClass('dsops-Menu');
  groups.forEach((group, index) => {
    if (index > 0) {
      menu.addItem({ type: 'separator' });
    }
    group.forEach(command => menu.addItem({ command }));
  });
  return menu;
}

/** The cell context menu's "dsops" submenu and the "dsops" main menu. */
function addMenus(app: JupyterFrontEnd, mainMenu: IMainMenu | null): void {
  const submenu = dsopsMenu(app.commands, [MARKER_COMMANDS, VIEW_COMMANDS]);
  submenu.id = 'dsops-cell-menu';
  app.contextMenu.addItem({ type: 'separator', selector: CELL_SELECTOR, rank: 60 });
  app.contextMenu.addItem({ type: 'submenu', submenu, selector: CELL_SELECTOR, rank: 60.1 });
  if (mainMenu) {
    const menu = dsopsMenu(app.commands, [VIEW_COMMANDS, MARKER_COMMANDS]);
    menu.id = 'dsops-main-menu';
    mainMenu.addMenu(menu, true, { rank: 1000 });
  }
}

/**
 * The commands opening the Runs and Versions views of the current notebook (one view per
 * notebook: opening it again shows and refreshes it).
 */
function addViewCommands(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  languages: IEditorLanguageRegistry | null,
  services: IRunNotebookServices
): void {
  const opened = new Map<string, MainAreaWidget>();
  const openInMain = (widget: Widget): void => {
    if (!widget.isAttached) {
      app.shell.add(widget, 'main');
    }
    app.shell.activateById(widget.id);
  };
  const show = (key: string, make: (path: string) => MainAreaWidget): void => {
    const path = tracker.currentWidget?.context.localPath;
    if (!path) {
      return;
    }
    const existing = opened.get(`${key}:${path}`);
    if (existing && !existing.isDisposed) {
      void (existing.content as { refresh?: () => Promise<void> }).refresh?.();
      openInMain(existing);
      return;
    }
    const widget = make(path);
    opened.set(`${key}:${path}`, widget);
    openInMain(widget);
  };
  const hasNotebook = (): boolean => tracker.currentWidget !== null;
  /**
   * Open a run's executed notebook: as a document when the contents API reaches it, else
   * (a hidden `.dsops/` run folder) read-only from the server's runs route.
   */
  const openNotebook = async (notebook: string, run: IRunSummary): Promise<void> => {
    const path = run.output_notebook;
    const reachable = await app.serviceManager.contents.get(path, { content: false }).then(
      () => true,
      () => false
    );
    if (reachable) {
      await app.commands.execute('docmanager:open', { path });
      return;
    }
    const existing = opened.get(`run:${run.dir}`);
    if (existing && !existing.isDisposed) {
      openInMain(existing);
      return;
    }
    try {
      const widget = await openRunNotebook(notebook, run, services);
      opened.set(`run:${run.dir}`, widget);
      openInMain(widget);
    } catch (error) {
      Notification.error(errorMessage(error), { autoClose: false });
    }
  };
  app.commands.addCommand(CommandIDs.showRuns, {
    label: args => (args.isPalette ? 'dsops: Show runs' : 'Runs'),
    caption: "The notebook's past runs and jobs",
    isEnabled: hasNotebook,
    execute: () => show('runs', path => runsWidget(path, run => openNotebook(path, run)))
  });
  app.commands.addCommand(CommandIDs.showVersions, {
    label: args => (args.isPalette ? 'dsops: Show versions' : 'Versions'),
    caption: "The notebook's versions: diff any two, open an old one read-only",
    isEnabled: hasNotebook,
    execute: () => show('versions', path => versionsWidget(path, openInMain, languages))
  });
}

function activate(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  rendermime: IRenderMimeRegistry,
  editorServices: IEditorServices,
  palette: ICommandPalette | null,
  restorer: ILayoutRestorer | null,
  mainMenu: IMainMenu | null,
  languages: IEditorLanguageRegistry | null
): void {
  const { commands } = app;
  useServerSettings(app.serviceManager.serverSettings);
  app.docRegistry.addWidgetExtension('Notebook', new NotebookExtension(commands));

  commands.addCommand(CommandIDs.packageNotebook, {
    label: args => (args.isPalette ? 'dsops: Package notebook' : 'Package notebook'),
    caption: 'Save, convert to a script package, commit a Git version, optionally build the image',
    icon: args => (args.isPalette ? undefined : dsopsIcon),
    isEnabled: () => tracker.currentWidget !== null,
    execute: () => {
      const panel = tracker.currentWidget;
      return panel ? packageNotebook(panel, commands) : undefined;
    }
  });
  addCellCommands(app, tracker);

  const panel = new PipelinePanel(tracker, commands);
  app.shell.add(panel, 'right', { rank: 650 });
  restorer?.add(panel, 'dsops-pipeline-panel');
  commands.addCommand(CommandIDs.showPanel, {
    label: args => (args.isPalette ? 'dsops: Show pipeline panel' : 'Pipeline panel'),
    execute: () => app.shell.activateById(panel.id)
  });
  addViewCommands(app, tracker, languages, { rendermime, editorServices });
  addMenus(app, mainMenu);

  if (palette) {
    for (const command of [...VIEW_COMMANDS, ...MARKER_COMMANDS]) {
      palette.addItem({ command, category: 'dsops', args: { isPalette: true } });
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'dsops-jupyter:plugin',
  description: 'Mark notebook cells as pipeline steps; package notebooks into versioned scripts.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry, IEditorServices],
  optional: [ICommandPalette, ILayoutRestorer, IMainMenu, IEditorLanguageRegistry],
  activate
};

export default plugin;
