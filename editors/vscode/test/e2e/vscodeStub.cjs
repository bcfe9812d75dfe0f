// A stand-in for the `vscode` module, just large enough to run dist/extension.js under Node:
// the extension's real host code (controller, view provider, editor tools, commands) then talks
// to the real daemon and to the real chat page in Chromium. Dialogs answer from a script.
'use strict';
const path = require('node:path');

class EventEmitter {
  constructor() {
    this.listeners = new Set();
    this.event = (l) => {
      this.listeners.add(l);
      return { dispose: () => this.listeners.delete(l) };
    };
  }
  fire(e) {
    for (const l of [...this.listeners]) l(e);
  }
  dispose() {
    this.listeners.clear();
  }
}

class Uri {
  constructor(scheme, p, query = '') {
    this.scheme = scheme;
    this.path = p;
    this.query = query;
  }
  get fsPath() {
    return this.path;
  }
  static file(p) {
    return new Uri('file', path.resolve(p));
  }
  static parse(s) {
    const m = /^([a-z][a-z0-9+.-]*):(?:\/\/)?([^?]*)(?:\?(.*))?$/i.exec(s);
    return m ? new Uri(m[1], m[2], m[3] ?? '') : new Uri('file', s);
  }
  static joinPath(base, ...parts) {
    return new Uri(base.scheme, path.posix.join(base.path, ...parts), base.query);
  }
  static from(c) {
    return new Uri(c.scheme, c.path ?? '', c.query ?? '');
  }
  with(c) {
    return new Uri(c.scheme ?? this.scheme, c.path ?? this.path, c.query ?? this.query);
  }
  toString() {
    return `${this.scheme}://${this.path}${this.query ? '?' + this.query : ''}`;
  }
}

class Position {
  constructor(line, character) {
    this.line = line;
    this.character = character;
  }
}
class Range {
  constructor(start, end) {
    this.start = start;
    this.end = end;
  }
  get isEmpty() {
    return this.start.line === this.end.line && this.start.character === this.end.character;
  }
}
class Selection extends Range {}
class WorkspaceEdit {
  constructor() {
    this.ops = [];
  }
  replace(uri, range, text) {
    this.ops.push({ op: 'replace', uri: uri.toString(), range, text });
  }
  insert(uri, pos, text) {
    this.ops.push({ op: 'insert', uri: uri.toString(), pos, text });
  }
  createFile(uri, o) {
    this.ops.push({ op: 'create', uri: uri.toString(), o });
  }
}
class ThemeColor {
  constructor(id) {
    this.id = id;
  }
}
class ThemeIcon {
  constructor(id) {
    this.id = id;
  }
}
class TabInputText {
  constructor(uri) {
    this.uri = uri;
  }
}
class TabInputTextDiff {
  constructor(original, modified) {
    this.original = original;
    this.modified = modified;
  }
}

/** A text document held in memory (the "unsaved" state). */
class TextDocument {
  constructor(uri, text, languageId = 'plaintext') {
    this.uri = uri;
    this.text = text;
    this.languageId = languageId;
    this.version = 1;
    this.isDirty = false;
  }
  getText(range) {
    if (!range) return this.text;
    return this.text.slice(this.offsetAt(range.start), this.offsetAt(range.end));
  }
  get lineCount() {
    return this.text.split('\n').length;
  }
  offsetAt(pos) {
    const lines = this.text.split('\n');
    let o = 0;
    for (let i = 0; i < pos.line; i++) o += lines[i].length + 1;
    return o + pos.character;
  }
  positionAt(offset) {
    const before = this.text.slice(0, offset).split('\n');
    return new Position(before.length - 1, before.at(-1).length);
  }
}

