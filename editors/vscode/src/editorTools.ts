// Editor-side tools, served on `tool/execute`: editor_selection, open_editors, read_document,
// apply_edit (shown to the user as a diff to accept or reject).
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CancellationToken, ClientToolHandler } from './client/agentdClient';
import {
  applyTextEdits,
  describeChange,
  EDITOR_TOOL_DEFINITIONS,
  EditError,
  parseApplyEditInput,
  sliceLines,
} from './client/editLogic';
import type { ToolExecuteResult } from './protocol';

const PROPOSAL_SCHEME = 'agentd-proposal';

/** Holds proposed file contents for the right side of the diff editor. */
class ProposalProvider implements vscode.TextDocumentContentProvider {
  private readonly contents = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;

  set(uri: vscode.Uri, text: string): void {
    this.contents.set(uri.toString(), text);
    this.changed.fire(uri);
  }
  delete(uri: vscode.Uri): void {
    this.contents.delete(uri.toString());
  }
  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.contents.get(uri.toString()) ?? '';
  }
}

function def(name: string) {
  const d = EDITOR_TOOL_DEFINITIONS.find((t) => t.name === name);
  if (!d) throw new Error(`no definition for ${name}`);
  return d;
}

function workspaceRoot(): vscode.Uri | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri;
}

export function displayPath(uri: vscode.Uri): string {
  if (uri.scheme === 'untitled') return uri.path;
  const rel = vscode.workspace.asRelativePath(uri, false);
  return rel || uri.fsPath;
}

export function resolvePath(p: string): vscode.Uri {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) || p.startsWith('untitled:')) return vscode.Uri.parse(p);
  if (path.isAbsolute(p)) return vscode.Uri.file(p);
  const root = workspaceRoot();
  if (!root) throw new EditError(`relative path '${p}' but no workspace folder is open`);
  return vscode.Uri.joinPath(root, p);
}

function findOpenDocument(uri: vscode.Uri): vscode.TextDocument | undefined {
  const key = uri.toString();
  return vscode.workspace.textDocuments.find((d) => d.uri.toString() === key);
}

const ok = (output: string, extra: Partial<ToolExecuteResult> = {}): ToolExecuteResult => ({ output, ...extra });
const fail = (output: string): ToolExecuteResult => ({ output, isError: true });

