// MCP servers end to end: the bundled extension (dist/extension.js) under Node with the stand-in
// `vscode` module, spawning the real agentd with a configuration file naming real MCP servers
// (tests/mcp/context_server.py, built with the official SDK, and a command that does not exist).
// The chat view is a recording stand-in (no Chromium needed): what the extension posts to it is
// kept, and the "page" sends messages as the real one does.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { AGENTD, PYTHON, root, startScriptedModel, tempDirs, waitFor } from '../client/helpers.mjs';
import { deactivateExtension, installVscodeStub } from './harness.mjs';

const require = createRequire(import.meta.url);
// `require('vscode')` from the bundle gets the stand-in.
const { vscode, stub, restore: restoreVscode } = installVscodeStub();

const CONTEXT_SERVER = resolve(root, '../../tests/mcp/context_server.py');
const BROKEN_WARNING = "agentd: MCP server broken failed: cannot start 'agentd-no-such-server': command not found";

let model, dirs, ext, context, startsFile;
const posted = []; // everything the extension posted to the chat view
let viewListeners = [];
const toHost = (m) => viewListeners.forEach((l) => l(m));
const warnings = (text) => stub.messages.filter((m) => m.level === 'warning' && m.text === text);

before(async () => {
  assert.ok(existsSync(CONTEXT_SERVER), `${CONTEXT_SERVER} exists`);
  model = await startScriptedModel();
  dirs = tempDirs();
  startsFile = join(dirs.base, 'starts.txt');
  const python = execFileSync(PYTHON, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  const q = JSON.stringify; // TOML basic strings escape like JSON
  const config = join(dirs.base, 'config.toml');
  writeFileSync(
    config,
    [
      '[mcp_servers.ctx]',
      `command = ${q(python)}`,
      `args = [${q(CONTEXT_SERVER)}]`,
      'trust = "allow"',
      `env = { STARTS_FILE = ${q(startsFile)} }`,
      '',
      '[mcp_servers.ask]',
      `command = ${q(python)}`,
      `args = [${q(CONTEXT_SERVER)}]`,
      'tools = ["echo"]',
      `env = { STARTS_FILE = ${q(startsFile)} }`,
      '',
      '[mcp_servers.broken]',
      'command = "agentd-no-such-server"',
      '',
    ].join('\n'),
  );
  stub.workspaceFolder = dirs.workspace;
  stub.config = {
    path: AGENTD,
    model: 'scripted',
    tools: ['read_file', 'list_dir', 'glob', 'grep', 'write_file', 'edit_file', 'bash'],
    dataDir: dirs.data,
    env: { OPENAI_BASE_URL: model.baseUrl, OPENAI_API_KEY: 'test', AGENTD_STATE_DIR: dirs.state, AGENTD_CONFIG: config, AGENTD_SHARED: '0' },
  };

  ext = require(join(root, 'dist/extension.js'));
  const mem = new Map();
  context = {
    subscriptions: [],
    extensionUri: vscode.Uri.file(root),
    workspaceState: { get: (k) => mem.get(k), update: async (k, v) => void mem.set(k, v), keys: () => [...mem.keys()] },
    extension: { packageJSON: JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) },
  };
  ext.activate(context);
  const provider = stub.providers.get('agentd.chatView');
  provider.resolveWebviewView({
    webview: {
      options: {},
      html: '',
      cspSource: 'http://127.0.0.1',
      asWebviewUri: (uri) => uri.toString(),
      postMessage: (m) => {
        posted.push(m);
        return Promise.resolve(true);
      },
      onDidReceiveMessage: (l) => {
        viewListeners.push(l);
        return { dispose: () => (viewListeners = viewListeners.filter((x) => x !== l)) };
      },
    },
    visible: true,
    show() {},
    onDidDispose: () => ({ dispose() {} }),
  });
  toHost({ type: 'ready' });
});

after(async () => {
  await deactivateExtension(ext, context);
  await model?.close();
  dirs?.cleanup();
  restoreVscode();
});