// --- what the tests script and observe -------------------------------------------------------
const stub = {
  config: {},
  /**
   * Queued answers for dialogs: each entry { match: RegExp, answer: string|undefined }. With
   * `quickPick: true` it answers a quick pick whose title matches: the item whose label contains
   * `answer` is accepted, or (answer undefined) the pick is closed as Escape does.
   */
  answers: [],
  /** vscode.workspace.isTrusted; `trustEmitter` fires onDidGrantWorkspaceTrust. */
  trusted: true,
  trustEmitter: new EventEmitter(),
  messages: [], // every notification/dialog shown: { level, text, items, options }
  commandsRun: [],
  clipboard: '',
  appliedEdits: [],
  logLines: [],
  providers: new Map(),
  commands: new Map(),
  documents: [],
  activeTextEditor: undefined,
  configEmitter: new EventEmitter(),
  workspaceFolder: undefined,
  contexts: {},
  quickPicks: [],
  /** Every status bar item the extension made (its text and tooltip as last set). */
  statusBarItems: [],
  /** Every showTextDocument's argument (a document or a Uri), in order. */
  shownDocuments: [],
  /** Every withProgress: { options, done } (done once the task settled). */
  progress: [],
};

function answerFor(text) {
  const i = stub.answers.findIndex((a) => a.match.test(text));
  if (i < 0) return undefined;
  return stub.answers.splice(i, 1)[0].answer;
}
function show(level) {
  return (text, ...rest) => {
    const options = rest[0] && typeof rest[0] === 'object' && !Array.isArray(rest[0]) ? rest.shift() : undefined;
    stub.messages.push({ level, text, items: rest, options });
    return Promise.resolve(answerFor(text));
  };
}

const window = {
  createOutputChannel: (name) => {
    const log = (lvl) => (m) => stub.logLines.push(`[${lvl}] ${m}`);
    return { name, info: log('info'), warn: log('warn'), error: log('error'), debug: log('debug'), trace: log('trace'), appendLine: log('info'), append: log('info'), show() {}, dispose() {} };
  },
  createStatusBarItem: () => {
    const item = { text: '', tooltip: '', show() {}, hide() {}, dispose() {} };
    stub.statusBarItems.push(item);
    return item;
  },
  registerWebviewViewProvider: (id, provider) => {
    stub.providers.set(id, provider);
    return { dispose() {} };
  },
  showInformationMessage: show('info'),
  showWarningMessage: show('warning'),
  showErrorMessage: show('error'),
  showInputBox: (o) => {
    stub.messages.push({ level: 'inputBox', text: o?.prompt ?? o?.title ?? '' });
    return Promise.resolve(answerFor(o?.title ?? o?.prompt ?? ''));
  },
  createQuickPick: () => {
    const emitters = { value: new EventEmitter(), accept: new EventEmitter(), button: new EventEmitter(), hide: new EventEmitter() };
    const qp = {
      items: [],
      selectedItems: [],
      value: '',
      busy: false,
      visible: false,
      placeholder: '',
      onDidChangeValue: emitters.value.event,
      onDidAccept: emitters.accept.event,
      onDidTriggerItemButton: emitters.button.event,
      onDidHide: emitters.hide.event,
      show() {
        qp.visible = true;
        const i = stub.answers.findIndex((a) => a.quickPick && a.match.test(qp.title ?? ''));
        if (i < 0) return;
        const { answer } = stub.answers.splice(i, 1)[0];
        setTimeout(() => {
          if (answer === undefined) qp.hide();
          else qp.__accept(qp.items.find((item) => item.label.includes(answer)));
        });
      },
      hide() {
        qp.visible = false;
        emitters.hide.fire();
      },
      dispose() {},
      // test helpers
      __type(v) {
        qp.value = v;
        emitters.value.fire(v);
      },
      __accept(item) {
        qp.selectedItems = [item];
        emitters.accept.fire();
      },
      __button(item, button) {
        emitters.button.fire({ item, button });
      },
    };
    stub.quickPicks.push(qp);
    return qp;
  },
  get activeTextEditor() {
    return stub.activeTextEditor;
  },
  get visibleTextEditors() {
    return stub.activeTextEditor ? [stub.activeTextEditor] : [];
  },
  tabGroups: {
    get all() {
      return [{ viewColumn: 1, tabs: stub.documents.map((d) => ({ input: new TabInputText(d.uri), isDirty: d.isDirty })) }];
    },
    close: async () => true,
  },
  showTextDocument: async (doc) => {
    stub.shownDocuments.push(doc);
    return { document: doc };
  },
  withProgress: async (options, task) => {
    const entry = { options, done: false };
    stub.progress.push(entry);
    const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose() {} }) };
    try {
      return await task({ report() {} }, token);
    } finally {
      entry.done = true;
    }
  },
};

