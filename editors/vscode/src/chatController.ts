// Connects the chat view to the daemon: sends, aborts, session switching, list, rename, delete.
import * as vscode from 'vscode';
import { AgentdError, isCancelled, type AgentdClient } from './client/agentdClient';
import type { ChatViewProvider } from './chatViewProvider';
import { mcpToolPatterns } from './client/mcp';
import { restrictedBuiltinTools, restrictedClientTools } from './client/restrictedMode';
import { resolvePath } from './editorTools';
import type { CurrentChatStore } from './currentChat';
import { ErrorCodes, type Session, type SessionStatus } from './protocol';
import type { ViewToHost } from './shared/webviewProtocol';
import { SessionHistory } from './sessionHistory';
import { homedir } from 'node:os';

const PAGE_SIZE = 30;

export class ChatController implements vscode.Disposable {
  private currentSessionId: string | undefined;
  /**
   * Every session's status as last heard: `session/status` (sessions this window follows) and
   * `session/updated` (every session, whoever runs it), and the answers that carry one. The
   * daemon's messages arrive in order, so the latest word wins: a status read from an answer
   * goes stale as soon as a notification about that session follows it.
   */
  private readonly statuses = new Map<string, SessionStatus>();
  /** Bumps with each showSession: an earlier one still waiting for its answers shows nothing. */
  private opening = 0;
  private readonly disposables: vscode.Disposable[] = [];
  /** Fork, revert, unrevert, export of the chats. */
  readonly history: SessionHistory;

  constructor(
    private readonly client: AgentdClient,
    private readonly view: ChatViewProvider,
    private readonly current: CurrentChatStore,
    private readonly getModel: () => string,
    private readonly log: vscode.LogOutputChannel,
    private readonly getTools: () => string[] | undefined = () => undefined,
    /** False in Restricted Mode (an untrusted folder): chat and read-only tools only. */
    private readonly isTrusted: () => boolean = () => true,
  ) {
    this.currentSessionId = current.get();
    this.history = new SessionHistory(client, (id) => this.showSession(id), log);
    this.disposables.push(
      view.onMessage((m) => void this.onViewMessage(m).catch((e) => this.reportError(e))),
      client.onNotification((n) => {
        if (n.method === 'session/status') this.noteStatus(n.params.sessionId, n.params.status);
        else if (n.method === 'session/updated') this.noteStatus(n.params.session.id, n.params.session.status);
        this.view.post({ type: 'notification', notification: n });
      }),
      client.onDidChangeState((s) => {
        this.view.post({ type: 'daemon', state: s.state, message: s.message });
        // A new connection hears nothing of what the old one was told: statuses are unknown until
        // answers and notifications tell them again (a shared daemon's runs went on meanwhile).
        if (s.state !== 'running') {
          this.statuses.clear();
          this.updateBusyContext();
        }
        // After a restart, reload the conversation: what was streamed before the crash is persisted.
        if (s.state === 'running' && this.currentSessionId) void this.showSession(this.currentSessionId, true);
      }),
    );
  }

  get sessionId(): string | undefined {
    return this.currentSessionId;
  }

  private setCurrent(id: string | undefined): void {
    this.currentSessionId = id;
    this.current.set(id);
    this.updateBusyContext();
  }

  private noteStatus(sessionId: string, status: SessionStatus): void {
    this.statuses.set(sessionId, status);
    if (sessionId === this.currentSessionId) this.updateBusyContext();
  }

  private updateBusyContext(): void {
    const status = this.currentSessionId ? this.statuses.get(this.currentSessionId) : undefined;
    void vscode.commands.executeCommand('setContext', 'agentd.busy', status !== undefined && status !== 'idle');
  }

