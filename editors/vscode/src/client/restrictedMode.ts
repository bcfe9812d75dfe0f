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
 * A shell-style wildcard as agentd reads `tools` (Python's `fnmatchcase`): `*`, `?`, `[seq]`,
 * `[!seq]`; everything else literal.
 */
export function wildcardMatches(pattern: string, name: string): boolean {
  let re = '';
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i++];
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '[') {
      // As fnmatch: a `]` right after `[` or `[!` is a member; no closing `]` makes `[` literal.
      let j = i;
      if (pattern[j] === '!') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j++;
      if (j >= pattern.length) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i, j);
      i = j + 1;
      const negate = body.startsWith('!');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  try {
    return new RegExp(`^${re}$`).test(name);
  } catch {
    // A range out of order (`[z-a]`), which fnmatch drops from its set: here the pattern names
    // nothing, the cautious side in Restricted Mode.
    return false;
  }
}

/**
 * The built-in tools for `session/chat` in Restricted Mode: the read-only ones the setting names,
 * by name or by wildcard (`*` names all four). Never undefined: no `tools` would let agentd
 * offer every tool.
 */
export function restrictedBuiltinTools(configured: readonly string[] | undefined): string[] {
  if (!configured) return [...READ_ONLY_BUILTIN_TOOLS];
  return READ_ONLY_BUILTIN_TOOLS.filter((t) => configured.some((p) => wildcardMatches(p, t)));
}

/** The client tools to declare in Restricted Mode. */
export function restrictedClientTools(all: readonly ClientTool[]): ClientTool[] {
  return all.filter((t) => READ_ONLY_CLIENT_TOOLS.includes(t.name));
}