const workspace = {
  get isTrusted() {
    return stub.trusted;
  },
  onDidGrantWorkspaceTrust: stub.trustEmitter.event,
  getConfiguration: (section) => ({ get: (key, d) => (stub.config[key] !== undefined ? stub.config[key] : d) }),
  onDidChangeConfiguration: stub.configEmitter.event,
  get workspaceFolders() {
    return stub.workspaceFolder ? [{ uri: Uri.file(stub.workspaceFolder), name: 'ws', index: 0 }] : undefined;
  },
  get textDocuments() {
    return stub.documents;
  },
  openTextDocument: async (arg) => {
    if (arg && arg.content !== undefined) {
      const d = new TextDocument(new Uri('untitled', `Untitled-${stub.documents.length + 1}`), arg.content, arg.language);
      stub.documents.push(d);
      return d;
    }
    const found = stub.documents.find((d) => d.uri.toString() === arg.toString());
    if (found) return found;
    const text = require('node:fs').readFileSync(arg.fsPath, 'utf8');
    const d = new TextDocument(arg, text);
    stub.documents.push(d);
    return d;
  },
  registerTextDocumentContentProvider: () => ({ dispose() {} }),
  asRelativePath: (uri) => (stub.workspaceFolder && uri.fsPath.startsWith(stub.workspaceFolder + '/') ? uri.fsPath.slice(stub.workspaceFolder.length + 1) : uri.fsPath),
  applyEdit: async (edit) => {
    stub.appliedEdits.push(edit.ops);
    for (const op of edit.ops) {
      const doc = stub.documents.find((d) => d.uri.toString() === op.uri);
      if (doc && op.op === 'replace') {
        doc.text = doc.text.slice(0, doc.offsetAt(op.range.start)) + op.text + doc.text.slice(doc.offsetAt(op.range.end));
        doc.isDirty = true;
        doc.version++;
      }
    }
    return true;
  },
};

const commands = {
  registerCommand: (id, fn) => {
    stub.commands.set(id, fn);
    return { dispose: () => stub.commands.delete(id) };
  },
  executeCommand: async (id, ...args) => {
    stub.commandsRun.push({ id, args });
    if (id === 'setContext') stub.contexts[args[0]] = args[1];
    const fn = stub.commands.get(id);
    return fn ? fn(...args) : undefined;
  },
};

const env = {
  clipboard: {
    writeText: async (t) => {
      stub.clipboard = t;
    },
    readText: async () => stub.clipboard,
  },
};

/** An editor on `doc` with `selection`, whose edit() applies to the in-memory document. */
function makeEditor(doc, selection) {
  return {
    document: doc,
    selection,
    selections: [selection],
    viewColumn: 1,
    edit: async (cb) => {
      const ops = [];
      cb({ replace: (sel, text) => ops.push({ sel, text }) });
      for (const { sel, text } of ops.reverse()) {
        doc.text = doc.text.slice(0, doc.offsetAt(sel.start)) + text + doc.text.slice(doc.offsetAt(sel.end));
      }
      doc.isDirty = true;
      return true;
    },
  };
}

module.exports = {
  __stub: stub,
  __makeEditor: makeEditor,
  __TextDocument: TextDocument,
  EventEmitter,
  Uri,
  Position,
  Range,
  Selection,
  WorkspaceEdit,
  ThemeColor,
  ThemeIcon,
  TabInputText,
  TabInputTextDiff,
  StatusBarAlignment: { Left: 1, Right: 2 },
  ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
  ViewColumn: { One: 1, Active: -1, Beside: -2 },
  window,
  workspace,
  commands,
  env,
};
