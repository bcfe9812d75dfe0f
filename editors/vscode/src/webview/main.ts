// The chat view. Runs in a VS Code webview, or in any browser page that provides
// `acquireVsCodeApi` (the tests do). It renders agentd's notifications as they arrive:
// part/updated inserts or replaces a part's element, part/delta appends to the part's text and
// schedules one markdown render of that part per animation frame.
import type { CommandSandbox, Message, Part, Session, ToolPart } from '../protocol';
import { ChatState, type Change } from '../shared/chatState';
import { sandboxLabel, sandboxSentence } from '../shared/sandbox';
import type { HostToView, ViewPersistedState, ViewToHost } from '../shared/webviewProtocol';
import { describeUsage } from '../shared/usage';
import { finishReasonLabel, formatDuration, formatRelativeTime } from './format';
import { renderMarkdownToHtml } from './markdown';

interface VsCodeApi {
  postMessage(msg: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const post = (msg: ViewToHost) => vscode.postMessage(msg);
const persisted = (vscode.getState() as ViewPersistedState | undefined) ?? {};

// --- icons (static, trusted markup) ----------------------------------------------------------
const svg = (body: string) =>
  `<svg width="16" height="16" viewBox="0 0 16 16" fill="currentColor" aria-hidden="true">${body}</svg>`;
const ICON = {
  send: svg('<path d="M1.7 1.3 15 8 1.7 14.7l1.6-5.9L10 8 3.3 7.2 1.7 1.3z"/>'),
  stop: svg('<rect x="3" y="3" width="10" height="10" rx="1.5"/>'),
  edit: svg('<path d="M13.2 1.8a1.6 1.6 0 0 1 2.3 2.3L5.7 13.9 2 15l1.1-3.7zM3.9 12.1l-.5 1.5 1.5-.5 8-8-1-1z"/>'),
  trash: svg('<path d="M6 1h4l.5 1H14v1H2V2h3.5zM3 4h10l-.8 10.2a1 1 0 0 1-1 .8H4.8a1 1 0 0 1-1-.8zm3 2v7h1V6zm3 0v7h1V6z"/>'),
  copy: svg('<path d="M4 4V1.5h10.5V12H12V4.5zm-2.5 1.5H11V15H1.5zm1 1v7.5H10V6.5z"/>'),
  insert: svg('<path d="M2 3h12v1H2zm0 3h7v1H2zm0 3h7v1H2zm0 3h12v1H2zm9-5.5 3 2-3 2z"/>'),
  tool: svg('<path d="M14.7 4.3 12.4 6.6 9.4 3.6 11.7 1.3A4 4 0 0 0 6.6 6.4L1.3 11.7a1.4 1.4 0 0 0 2 2l5.3-5.3a4 4 0 0 0 6.1-4.1z"/>'),
  check: svg('<path d="M6 11.6 2.4 8l-.7.7L6 13 14.3 4.7l-.7-.7z"/>'),
  error: svg('<path d="M8 1a7 7 0 1 0 0 14A7 7 0 0 0 8 1zm3.1 9.4-.7.7L8 8.7l-2.4 2.4-.7-.7L7.3 8 4.9 5.6l.7-.7L8 7.3l2.4-2.4.7.7L8.7 8z"/>'),
  clock: svg('<path d="M8 1a7 7 0 1 0 0 14A7 7 0 0 0 8 1zm0 1a6 6 0 1 1 0 12A6 6 0 0 1 8 2zm-.5 2h1v3.8l2.6 1.5-.5.9-3.1-1.8z"/>'),
  spinner: '<span class="spinner" aria-hidden="true"></span>',
  file: svg('<path d="M3 1h6.7L13 4.3V15H3zm1 1v12h8V5H9V2zm6 .7V4h1.3z"/>'),
  close: svg('<path d="M8 7.3 12.6 2.7l.7.7L8.7 8l4.6 4.6-.7.7L8 8.7l-4.6 4.6-.7-.7L7.3 8 2.7 3.4l.7-.7z"/>'),
  fork: svg('<path d="M5 1.5a2 2 0 0 1 .5 3.9v.9c0 .9.7 1.6 1.6 1.6h1.8c1.4 0 2.6.8 3.1 2v.2a2 2 0 1 1-1 0 2.4 2.4 0 0 0-2.1-1.2H7.1c-.6 0-1.2-.2-1.6-.5v2.2a2 2 0 1 1-1 0V5.4A2 2 0 0 1 5 1.5zm0 1a1 1 0 1 0 0 2 1 1 0 0 0 0-2zm0 9a1 1 0 1 0 0 2 1 1 0 0 0 0-2zm6.5 0a1 1 0 1 0 0 2 1 1 0 0 0 0-2z"/>'),
  revert: svg('<path d="M3 2v4.5h4.5v-1H4.6A5 5 0 1 1 3.5 10l-.9.4A6 6 0 1 0 4 4.6V2z"/>'),
  search: svg('<path d="M10.5 1a4.5 4.5 0 1 1-2.9 8l-5 5-.7-.7 5-5A4.5 4.5 0 0 1 10.5 1zm0 1a3.5 3.5 0 1 0 0 7 3.5 3.5 0 0 0 0-7z"/>'),
};

// --- DOM helper ----------------------------------------------------------------------------------
type Attrs = Record<string, string | boolean | undefined | ((e: Event) => void)>;
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k === 'html') el.innerHTML = String(v); // only ever given static icon markup
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}
function iconButton(icon: string, label: string, onclick: (e: Event) => void, cls = ''): HTMLButtonElement {
  const b = h('button', { class: `icon-button ${cls}`.trim(), title: label, 'aria-label': label, type: 'button', onclick });
  b.innerHTML = icon;
  return b;
}

