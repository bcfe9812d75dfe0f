// What a chat's history offers besides chatting: fork at a message (`session/fork`), revert to
// a message and undo that (`session/revert`, `session/unrevert`: each previewed with `dryRun`,
// listed in a modal and confirmed), and export (`session/export`) into an untitled editor.
import * as vscode from 'vscode';
import { AgentdError, type AgentdClient } from './client/agentdClient';
import { ErrorCodes, type ResultOf } from './protocol';

export type RevertResult = ResultOf<'session/revert'>;

/** `data.reason` of -32603 from session/revert and session/unrevert, in plain words. */
const REASONS: Record<string, string> = {
  'too-large': "a snapshot of the workspace was over agentd's size limit ([snapshots] max_files / max_bytes), so those files were never recorded",
  'no-git': 'git is not installed where agentd runs; agentd keeps its snapshots with git',
  'snapshots-off': "snapshots are turned off in agentd's configuration ([snapshots] enabled = false)",
  'not-a-directory': "the session's workspace is no longer a directory",
  'workspace-changed': "the session's workspace root changed since those steps ran",
  missing: 'a snapshot is missing (the message changed files before agentd kept snapshots, or the store lost it)',
};

/** A failed fork, revert, unrevert or export, in plain words. */
export function describeHistoryError(what: string, e: unknown): string {
  let text: string;
  if (e instanceof AgentdError) {
    const data = (e.data ?? {}) as { reason?: string };
    if (e.code === ErrorCodes.SessionBusy) text = 'the chat is busy (an answer is running, or a revert): stop it or wait';
    else if (e.code === ErrorCodes.SessionNotFound) text = 'the chat no longer exists';
    else if (e.code === ErrorCodes.InternalError && data.reason && REASONS[data.reason]) text = `${REASONS[data.reason]} (${e.message})`;
    else if (e.code === ErrorCodes.InvalidParams && data.reason === 'nothing-to-unrevert') text = `there is nothing to unrevert: ${e.message}`;
    else text = e.code !== undefined ? `${e.message} (error ${e.code})` : e.message;
  } else {
    text = e instanceof Error ? e.message : String(e);
  }
  return `agentd: ${what} failed: ${text}`;
}

/** The modal's text: what the revert (or unrevert) would do, file by file. */
export function describeRevertPreview(res: RevertResult): string {
  const n = res.messages.length;
  const lines = [`${n} message${n === 1 ? '' : 's'} ${n === 1 ? 'is' : 'are'} affected.`];
  if (!res.files.length && !res.conflicts.length) lines.push('No file changes.');
  for (const f of res.files) lines.push(`${f.action === 'delete' ? 'delete' : 'restore'}: ${f.path}`);
  for (const c of res.conflicts) lines.push(`conflict: ${c.path} — ${c.reason}`);
  return lines.join('\n');
}

export class SessionHistory {
  constructor(
    private readonly client: AgentdClient,
    /** Shows a session in the view (the fork, or the reverted chat again). */
    private readonly show: (sessionId: string) => Promise<void>,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  private fail(what: string, e: unknown): void {
    const text = describeHistoryError(what, e);
    this.log.error(text);
    void vscode.window.showErrorMessage(text);
  }

  /** Forks `sessionId` after `messageId` (all of it when undefined) and shows the fork. */
  async fork(sessionId: string, messageId?: string): Promise<string | undefined> {
    try {
      const { session } = await this.client.request('session/fork', { sessionId, ...(messageId ? { messageId } : {}) });
      await this.show(session.id);
      void vscode.window.showInformationMessage(`agentd: forked into “${session.title}”.`);
      return session.id;
    } catch (e) {
      this.fail('fork', e);
      return undefined;
    }
  }

  /** Reverts to `messageId` after a preview and a yes. */
  revert(sessionId: string, messageId: string): Promise<RevertResult | undefined> {
    return this.previewed('Revert', 'session/revert', { sessionId, messageId }, 'Revert the chat to this message? What came after it is undone:');
  }

  /** Undoes the latest revert after a preview and a yes. */
  unrevert(sessionId: string): Promise<RevertResult | undefined> {
    return this.previewed('Unrevert', 'session/unrevert', { sessionId }, 'Undo the latest revert? It brings back:');
  }

  private async previewed(
    verb: 'Revert' | 'Unrevert',
    method: 'session/revert' | 'session/unrevert',
    params: { sessionId: string; messageId?: string },
    question: string,
  ): Promise<RevertResult | undefined> {
    const what = verb.toLowerCase();
    let dry: RevertResult;
    try {
      dry = (await this.client.request(method, { ...params, dryRun: true } as never)) as RevertResult;
    } catch (e) {
      this.fail(what, e);
      return undefined;
    }
    const conflicts = dry.conflicts.length;
    const keep = conflicts ? `${verb}, Keep Changed Files` : verb;
    const overwrite = `${verb} and Overwrite`;
    const choice = await vscode.window.showWarningMessage(
      question,
      { modal: true, detail: describeRevertPreview(dry) },
      ...(conflicts ? [keep, overwrite] : [keep]),
    );
    if (choice !== keep && choice !== overwrite) return undefined;
    let done: RevertResult;
    try {
      done = (await this.client.request(method, { ...params, ...(choice === overwrite ? { force: true } : {}) } as never)) as RevertResult;
    } catch (e) {
      this.fail(what, e);
      return undefined;
    }
    await this.show(params.sessionId);
    const bits = [`${what}ed ${done.messages.length} message${done.messages.length === 1 ? '' : 's'}`];
    for (const f of done.files) bits.push(`${f.action === 'delete' ? 'deleted' : 'restored'} ${f.path}`);
    for (const c of done.conflicts) bits.push(`left ${c.path} as it is (${c.reason})`);
    void vscode.window.showInformationMessage(`agentd: ${bits.join('; ')}.`);
    return done;
  }

  /** The chat as Markdown (or JSON) in a new untitled editor. */
  async export(sessionId: string, format: 'markdown' | 'json'): Promise<vscode.TextDocument | undefined> {
    try {
      const { content } = await this.client.request('session/export', { sessionId, format });
      const doc = await vscode.workspace.openTextDocument({ content, language: format });
      await vscode.window.showTextDocument(doc, { preview: false });
      return doc;
    } catch (e) {
      this.fail('export', e);
      return undefined;
    }
  }
}
