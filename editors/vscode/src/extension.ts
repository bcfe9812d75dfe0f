// VS Code entry point: settings, the daemon client, the chat view, commands, status bar.
import * as vscode from 'vscode';
import { AgentdClient, AgentdError, isCancelled, type StateChange } from './client/agentdClient';
import { daemonEnvironment, needsRestart, normalizeSettings, type DaemonSettings } from './client/daemonEnv';
import { describeDaemon } from './client/daemonInfo';
import { ChatController, describeError } from './chatController';
import { ChatViewProvider } from './chatViewProvider';
import { CurrentChatStore } from './currentChat';
import { createEditorTools, displayPath } from './editorTools';
import { describeMcpStatus, McpStatusTracker, mcpServerItems, mcpToolItems, type McpServerItem, type McpToolItem } from './client/mcp';
import { createPermissionHandler } from './permission';
import { selectionLineRange } from './client/editLogic';
import { ErrorCodes, type McpServerInfo, type McpStatusServer, type TextPart } from './protocol';

function readSettings(): DaemonSettings {
  const c = vscode.workspace.getConfiguration('agentd');
  return normalizeSettings({ path: c.get('path'), model: c.get('model'), env: c.get('env'), dataDir: c.get('dataDir') });
}

/** The settings for the log: the environment's names only (its values may be secrets). */
function describeSettings(s: DaemonSettings): string {
  return `path ${s.path}, model ${s.model || '(default)'}, dataDir ${s.dataDir || '(default)'}, env ${Object.keys(s.env).join(', ') || '(none)'}`;
}

