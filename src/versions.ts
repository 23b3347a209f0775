/**
 * The "Versions" view of a notebook: its tagged versions `dsops/<name>/v<N>` (date, commit,
 * image), the script diff between any two (a read-only CodeMirror merge view) and any old
 * version's script opened read-only. Files are read from the tags' Git trees by the server.
 */
import { MergeView } from '@codemirror/merge';
import { EditorState, Extension } from '@codemirror/state';
import { EditorView, lineNumbers } from '@codemirror/view';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IEditorLanguageRegistry, jupyterTheme } from '@jupyterlab/codemirror';
import { Widget } from '@lumino/widgets';

import { getVersionFile, listVersions } from './api';
import { element } from './dom';
import { errorMessage } from './format';
import { shownTime } from './viewfmt';
import { IVersionEntry } from './tokens';

/** Opens a widget in the main area (index.ts: `app.shell.add(widget, 'main')`). */
export type OpenInMain = (widget: Widget) => void;

/** The read-only editor extensions: Python highlighting when the registry has it. */
async function readOnlyExtensions(languages: IEditorLanguageRegistry | null): Promise<Extension[]> {
  const extensions: Extension[] = [
    lineNumbers(),
    jupyterTheme,
    EditorState.readOnly.of(true),
    EditorView.editable.of(false)
  ];
  const python = await languages?.getLanguage('python');
  if (python?.support) {
    extensions.push(python.support);
  }
  return extensions;
}

function fileName(path: string): string {
  return path.split('/').pop() ?? path;
}

function versionLabel(version: IVersionEntry): string {
  return `v${version.number}`;
}

/** A main-area widget holding CodeMirror views (destroyed with it). */
class CodeWidget extends Widget {
  private _destroy: (() => void) | null = null;

  constructor(testid: string) {
    super();
    this.addClass('dsops-Code');
    this.node.dataset.testid = testid;
  }

  mount(build: (parent: HTMLElement) => () => void): void {
    this._destroy?.();
    this._destroy = build(this.node);
  }

  dispose(): void {
    this._destroy?.();
    super.dispose();
  }
}

function mainWidget(content: Widget, id: string, label: string): MainAreaWidget {
  const widget = new MainAreaWidget({ content });
  widget.id = id;
  widget.title.label = label;
  widget.title.closable = true;
  return widget;
}

/** The versions of one notebook, with diff and open actions. */
export class VersionsView extends Widget {
  private readonly _body: HTMLElement;
  private _versions: IVersionEntry[] = [];

  constructor(
    readonly path: string,
    private readonly _open: OpenInMain,
    private readonly _languages: IEditorLanguageRegistry | null
  ) {
    super();
    this.addClass('dsops-View');
    this.node.dataset.testid = 'dsops-versions-view';
    const bar = element('div', { class: 'dsops-View-bar' });
    bar.appendChild(element('span', { class: 'dsops-View-title' }, `Versions of ${path}`));
    const diff = element('button', { class: 'jp-mod-styled jp-mod-accept' }, 'Diff A → B');
    diff.dataset.testid = 'dsops-diff';
    diff.addEventListener('click', () => void this.showDiff());
    const refresh = element('button', { class: 'jp-mod-styled', 'data-testid': 'dsops-refresh' });
    refresh.textContent = 'Refresh';
    refresh.addEventListener('click', () => void this.refresh());
    bar.append(diff, refresh);
    this._body = element('div', { class: 'dsops-View-body' });
    this.node.append(bar, this._body);
  }

  async refresh(): Promise<void> {
    this.node.dataset.state = 'loading';
    try {
      this._versions = await listVersions(this.path);
      this._body.replaceChildren(this._table());
    } catch (error) {
      this._body.replaceChildren(element('div', { class: 'dsops-Error' }, errorMessage(error)));
    }
    this.node.dataset.state = 'ready';
  }

  /** The tags chosen as A (older side) and B. */
  chosen(): [string | null, string | null] {
    const pick = (side: string): string | null =>
      this.node.querySelector<HTMLInputElement>(`input[name=dsops-side-${side}]:checked`)?.value ??
      null;
    return [pick('a'), pick('b')];
  }

