// The conversation of one session, built by applying the daemon's notifications in order
// (contract: "applying the notifications in order reproduces exactly the message in the
// response"). Shared by the webview (which renders the changes it returns) and the tests.
// No DOM, no `vscode`.
import type { AgentdNotification, Message, MessageInfo, Part, Session } from '../protocol';

export interface MessageState {
  info: MessageInfo;
  parts: Part[];
}

export type Change =
  | { kind: 'message'; messageId: string; created: boolean }
  | { kind: 'part'; messageId: string; partId: string; created: boolean }
  | { kind: 'delta'; messageId: string; partId: string; field: string; delta: string }
  | { kind: 'status'; status: string; runId?: string; message?: string; attempt?: number; nextRetryAt?: number }
  | { kind: 'session'; session: Session }
  | { kind: 'error'; error: { name: string; message: string; data?: unknown }; runId?: string };

export class ChatState {
  sessionId: string | undefined;
  session: Session | undefined;
  status: string = 'idle';
  private readonly byId = new Map<string, MessageState>();
  private order: string[] = [];

  constructor(sessionId?: string) {
    this.sessionId = sessionId;
  }

  get messages(): MessageState[] {
    return this.order.map((id) => this.byId.get(id)!);
  }

  message(id: string): MessageState | undefined {
    return this.byId.get(id);
  }

  part(messageId: string, partId: string): Part | undefined {
    return this.byId.get(messageId)?.parts.find((p) => p.id === partId);
  }

  /** Replaces the whole conversation (history from `session/messages`). */
  load(messages: Message[]): void {
    this.byId.clear();
    this.order = [];
    for (const m of messages) this.upsertFull(m);
  }

  /** Replaces one message with its authoritative copy (the `session/chat` result). */
  upsertFull(m: Message): Change[] {
    const { parts, ...info } = m as Message & { parts: Part[] };
    const created = !this.byId.has(m.id);
    if (created) this.insertOrdered(m.id);
    this.byId.set(m.id, { info: info as unknown as MessageInfo, parts: (parts ?? []).map(clonePart) });
    return [{ kind: 'message', messageId: m.id, created }];
  }

  /**
   * Applies one notification. Notifications for another session are ignored (returns []),
   * except `session/updated`, which the caller may want for its session list.
   */
  apply(n: AgentdNotification | { method: string; params: unknown }): Change[] {
    const params = (n.params ?? {}) as Record<string, unknown>;
    const sid = (params.sessionId as string | undefined) ?? (params.session as Session | undefined)?.id;
    if (this.sessionId && sid && sid !== this.sessionId) return [];
    switch (n.method) {
      case 'session/updated': {
        const session = params.session as Session;
        this.session = session;
        const changes: Change[] = [{ kind: 'session', session }];
        // `session/status` reaches the windows that follow the session; `session/updated`
        // reaches every window, with the status as it is when sent. A run that started or
        // ended while this window was opening the session (before it followed it) is known
        // from this alone.
        if (typeof session.status === 'string' && (session.status === 'idle') !== (this.status === 'idle')) {
          this.status = session.status;
          changes.push({ kind: 'status', status: session.status });
        }
        return changes;
      }
      case 'session/status': {
        this.status = String(params.status);
        return [
          {
            kind: 'status',
            status: this.status,
            runId: params.runId as string | undefined,
            message: params.message as string | undefined,
            attempt: params.attempt as number | undefined,
            nextRetryAt: params.nextRetryAt as number | undefined,
          },
        ];
      }
      case 'message/updated': {
        const info = { ...(params.message as MessageInfo) } as MessageInfo & { parts?: unknown };
        delete info.parts;
        const existing = this.byId.get(info.id);
        if (existing) {
          existing.info = info;
          return [{ kind: 'message', messageId: info.id, created: false }];
        }
        this.insertOrdered(info.id);
        this.byId.set(info.id, { info, parts: [] });
        return [{ kind: 'message', messageId: info.id, created: true }];
      }
      case 'part/updated': {
        const messageId = params.messageId as string;
        const part = clonePart(params.part as Part);
        const changes: Change[] = [];
        let msg = this.byId.get(messageId);
        if (!msg) {
          // The part's message was not announced (should not happen): keep the part anyway.
          msg = this.placeholder(messageId, params.sessionId as string, params.runId as string | undefined);
          changes.push({ kind: 'message', messageId, created: true });
        }
        const i = msg.parts.findIndex((p) => p.id === part.id);
        if (i >= 0) msg.parts[i] = part;
        else msg.parts.push(part);
        changes.push({ kind: 'part', messageId, partId: part.id, created: i < 0 });
        return changes;
      }
      case 'part/delta': {
        const messageId = params.messageId as string;
        const partId = params.partId as string;
        const field = (params.field as string) ?? 'text';
        const delta = String(params.delta ?? '');
        const changes: Change[] = [];
        let msg = this.byId.get(messageId);
        if (!msg) {
          msg = this.placeholder(messageId, params.sessionId as string, params.runId as string | undefined);
          changes.push({ kind: 'message', messageId, created: true });
        }
        let part = msg.parts.find((p) => p.id === partId) as Record<string, unknown> | undefined;
        if (!part) {
          part = { id: partId, type: 'text', text: '', time: { start: Date.now() } };
          msg.parts.push(part as unknown as Part);
          changes.push({ kind: 'part', messageId, partId, created: true });
        }
        part[field] = String(part[field] ?? '') + delta;
        changes.push({ kind: 'delta', messageId, partId, field, delta });
        return changes;
      }
      case 'session/error': {
        const error = params.error as { name: string; message: string; data?: unknown };
        return [{ kind: 'error', error, runId: params.runId as string | undefined }];
      }
      default:
        return [];
    }
  }

  /** The message as the daemon would return it: info plus parts. */
  snapshot(messageId: string): Message | undefined {
    const m = this.byId.get(messageId);
    if (!m) return undefined;
    return { ...(m.info as object), parts: m.parts.map(clonePart) } as unknown as Message;
  }

  private placeholder(messageId: string, sessionId: string, runId: string | undefined): MessageState {
    const info = {
      id: messageId,
      sessionId,
      role: 'assistant',
      ...(runId ? { runId } : {}),
      time: { created: Date.now() },
    } as unknown as MessageInfo;
    const m = { info, parts: [] };
    this.insertOrdered(messageId);
    this.byId.set(messageId, m);
    return m;
  }

  private insertOrdered(id: string): void {
    // Ids sort by creation time; history and live notifications may interleave (a reload
    // during a run), so keep the list sorted rather than merely appended.
    let i = this.order.length;
    while (i > 0 && this.order[i - 1] > id) i--;
    this.order.splice(i, 0, id);
  }
}

function clonePart(p: Part): Part {
  return JSON.parse(JSON.stringify(p)) as Part;
}