  private async onViewMessage(m: ViewToHost): Promise<void> {
    switch (m.type) {
      case 'ready':
        this.view.post({ type: 'daemon', state: this.client.state });
        this.view.post({ type: 'trust', trusted: this.isTrusted() });
        this.view.post({ type: 'home', path: homedir() });
        // Start the daemon as soon as the view shows, so the first answer does not wait for it.
        this.client.start().catch((e) => this.log.error(`agentd did not start: ${describeError(e)}`));
        if (m.sessionId && !this.currentSessionId) this.setCurrent(m.sessionId);
        if (this.currentSessionId) await this.showSession(this.currentSessionId, true);
        else this.view.post({ type: 'history', messages: [] });
        break;
      case 'send':
        await this.send(m.text, m.sessionId, false);
        break;
      case 'abort':
        await this.abort(m.sessionId);
        break;
      case 'newChat':
        this.newChat();
        break;
      case 'openSession':
        await this.showSession(m.sessionId);
        break;
      case 'listSessions':
        await this.listSessions(m.query, m.cursor);
        break;
      case 'renameSession':
        await this.client.renameSession(m.sessionId, m.title);
        break;
      case 'deleteSession':
        await this.deleteSession(m.sessionId, m.title);
        break;
      case 'copy':
        await vscode.env.clipboard.writeText(m.text);
        break;
      case 'insert':
        await insertAtCursor(m.text);
        break;
      case 'fork':
        await this.history.fork(m.sessionId, m.messageId);
        break;
      case 'revert':
        await this.history.revert(m.sessionId, m.messageId);
        break;
      case 'manageTrust':
        await vscode.commands.executeCommand('workbench.trust.manage');
        break;
      case 'openFile':
        try {
          await vscode.window.showTextDocument(resolvePath(m.path), { preview: true });
        } catch (e) {
          void vscode.window.showWarningMessage(`Cannot open ${m.path}: ${(e as Error).message}`);
        }
        break;
    }
  }

  newChat(): void {
    this.opening++; // a session still loading does not replace the new chat
    this.setCurrent(undefined);
    this.view.post({ type: 'history', messages: [] });
  }

  /**
   * Shows a session: its history, and what its run (this window's, another window's, or one
   * that went on through a reload) streams from then on. `session/messages` makes this window
   * follow the session at the moment it answers: the answer holds all that was streamed until
   * then and the notifications after it hold the rest, so the history is posted to the view in
   * the answer's continuation, before any later notification (vscode-jsonrpc handles one
   * message per macrotask; an answer's continuations run before the next message is handled).
   * `session/get` is asked first, not alongside: a later answer to it would hold the history
   * back while notifications that come after the history went to the view before it.
   */
  async showSession(sessionId: string, quiet = false): Promise<void> {
    const opening = ++this.opening;
    try {
      const { session } = await this.client.getSession(sessionId);
      this.statuses.set(session.id, session.status);
      if (opening !== this.opening) return;
      const page = await this.client.messages({ sessionId, limit: 200 });
      if (opening !== this.opening) return;
      this.setCurrent(session.id);
      const status = this.statuses.get(session.id) ?? session.status;
      this.view.post({ type: 'history', session: { ...session, status }, messages: page.messages, hasMore: !!page.nextBefore });
    } catch (e) {
      if (opening !== this.opening) return;
      if (e instanceof AgentdError && e.code === ErrorCodes.SessionNotFound) {
        // Deleted elsewhere (or a different data dir): start fresh rather than show an error.
        this.newChat();
        if (!quiet) void vscode.window.showWarningMessage('That agentd session no longer exists.');
        return;
      }
      if (quiet) {
        this.log.warn(`could not load session ${sessionId}: ${(e as Error).message}`);
        this.view.post({ type: 'history', messages: [] });
        return;
      }
      throw e;
    }
  }