// --- page skeleton -------------------------------------------------------------------------------
const app = document.getElementById('app')!;
const titleEl = h('div', { class: 'title', id: 'chat-title' }, 'New chat');
// New Chat and Show Sessions are VS Code's own buttons in the view's title bar (package.json,
// view/title); the page's header only names the chat.
const header = h('header', { class: 'toolbar' }, titleEl);
const banner = h('div', { class: 'banner', id: 'daemon-banner', role: 'status', hidden: true });
const trustLink = h('button', { class: 'link-button', type: 'button', onclick: () => post({ type: 'manageTrust' }) }, 'Trust this folder…');
const restrictedNotice = h(
  'div',
  { class: 'notice restricted', id: 'restricted-notice', role: 'note', hidden: true },
  h('strong', {}, 'Restricted Mode'),
  ': agentd chats and reads this folder but changes nothing — no file edits, no commands, no MCP servers. ',
  trustLink,
);

const searchInput = h('input', {
  id: 'session-search',
  type: 'search',
  placeholder: 'Search sessions',
  'aria-label': 'Search sessions',
});
const sessionList = h('ul', { id: 'session-list', class: 'session-list', role: 'list' });
const sessionsEmpty = h('div', { class: 'sessions-empty', hidden: true }, 'No sessions');
const moreButton = h('button', { id: 'sessions-more', class: 'text-button', type: 'button', hidden: true }, 'Load more');
const sessionsPanel = h(
  'section',
  { id: 'sessions-panel', class: 'sessions-panel', hidden: true, 'aria-label': 'Sessions' },
  h('div', { class: 'search-row' }, searchInput),
  sessionList,
  sessionsEmpty,
  moreButton,
);

const messagesEl = h('main', { id: 'messages', class: 'messages', role: 'log', 'aria-live': 'polite' });
const emptyEl = h(
  'div',
  { class: 'empty-state', id: 'empty-state' },
  h('div', { class: 'empty-title' }, 'Ask agentd'),
  h('div', { class: 'empty-hint' }, 'Enter to send, Shift+Enter for a new line. Select code and use “Send Selection to agentd” from the editor’s context menu.'),
);
messagesEl.append(emptyEl);

const statusText = h('span', { class: 'status-text' });
const stopButton = h('button', { id: 'stop', class: 'stop-button', type: 'button', title: 'Stop (Escape)', hidden: true, onclick: () => abort() });
stopButton.innerHTML = ICON.stop + '<span>Stop</span>';
// Stop sits on the status line above the input, not beside it: the input keeps its width (and
// its placeholder its one line) while a turn runs.
const statusLine = h('div', { class: 'turn-status', id: 'turn-status', hidden: true }, statusText, stopButton);
const input = h('textarea', {
  id: 'input',
  rows: '1',
  placeholder: 'Ask agentd…',
  title: 'Enter to send, Shift+Enter for a new line',
  'aria-label': 'Message (Enter to send, Shift+Enter for a new line)',
});
const sendButton = iconButton(ICON.send, 'Send (Enter)', () => send(), 'send');
sendButton.id = 'send';
const composer = h('footer', { class: 'composer' }, statusLine, h('div', { class: 'input-row' }, input, sendButton));

app.append(header, banner, restrictedNotice, sessionsPanel, messagesEl, composer);

// --- state -------------------------------------------------------------------------------------
let chat = new ChatState(persisted.sessionId);
let busy = false; // the current session is running a turn (session/status)
let pendingSends: string[] = []; // sent, not yet seen as a user message
let statusInfo: { status: string; message?: string; attempt?: number; nextRetryAt?: number } = { status: 'idle' };
let sessions: Session[] = [];
let sessionsCursor: string | undefined;
let sessionsQuery = '';
let renamingId: string | undefined;
let home: string | undefined; // the user's home directory (from the host), for ~ in paths
/**
 * The newest `session/updated` of each session. A list answers a request made earlier and can
 * reach the page after an update that happened since (the host posts notifications as they
 * arrive, answers when their promise settles): the newer of the two is shown.
 */
