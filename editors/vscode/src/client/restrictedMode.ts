// What agentd may do in an untrusted folder (VS Code's Restricted Mode): chat, and tools that
// only read. Nothing here writes a file, runs a command or starts a process the folder could
// have chosen: no write_file / edit_file / bash, no apply_edit, no MCP tools (an MCP server's
// tools may write, and agentd.env, which could name another configuration, is read from user
// settings only: package.json's `restrictedConfigurations`).
import type { ClientTool } from '../protocol';

/** agentd's built-in tools that only read the workspace. */
export const READ_ONLY_BUILTIN_TOOLS: readonly string[] = ['read_file', 'list_dir', 'glob', 'grep'];

/** The editor's tools that only read (apply_edit proposes an edit, so it is left out). */
export const READ_ONLY_CLIENT_TOOLS: readonly string[] = ['editor_selection', 'open_editors', 'read_document'];

/**
 * The built-in tools for `session/chat` in Restricted Mode: the configured ones that only read.
 * Patterns and write tools in the setting are dropped (a pattern such as `*` would name them).
 */
export function restrictedBuiltinTools(configured: readonly string[] | undefined): string[] {
  if (!configured) return [...READ_ONLY_BUILTIN_TOOLS];
  return READ_ONLY_BUILTIN_TOOLS.filter((t) => configured.includes(t));
}

/** The client tools to declare in Restricted Mode. */
export function restrictedClientTools(all: readonly ClientTool[]): ClientTool[] {
  return all.filter((t) => READ_ONLY_CLIENT_TOOLS.includes(t.name));
}
