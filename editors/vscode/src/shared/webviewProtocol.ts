// Messages between the extension host and the chat webview (window.postMessage both ways).
// The webview renders agentd's own notifications, forwarded unchanged, so that a recorded
// stream of real notifications can drive it in tests exactly as the daemon does in VS Code.
import type { AgentdNotification, Message, Session } from '../protocol';

export type DaemonState = 'stopped' | 'starting' | 'running' | 'restarting' | 'failed';

export type HostToView =
  /** A daemon notification, unchanged. */
  | { type: 'notification'; notification: AgentdNotification }
  /** Show this session (or a fresh, not yet created chat when `session` is undefined). */
  | { type: 'history'; session?: Session; messages: Message[]; hasMore?: boolean }
  /** The first send of a fresh chat created this session: adopt it without clearing the view. */
  | { type: 'sessionStarted'; session: Session }
  /** The authoritative assistant message of a finished `session/chat`. */
  | { type: 'chatResult'; sessionId: string; message: Message }
  /** A request the view made failed (JSON-RPC error): shown plainly in the conversation. */
  | { type: 'error'; sessionId?: string; message: string; code?: number }
  /** A page of `session/list`. `append` adds to the list (paging) instead of replacing it. */
  | { type: 'sessions'; sessions: Session[]; nextCursor?: string; query: string; append: boolean }
  | { type: 'sessionDeleted'; sessionId: string }
  | { type: 'daemon'; state: DaemonState; message?: string }
  /** Workspace trust: untrusted is Restricted Mode (chat and read-only tools only). */
  | { type: 'trust'; trusted: boolean }
  /** The user is sending through the host (e.g. agentd.sendSelection): show it as pending. */
  | { type: 'sending'; sessionId?: string; text: string }
  /** Shows or hides the session list (`visible` undefined toggles it): the view title bar's button. */
  | { type: 'showSessions'; visible?: boolean }
  | { type: 'focusInput'; text?: string }
  /** The user's home directory, to show paths under it with `~` (instruction files). */
  | { type: 'home'; path: string };

export type ViewToHost =
  | { type: 'ready'; sessionId?: string }
  | { type: 'send'; text: string; sessionId?: string }
  | { type: 'abort'; sessionId?: string }
  | { type: 'newChat' }
  | { type: 'openSession'; sessionId: string }
  | { type: 'listSessions'; query: string; cursor?: string }
  | { type: 'renameSession'; sessionId: string; title: string }
  | { type: 'deleteSession'; sessionId: string; title?: string }
  | { type: 'copy'; text: string }
  | { type: 'insert'; text: string }
  | { type: 'openFile'; path: string }
  /** A message's actions: fork the chat after it, revert the chat to it. */
  | { type: 'fork'; sessionId: string; messageId: string }
  | { type: 'revert'; sessionId: string; messageId: string }
  /** The Restricted Mode notice's link: VS Code's workspace trust editor. */
  | { type: 'manageTrust' };

/** What the webview keeps with `vscode.setState` so a reload lands on the same chat. */
export interface ViewPersistedState {
  sessionId?: string;
  draft?: string;
}