const updatedSessions = new Map<string, Session>();
const fresher = (s: Session): Session => {
  const u = updatedSessions.get(s.id);
  return u && (u.time?.updated ?? 0) >= (s.time?.updated ?? 0) ? u : s;
};

interface MessageView {
  root: HTMLElement;
  instructions: HTMLElement;
  parts: HTMLElement;
  error: HTMLElement;
  meta: HTMLElement;
}
const messageViews = new Map<string, MessageView>();
const partViews = new Map<string, HTMLElement>();
const dirtyParts = new Map<string, string>(); // partId -> messageId
let frameRequested = false;
const errorBlocks: HTMLElement[] = [];
const pendingEls: HTMLElement[] = [];

if (persisted.draft) input.value = persisted.draft;
autosize();

// --- rendering -----------------------------------------------------------------------------------
function persist(): void {
  vscode.setState({ sessionId: chat.sessionId, draft: input.value } satisfies ViewPersistedState);
}

function nearBottom(): boolean {
  return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 48;
}
function scrollToBottom(): void {
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

function resetConversation(): void {
  for (const v of messageViews.values()) v.root.remove();
  messageViews.clear();
  partViews.clear();
  dirtyParts.clear();
  for (const e of errorBlocks.splice(0)) e.remove();
  for (const e of pendingEls.splice(0)) e.remove();
  pendingSends = [];
}

function updateHeader(): void {
  const title = chat.session?.title?.trim();
  titleEl.textContent = title || (chat.sessionId ? 'Chat' : 'New chat');
  titleEl.title = titleEl.textContent;
}

function updateEmpty(): void {
  emptyEl.hidden = messageViews.size > 0 || pendingEls.length > 0 || errorBlocks.length > 0;
}

function updateBusy(): void {
  const running = busy || pendingSends.length > 0;
  stopButton.hidden = !running;
  document.body.classList.toggle('busy', running);
  statusText.textContent = '';
  if (statusInfo.status === 'retry') {
    const when = statusInfo.nextRetryAt ? ` in ${Math.max(0, Math.round((statusInfo.nextRetryAt - Date.now()) / 1000))} s` : '';
    statusText.append(
      h('span', { class: 'status-retry' }, `Retrying${statusInfo.attempt ? ` (attempt ${statusInfo.attempt})` : ''}${when}${statusInfo.message ? `: ${statusInfo.message}` : ''}`),
    );
    statusLine.hidden = false;
  } else if (running) {
    statusText.innerHTML = ICON.spinner;
    statusText.append(h('span', {}, busy ? 'Working…' : 'Sending…'));
    statusLine.hidden = false;
  } else {
    statusLine.hidden = true;
  }
}

function ensureMessageView(messageId: string): MessageView {
  let v = messageViews.get(messageId);
  if (v) return v;
  const parts = h('div', { class: 'parts' });
  const error = h('div', { class: 'message-error', role: 'alert', hidden: true });
  const meta = h('div', { class: 'message-meta', hidden: true });
  const instructions = h('details', { class: 'instructions', hidden: true });
  // Fork after this message, or revert the chat to it (the host asks first).
  const actions = h(
    'span',
    { class: 'message-actions' },
    iconButton(ICON.fork, 'Fork the chat after this message', () => {
      if (chat.sessionId) post({ type: 'fork', sessionId: chat.sessionId, messageId });
    }, 'message-fork'),
    iconButton(ICON.revert, 'Revert the chat to this message (undo what came after it)', () => {
      if (chat.sessionId) post({ type: 'revert', sessionId: chat.sessionId, messageId });
    }, 'message-revert'),
  );
  const root = h(
    'article',
    { class: 'message', 'data-message-id': messageId },
    h('div', { class: 'message-head' }, h('div', { class: 'role' }), actions),
    instructions,
    parts,
    error,
    meta,
  );
  v = { root, instructions, parts, error, meta };
  messageViews.set(messageId, v);
  // Keep DOM order equal to the state's order (ids sort by creation time).
  const order = chat.messages.map((m) => m.info.id);
  const idx = order.indexOf(messageId);
  let before: Node | null = pendingEls[0] ?? errorBlocks.find((e) => e.isConnected && e.dataset.after === undefined) ?? null;
  for (let i = idx + 1; i < order.length; i++) {
    const next = messageViews.get(order[i]);
    if (next) {
      before = next.root;
      break;
    }
  }
  messagesEl.insertBefore(root, before && before.parentNode === messagesEl ? before : null);
  updateEmpty();
  return v;
}

function renderMessageInfo(messageId: string): void {
  const m = chat.message(messageId);
  if (!m) return;
  const v = ensureMessageView(messageId);
  const info = m.info as Message;
  const role = info.role;
  v.root.className = `message ${role}`;
  const roleEl = v.root.querySelector('.role') as HTMLElement;
  roleEl.textContent = role === 'user' ? 'You' : 'agentd';
  if (info.summary) roleEl.textContent += ' · summary';
  renderInstructions(v.instructions, info);

  // Plain errors: the name and what happened.
  if (info.error) {
    v.error.hidden = false;
    v.error.textContent = '';
    v.error.append(
      h('span', { class: 'error-icon', html: ICON.error }),
      h('span', { class: 'error-text' }, h('strong', {}, info.error.name || 'Error'), `: ${info.error.message ?? ''}`),
    );
  } else {
    v.error.hidden = true;
  }

  // Usage and cost once the turn is complete.
  if (role === 'assistant' && info.time?.completed) {
    const usage = describeUsage(info, m.parts);
    const bits: string[] = [usage.text];
    if (info.time.created && info.time.completed) bits.push(formatDuration(info.time.completed - info.time.created));
    if (info.model) bits.push(info.model);
    const reason = info.finishReason ? finishReasonLabel[info.finishReason] ?? info.finishReason : '';
    v.meta.textContent = '';
    if (reason) v.meta.append(h('span', { class: `finish finish-${info.finishReason}` }, reason));
    v.meta.append(h('span', { class: `usage${usage.unknownSteps ? ' usage-unknown' : ''}`, title: usage.title }, bits.filter(Boolean).join(' · ')));
    v.meta.hidden = false;
  } else {
    v.meta.hidden = true;
  }
}

/** "300 B", "1.2 kB", "3.4 MB". */
function sizeText(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** An instruction file's path: relative to the chat's workspace when inside it, else with ~. */
function shortPath(p: string): string {
  const root = chat.session?.workspaceRoot;
  if (root && p.startsWith(root.replace(/\/$/, '') + '/')) return p.slice(root.replace(/\/$/, '').length + 1);
  if (home && p.startsWith(home.replace(/\/$/, '') + '/')) return '~' + p.slice(home.replace(/\/$/, '').length);
  return p;
}

/** The instruction files the run sent the model: one collapsed line, each file openable. */
function renderInstructions(el: HTMLElement, info: Message): void {
  const files = info.role === 'assistant' ? info.instructions ?? [] : [];
  el.hidden = files.length === 0;
  if (!files.length) return;
  const label = (f: { path: string; size: number; sent: number }) =>
    `${shortPath(f.path)} (${sizeText(f.size)}${f.sent < f.size ? `, ${sizeText(f.sent)} sent` : ''})`;
  const open = el.hasAttribute('open');
  el.textContent = '';
  el.append(
    h('summary', { class: 'instructions-summary', title: 'The instruction files this answer was given' }, `Instructions: ${files.map(label).join(', ')}`),
    h(
      'ul',
      { class: 'instructions-files' },
      ...files.map((f) =>
        h('li', {}, h('a', { href: '#', class: 'instructions-file', title: f.path, onclick: (e) => { e.preventDefault(); post({ type: 'openFile', path: f.path }); } }, label(f))),
      ),
    ),
  );
  if (open) el.setAttribute('open', '');
}

function renderPart(messageId: string, partId: string): void {
  const part = chat.part(messageId, partId);
  if (!part) return;
  const v = ensureMessageView(messageId);
  let el = partViews.get(partId);
  const fresh = !el || el.dataset.type !== part.type;
  if (fresh) {
    const created = createPartElement(part);
    if (!created) return;
    if (el) el.replaceWith(created);
    else {
      // Insert in the state's part order.
      const parts = chat.message(messageId)!.parts;
      const idx = parts.findIndex((p) => p.id === partId);
      let before: Node | null = null;
      for (let i = idx + 1; i < parts.length; i++) {
        const n = partViews.get(parts[i].id);
        if (n) {
          before = n;
          break;
        }
      }
      v.parts.insertBefore(created, before);
    }
    el = created;
    partViews.set(partId, el);
  }
  updatePartElement(el!, part);
}

function createPartElement(part: Part): HTMLElement | undefined {
  switch (part.type) {
    case 'text':
      return h('div', { class: 'part text markdown', 'data-part-id': part.id, 'data-type': part.type });
    case 'reasoning': {
      const d = h('details', { class: 'part reasoning', 'data-part-id': part.id, 'data-type': part.type });
      d.append(h('summary', {}, h('span', { class: 'reasoning-label' }, 'Reasoning')), h('div', { class: 'reasoning-body markdown' }));
      return d;
    }
    case 'tool': {
      const d = h('details', { class: 'part tool-card', 'data-part-id': part.id, 'data-type': part.type });
      const summary = h(
        'summary',
        {},
        h('span', { class: 'tool-status-icon' }),
        h('span', { class: 'tool-name' }),
        h('span', { class: 'tool-title' }),
        h('span', { class: 'tool-sandbox' }),
        h('span', { class: 'tool-badge' }),
      );
      d.append(summary, h('div', { class: 'tool-body' }));
      return d;
    }
    case 'file':
      return h('div', { class: 'part file-chip', 'data-part-id': part.id, 'data-type': part.type });
    case 'compaction':
      return h('div', { class: 'part compaction', 'data-part-id': part.id, 'data-type': part.type });
    default:
      // step-start / step-finish carry no text of their own: the message shows the turn's totals.
      return h('span', { class: 'part hidden-part', hidden: true, 'data-part-id': part.id, 'data-type': part.type });
  }
}

function updatePartElement(el: HTMLElement, part: Part): void {
  switch (part.type) {
    case 'text':
      renderMarkdownInto(el, part.text ?? '');
      break;
    case 'reasoning': {
      const body = el.querySelector('.reasoning-body') as HTMLElement;
      renderMarkdownInto(body, part.text ?? '');
      const label = el.querySelector('.reasoning-label') as HTMLElement;
      const t = part.time;
      label.textContent = t?.end ? `Reasoning (${formatDuration(Math.max(0, t.end - t.start))})` : 'Reasoning…';
      break;
    }
    case 'tool':
      updateToolCard(el as HTMLDetailsElement, part as ToolPart);
      break;
    case 'file':
      el.innerHTML = ICON.file;
      el.append(h('a', { href: '#', title: part.path, onclick: (e) => { e.preventDefault(); post({ type: 'openFile', path: part.path }); } }, part.path));
      break;
    case 'compaction':
      el.textContent = part.auto ? 'Earlier conversation was summarised automatically' : 'Earlier conversation was summarised';
      break;
  }
}

/** An MCP server's progress for a running call (`metadata.progress`): " 3/5", " 3", or "". */
function progressText(metadata: unknown): string {
  const progress = (metadata as { progress?: { progress?: unknown; total?: unknown } } | null | undefined)?.progress;
  if (!progress || typeof progress.progress !== 'number') return '';
  return typeof progress.total === 'number' ? ` ${progress.progress}/${progress.total}` : ` ${progress.progress}`;
}

const STATUS_LABEL: Record<string, string> = { pending: 'Pending', running: 'Running', completed: 'Completed', error: 'Error' };
const STATUS_ICON: Record<string, string> = { pending: ICON.clock, running: ICON.spinner, completed: ICON.check, error: ICON.error };

function updateToolCard(el: HTMLDetailsElement, part: ToolPart): void {
  const state = part.state as ToolPart['state'] & Record<string, unknown>;
  const status = String(state.status);
  el.className = `part tool-card status-${status}`;
  el.dataset.status = status;
  (el.querySelector('.tool-status-icon') as HTMLElement).innerHTML = STATUS_ICON[status] ?? ICON.tool;
  (el.querySelector('.tool-name') as HTMLElement).textContent = part.tool;
  const given = typeof state.title === 'string' && state.title !== part.tool ? state.title : '';
  const title = given || summarizeInput(state.input);
  (el.querySelector('.tool-title') as HTMLElement).textContent = title;
  const badge = el.querySelector('.tool-badge') as HTMLElement;
  badge.textContent = (STATUS_LABEL[status] ?? status) + (status === 'running' ? progressText(state.metadata) : '');
  badge.className = `tool-badge badge-${status}`;
  // A command's sandbox: which mode it ran in (or "unconfined"), the sentence on hover.
  const sandbox = state.sandbox as CommandSandbox | undefined;
  const chip = el.querySelector('.tool-sandbox') as HTMLElement;
  chip.textContent = sandboxLabel(sandbox);
  chip.title = sandboxSentence(sandbox);
  chip.hidden = !chip.textContent;
  chip.className = `tool-sandbox${sandbox && (sandbox.mode === 'full-access' || sandbox.fallback) ? ' unconfined' : ''}`;

  const body = el.querySelector('.tool-body') as HTMLElement;
  body.textContent = '';
  body.append(h('div', { class: 'tool-section-label' }, 'Input'), h('pre', { class: 'tool-input' }, prettyJson(state.input)));
  if (status === 'completed') {
    const time = state.time as { start: number; end: number } | undefined;
    body.append(
      h('div', { class: 'tool-section-label' }, 'Output', time ? h('span', { class: 'tool-time' }, ` · ${formatDuration(Math.max(0, time.end - time.start))}`) : null),
      h('pre', { class: 'tool-output' }, prettyOutput(String(state.output ?? ''))),
    );
  } else if (status === 'error') {
    body.append(h('div', { class: 'tool-section-label' }, 'Error'), h('pre', { class: 'tool-output tool-error' }, String(state.error ?? '')));
  }
}

function summarizeInput(input: unknown): string {
  if (input && typeof input === 'object') {
    const o = input as Record<string, unknown>;
    for (const k of ['path', 'pattern', 'command', 'query', 'name', 'url']) if (typeof o[k] === 'string') return o[k] as string;
  }
  return '';
}

/** Tool output as the model got it, except that JSON is indented for reading. */
function prettyOutput(s: string): string {
  if (!/^\s*[[{]/.test(s) || s.length > 200_000) return s;
  try {
    return JSON.stringify(JSON.parse(s), null, 2);
  } catch {
    return s;
  }
}

function prettyJson(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

function renderMarkdownInto(el: HTMLElement, text: string): void {
  el.innerHTML = renderMarkdownToHtml(text);
  decorateCodeBlocks(el);
}

function decorateCodeBlocks(root: HTMLElement): void {
  for (const pre of Array.from(root.querySelectorAll('pre'))) {
    if (pre.parentElement?.classList.contains('code-block')) continue;
    const code = pre.querySelector('code');
    const lang = /language-([\w+#.-]+)/.exec(code?.className ?? '')?.[1] ?? '';
    const wrapper = h('div', { class: 'code-block' });
    // A fence's content ends with the newline before the closing fence; that is not code.
    const codeText = () => (code?.textContent ?? pre.textContent ?? '').replace(/\n$/, '');
    const copy = iconButton(ICON.copy, 'Copy', () => {
      post({ type: 'copy', text: codeText() });
      flash(copy, 'Copied');
    }, 'code-copy');
    const insert = iconButton(ICON.insert, 'Insert at cursor', () => {
      post({ type: 'insert', text: codeText() });
      flash(insert, 'Inserted');
    }, 'code-insert');
    const toolbar = h('div', { class: 'code-toolbar' }, h('span', { class: 'code-lang' }, lang), copy, insert);
    pre.replaceWith(wrapper);
    wrapper.append(toolbar, pre);
  }
}

function flash(button: HTMLElement, text: string): void {
  button.classList.add('flash');
  button.setAttribute('data-flash', text);
  setTimeout(() => {
    button.classList.remove('flash');
    button.removeAttribute('data-flash');
  }, 1200);
}

function scheduleFlush(): void {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(flush);
}

function flush(): void {
  frameRequested = false;
  const stick = nearBottom();
  for (const [partId, messageId] of dirtyParts) {
    const el = partViews.get(partId);
    const part = chat.part(messageId, partId);
    if (el && part) updatePartElement(el, part);
  }
  dirtyParts.clear();
  if (stick) scrollToBottom();
}

function applyChanges(changes: Change[]): void {
  const stick = nearBottom();
  for (const c of changes) {
    switch (c.kind) {
      case 'message':
        renderMessageInfo(c.messageId);
        break;
      case 'part': {
        dirtyParts.delete(c.partId);
        renderPart(c.messageId, c.partId);
        const msg = chat.message(c.messageId);
        if (c.created && msg?.info.role === 'user') settlePending(chat.part(c.messageId, c.partId));
        break;
      }
      case 'delta':
        if (!partViews.has(c.partId)) renderPart(c.messageId, c.partId);
        dirtyParts.set(c.partId, c.messageId);
        scheduleFlush();
        break;
      case 'status':
        statusInfo = { status: c.status, message: c.message, attempt: c.attempt, nextRetryAt: c.nextRetryAt };
        busy = c.status !== 'idle';
        if (!busy) clearPending();
        updateBusy();
        break;
      case 'session':
        updateHeader();
        break;
      case 'error':
        // A failed run's `session/error` repeats its message's error (sent just before it),
        // which the message already shows.
        if (!chat.messages.some((m) => c.runId && m.info.runId === c.runId && m.info.error)) showError(`${c.error.name}: ${c.error.message}`);
        break;
    }
  }
  updateEmpty();
  if (stick) scrollToBottom();
}

function settlePending(part: Part | undefined): void {
  if (!pendingSends.length) return;
  const text = part && part.type === 'text' ? part.text : undefined;
  let i = text !== undefined ? pendingSends.indexOf(text) : -1;
  if (i < 0) i = 0;
  pendingSends.splice(i, 1);
  pendingEls.splice(i, 1)[0]?.remove();
  updateBusy();
}

function clearPending(): void {
  pendingSends = [];
  for (const e of pendingEls.splice(0)) e.remove();
}

function showError(text: string): void {
  const block = h('div', { class: 'error-block', role: 'alert' }, h('span', { class: 'error-icon', html: ICON.error }), h('span', {}, text));
  messagesEl.append(block);
  errorBlocks.push(block);
  updateEmpty();
  scrollToBottom();
}

function showPendingUserMessage(text: string): void {
  const el = h(
    'article',
    { class: 'message user pending' },
    h('div', { class: 'role' }, 'You', h('span', { class: 'pending-label' }, busy ? ' · queued' : ' · sending')),
    h('div', { class: 'parts' }, h('div', { class: 'part text plain' }, text)),
  );
  messagesEl.append(el);
  pendingEls.push(el);
  updateEmpty();
  scrollToBottom();
}

function showConversation(session: Session | undefined, messages: Message[]): void {
  resetConversation();
  chat = new ChatState(session?.id);
  chat.session = session;
  chat.status = session?.status ?? 'idle';
  // A run may be going on (this window's before a reload, or another window's): the page shows it
  // as its own, Stop included, and what it streams next arrives as notifications.
  busy = session ? session.status !== 'idle' : false;
  statusInfo = { status: session?.status ?? 'idle' };
  chat.load(messages);
  for (const m of chat.messages) {
    renderMessageInfo(m.info.id);
    for (const p of m.parts) renderPart(m.info.id, p.id);
  }
  updateHeader();
  updateBusy();
  updateEmpty();
  persist();
  scrollToBottom();
  markActiveSession();
}

// --- sending, stopping ------------------------------------------------------------------------
function send(): void {
  const text = input.value.trim();
  if (!text) return;
  post({ type: 'send', text, sessionId: chat.sessionId });
  pendingSends.push(text);
  showPendingUserMessage(text);
  input.value = '';
  autosize();
  persist();
  updateBusy();
}

function abort(): void {
  post({ type: 'abort', sessionId: chat.sessionId });
  stopButton.disabled = true;
  setTimeout(() => (stopButton.disabled = false), 800);
}

function autosize(): void {
  input.style.height = 'auto';
  input.style.height = Math.min(input.scrollHeight, 200) + 'px';
}

input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    send();
  } else if (e.key === 'Escape' && (busy || pendingSends.length)) {
    e.preventDefault();
    abort();
  }
});
input.addEventListener('input', () => {
  autosize();
  updateBusy();
  persist();
});

// --- sessions panel ----------------------------------------------------------------------------
function toggleSessions(visible = sessionsPanel.hidden): void {
  sessionsPanel.hidden = !visible;
  if (visible) {
    requestSessions(searchInput.value.trim());
    searchInput.focus();
  }
}

function requestSessions(query: string, cursor?: string): void {
  sessionsQuery = query;
  post({ type: 'listSessions', query, ...(cursor ? { cursor } : {}) });
}

let searchTimer: ReturnType<typeof setTimeout> | undefined;
searchInput.addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => requestSessions(searchInput.value.trim()), 200);
});
searchInput.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') toggleSessions(false);
});
moreButton.addEventListener('click', () => {
  if (sessionsCursor) requestSessions(sessionsQuery, sessionsCursor);
});

