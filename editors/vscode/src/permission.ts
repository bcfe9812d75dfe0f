// `permission/request`: three choices in a quick pick — Reject (the default: Enter or Escape),
// Allow once, Allow always. Not a modal dialog: VS Code adds its own Cancel button to a modal
// and makes the first of the extension's buttons the default for Enter, so a modal cannot show
// three choices with the safe one as the default. The tool card in the chat shows the whole
// input; for a command, Allow once says how it would run (its sandbox, or none), and a command
// that would run unconfined has no Allow always (agentd asks for it every time).
import * as vscode from 'vscode';
import type { CancellationToken, PermissionHandler } from './client/agentdClient';
import { permissionChoices, permissionSummary, type PermissionChoice } from './client/permissionChoices';
import type { PermissionOutcome, PermissionRequestParams } from './protocol';

/** Asks in a quick pick; hiding it (Escape), or the run ending meanwhile, rejects once. */
function ask(request: PermissionRequestParams, token?: CancellationToken): Promise<PermissionOutcome> {
  return new Promise((resolve) => {
    const qp = vscode.window.createQuickPick<PermissionChoice & vscode.QuickPickItem>();
    qp.title = `agentd: allow ${request.title || request.tool}?`;
    // The input in one line (the title cuts a command at 60 characters).
    qp.placeholder = permissionSummary(request.tool, request.input);
    qp.items = permissionChoices(request);
    qp.activeItems = [qp.items[0]];
    qp.ignoreFocusOut = true; // reading the chat or a file meanwhile must not answer it
    qp.matchOnDetail = false;
    let outcome: PermissionOutcome = 'reject_once';
    const cancel = token?.onCancellationRequested(() => qp.hide());
    qp.onDidAccept(() => {
      outcome = qp.selectedItems[0]?.outcome ?? qp.activeItems[0]?.outcome ?? 'reject_once';
      qp.hide();
    });
    qp.onDidHide(() => {
      cancel?.dispose();
      qp.dispose();
      resolve(outcome);
    });
    qp.show();
  });
}

/**
 * Answers `permission/request`. Requests are asked one at a time (a second quick pick would
 * close the first, which would reject it); in Restricted Mode every request is rejected
 * without asking, since nothing that writes or runs is offered there in the first place.
 */
export function createPermissionHandler(isTrusted: () => boolean): PermissionHandler {
  let queue: Promise<unknown> = Promise.resolve();
  return (request, token) => {
    if (!isTrusted()) return { outcome: 'reject_once' };
    const answer = queue.then(() => (token?.isCancellationRequested ? 'reject_once' : ask(request, token)));
    queue = answer.catch(() => undefined);
    return answer.then((outcome) => ({ outcome }));
  };
}
