// MCP servers as the editor shows them: `mcp/status` notices (a warning when a server fails,
// once per failure) and the quick pick items of `agentd.mcpServers`. Pure, tested under Node.
import type { McpServerInfo, McpStatusServer, McpToolInfo } from '../protocol';

/** The warning shown when an MCP server fails. */
export function mcpFailureMessage(server: Pick<McpStatusServer, 'name' | 'error'>): string {
  return `agentd: MCP server ${server.name} failed${server.error ? `: ${server.error}` : ''}`;
}

/** One line for the output channel per `mcp/status`. */
export function describeMcpStatus(server: McpStatusServer): string {
  const who = `MCP server ${server.name}${server.sessionId ? ` (session ${server.sessionId})` : ''}`;
  let what: string = server.state;
  if (server.state === 'ready' && server.toolCount !== undefined) what += ` (${plural(server.toolCount, 'tool')})`;
  if (server.error) what += `: ${server.error}`;
  return `${who}: ${what}`;
}

/**
 * Follows `mcp/status` per server (a session's own server apart from a configured one of the
 * same name) and says when to warn: on each transition into `failed`, not on a repeat of the
 * same failure.
 */
export class McpStatusTracker {
  private readonly last = new Map<string, { state: McpStatusServer['state']; error?: string }>();

  /** Records the status; returns the warning to show, if any. */
  update(server: McpStatusServer): string | undefined {
    const key = `${server.sessionId ?? ''}\u0000${server.name}`;
    const prev = this.last.get(key);
    this.last.set(key, { state: server.state, error: server.error });
    if (server.state !== 'failed') return undefined;
    if (prev?.state === 'failed' && prev.error === server.error) return undefined;
    return mcpFailureMessage(server);
  }

  /** Forgets every server (a new daemon starts its servers afresh). */
  reset(): void {
    this.last.clear();
  }
}

export interface McpServerItem {
  label: string;
  description: string;
  detail: string;
  server: McpServerInfo;
}

export interface McpToolItem {
  label: string;
  description: string;
  detail?: string;
  tool: McpToolInfo;
}

/** `agentd.mcpServers`' first quick pick: one item per server. */
export function mcpServerItems(servers: readonly McpServerInfo[]): McpServerItem[] {
  return servers.map((server) => ({
    label: server.name,
    description: [server.state, server.transport, server.trust, ...(server.sessionId ? ['this chat only'] : [])].join(' · '),
    detail: serverDetail(server),
    server,
  }));
}

function serverDetail(s: McpServerInfo): string {
  if (s.state === 'failed') return s.error || 'failed';
  const allowed = s.tools.filter((t) => t.allowed !== false);
  if (s.tools.length === 0) {
    if (s.enabled === false) return 'disabled in the configuration';
    if (s.state === 'stopped') return 'not started';
    if (s.state === 'starting') return 'starting…';
    return 'no tools';
  }
  const count = allowed.length === s.tools.length ? plural(allowed.length, 'tool') : `${allowed.length} of ${s.tools.length} tools allowed`;
  return allowed.length ? `${count}: ${allowed.map((t) => t.qualifiedName).join(', ')}` : count;
}

/** The second quick pick: the tools of one server, as the model sees them. */
export function mcpToolItems(server: McpServerInfo): McpToolItem[] {
  return server.tools.map((tool) => {
    const description = tool.description?.replace(/\s+/g, ' ').trim();
    return {
      label: tool.qualifiedName,
      description: tool.allowed === false ? 'not allowed (not in the server’s tools list)' : 'allowed',
      ...(description ? { detail: description } : {}),
      tool,
    };
  });
}

/** agentd's built-in tools, which `agentd.tools` chooses among. */
const BUILTIN_TOOLS = ['read_file', 'list_dir', 'glob', 'grep', 'write_file', 'edit_file', 'bash'];
/** agentd cuts a tool name longer than 64 characters to 55 and adds `_` and a hash. */
const NAME_CUT = 55;

/**
 * The `session/chat` `tools` patterns that offer every MCP server's tools, as the daemon does
 * when `tools` is left out: `<server>_*` per server (the server's own allow-list still applies,
 * and only a server the patterns can name is started for the run). A prefix that would also
 * name a built-in (a server called `write`) lists the server's known tools exactly instead.
 */
export function mcpToolPatterns(servers: readonly McpServerInfo[]): string[] {
  const patterns: string[] = [];
  for (const s of servers) {
    const prefix = `${s.name}_`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, NAME_CUT);
    if (!BUILTIN_TOOLS.some((b) => b.startsWith(prefix))) patterns.push(`${prefix}*`);
    else patterns.push(...s.tools.filter((t) => t.allowed !== false).map((t) => t.qualifiedName));
  }
  return [...new Set(patterns)];
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