  async showDiff(): Promise<void> {
    const [a, b] = this.chosen();
    const [left, right] = [this._find(a), this._find(b)];
    if (!left || !right) {
      return;
    }
    const content = new CodeWidget('dsops-diff-view');
    const label = `${fileName(left.script)} ${versionLabel(left)} ↔ ${versionLabel(right)}`;
    this._open(mainWidget(content, `dsops-diff-${left.tag}-${right.tag}`, label));
    try {
      const [oldFile, newFile, extensions] = await Promise.all([
        getVersionFile(this.path, left.tag),
        getVersionFile(this.path, right.tag),
        readOnlyExtensions(this._languages)
      ]);
      content.mount(parent => {
        const view = new MergeView({
          a: { doc: oldFile.content, extensions },
          b: { doc: newFile.content, extensions },
          parent,
          gutter: true,
          collapseUnchanged: { margin: 3, minSize: 6 }
        });
        return () => view.destroy();
      });
    } catch (error) {
      content.node.replaceChildren(element('div', { class: 'dsops-Error' }, errorMessage(error)));
    }
  }

  /** An old version's script in a read-only editor titled e.g. `wine.py @ v1`. */
  async openVersion(version: IVersionEntry): Promise<void> {
    const content = new CodeWidget('dsops-version-file');
    const label = `${fileName(version.script)} @ ${versionLabel(version)}`;
    this._open(mainWidget(content, `dsops-file-${version.tag}`, label));
    try {
      const [file, extensions] = await Promise.all([
        getVersionFile(this.path, version.tag),
        readOnlyExtensions(this._languages)
      ]);
      content.mount(parent => {
        const view = new EditorView({ doc: file.content, extensions, parent });
        return () => view.destroy();
      });
    } catch (error) {
      content.node.replaceChildren(element('div', { class: 'dsops-Error' }, errorMessage(error)));
    }
  }

  private _find(tag: string | null): IVersionEntry | undefined {
    return this._versions.find(version => version.tag === tag);
  }

  private _table(): HTMLElement {
    if (this._versions.length === 0) {
      return element('p', { class: 'dsops-View-empty' }, 'No versions yet: Package the notebook.');
    }
    const node = element('table', { class: 'dsops-Table', 'data-testid': 'dsops-versions' });
    const head = element('tr');
    for (const header of ['A', 'B', 'Version', 'Date', 'Commit', 'Image', '']) {
      head.appendChild(element('th', {}, header));
    }
    node.appendChild(element('thead')).appendChild(head);
    const body = node.appendChild(element('tbody'));
    this._versions.forEach((version, index) => {
      const row = element('tr', { 'data-testid': 'dsops-version', 'data-tag': version.tag });
      row.append(
        this._side('a', version, index === Math.min(1, this._versions.length - 1)),
        this._side('b', version, index === 0),
        element('td', {}, version.tag),
        element('td', {}, shownTime(version.epoch)),
        element('td', { title: version.message }, version.short),
        this._image(version),
        this._openButton(version)
      );
      body.appendChild(row);
    });
    return node;
  }

  private _side(side: string, version: IVersionEntry, checked: boolean): HTMLElement {
    const input = element('input', {
      type: 'radio',
      name: `dsops-side-${side}`,
      value: version.tag,
      'data-testid': `dsops-side-${side}-v${version.number}`
    });
    input.checked = checked;
    const td = element('td');
    td.appendChild(input);
    return td;
  }

  private _image(version: IVersionEntry): HTMLElement {
    const image = version.image;
    if (image === null) {
      return element('td', {}, '—');
    }
    const id = image.id
      ? ` (${image.id.replace(/^sha256:/, '').slice(0, 12)})`
      : ' (not built here)';
    return element('td', { title: image.ref }, `${image.ref}${id}`);
  }

  private _openButton(version: IVersionEntry): HTMLElement {
    const button = element('button', { class: 'jp-mod-styled' }, 'Open');
    button.dataset.testid = `dsops-open-v${version.number}`;
    button.title = `Open ${version.script} as of ${version.tag}, read-only`;
    button.addEventListener('click', () => void this.openVersion(version));
    const td = element('td');
    td.appendChild(button);
    return td;
  }
}

/** The Versions view in the main area, titled after the notebook. */
export function versionsWidget(
  path: string,
  open: OpenInMain,
  languages: IEditorLanguageRegistry | null
): MainAreaWidget<VersionsView> {
  const content = new VersionsView(path, open, languages);
  const widget = mainWidget(content, `dsops-versions-${path}`, `Versions — ${fileName(path)}`);
  void content.refresh();
  return widget as MainAreaWidget<VersionsView>;
}