export function createEditorTools(context: vscode.ExtensionContext): ClientToolHandler[] {
  const proposals = new ProposalProvider();
  context.subscriptions.push(vscode.workspace.registerTextDocumentContentProvider(PROPOSAL_SCHEME, proposals));

  const editorSelection: ClientToolHandler = {
    definition: def('editor_selection'),
    execute() {
      const editor = vscode.window.activeTextEditor;
      if (!editor) return ok(JSON.stringify({ activeEditor: null, note: 'No text editor is active.' }));
      const sel = editor.selection;
      return ok(
        JSON.stringify(
          {
            path: displayPath(editor.document.uri),
            languageId: editor.document.languageId,
            isDirty: editor.document.isDirty,
            selection: {
              start: { line: sel.start.line, character: sel.start.character },
              end: { line: sel.end.line, character: sel.end.character },
              isEmpty: sel.isEmpty,
            },
            text: editor.document.getText(sel),
          },
          null,
          2,
        ),
        { title: displayPath(editor.document.uri) },
      );
    },
  };

  const openEditors: ClientToolHandler = {
    definition: def('open_editors'),
    execute() {
      const active = vscode.window.activeTextEditor?.document.uri.toString();
      const seen = new Set<string>();
      const editors: unknown[] = [];
      for (const group of vscode.window.tabGroups.all) {
        for (const tab of group.tabs) {
          const input = tab.input;
          let uri: vscode.Uri | undefined;
          if (input instanceof vscode.TabInputText) uri = input.uri;
          else if (input instanceof vscode.TabInputTextDiff) uri = input.modified;
          if (!uri || uri.scheme === PROPOSAL_SCHEME || seen.has(uri.toString())) continue;
          seen.add(uri.toString());
          const doc = findOpenDocument(uri);
          editors.push({
            path: displayPath(uri),
            languageId: doc?.languageId,
            isDirty: tab.isDirty,
            isActive: uri.toString() === active,
            viewColumn: group.viewColumn,
          });
        }
      }
      return ok(JSON.stringify({ editors }, null, 2), { title: `${editors.length} open editor(s)` });
    },
  };

  const readDocument: ClientToolHandler = {
    definition: def('read_document'),
    async execute(input) {
      const o = (input ?? {}) as { path?: unknown; startLine?: unknown; endLine?: unknown };
      if (typeof o.path !== 'string') return fail('read_document needs `path` (a string)');
      let uri: vscode.Uri;
      try {
        uri = resolvePath(o.path);
      } catch (e) {
        return fail((e as Error).message);
      }
      let doc = findOpenDocument(uri);
      try {
        doc ??= await vscode.workspace.openTextDocument(uri);
      } catch (e) {
        return fail(`Cannot open ${o.path}: ${(e as Error).message}`);
      }
      const text = sliceLines(
        doc.getText(),
        typeof o.startLine === 'number' ? o.startLine : undefined,
        typeof o.endLine === 'number' ? o.endLine : undefined,
      );
      return ok(text, {
        title: displayPath(doc.uri),
        metadata: { isDirty: doc.isDirty, version: doc.version, languageId: doc.languageId, lineCount: doc.lineCount },
      });
    },
  };

  let proposalSeq = 0;
  const applyEdit: ClientToolHandler = {
    definition: def('apply_edit'),
    async execute(input, _request, token: CancellationToken) {
      // Restricted Mode never declares this tool; a run queued before the folder lost trust
      // (or a daemon calling it anyway) is refused here too.
      if (!vscode.workspace.isTrusted) return fail('apply_edit is not available in Restricted Mode (the folder is not trusted)');
      let spec;
      try {
        spec = parseApplyEditInput(input);
      } catch (e) {
        return fail((e as Error).message);
      }
      let uri: vscode.Uri;
      try {
        uri = resolvePath(spec.path);
      } catch (e) {
        return fail((e as Error).message);
      }
      let doc = findOpenDocument(uri);
      let exists = true;
      if (!doc) {
        try {
          doc = await vscode.workspace.openTextDocument(uri);
        } catch {
          exists = false;
        }
      }
      const before = doc?.getText() ?? '';
      if (!exists && spec.edits) return fail(`${spec.path} does not exist; give \`content\` to create it`);
      let after: string;
      try {
        after = spec.content ?? applyTextEdits(before, spec.edits!);
      } catch (e) {
        return fail((e as Error).message);
      }
      if (after === before) return ok(`No change: ${spec.path} already has that content.`);

      const proposal = vscode.Uri.from({ scheme: PROPOSAL_SCHEME, path: uri.path, query: `n=${++proposalSeq}` });
      proposals.set(proposal, after);
      const left = exists ? uri : vscode.Uri.from({ scheme: PROPOSAL_SCHEME, path: uri.path, query: `empty=${proposalSeq}` });
      if (!exists) proposals.set(left, '');
      const name = displayPath(uri);
      await vscode.commands.executeCommand(
        'vscode.diff',
        left,
        proposal,
        `agentd: ${name} (proposed${exists ? '' : ', new file'})`,
        { preview: true, preserveFocus: false },
      );

      // A notification, not a modal: the user must be able to scroll the diff before choosing.
      const choice = await new Promise<string | undefined>((resolve) => {
        const sub = token.onCancellationRequested(() => resolve('cancelled'));
        void vscode.window
          .showInformationMessage(
            `agentd proposes an edit to ${name}${spec.description ? `: ${spec.description}` : ''}`,
            'Accept',
            'Reject',
          )
          .then((c) => {
            sub.dispose();
            resolve(c);
          });
      });
      await closeDiffTabs(proposal);
      proposals.delete(proposal);
      if (!exists) proposals.delete(left);

      if (choice === 'cancelled') return fail('The run was cancelled before the user decided; nothing was changed.');
      if (choice !== 'Accept') return fail(`The user rejected the edit to ${name}; nothing was changed.`);

      const edit = new vscode.WorkspaceEdit();
      if (!exists) {
        edit.createFile(uri, { ignoreIfExists: true });
        edit.insert(uri, new vscode.Position(0, 0), after);
      } else {
        const fullRange = new vscode.Range(doc!.positionAt(0), doc!.positionAt(before.length));
        edit.replace(uri, fullRange, after);
      }
      const applied = await vscode.workspace.applyEdit(edit);
      if (!applied) return fail(`VS Code could not apply the edit to ${name}.`);
      const opened = await vscode.workspace.openTextDocument(uri);
      await vscode.window.showTextDocument(opened, { preview: false, preserveFocus: true });
      return ok(
        `The user accepted the edit; applied to ${name} (${exists ? describeChange(before, after) : 'new file'}). The change is unsaved in the editor.`,
        { title: name },
      );
    },
  };

  return [editorSelection, openEditors, readDocument, applyEdit];
}

async function closeDiffTabs(proposal: vscode.Uri): Promise<void> {
  const key = proposal.toString();
  const tabs = vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => t.input instanceof vscode.TabInputTextDiff && t.input.modified.toString() === key);
  if (tabs.length) await vscode.window.tabGroups.close(tabs, true);
}
