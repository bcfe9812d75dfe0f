// `permission/request`: a modal dialog with Allow once / Allow always / Reject. For a command,
// the dialog says how it would run (its sandbox, or none).
import * as vscode from 'vscode';
import type { PermissionHandler } from './client/agentdClient';
import type { PermissionOutcome } from './protocol';
import { sandboxSentence } from './shared/sandbox';

export function permissionPreview(tool: string, input: unknown): string {
  const o = (input ?? {}) as Record<string, unknown>;
  if (tool === 'bash' && typeof o.command === 'string') return `$ ${o.command}`;
  if ((tool === 'write_file' || tool === 'edit_file') && typeof o.path === 'string') {
    const body = typeof o.content === 'string' ? o.content : typeof o.newString === 'string' ? o.newString : '';
    return `${o.path}${body ? `\n\n${truncate(body, 600)}` : ''}`;
  }
  return truncate(JSON.stringify(input, null, 2) ?? '', 800);
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}\n… (${s.length - n} more characters)` : s;
}

export const askPermission: PermissionHandler = async (request) => {
  const allowOnce = 'Allow once';
  const allowAlways = 'Allow always';
  const reject = 'Reject';
  const sandbox = sandboxSentence(request.sandbox);
  const choice = await vscode.window.showWarningMessage(
    request.title || `agentd wants to run ${request.tool}`,
    {
      modal: true,
      detail: `Tool: ${request.tool}${sandbox ? `\n${sandbox}` : ''}\n\n${permissionPreview(request.tool, request.input)}`,
    },
    allowOnce,
    allowAlways,
    reject,
  );
  const outcome: PermissionOutcome = choice === allowOnce ? 'allow_once' : choice === allowAlways ? 'allow_always' : 'reject_once';
  return { outcome };
};
