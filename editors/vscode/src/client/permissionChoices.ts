// What the permission quick pick offers for a `permission/request` (src/permission.ts shows it).
// Pure: no `vscode` import, so the unit tests check it under plain Node.
import type { PermissionOutcome, PermissionRequestParams } from '../protocol';
import { sandboxSentence } from '../shared/sandbox';

/** The request in one line, for the quick pick (which shows no more). */
export function permissionSummary(tool: string, input: unknown, n = 160): string {
  const o = (input ?? {}) as Record<string, unknown>;
  let line: string;
  if (tool === 'bash' && typeof o.command === 'string') line = `$ ${o.command.replace(/\s*\n\s*/g, ' ⏎ ')}`;
  else if ((tool === 'write_file' || tool === 'edit_file') && typeof o.path === 'string') {
    const body = typeof o.content === 'string' ? o.content : typeof o.newString === 'string' ? o.newString : '';
    line = body ? `${o.path}: ${body.replace(/\s*\n\s*/g, ' ⏎ ')}` : o.path;
  } else line = JSON.stringify(input) ?? '';
  return line.length > n ? `${line.slice(0, n - 1)}…` : line;
}

/** A quick pick item (vscode.QuickPickItem's fields used here) with the answer it gives. */
export interface PermissionChoice {
  label: string;
  description?: string;
  detail?: string;
  outcome: PermissionOutcome;
}

/**
 * The choices, Reject first (the active item, so Enter picks it). Allow always is left out
 * where agentd would not remember it: a command that would run unconfined (no sandbox here)
 * is asked every time.
 */
export function permissionChoices(request: Pick<PermissionRequestParams, 'tool' | 'input' | 'mcpServer' | 'sandbox'>): PermissionChoice[] {
  const how = sandboxSentence(request.sandbox);
  const choices: PermissionChoice[] = [
    { label: '$(circle-slash) Reject', description: 'Enter or Escape', detail: 'agentd tells the model you refused', outcome: 'reject_once' },
    { label: '$(check) Allow once', detail: how || permissionSummary(request.tool, request.input), outcome: 'allow_once' },
  ];
  if (request.sandbox?.fallback) return choices;
  const always = request.mcpServer
    ? `don't ask again for ${request.tool} (any input) in this chat`
    : `don't ask again for this same ${request.tool} input in this chat`;
  choices.push({ label: '$(check-all) Allow always', detail: always, outcome: 'allow_always' });
  return choices;
}
