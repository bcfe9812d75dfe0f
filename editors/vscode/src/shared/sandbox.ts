// How a command runs, in words, from the `sandbox` agentd puts on `permission/request` and on
// a tool part's state (see protocol/README.md, "Sandbox"). Pure: used by the permission dialog
// (extension side) and the tool card (webview).
import type { CommandSandbox } from '../protocol';

/** A short chip for the tool card: "workspace-write", "full access", "unconfined: no sandbox"… */
export function sandboxLabel(sandbox: CommandSandbox | undefined | null): string {
  if (!sandbox || typeof sandbox.mode !== 'string') return '';
  if (sandbox.fallback) return 'unconfined: no sandbox';
  const bits = [sandbox.mode === 'full-access' ? 'full access' : sandbox.mode];
  if (sandbox.mode !== 'full-access' && sandbox.network) bits.push('network');
  if (sandbox.rerunOf) bits.push('rerun');
  else if (sandbox.blocked) bits.push('blocked');
  return bits.join(', ');
}

/** A sentence for the permission dialog: what the command may do if allowed. */
export function sandboxSentence(sandbox: CommandSandbox | undefined | null): string {
  if (!sandbox || typeof sandbox.mode !== 'string') return '';
  const where = (mode: string) =>
    mode === 'full-access' ? 'with full access (no sandbox)' : `in the ${mode} sandbox`;
  if (sandbox.rerunOf) {
    return `The ${sandbox.rerunOf} sandbox blocked ${sandbox.blocked ?? 'this command'}. Rerun it ${where(sandbox.mode)}?`;
  }
  if (sandbox.fallback) {
    return `No sandbox is available here (${sandbox.fallback}): it would run unconfined, with your full rights.`;
  }
  if (sandbox.mode === 'full-access') return 'It runs with full access (no sandbox).';
  const writes = sandbox.mode === 'read-only' ? 'writes only a private /tmp' : 'writes only in the workspace and a private /tmp';
  return `It runs in the ${sandbox.mode} sandbox: ${writes}, ${sandbox.network ? 'with' : 'no'} network.`;
}
