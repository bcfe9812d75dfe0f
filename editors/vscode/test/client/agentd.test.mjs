// The client layer against the real `agentd` and its scripted model server, over real pipes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { lib, makeClient, runEvents, startScriptedModel, tempDirs, textOf, waitFor } from './helpers.mjs';

let model;
let dirs;
let h; // { client, notifications, states, logs }
const toolCalls = [];

before(async () => {
  model = await startScriptedModel();
  dirs = tempDirs();
  mkdirSync(dirs.workspace, { recursive: true });
  h = makeClient(model, dirs, {
    clientTools: [
      {
        definition: lib.EDITOR_TOOL_DEFINITIONS.find((t) => t.name === 'editor_selection'),
        execute: (input, request) => {
          toolCalls.push({ input, request });
          return { output: 'selected: let a = 1;', title: 'src/a.ts' };
        },
      },
      {
        definition: { name: 'broken_tool', description: 'Always fails.', parameters: { type: 'object', properties: {} } },
        execute: () => {
          throw new Error('the editor could not do it');
        },
      },
    ],
  });
});

after(async () => {
  await h?.client.stop();
  await model?.close();
  dirs?.cleanup();
});

describe('agentd client (real daemon)', () => {
  test('initialize declares client tools and permission requests; the daemon answers protocol 1', async () => {
    const init = await h.client.start();
    assert.equal(init.protocolVersion, 1);
    assert.equal(init.serverInfo.name, 'agentd');
    assert.ok(init.capabilities.requests.includes('session/chat'));
    assert.ok(init.capabilities.notifications.includes('part/delta'));
    assert.equal(typeof init.toolContextDir, 'string');
    assert.equal(h.client.state, 'running');
  });

  test('create a session and chat: notifications stream in contract order and rebuild the result', async () => {
    const { session, created } = await h.client.createSession({ title: 'streaming test' });
    assert.equal(created, true);
    assert.match(session.id, /^ses_/);
    const from = h.notifications.length;
    const res = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/stream 12 5' }] });
    assert.match(res.runId, /^run_/);
    assert.equal(res.message.role, 'assistant');
    assert.equal(res.message.finishReason, 'stop');
    assert.equal(textOf(res.message), Array.from({ length: 12 }, (_, i) => `w${i + 1}`).join(' '));

    const events = runEvents(h.notifications.slice(from), session.id, res.runId);
    const methods = events.map((e) => e.method);
    assert.equal(methods[0], 'session/status');
    assert.equal(events[0].params.status, 'busy');
    assert.equal(methods.at(-1), 'session/status');
    assert.equal(events.at(-1).params.status, 'idle');
    assert.ok(methods.filter((m) => m === 'part/delta').length >= 2, 'text streamed in several deltas');
    // The user message comes first, then the assistant's.
    const msgs = events.filter((e) => e.method === 'message/updated').map((e) => e.params.message);
    assert.equal(msgs[0].role, 'user');
    assert.ok(msgs.some((m) => m.id === res.message.id));
    // A part's deltas come after its first part/updated.
    const seen = new Set();
    for (const e of events) {
      if (e.method === 'part/updated') seen.add(e.params.part.id);
      if (e.method === 'part/delta') assert.ok(seen.has(e.params.partId), 'delta after part/updated');
    }
    // Applying the notifications reproduces the response.
    const state = new lib.ChatState(session.id);
    for (const e of events) state.apply(e);
    assert.deepEqual(state.snapshot(res.message.id), res.message);
    assert.equal(state.messages[0].info.role, 'user');
    assert.equal(textOf(state.snapshot(state.messages[0].info.id)), '/stream 12 5');
  });

  test('client tool round trip: tool/execute reaches the editor tool and its output the model', async () => {
    const { session } = await h.client.createSession({ title: 'tool test' });
    toolCalls.length = 0;
    const res = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/tool editor_selection {}' }] });
    assert.equal(toolCalls.length, 1);
    const { request } = toolCalls[0];
    assert.equal(request.sessionId, session.id);
    assert.equal(request.runId, res.runId);
    assert.equal(request.name, 'editor_selection');
    assert.equal(request.sessionScopeKey, session.sessionScopeKey);
    const tool = res.message.parts.find((p) => p.type === 'tool');
    assert.equal(tool.tool, 'editor_selection');
    assert.equal(tool.state.status, 'completed');
    assert.equal(tool.state.output, 'selected: let a = 1;');
    assert.match(textOf(res.message), /Tool editor_selection returned: selected: let a = 1;/);
    // The daemon saw the tool declared on session/chat.
    const requests = await model.requests();
    const declared = JSON.stringify(requests.at(-1));
    assert.match(declared, /editor_selection/);
  });

  test('a failing client tool is a tool error the model reads, not a protocol error', async () => {
    const { session } = await h.client.createSession({ title: 'broken tool' });
    const res = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/tool broken_tool {}' }] });
    assert.equal(res.message.finishReason, 'stop');
    const tool = res.message.parts.find((p) => p.type === 'tool');
    assert.equal(tool.state.status, 'error');
    assert.match(tool.state.error, /the editor could not do it/);
  });

  test('abort: the streamed text is kept, the message ends "aborted"', async () => {
    const { session } = await h.client.createSession({ title: 'abort test' });
    const from = h.notifications.length;
    const chat = h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/stream 200 20' }] });
    await waitFor(() => h.notifications.slice(from).filter((n) => n.method === 'part/delta').length >= 3, { what: 'three deltas' });
    const ab = await h.client.abort(session.id);
    assert.equal(ab.aborted, true);
    const res = await chat;
    assert.equal(res.message.finishReason, 'aborted');
    const text = textOf(res.message);
    assert.match(text, /^w1 w2 w3/);
    assert.ok(!text.includes('w200'), 'stopped before the end');
    const { messages } = await h.client.messages({ sessionId: session.id });
    assert.equal(messages.at(-1).finishReason, 'aborted');
    assert.equal(textOf(messages.at(-1)), text);
    const idle = await h.client.abort(session.id);
    assert.equal(idle.aborted, false, 'abort is idempotent');
  });

  test('cancelling the session/chat request aborts the run and answers -32800', async () => {
    const { session } = await h.client.createSession({ title: 'cancel test' });
    const from = h.notifications.length;
    const source = new lib.CancellationTokenSource();
    const chat = h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/stream 200 20' }] }, source.token);
    await waitFor(() => h.notifications.slice(from).some((n) => n.method === 'part/delta'), { what: 'a delta' });
    source.cancel();
    await assert.rejects(chat, (e) => lib.isCancelled(e));
    await waitFor(() => h.notifications.slice(from).some((n) => n.method === 'session/status' && n.params.status === 'idle'), { what: 'idle' });
    const { messages } = await h.client.messages({ sessionId: session.id });
    assert.equal(messages.at(-1).finishReason, 'aborted');
  });

  test('a second chat on a busy session is rejected with 1002 unless queued', async () => {
    const { session } = await h.client.createSession({ title: 'busy test' });
    const first = h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/stream 30 20' }] });
    await waitFor(() => h.notifications.some((n) => n.method === 'session/status' && n.params.sessionId === session.id && n.params.status === 'busy'), { what: 'busy' });
    await assert.rejects(h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: 'again' }] }), (e) => e.code === 1002);
    const queued = h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: 'queued one' }], onBusy: 'queue' });
    const [a, b] = await Promise.all([first, queued]);
    assert.equal(a.message.finishReason, 'stop');
    assert.match(textOf(b.message), /You said: queued one/);
  });

  test('session list: query, paging with cursor, rename, delete', async () => {
    const ids = [];
    for (const title of ['alpha apples', 'beta bananas', 'gamma grapes', 'delta dates', 'alpha avocados']) {
      ids.push((await h.client.createSession({ title })).session.id);
    }
    const q = await h.client.listSessions({ query: 'ALPHA' });
    assert.deepEqual(q.sessions.map((s) => s.title).sort(), ['alpha apples', 'alpha avocados']);

    const walked = [];
    let cursor;
    let pages = 0;
    do {
      const page = await h.client.listSessions({ limit: 2, ...(cursor ? { cursor } : {}) });
      assert.ok(page.sessions.length <= 2);
      walked.push(...page.sessions.map((s) => s.id));
      cursor = page.nextCursor ?? undefined;
      pages++;
    } while (cursor && pages < 50);
    assert.equal(new Set(walked).size, walked.length, 'no session twice');
    for (const id of ids) assert.ok(walked.includes(id), 'every session once');
    assert.ok(pages >= 3);

    const renamed = await h.client.renameSession(ids[1], 'bananas renamed');
    assert.equal(renamed.session.title, 'bananas renamed');
    await waitFor(() => h.notifications.some((n) => n.method === 'session/updated' && n.params.session.id === ids[1] && n.params.session.title === 'bananas renamed'), { what: 'session/updated' });
    const first = await h.client.listSessions({ limit: 1 });
    assert.equal(first.sessions[0].id, ids[1], 'a changed session moves to the front');

    assert.deepEqual(await h.client.deleteSession(ids[2]), { deleted: true });
    assert.deepEqual(await h.client.deleteSession(ids[2]), { deleted: false });
    const all = await h.client.listSessions({ limit: 500 });
    assert.ok(!all.sessions.some((s) => s.id === ids[2]));
    await assert.rejects(h.client.getSession(ids[2]), (e) => e.code === 1001);
  });

  test('permission/request reaches the handler; reject and allow decide the built-in write', async () => {
    const asked = [];
    let answer = 'reject_once';
    h.client.setPermissionHandler((req) => {
      asked.push(req);
      return { outcome: answer };
    });
    try {
      const { session } = await h.client.createSession({ title: 'permission test', workspaceRoot: dirs.workspace });
      const cmd = '/tool write_file {"path": "perm.txt", "content": "hello"}';
      const rejected = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: cmd }], tools: ['write_file'] });
      assert.equal(asked.length, 1);
      assert.equal(asked[0].tool, 'write_file');
      assert.equal(asked[0].sessionId, session.id);
      assert.equal(rejected.message.parts.find((p) => p.type === 'tool').state.status, 'error');
      assert.equal(existsSync(join(dirs.workspace, 'perm.txt')), false);

      answer = 'allow_once';
      const allowed = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: cmd }], tools: ['write_file'] });
      assert.equal(asked.length, 2);
      assert.equal(allowed.message.parts.find((p) => p.type === 'tool').state.status, 'completed');
      assert.equal(readFileSync(join(dirs.workspace, 'perm.txt'), 'utf8'), 'hello');
    } finally {
      h.client.setPermissionHandler(undefined);
    }
  });

  test('models/list names the configured model', async () => {
    const { models } = await h.client.listModels();
    assert.ok(models.some((m) => m.id === 'scripted'));
  });

  test('a daemon that dies is restarted with a visible notice, and works again', async () => {
    const pid = h.client.pid;
    assert.ok(pid);
    const before = h.states.length;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => h.states.slice(before).some((s) => s.state === 'restarting'), { what: 'restarting' });
    const notice = h.states.slice(before).find((s) => s.state === 'restarting');
    assert.match(notice.message, /stopped unexpectedly \(signal SIGKILL\); restarting in/);
    assert.equal(notice.attempt, 1);
    await waitFor(() => h.client.state === 'running', { what: 'running again' });
    assert.notEqual(h.client.pid, pid);
    const { session } = await h.client.createSession({ title: 'after restart' });
    const res = await h.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: 'still there?' }] });
    assert.match(textOf(res.message), /You said: still there\?/);
    // Sessions from before the crash are still listed (same data dir).
    const list = await h.client.listSessions({ query: 'streaming test' });
    assert.equal(list.sessions.length, 1);
  });

  test('graceful stop: shutdown and exit end the process', async () => {
    const pid = h.client.pid;
    await h.client.stop();
    assert.equal(h.client.state, 'stopped');
    assert.throws(() => process.kill(pid, 0), 'process is gone');
    await h.client.start();
    assert.equal(h.client.state, 'running');
  });
});