function renderSessions(): void {
  // A title being typed is kept: a list that arrives meanwhile (a search, a title update, a
  // refresh) is shown when the rename ends.
  if (renamingId !== undefined && sessionList.querySelector('.rename-input')) return;
  sessionList.textContent = '';
  for (const s of sessions) sessionList.append(sessionItem(s));
  sessionsEmpty.hidden = sessions.length > 0;
  sessionsEmpty.textContent = sessionsQuery ? `No sessions match “${sessionsQuery}”` : 'No sessions yet';
  moreButton.hidden = !sessionsCursor;
  markActiveSession();
}

function sessionItem(s: Session): HTMLElement {
  const li = h('li', { class: 'session-item', 'data-session-id': s.id });
  if (renamingId === s.id) {
    const field = h('input', { class: 'rename-input', type: 'text', value: s.title ?? '', 'aria-label': 'Session title' });
    let ended = false; // Enter, Escape or leaving the field: whichever comes first decides
    const commit = () => {
      if (ended) return;
      ended = true;
      const title = field.value.trim();
      renamingId = undefined;
      if (title && title !== s.title) {
        post({ type: 'renameSession', sessionId: s.id, title });
        // The list may have been replaced while the title was typed: rename its copy.
        for (const x of sessions) if (x.id === s.id) x.title = title;
      }
      renderSessions();
    };
    field.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') commit();
      if (e.key === 'Escape' && !ended) {
        ended = true;
        renamingId = undefined;
        renderSessions();
      }
      e.stopPropagation();
    });
    field.addEventListener('blur', commit);
    li.append(field);
    setTimeout(() => {
      field.focus();
      field.select();
    });
    return li;
  }
  const open = h(
    'button',
    { class: 'session-open', type: 'button', title: s.title, onclick: () => { post({ type: 'openSession', sessionId: s.id }); toggleSessions(false); } },
    h('span', { class: `session-dot status-${s.status}`, title: s.status }),
    h('span', { class: 'session-title' }, s.title || 'Untitled'),
    h('span', { class: 'session-time' }, formatRelativeTime(s.time?.updated)),
  );
  const rename = iconButton(ICON.edit, 'Rename', () => {
    renamingId = s.id;
    renderSessions();
  }, 'session-rename');
  const del = iconButton(ICON.trash, 'Delete', () => post({ type: 'deleteSession', sessionId: s.id, title: s.title }), 'session-delete');
  li.append(open, h('span', { class: 'session-actions' }, rename, del));
  return li;
}

