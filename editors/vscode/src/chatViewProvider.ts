// The side-bar webview view that hosts the chat page.
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { renderWebviewHtml } from './shared/webviewHtml';
import type { HostToView, ViewToHost } from './shared/webviewProtocol';

export class ChatViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewId = 'agentd.chatView';

  private view: vscode.WebviewView | undefined;
  private ready = false;
  private queue: HostToView[] = [];
  private readonly received = new vscode.EventEmitter<ViewToHost>();
  /** Messages from the page. */
  readonly onMessage = this.received.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly extensionUri: vscode.Uri) {}

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    this.ready = false;
    const media = vscode.Uri.joinPath(this.extensionUri, 'media');
    const dist = vscode.Uri.joinPath(this.extensionUri, 'dist');
    view.webview.options = { enableScripts: true, localResourceRoots: [media, dist] };
    view.webview.html = renderWebviewHtml({
      cspSource: view.webview.cspSource,
      nonce: randomBytes(18).toString('base64url'),
      scriptUri: view.webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
      styleUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, 'webview.css')).toString(),
    });
    this.disposables.push(
      view.webview.onDidReceiveMessage((msg: ViewToHost) => {
        if (msg?.type === 'ready') {
          this.ready = true;
          const pending = this.queue;
          this.queue = [];
          this.received.fire(msg);
          for (const m of pending) void view.webview.postMessage(m);
          return;
        }
        this.received.fire(msg);
      }),
      view.onDidDispose(() => {
        if (this.view === view) {
          this.view = undefined;
          this.ready = false;
        }
      }),
    );
  }

  get visible(): boolean {
    return !!this.view?.visible;
  }

  /** Posts to the page, holding messages until it has loaded (and dropping them if there is no view). */
  post(msg: HostToView): void {
    if (!this.view) return;
    if (!this.ready) {
      // Only what still matters once the page loads: it asks for its state on `ready`.
      if (msg.type !== 'notification') this.queue.push(msg);
      return;
    }
    void this.view.webview.postMessage(msg);
  }

  /** Reveals the view (opening the side bar container if needed). */
  async reveal(preserveFocus = false): Promise<void> {
    if (this.view) {
      this.view.show(preserveFocus);
      return;
    }
    await vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`);
  }

  dispose(): void {
    this.received.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