describe('restarts are bounded', () => {
  test('a daemon that keeps dying is given up on with a message (no silent loop)', async () => {
    const client = new lib.AgentdClient({
      command: process.execPath,
      args: ['-e', 'process.exit(3)'],
      restartPolicy: { baseDelayMs: 20, maxDelayMs: 50, maxRestarts: 2, windowMs: 60_000 },
    });
    const states = [];
    client.onDidChangeState((s) => states.push(s));
    await assert.rejects(client.start());
    await waitFor(() => client.state === 'failed', { what: 'failed', timeoutMs: 5000 });
    const restarts = states.filter((s) => s.state === 'restarting');
    assert.equal(restarts.length, 2);
    assert.deepEqual(restarts.map((s) => s.attempt), [1, 2]);
    assert.ok(restarts[1].delayMs > restarts[0].delayMs, 'backoff grows');
    assert.match(states.at(-1).message, /failed to start/);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(client.state, 'failed', 'no further attempts');
    await client.stop();
  });

  test('a missing executable fails at once with a clear message', async () => {
    const client = new lib.AgentdClient({ command: '/nonexistent/agentd' });
    const states = [];
    client.onDidChangeState((s) => states.push(s));
    await assert.rejects(client.start(), /not found/);
    assert.equal(client.state, 'failed');
    assert.equal(states.filter((s) => s.state === 'restarting').length, 0);
    await assert.rejects(client.listSessions(), /not found/);
  });
});
