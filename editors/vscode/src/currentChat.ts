// Which chat the view shows in this workspace, kept across window reloads.
//
// VS Code's workspaceState alone is not enough: VS Code for the Web and code-server keep it in
// the browser and save it every 5 s, so a chat opened in the last seconds before a reload was
// forgotten and the previous one came back (the real-VS Code tests showed it). The id is also
// written to a file in the extension's workspace storage, on the extension host's own disk,
// synchronously: it is there before the view can show the chat, so before any reload. It is a
// few dozen bytes, written only when the user switches chats.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as vscode from 'vscode';

const KEY = 'agentd.currentSessionId';

export class CurrentChatStore {
  private readonly file: string | undefined;

  constructor(
    private readonly memento: vscode.Memento,
    /** context.storageUri: undefined with no folder open (then workspaceState alone). */
    storageUri: vscode.Uri | undefined,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.file = storageUri?.scheme === 'file' ? path.join(storageUri.fsPath, 'current-chat.json') : undefined;
  }

  get(): string | undefined {
    if (this.file) {
      try {
        const saved: unknown = JSON.parse(fs.readFileSync(this.file, 'utf8'));
        const id = (saved as { sessionId?: unknown } | null)?.sessionId;
        if (typeof id === 'string' && id) return id;
        if (id === null) return undefined; // a new chat, not yet sent
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn(`could not read ${this.file}: ${String(e)}`);
      }
    }
    return this.memento.get<string>(KEY);
  }

  set(id: string | undefined): void {
    void this.memento.update(KEY, id);
    if (!this.file) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true });
      fs.writeFileSync(tmp, JSON.stringify({ sessionId: id ?? null }));
      fs.renameSync(tmp, this.file); // a reader never sees half a file
    } catch (e) {
      this.log.warn(`could not save the current chat to ${this.file}: ${String(e)}`);
    }
  }
}