function markActiveSession(): void {
  for (const li of Array.from(sessionList.children) as HTMLElement[]) {
    li.classList.toggle('active', li.dataset.sessionId === chat.sessionId);
  }
}

function onSessionUpdated(s: Session): void {
  updatedSessions.set(s.id, s);
  const i = sessions.findIndex((x) => x.id === s.id);
  if (i >= 0) {
    sessions.splice(i, 1);
    // An update moves a session to the front (the list is by time.updated, newest first).
    if (!sessionsQuery || (s.title ?? '').toLowerCase().includes(sessionsQuery.toLowerCase())) sessions.unshift(s);
    if (!sessionsPanel.hidden && renamingId !== s.id) renderSessions();
  } else if (!sessionsPanel.hidden && !sessionsQuery) {
    sessions.unshift(s);
    if (renamingId === undefined) renderSessions();
  }
}

// --- daemon state ------------------------------------------------------------------------------
function showDaemon(state: string, message?: string): void {
  banner.className = `banner banner-${state}`;
  if (state === 'running' || state === 'stopped' || (state === 'starting' && !message)) {
    banner.hidden = true;
    return;
  }
  banner.textContent = message ?? (state === 'starting' ? 'Starting agentd…' : state);
  banner.hidden = false;
}

// --- messages from the host --------------------------------------------------------------------
window.addEventListener('message', (event: MessageEvent) => {
  const msg = event.data as HostToView;
  if (!msg || typeof msg !== 'object' || typeof (msg as { type?: unknown }).type !== 'string') return;
  switch (msg.type) {
    case 'notification': {
      const n = msg.notification;
      if (n.method === 'session/updated') onSessionUpdated(n.params.session);
      // A fresh chat shows nothing of any session: the host says which session its first send
      // created (`sessionStarted`, posted before that session's first notification). Adopting the
      // session of whatever notification came next would take another window's: they all get
      // `session/updated`, and this one follows every session it opened.
      if (!chat.sessionId) break;
      applyChanges(chat.apply(n));
      break;
    }
    case 'history':
      showConversation(msg.session, msg.messages);
      break;
    case 'sessionStarted':
      if (!chat.sessionId || chat.sessionId === msg.session.id) {
        chat.sessionId = msg.session.id;
        chat.session = msg.session;
        updateHeader();
        persist();
      }
      break;
    case 'chatResult':
      if (msg.sessionId === chat.sessionId) {
        const changes = chat.upsertFull(msg.message);
        applyChanges(changes);
        for (const p of msg.message.parts ?? []) renderPart(msg.message.id, p.id);
      }
      break;
    case 'error':
      if (!msg.sessionId || !chat.sessionId || msg.sessionId === chat.sessionId) {
        clearPending();
        showError(msg.message);
        updateBusy();
      }
      break;
    case 'sessions': {
      // A session retitled since is left out when its new title no longer matches the search.
      const q = msg.query.toLowerCase();
      const listed = msg.sessions.flatMap((s) => {
        const f = fresher(s);
        return f === s || !q || (f.title ?? '').toLowerCase().includes(q) ? [f] : [];
      });
      sessions = msg.append ? [...sessions, ...listed.filter((s) => !sessions.some((x) => x.id === s.id))] : listed;
      sessionsCursor = msg.nextCursor;
      sessionsQuery = msg.query;
      renderSessions();
      break;
    }
    case 'sessionDeleted':
      sessions = sessions.filter((s) => s.id !== msg.sessionId);
      renderSessions();
      break;
    case 'daemon':
      showDaemon(msg.state, msg.message);
      break;
    case 'trust':
      restrictedNotice.hidden = msg.trusted;
      break;
    case 'sending':
      pendingSends.push(msg.text);
      showPendingUserMessage(msg.text);
      updateBusy();
      break;
    case 'showSessions':
      toggleSessions(msg.visible ?? sessionsPanel.hidden);
      break;
    case 'home':
      home = msg.path;
      for (const m of chat.messages) renderMessageInfo(m.info.id);
      break;
    case 'focusInput':
      if (msg.text !== undefined) {
        input.value = msg.text;
        autosize();
        persist();
      }
      input.focus();
      break;
  }
});

updateHeader();
updateBusy();
post({ type: 'ready', sessionId: persisted.sessionId });
input.focus();

// For tests and debugging: a read-only view of what the page holds.
(window as unknown as { __agentdView: unknown }).__agentdView = {
  get sessionId() {
    return chat.sessionId;
  },
  get busy() {
    return busy;
  },
  snapshot: (id: string) => chat.snapshot(id),
  messageIds: () => chat.messages.map((m) => m.info.id),
};