/** `agentd.tools`: the built-in tools to offer; undefined leaves the daemon's default. */
function readTools(): string[] | undefined {
  const v = vscode.workspace.getConfiguration('agentd').get<unknown>('tools');
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined;
}

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('agentd', { log: true });
  context.subscriptions.push(log);

  let settings = readSettings();
  log.info(`settings: ${describeSettings(settings)}${vscode.workspace.isTrusted ? '' : ' (Restricted Mode: user settings only)'}`);
  const workspaceRoot = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const version = (context.extension.packageJSON as { version?: string }).version;
  const tools = createEditorTools(context);
  const currentChat = new CurrentChatStore(context.workspaceState, context.storageUri, log);
  const isTrusted = () => vscode.workspace.isTrusted;
  const onPermissionRequest = createPermissionHandler(isTrusted);

  const makeClient = (s: DaemonSettings) =>
    new AgentdClient({
      command: s.path,
      env: daemonEnvironment(s),
      cwd: workspaceRoot,
      workspaceRoot,
      clientInfo: { name: 'vscode-agentd', version },
      clientTools: tools,
      onPermissionRequest,
    });

  let client = makeClient(settings);
  currentClient = () => client;
  const view = new ChatViewProvider(context.extensionUri);
  context.subscriptions.push(
    view,
    vscode.window.registerWebviewViewProvider(ChatViewProvider.viewId, view, {
      webviewOptions: { retainContextWhenHidden: true },
    }),
  );

  const status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  status.name = 'agentd';
  status.command = 'agentd.openChat';
  context.subscriptions.push(status);

  let controller: ChatController;
  let clientSubscriptions: vscode.Disposable[] = [];
  const wire = () => {
    controller = new ChatController(client, view, currentChat, () => settings.model, log, readTools, isTrusted);
    const mcp = new McpStatusTracker();
    clientSubscriptions = [
      controller,
      { dispose: () => client.dispose() },
      { dispose: client.onLog((line) => log.info(line)).dispose },
      { dispose: client.onDidChangeState((s) => onState(s)).dispose },
      {
        dispose: client.onDidChangeState((s) => {
          if (s.state === 'starting') mcp.reset(); // a new daemon starts its MCP servers afresh
        }).dispose,
      },
      {
        dispose: client.onNotification((n) => {
          if (n.method === 'mcp/status') onMcpStatus(mcp, n.params.server);
        }).dispose,
      },
    ];
  };

  const onMcpStatus = (mcp: McpStatusTracker, server: McpStatusServer) => {
    if (server.state === 'failed') log.warn(describeMcpStatus(server));
    else log.info(describeMcpStatus(server));
    const warning = mcp.update(server);
    if (warning) {
      void vscode.window.showWarningMessage(warning, 'Show MCP Servers').then((c) => {
        if (c === 'Show MCP Servers') void vscode.commands.executeCommand('agentd.mcpServers');
      });
    }
  };

  const onState = (s: StateChange) => {
    const label: Record<string, string> = {
      starting: '$(loading~spin) agentd',
      running: '$(comment-discussion) agentd',
      restarting: '$(sync~spin) agentd',
      failed: '$(error) agentd',
      stopped: '$(circle-slash) agentd',
    };
    status.text = label[s.state] ?? 'agentd';
    status.tooltip = s.message ?? (s.state === 'running' ? describeDaemon(s.serverInfo, s.daemon) : `agentd: ${s.state}`);
    if (s.state === 'running') log.info(describeDaemon(s.serverInfo, s.daemon));
    status.backgroundColor = s.state === 'failed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    status.show();
    if (s.message) log.warn(s.message);
    if (s.stderrTail?.length && (s.state === 'restarting' || s.state === 'failed')) {
      log.warn(`last daemon output:\n${s.stderrTail.join('\n')}`);
    }
    // Visible notices for crashes: never a silent loop.
    if (s.state === 'restarting') {
      void vscode.window.showWarningMessage(s.message ?? 'agentd stopped; restarting.', 'Show Log').then((c) => {
        if (c === 'Show Log') log.show();
      });
    } else if (s.state === 'failed') {
      void vscode.window
        .showErrorMessage(s.message ?? 'agentd failed.', 'Restart', 'Show Log', 'Open Settings')
        .then((c) => {
          if (c === 'Restart') void vscode.commands.executeCommand('agentd.restart');
          if (c === 'Show Log') log.show();
          if (c === 'Open Settings') void vscode.commands.executeCommand('workbench.action.openSettings', 'agentd');
        });
    }
  };

  wire();
  context.subscriptions.push({ dispose: () => clientSubscriptions.forEach((d) => d.dispose()) });

  const start = () =>
    client.start().catch((e) => {
      log.error(`agentd did not start: ${describeError(e)}`);
    });

  /** Re-reads the settings; a change of path, model, env or dataDir restarts the daemon. */
  const applySettings = async () => {
    const next = readSettings();
    const restart = needsRestart(settings, next);
    settings = next;
    if (!restart) return;
    log.info(`settings changed (${describeSettings(settings)}): restarting agentd`);
    const wasRunning = client.state !== 'stopped';
    clientSubscriptions.forEach((d) => d.dispose());
    client = makeClient(settings);
    wire();
    if (wasRunning) {
      await start();
      void vscode.window.showInformationMessage('agentd restarted with the new settings.');
    }
  };

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration('agentd')) await applySettings();
    }),

    // Trusting the folder lifts Restricted Mode at once: the view drops its notice, the next
    // message offers every tool, and settings the folder sets (ignored until now) apply.
    vscode.workspace.onDidGrantWorkspaceTrust(async () => {
      view.post({ type: 'trust', trusted: true });
      await applySettings();
    }),

    vscode.commands.registerCommand('agentd.openChat', async () => {
      await view.reveal();
      void start();
    }),

    vscode.commands.registerCommand('agentd.newChat', async () => {
      await view.reveal();
      controller.newChat();
      view.post({ type: 'focusInput' });
    }),

    vscode.commands.registerCommand('agentd.abort', async () => {
      await controller.abort();
    }),

    // The view title bar's history button (and the palette): the session list in the view.
    vscode.commands.registerCommand('agentd.sessions', async () => {
      await view.reveal();
      view.post({ type: 'showSessions' });
    }),

    vscode.commands.registerCommand('agentd.sendSelection', async () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor || editor.selection.isEmpty) {
        void vscode.window.showInformationMessage('Select some code first.');
        return;
      }
      const doc = editor.document;
      const sel = editor.selection;
      const lines = selectionLineRange(sel.start, sel.end);
      // Up to the end of the last line that has something selected (not the next line's start).
      const code = doc.getText(new vscode.Range(sel.start, sel.end.character === 0 && sel.end.line > sel.start.line ? doc.lineAt(lines.last - 1).range.end : sel.end));
      const where = `${displayPath(doc.uri)}:${lines.first}-${lines.last}`;
      const question = await vscode.window.showInputBox({
        title: 'Send selection to agentd',
        prompt: `Ask about ${where} (Enter sends; leave empty to send the code alone)`,
        placeHolder: 'e.g. Explain this, or: Why does this throw?',
      });
      if (question === undefined) return; // Escape
      const fence = code.includes('```') ? '````' : '```';
      const text = `${question.trim() ? question.trim() + '\n\n' : ''}${where}\n${fence}${doc.languageId}\n${code}\n${fence}`;
      await view.reveal(true);
      await controller.send(text);
    }),

    // Fork, revert, unrevert, export: of the current chat. The message actions in the view pass
    // the message; from the palette it is picked from the chat's messages.
    vscode.commands.registerCommand('agentd.forkChat', async (messageId?: string) => {
      const sessionId = currentChatOrSay('fork');
      if (!sessionId) return;
      const picked = typeof messageId === 'string' ? messageId : await pickMessage(sessionId, 'agentd: fork the chat after which message?', true);
      if (picked === undefined) return;
      await view.reveal(true);
      await controller.history.fork(sessionId, picked || undefined);
    }),

    vscode.commands.registerCommand('agentd.revertToMessage', async (messageId?: string) => {
      const sessionId = currentChatOrSay('revert');
      if (!sessionId) return;
      const picked = typeof messageId === 'string' ? messageId : await pickMessage(sessionId, 'agentd: revert the chat to which message? (what came after it is undone)', false);
      if (!picked) return;
      await controller.history.revert(sessionId, picked);
    }),

    vscode.commands.registerCommand('agentd.unrevert', async () => {
      const sessionId = currentChatOrSay('unrevert');
      if (sessionId) await controller.history.unrevert(sessionId);
    }),

    vscode.commands.registerCommand('agentd.exportChat', async (format?: string) => {
      const sessionId = currentChatOrSay('export');
      if (!sessionId) return;
      let chosen = format;
      if (chosen !== 'markdown' && chosen !== 'json') {
        const pick = await vscode.window.showQuickPick(
          [
            { label: 'Markdown', description: 'a transcript to read', format: 'markdown' as const },
            { label: 'JSON', description: 'the versioned export that agentd import reads back', format: 'json' as const },
          ],
          { title: 'agentd: export the chat as' },
        );
        if (!pick) return;
        chosen = pick.format;
      }
      await controller.history.export(sessionId, chosen as 'markdown' | 'json');
    }),

    vscode.commands.registerCommand('agentd.restart', async () => {
      try {
        await client.restart();
        void vscode.window.showInformationMessage('agentd restarted.');
      } catch (e) {
        void vscode.window.showErrorMessage(`agentd did not restart: ${describeError(e)}`);
      }
    }),

    vscode.commands.registerCommand('agentd.showLog', () => log.show()),

    vscode.commands.registerCommand('agentd.mcpServers', async () => {
      await showMcpServers();
    }),
  );

  /** The current chat's id, or undefined after saying there is none. */
  function currentChatOrSay(what: string): string | undefined {
    const id = controller.sessionId;
    if (!id) void vscode.window.showInformationMessage(`agentd: no chat to ${what} yet: send a message first.`);
    return id;
  }

  /**
   * One of the chat's messages, newest first ('' for "the whole chat" when `whole`); undefined
   * when the pick is closed.
   */
  async function pickMessage(sessionId: string, title: string, whole: boolean): Promise<string | undefined> {
    let messages;
    try {
      messages = (await client.messages({ sessionId, limit: 200 })).messages;
    } catch (e) {
      void vscode.window.showErrorMessage(`agentd: could not read the chat: ${describeError(e)}`);
      return undefined;
    }
    type Item = vscode.QuickPickItem & { messageId: string };
    const items: Item[] = messages
      .slice()
      .reverse()
      .map((m) => {
        const part = (m.parts ?? []).find((p): p is TextPart => p.type === 'text' && !!p.text.trim());
        const text = part?.text ?? '';
        const first = text.trim().split('\n')[0] ?? '';
        return {
          label: `${m.role === 'user' ? 'You' : 'agentd'}: ${first.length > 80 ? first.slice(0, 79) + '…' : first}`,
          description: new Date(m.time.created).toLocaleTimeString(),
          messageId: m.id,
        };
      });
    if (whole) items.unshift({ label: 'The whole chat', messageId: '' });
    const pick = await vscode.window.showQuickPick(items, { title, matchOnDescription: true });
    return pick?.messageId;
  }

  /** `mcp/list` with `connect: true` (the current chat's own servers too), then a quick pick. */
  async function showMcpServers(): Promise<void> {
    const sessionId = controller.sessionId;
    let servers: McpServerInfo[];
    let cancelled = false;
    try {
      servers = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'agentd: connecting MCP servers…', cancellable: true },
        async (_progress, token) => {
          token.onCancellationRequested(() => (cancelled = true));
          try {
            return (await client.listMcpServers({ ...(sessionId ? { sessionId } : {}), connect: true }, token)).servers;
          } catch (e) {
            // The current chat was deleted elsewhere: the configured servers are still worth showing.
            if (!(sessionId && e instanceof AgentdError && e.code === ErrorCodes.SessionNotFound)) throw e;
            return (await client.listMcpServers({ connect: true }, token)).servers;
          }
        },
      );
    } catch (e) {
      if (cancelled || isCancelled(e)) return;
      log.error(`mcp/list failed: ${describeError(e)}`);
      void vscode.window.showErrorMessage(`agentd: could not list MCP servers: ${describeError(e)}`);
      return;
    }
    if (servers.length === 0) {
      void vscode.window.showInformationMessage(
        "agentd: no MCP servers are configured. Add [mcp_servers.<name>] tables to agentd's config file (the file AGENTD_CONFIG names, else agentd/config.toml in the user config directory).",
      );
      return;
    }
    const qp = vscode.window.createQuickPick<McpServerItem>();
    qp.title = 'agentd: MCP servers';
    qp.placeholder = 'Select a server to see its tools';
    qp.matchOnDescription = true;
    qp.items = mcpServerItems(servers);
    qp.onDidAccept(() => {
      const item = qp.selectedItems[0];
      if (!item) return;
      qp.hide();
      showMcpTools(item.server);
    });
    qp.onDidHide(() => qp.dispose());
    qp.show();
  }

  function showMcpTools(server: McpServerInfo): void {
    const qp = vscode.window.createQuickPick<McpToolItem | (vscode.QuickPickItem & { tool?: undefined })>();
    const items = mcpToolItems(server);
    qp.title = `agentd: MCP server ${server.name} (${server.state})`;
    qp.placeholder = items.length ? 'The names the model calls' : 'No tools';
    qp.matchOnDescription = true;
    qp.matchOnDetail = true;
    qp.items = items.length ? items : [{ label: 'No tools', detail: server.error ?? (server.state === 'stopped' ? 'not started' : undefined) }];
    qp.onDidAccept(() => qp.hide());
    qp.onDidHide(() => qp.dispose());
    qp.show();
  }

  status.text = '$(comment-discussion) agentd';
  status.tooltip = 'agentd: not started';
  status.show();
}

let currentClient: (() => AgentdClient) | undefined;

/** VS Code waits for this: the daemon gets `shutdown` and `exit`, so its runs are persisted. */
export async function deactivate(): Promise<void> {
  await currentClient?.().stop();
}
