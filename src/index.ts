/**
 * dsops-jupyter frontend: a "Package notebook" toolbar button, cell marker
 * commands with badges, and a pipeline side panel. Every action calls the
 * dsops server routes; the pipeline logic lives in the Python core.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { CommandRegistry } from '@lumino/commands';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { applyMarker, BadgeManager, Cell, cellStepName } from './badges';
import { dsopsIcon } from './icons';
import { MarkerChoice, stepNameProblem } from './markers';
import { packageNotebook } from './packaging';
import { PipelinePanel } from './panel';
import { useServerSettings } from './request';
import { CommandIDs } from './tokens';

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

async function askStepName(initial: string): Promise<string | null> {
  let value = initial;
  let problem: string | null = null;
  for (;;) {
    const result = await InputDialog.getText({
      title: 'Mark cell as step',
      label: problem ? `${problem}. Step name:` : 'Step name (a Python identifier):',
      text: value,
      placeholder: 'e.g. train',
      okLabel: 'Mark'
    });
    if (!result.button.accept || result.value === null) {
      return null;
    }
    value = result.value.trim();
    problem = stepNameProblem(value);
    if (problem === null) {
      return value;
    }
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
      const name = await askStepName(cellStepName(target.cell.model));
      if (name !== null && !target.cell.isDisposed) {
        applyMarker(target.cell.model, { kind: 'step', name });
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

  app.contextMenu.addItem({ type: 'separator', selector: CELL_SELECTOR, rank: 60 });
  const ids = [
    CommandIDs.markStep,
    CommandIDs.markParameters,
    CommandIDs.markSkip,
    CommandIDs.clearMarker
  ];
  ids.forEach((command, index) => {
    app.contextMenu.addItem({ command, selector: CELL_SELECTOR, rank: 60.1 + index / 10 });
  });
}

function activate(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  palette: ICommandPalette | null,
  restorer: ILayoutRestorer | null
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
    label: args => (args.isPalette ? 'dsops: Show pipeline panel' : 'Show pipeline panel'),
    execute: () => app.shell.activateById(panel.id)
  });

  if (palette) {
    const ids = [
      CommandIDs.packageNotebook,
      CommandIDs.markStep,
      CommandIDs.markParameters,
      CommandIDs.markSkip,
      CommandIDs.clearMarker,
      CommandIDs.showPanel
    ];
    for (const command of ids) {
      palette.addItem({ command, category: 'dsops', args: { isPalette: true } });
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'dsops-jupyter:plugin',
  description: 'Mark notebook cells as pipeline steps; package notebooks into versioned scripts.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer],
  activate
};

export default plugin;