describe('MCP servers (stand-in vscode, real agentd, real MCP servers)', () => {
  test('agentd: Show MCP Servers connects them under a progress notification and lists them', async () => {
    const contributed = context.extension.packageJSON.contributes.commands.find((c) => c.command === 'agentd.mcpServers');
    assert.deepEqual([contributed.category, contributed.title], ['agentd', 'Show MCP Servers']);

    const picks = stub.quickPicks.length;
    await vscode.commands.executeCommand('agentd.mcpServers');
    const progress = stub.progress.at(-1);
    assert.equal(progress.options.title, 'agentd: connecting MCP servers…');
    assert.equal(progress.options.location, vscode.ProgressLocation.Notification);
    assert.equal(progress.done, true);
    assert.equal(stub.quickPicks.length, picks + 1);
    const qp = stub.quickPicks.at(-1);
    assert.equal(qp.visible, true);
    const byName = Object.fromEntries(qp.items.map((i) => [i.label, i]));
    assert.deepEqual(Object.keys(byName).sort(), ['ask', 'broken', 'ctx']);

    assert.equal(byName.ctx.description, 'ready · stdio · allow');
    const ctxTools = byName.ctx.server.tools.map((t) => t.qualifiedName);
    assert.ok(ctxTools.includes('ctx_echo'), 'ctx_echo among the tools');
    assert.equal(byName.ctx.detail, `${ctxTools.length} tools: ${ctxTools.join(', ')}`);
    assert.equal(byName.ask.description, 'ready · stdio · ask');
    assert.equal(byName.ask.detail, `1 of ${byName.ask.server.tools.length} tools allowed: ask_echo`);
    assert.equal(byName.broken.description, 'failed · stdio · ask');
    assert.equal(byName.broken.detail, "cannot start 'agentd-no-such-server': command not found");

    // mcp/status: one warning for the failure, and every change in the log.
    await waitFor(() => warnings(BROKEN_WARNING).length === 1, { what: 'the failure warning' });
    assert.deepEqual(warnings(BROKEN_WARNING)[0].items, ['Show MCP Servers']);
    assert.ok(stub.logLines.includes(`[warn] MCP server broken: failed: cannot start 'agentd-no-such-server': command not found`));
    assert.ok(stub.logLines.includes('[info] MCP server ctx: starting'));
    assert.ok(stub.logLines.includes(`[info] MCP server ctx: ready (${ctxTools.length} tools)`));

    // A server's tools.
    qp.__accept(byName.ctx);
    assert.equal(qp.visible, false);
    const tools = stub.quickPicks.at(-1);
    assert.notEqual(tools, qp);
    assert.equal(tools.title, 'agentd: MCP server ctx (ready)');
    const echo = tools.items.find((i) => i.label === 'ctx_echo');
    assert.deepEqual([echo.description, echo.detail], ['allowed', 'Return the text.']);
    assert.deepEqual(tools.items.map((i) => i.label), ctxTools);

    tools.__accept(echo);
    assert.equal(tools.visible, false);

    /** Runs the command again and opens `name`'s tools. */
    const toolsOf = async (name) => {
      await vscode.commands.executeCommand('agentd.mcpServers');
      const servers = stub.quickPicks.at(-1);
      servers.__accept(servers.items.find((i) => i.label === name));
      return stub.quickPicks.at(-1).items;
    };
    // The allow-list shows in a server's tools.
    const askTools = await toolsOf('ask');
    assert.equal(askTools.find((i) => i.label === 'ask_echo').description, 'allowed');
    assert.equal(askTools.find((i) => i.label === 'ask_whoami').description, 'not allowed (not in the server’s tools list)');
    // A failed server: no tools, and why.
    assert.deepEqual(
      (await toolsOf('broken')).map(({ label, detail }) => ({ label, detail })),
      [{ label: 'No tools', detail: "cannot start 'agentd-no-such-server': command not found" }],
    );
  });

  test('mcp/status: failed, starting, failed again is a new warning', async () => {
    const from = stub.logLines.length;
    // agentd retries a server that failed to start no sooner than 1 s later, when next needed.
    await new Promise((r) => setTimeout(r, 2100));
    await vscode.commands.executeCommand('agentd.mcpServers');
    const lines = stub.logLines.slice(from);
    assert.ok(lines.includes('[info] MCP server broken: starting'), 'it was retried');
    assert.ok(lines.includes(`[warn] MCP server broken: failed: cannot start 'agentd-no-such-server': command not found`));
    await waitFor(() => warnings(BROKEN_WARNING).length >= 2, { what: 'a second warning' });
    assert.ok(!lines.includes('[info] MCP server ctx: starting'), 'a ready server is left running');
  });

  test('MCP tools are offered next to agentd.tools; trust "ask" asks with the daemon\'s title', async () => {
    const before = posted.length;
    stub.answers.push({ quickPick: true, match: /^agentd: allow ask: echo /, answer: 'Allow once' });
    const picks = stub.quickPicks.length;
    toHost({ type: 'send', text: '/tool ask_echo {"text": "hello from vscode"}' });
    const result = await waitFor(() => posted.slice(before).find((m) => m.type === 'chatResult' || m.type === 'error'), { what: 'the answer', timeoutMs: 30_000 });
    assert.equal(result.type, 'chatResult', JSON.stringify(result));

    const ask = stub.quickPicks.slice(picks).find((q) => /^agentd: allow/.test(q.title));
    assert.ok(ask, 'the permission was asked');
    assert.equal(ask.title, 'agentd: allow ask: echo {"text": "hello from vscode"}?');
    assert.deepEqual(ask.items.map((i) => i.label), ['$(circle-slash) Reject', '$(check) Allow once', '$(check-all) Allow always']);
    assert.equal(ask.items[1].detail, '{"text":"hello from vscode"}');
    assert.match(ask.items[2].detail, /any input/, "an MCP tool's Allow always covers any input");

    const part = result.message.parts.find((p) => p.type === 'tool');
    assert.equal(part.tool, 'ask_echo');
    assert.equal(part.state.status, 'completed');
    assert.equal(part.state.output, 'hello from vscode');
    assert.match(part.state.title, /^ask: echo\b/); // `server: tool`, with or without the arguments
    assert.deepEqual(part.state.metadata, { mcpServer: 'ask', mcpTool: 'echo' });
    // The view got the tool part streamed like any other (the running state carries the title).
    const running = posted
      .slice(before)
      .find((m) => m.type === 'notification' && m.notification.method === 'part/updated' && m.notification.params.part.state?.status === 'running');
    assert.equal(running.notification.params.part.state.title, 'ask: echo {"text": "hello from vscode"}');

    // What the model was offered: the chosen built-ins, the MCP tools (within each server's
    // allow-list) and the editor tools.
    const offered = (await model.requests()).filter((r) => Array.isArray(r.body?.tools)).at(-1);
    const names = offered.body.tools.map((t) => t.function.name);
    for (const n of ['read_file', 'bash', 'ctx_echo', 'ctx_whoami', 'ask_echo', 'editor_selection']) assert.ok(names.includes(n), `${n} offered`);
    assert.ok(!names.includes('ask_whoami'), 'a tool outside the allow-list is not offered');

    // Reject: the call is refused, the model reads why.
    stub.answers.push({ quickPick: true, match: /^agentd: allow ask: echo /, answer: 'Reject' });
    const from = posted.length;
    toHost({ type: 'send', text: '/tool ask_echo {"text": "no"}', sessionId: result.sessionId });
    const rejected = await waitFor(() => posted.slice(from).find((m) => m.type === 'chatResult' || m.type === 'error'), { what: 'the second answer', timeoutMs: 30_000 });
    assert.equal(rejected.message.parts.find((p) => p.type === 'tool').state.status, 'error');
  });

  test('deactivate stops the daemon and its MCP servers', async () => {
    const pids = readFileSync(startsFile, 'utf8').trim().split('\n').map(Number);
    assert.ok(pids.length >= 2);
    await ext.deactivate();
    const alive = (pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor(() => pids.every((p) => !alive(p)), { what: 'MCP servers gone', timeoutMs: 10_000 });
  });
});