  /**
   * Sends a user message, creating the session on the first send of a fresh chat.
   * `announce` shows the text as pending in the view (for sends that did not come from it).
   */
  async send(text: string, sessionId = this.currentSessionId, announce = true): Promise<void> {
    if (announce) this.view.post({ type: 'sending', sessionId, text });
    let session: Session | undefined;
    try {
      if (!sessionId) {
        const model = this.getModel();
        const workspaceRoot = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
        const created = await this.client.createSession({
          ...(model ? { model } : {}),
          ...(workspaceRoot ? { workspaceRoot } : {}),
        });
        session = created.session;
        sessionId = session.id;
        this.setCurrent(sessionId);
        this.view.post({ type: 'sessionStarted', session });
      }
      const model = this.getModel();
      // Restricted Mode: the read-only built-ins, no MCP patterns, the read-only editor tools.
      const trusted = this.isTrusted();
      const tools = trusted ? await this.toolsFor(sessionId) : restrictedBuiltinTools(this.getTools());
      const clientTools = trusted ? undefined : restrictedClientTools(this.client.clientToolDefinitions);
      const result = await this.client.chat({
        sessionId,
        parts: [{ type: 'text', text }],
        onBusy: 'queue',
        ...(model ? { model } : {}),
        ...(tools ? { tools } : {}),
        ...(clientTools ? { clientTools } : {}),
      });
      this.view.post({ type: 'chatResult', sessionId, message: result.message });
    } catch (e) {
      if (isCancelled(e)) return; // aborted: the notifications already show what happened
      this.view.post({ type: 'error', sessionId, message: describeError(e) });
      this.log.error(`session/chat failed: ${describeError(e)}`);
    }
  }

  /**
   * `agentd.tools` (built-ins only) plus patterns naming every MCP server's tools, so that
   * choosing built-ins does not leave out the MCP tools the daemon would offer by default.
   */
  private async toolsFor(sessionId: string): Promise<string[] | undefined> {
    const tools = this.getTools();
    if (!tools) return undefined;
    try {
      const { servers } = await this.client.listMcpServers({ sessionId });
      return [...tools, ...mcpToolPatterns(servers)];
    } catch (e) {
      this.log.warn(`mcp/list failed, so no MCP tools are offered: ${describeError(e)}`);
      return tools;
    }
  }

  async abort(sessionId = this.currentSessionId): Promise<void> {
    if (!sessionId) return;
    try {
      await this.client.abort(sessionId);
    } catch (e) {
      this.reportError(e);
    }
  }

  async listSessions(query: string, cursor?: string): Promise<void> {
    const res = await this.client.listSessions({
      limit: PAGE_SIZE,
      rootsOnly: true,
      ...(query ? { query } : {}),
      ...(cursor ? { cursor } : {}),
    });
    for (const s of res.sessions) this.noteStatus(s.id, s.status);
    this.view.post({ type: 'sessions', sessions: res.sessions, nextCursor: res.nextCursor ?? undefined, query, append: !!cursor });
  }

  async deleteSession(sessionId: string, title?: string): Promise<boolean> {
    const choice = await vscode.window.showWarningMessage(
      `Delete the chat “${title || sessionId}”?`,
      { modal: true, detail: 'Its whole history is deleted from agentd. This cannot be undone.' },
      'Delete',
    );
    if (choice !== 'Delete') return false;
    const { deleted } = await this.client.deleteSession(sessionId);
    this.view.post({ type: 'sessionDeleted', sessionId });
    if (sessionId === this.currentSessionId) this.newChat();
    return deleted;
  }

  private reportError(e: unknown): void {
    const message = describeError(e);
    this.log.error(message);
    this.view.post({ type: 'error', message });
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}

export function describeError(e: unknown): string {
  if (e instanceof AgentdError) {
    switch (e.code) {
      case ErrorCodes.ModelNotConfigured:
        return `${e.message} — set "agentd.model" (or AGENTD_MODEL in "agentd.env") to a model agentd knows.`;
      case ErrorCodes.SessionBusy:
        return `${e.message} — this chat is already running; stop it or wait.`;
      case ErrorCodes.SessionNotFound:
        return `${e.message} — the session no longer exists.`;
      default:
        return e.code !== undefined ? `${e.message} (error ${e.code})` : e.message;
    }
  }
  return e instanceof Error ? e.message : String(e);
}

async function insertAtCursor(text: string): Promise<void> {
  const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
  if (!editor) {
    const doc = await vscode.workspace.openTextDocument({ content: text });
    await vscode.window.showTextDocument(doc);
    return;
  }
  await editor.edit((b) => {
    for (const sel of editor.selections) b.replace(sel, text);
  });
  await vscode.window.showTextDocument(editor.document, editor.viewColumn);
}
