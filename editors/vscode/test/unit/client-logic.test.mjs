// Pure parts of the client layer: settings → environment, restart policy, apply_edit text
// arithmetic, and the notification reducer against the recorded fixture.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(fileURLToPath(import.meta.url), '../../..');
const lib = require(join(root, 'out/client.cjs'));

describe('settings', () => {
  test('normalizeSettings fills defaults and drops junk', () => {
    assert.deepEqual(lib.normalizeSettings({}), { path: 'agentd', model: '', env: {}, dataDir: '' });
    assert.deepEqual(lib.normalizeSettings({ path: '  /opt/agentd  ', model: 'gpt', env: { A: 1, B: null }, dataDir: '~/x' }), {
      path: '/opt/agentd',
      model: 'gpt',
      env: { A: '1' },
      dataDir: '~/x',
    });
    assert.deepEqual(lib.normalizeSettings({ env: ['nope'] }).env, {});
  });

  test('daemonEnvironment: agentd.env over the editor env, dedicated settings win', () => {
    const env = lib.daemonEnvironment(
      { path: 'agentd', model: 'm1', env: { OPENAI_BASE_URL: 'http://x', AGENTD_MODEL: 'ignored' }, dataDir: '~/data' },
      { HOME: '/home/u', PATH: '/bin', OPENAI_BASE_URL: 'http://base' },
    );
    assert.equal(env.PATH, '/bin');
    assert.equal(env.OPENAI_BASE_URL, 'http://x');
    assert.equal(env.AGENTD_MODEL, 'm1');
    assert.equal(env.AGENTD_DATA_DIR, '/home/u/data');
    assert.equal(env.PYTHONUNBUFFERED, '1');
    const none = lib.daemonEnvironment(lib.normalizeSettings({}), { PATH: '/bin' });
    assert.equal(none.AGENTD_MODEL, undefined);
    assert.equal(none.AGENTD_DATA_DIR, undefined);
  });

  test('needsRestart compares what the daemon sees', () => {
    const a = lib.normalizeSettings({ env: { A: '1', B: '2' } });
    assert.equal(lib.needsRestart(a, lib.normalizeSettings({ env: { B: '2', A: '1' } })), false);
    assert.equal(lib.needsRestart(a, lib.normalizeSettings({ env: { A: '1' } })), true);
    assert.equal(lib.needsRestart(a, { ...a, model: 'x' }), true);
  });
});

describe('restart policy', () => {
  test('exponential backoff, capped, bounded per window', () => {
    let now = 0;
    const p = new lib.RestartPolicy({ maxRestarts: 3, windowMs: 1000, baseDelayMs: 100, maxDelayMs: 250 }, () => now);
    assert.deepEqual(p.onCrash(), { restart: true, attempt: 1, delayMs: 100 });
    assert.deepEqual(p.onCrash(), { restart: true, attempt: 2, delayMs: 200 });
    assert.deepEqual(p.onCrash(), { restart: true, attempt: 3, delayMs: 250 });
    assert.equal(p.onCrash().restart, false);
    now = 5000; // the window has passed: crashes long ago do not count
    assert.deepEqual(p.onCrash(), { restart: true, attempt: 1, delayMs: 100 });
    p.reset();
    assert.equal(p.onCrash().attempt, 1);
  });
});

describe('apply_edit logic', () => {
  test('replaces a unique match; refuses missing or ambiguous ones', () => {
    assert.equal(lib.applyTextEdits('a b c', [{ oldString: 'b', newString: 'B' }]), 'a B c');
    assert.equal(lib.applyTextEdits('x x', [{ oldString: 'x', newString: 'y', replaceAll: true }]), 'y y');
    assert.equal(lib.applyTextEdits('$1', [{ oldString: '$1', newString: '$&$&' }]), '$&$&', 'no replacement patterns');
    assert.throws(() => lib.applyTextEdits('x x', [{ oldString: 'x', newString: 'y' }]), /occurs 2 times/);
    assert.throws(() => lib.applyTextEdits('abc', [{ oldString: 'z', newString: 'y' }]), /not found/);
    assert.equal(lib.applyTextEdits('', [{ oldString: '', newString: 'new' }]), 'new');
  });

  test('parseApplyEditInput validates the tool input', () => {
    assert.deepEqual(lib.parseApplyEditInput({ path: 'a.ts', content: 'x' }), { path: 'a.ts', edits: undefined, content: 'x', description: undefined });
    assert.throws(() => lib.parseApplyEditInput({ path: 'a.ts' }), /exactly one/);
    assert.throws(() => lib.parseApplyEditInput({ path: 'a.ts', content: 'x', edits: [{ oldString: 'a', newString: 'b' }] }), /exactly one/);
    assert.throws(() => lib.parseApplyEditInput({ content: 'x' }), /path/);
    assert.throws(() => lib.parseApplyEditInput({ path: 'a', edits: [{ oldString: 1 }] }), /edits\[0\]/);
  });

  test('sliceLines and describeChange', () => {
    assert.equal(lib.sliceLines('1\n2\n3\n4', 2, 3), '2\n3');
    assert.equal(lib.sliceLines('1\n2', undefined, undefined), '1\n2');
    assert.equal(lib.describeChange('a\nb\nc', 'a\nX\nY\nc'), '1 line(s) replaced by 2 line(s) starting at line 2');
  });

  test('the editor tools are declared with JSON Schema parameters', () => {
    const names = lib.EDITOR_TOOL_DEFINITIONS.map((t) => t.name);
    assert.deepEqual(names, ['editor_selection', 'open_editors', 'read_document', 'apply_edit']);
    for (const t of lib.EDITOR_TOOL_DEFINITIONS) {
      assert.equal(t.parameters.type, 'object');
      assert.ok(t.description.length > 20);
    }
  });
});

describe('ChatState (notification reducer)', () => {
  const fixture = JSON.parse(readFileSync(join(root, 'test/fixtures/agentd-notifications.json'), 'utf8'));

  test('replaying each recorded turn reproduces its session/chat result', () => {
    const state = new lib.ChatState(fixture.session.id);
    for (const t of fixture.turns) {
      for (const e of t.events) state.apply(e);
      assert.deepEqual(state.snapshot(t.result.message.id), t.result.message, t.name);
    }
    assert.equal(state.messages.length, fixture.turns.length * 2);
    assert.deepEqual(state.messages.map((m) => m.info.role), fixture.turns.flatMap(() => ['user', 'assistant']));
  });

  test('ignores other sessions; reports deltas as deltas', () => {
    const state = new lib.ChatState('ses_other');
    const t = fixture.turns[0];
    assert.deepEqual(t.events.flatMap((e) => state.apply(e)), []);
    const mine = new lib.ChatState(t.sessionId);
    const kinds = t.events.flatMap((e) => mine.apply(e)).map((c) => c.kind);
    assert.ok(kinds.includes('delta'));
    assert.equal(kinds[0], 'status');
  });

  test('history and live notifications merge in id order', () => {
    const [a, b] = fixture.turns;
    const state = new lib.ChatState(a.sessionId);
    for (const e of b.events) state.apply(e);
    const userA = a.events.find((e) => e.method === 'message/updated' && e.params.message.role === 'user');
    state.load([]);
    for (const e of b.events) state.apply(e);
    state.upsertFull({ ...userA.params.message, parts: [] });
    state.upsertFull(a.result.message);
    const ids = state.messages.map((m) => m.info.id);
    assert.deepEqual(ids, [...ids].sort());
  });

  test("session/updated carries the session's status: a run that ended before the view followed the session ends here too", () => {
    const session = { ...fixture.session, status: 'busy' };
    const state = new lib.ChatState(session.id);
    state.status = 'busy'; // as the view opened it
    // Any update that says busy again (a title, totals) changes no status.
    assert.deepEqual(state.apply({ method: 'session/updated', params: { session } }).map((c) => c.kind), ['session']);
    const changes = state.apply({ method: 'session/updated', params: { session: { ...session, status: 'idle' } } });
    assert.deepEqual(changes.map((c) => c.kind), ['session', 'status']);
    assert.equal(changes[1].status, 'idle');
    assert.equal(state.status, 'idle');
    // A retry is still running: from busy, no change; from idle, the run shows.
    assert.deepEqual(state.apply({ method: 'session/updated', params: { session: { ...session, status: 'retry' } } }).at(-1), { kind: 'status', status: 'retry' });
    assert.deepEqual(state.apply({ method: 'session/updated', params: { session: { ...session, status: 'busy' } } }).map((c) => c.kind), ['session']);
    // Another session's update is not this chat's.
    assert.deepEqual(state.apply({ method: 'session/updated', params: { session: { ...session, id: 'ses_other', status: 'idle' } } }), []);
    assert.equal(state.status, 'retry');
  });
});

describe('which daemon serves the window', () => {
  const server = { name: 'agentd', version: '1.2.3' };
  test('shared, its pid and the editors connected, and what a reload does to answers', () => {
    assert.equal(
      lib.describeDaemon(server, { shared: true, pid: 42, onDisconnect: 'continue', connections: 3 }),
      'agentd 1.2.3 is running: the shared daemon (pid 42), 3 editors connected when this window joined; answers go on through a window reload',
    );
    assert.equal(
      lib.describeDaemon(server, { shared: true, pid: 42, onDisconnect: 'abort', connections: 1 }),
      'agentd 1.2.3 is running: the shared daemon (pid 42), 1 editor connected when this window joined; answers stop when the window that asked closes or reloads',
    );
    assert.equal(
      lib.describeDaemon(server, { shared: false, pid: 7, onDisconnect: 'abort', connections: 1 }),
      "agentd 1.2.3 is running: this window's own daemon (pid 7); its answers stop when the window closes or reloads",
    );
    // An agentd from before `daemon` was in initialize's answer.
    assert.equal(lib.describeDaemon(server, undefined), 'agentd 1.2.3 is running');
  });
});

describe('MCP servers', () => {
  test('mcp/status: a warning per transition into failed, none for a repeat of the same failure', () => {
    const tracker = new lib.McpStatusTracker();
    const failed = { name: 'broken', state: 'failed', error: "cannot start 'x': command not found" };
    assert.equal(tracker.update({ name: 'broken', state: 'starting' }), undefined);
    assert.equal(tracker.update(failed), "agentd: MCP server broken failed: cannot start 'x': command not found");
    assert.equal(tracker.update({ ...failed }), undefined, 'an identical failed notification: no second warning');
    assert.equal(tracker.update({ name: 'broken', state: 'starting' }), undefined);
    assert.equal(tracker.update({ ...failed }), "agentd: MCP server broken failed: cannot start 'x': command not found", 'failed again after starting');
    assert.equal(tracker.update({ ...failed, error: 'another reason' }), 'agentd: MCP server broken failed: another reason', 'a different failure');
    // A session's own server is tracked apart from the configured one of its name.
    assert.match(tracker.update({ ...failed, sessionId: 'ses_1' }), /broken failed/);
    // Ready then failed (a crash) warns; no error text still makes a sentence.
    tracker.update({ name: 'ctx', state: 'ready', toolCount: 2 });
    assert.equal(tracker.update({ name: 'ctx', state: 'failed' }), 'agentd: MCP server ctx failed');
    // A new daemon: everything is forgotten.
    tracker.reset();
    assert.match(tracker.update(failed), /broken failed/);
  });

  test('mcp/status log lines', () => {
    assert.equal(lib.describeMcpStatus({ name: 'ctx', state: 'ready', toolCount: 6 }), 'MCP server ctx: ready (6 tools)');
    assert.equal(lib.describeMcpStatus({ name: 'ctx', state: 'ready', toolCount: 1, sessionId: 'ses_1' }), 'MCP server ctx (session ses_1): ready (1 tool)');
    assert.equal(lib.describeMcpStatus({ name: 'b', state: 'failed', error: 'boom' }), 'MCP server b: failed: boom');
    assert.equal(lib.describeMcpStatus({ name: 'b', state: 'starting' }), 'MCP server b: starting');
  });

  test('session/chat tools: a pattern per MCP server next to the chosen built-ins', () => {
    const server = (name, tools = []) => ({ name, state: 'stopped', transport: 'stdio', trust: 'ask', tools });
    assert.deepEqual(lib.mcpToolPatterns([]), []);
    assert.deepEqual(lib.mcpToolPatterns([server('time'), server('my.server'), server('ctx'), server('ctx')]), ['time_*', 'my_server_*', 'ctx_*']);
    // `write_*` would also name the built-in write_file: the server's tools are named exactly.
    const write = server('write', [
      { name: 'note', qualifiedName: 'write_note', allowed: true },
      { name: 'secret', qualifiedName: 'write_secret', allowed: false },
    ]);
    assert.deepEqual(lib.mcpToolPatterns([write, server('bash')]), ['write_note', 'bash_*']);
    // Names past 64 characters are cut to 55 by agentd: the pattern keeps to what stays.
    const long = 'x'.repeat(70);
    assert.deepEqual(lib.mcpToolPatterns([server(long)]), ['x'.repeat(55) + '*']);
  });

  test('quick pick items: servers, then one server’s tools', () => {
    const tool = (name, allowed = true, description) => ({ name, qualifiedName: `ctx_${name}`, allowed, ...(description ? { description } : {}) });
    const servers = [
      { name: 'ctx', state: 'ready', transport: 'stdio', trust: 'allow', tools: [tool('echo', true, 'Echo\n  the text.'), tool('hang', false), tool('fail')] },
      { name: 'broken', state: 'failed', transport: 'stdio', trust: 'ask', error: 'command not found', tools: [] },
      { name: 'off', state: 'stopped', transport: 'http', trust: 'ask', tools: [] },
      { name: 'mine', state: 'ready', transport: 'stdio', trust: 'ask', sessionId: 'ses_1', tools: [tool('one')] },
      { name: 'idle', state: 'stopped', transport: 'stdio', trust: 'ask', enabled: false, tools: [] },
    ];
    const items = lib.mcpServerItems(servers);
    assert.deepEqual(
      items.map(({ label, description, detail }) => ({ label, description, detail })),
      [
        { label: 'ctx', description: 'ready · stdio · allow', detail: '2 of 3 tools allowed: ctx_echo, ctx_fail' },
        { label: 'broken', description: 'failed · stdio · ask', detail: 'command not found' },
        { label: 'off', description: 'stopped · http · ask', detail: 'not started' },
        { label: 'mine', description: 'ready · stdio · ask · this chat only', detail: '1 tool: ctx_one' },
        { label: 'idle', description: 'stopped · stdio · ask', detail: 'disabled in the configuration' },
      ],
    );
    assert.equal(items[0].server, servers[0]);
    const tools = lib.mcpToolItems(servers[0]);
    assert.deepEqual(
      tools.map(({ label, description, detail }) => ({ label, description, detail })),
      [
        { label: 'ctx_echo', description: 'allowed', detail: 'Echo the text.' },
        { label: 'ctx_hang', description: 'not allowed (not in the server’s tools list)', detail: undefined },
        { label: 'ctx_fail', description: 'allowed', detail: undefined },
      ],
    );
  });
});

describe('sandbox wording', () => {
  test('the tool card chip names the mode, and says unconfined, blocked or rerun', () => {
    assert.equal(lib.sandboxLabel(undefined), '');
    assert.equal(lib.sandboxLabel({ mode: 'workspace-write', network: false }), 'workspace-write');
    assert.equal(lib.sandboxLabel({ mode: 'read-only', network: true }), 'read-only, network');
    assert.equal(lib.sandboxLabel({ mode: 'full-access', network: true }), 'full access');
    assert.equal(lib.sandboxLabel({ mode: 'full-access', network: true, fallback: 'no userns' }), 'unconfined: no sandbox');
    assert.equal(
      lib.sandboxLabel({ mode: 'workspace-write', network: false, blocked: 'writing outside the workspace' }),
      'workspace-write, blocked',
    );
    assert.equal(
      lib.sandboxLabel({ mode: 'full-access', network: true, blocked: 'network access', rerunOf: 'workspace-write' }),
      'full access, rerun',
    );
  });

  test('the permission dialog says how the command would run', () => {
    assert.equal(lib.sandboxSentence(null), '');
    assert.equal(
      lib.sandboxSentence({ mode: 'workspace-write', network: false }),
      'It runs in the workspace-write sandbox: writes only in the workspace and a private /tmp, no network.',
    );
    assert.equal(
      lib.sandboxSentence({ mode: 'read-only', network: true }),
      'It runs in the read-only sandbox: writes only a private /tmp, with network.',
    );
    assert.equal(lib.sandboxSentence({ mode: 'full-access', network: true }), 'It runs with full access (no sandbox).');
    assert.equal(
      lib.sandboxSentence({ mode: 'full-access', network: true, fallback: 'bubblewrap is not installed' }),
      'No sandbox is available here (bubblewrap is not installed): it would run unconfined, with your full rights.',
    );
    assert.equal(
      lib.sandboxSentence({ mode: 'workspace-write', network: false, blocked: 'writing files (read-only mode)', rerunOf: 'read-only' }),
      'The read-only sandbox blocked writing files (read-only mode). Rerun it in the workspace-write sandbox?',
    );
  });
});

describe('permission choices', () => {
  const outcomes = (r) => lib.permissionChoices(r).map((c) => c.outcome);
  test('Reject first (the default), then Allow once, Allow always', () => {
    assert.deepEqual(outcomes({ tool: 'write_file', input: { path: 'a.txt', content: 'x' } }), ['reject_once', 'allow_once', 'allow_always']);
    const [, once, always] = lib.permissionChoices({ tool: 'write_file', input: { path: 'a.txt', content: 'one\ntwo' } });
    assert.equal(once.detail, 'a.txt: one ⏎ two');
    assert.match(always.detail, /this same write_file input/);
    assert.match(lib.permissionChoices({ tool: 'ask_echo', input: {}, mcpServer: 'ask' })[2].detail, /any input/);
  });
  test("a command says how it would run; one that would run unconfined offers no Allow always (agentd would ask again)", () => {
    const sandboxed = lib.permissionChoices({ tool: 'bash', input: { command: 'make' }, sandbox: { mode: 'workspace-write', network: false } });
    assert.equal(sandboxed[1].detail, lib.sandboxSentence({ mode: 'workspace-write', network: false }));
    assert.equal(sandboxed.length, 3);
    const rerun = { mode: 'full-access', network: true, blocked: 'network access', rerunOf: 'workspace-write' };
    assert.deepEqual(outcomes({ tool: 'bash', input: { command: 'curl x' }, sandbox: rerun }), ['reject_once', 'allow_once', 'allow_always']);
    const unconfined = { mode: 'full-access', network: true, fallback: 'bubblewrap is not installed' };
    const asked = lib.permissionChoices({ tool: 'bash', input: { command: 'rm -rf build' }, sandbox: unconfined });
    assert.deepEqual(asked.map((c) => c.outcome), ['reject_once', 'allow_once']);
    assert.match(asked[1].detail, /unconfined/);
  });
  test('the one-line summary: newlines shown, long input cut, odd input still said', () => {
    assert.equal(lib.permissionSummary('bash', { command: 'a\n  b' }), '$ a ⏎ b');
    const long = lib.permissionSummary('bash', { command: 'x'.repeat(500) });
    assert.equal(long.length, 160);
    assert.ok(long.endsWith('…'));
    assert.equal(lib.permissionSummary('bash', { command: 42 }), '{"command":42}');
    assert.equal(lib.permissionSummary('write_file', null), 'null');
    assert.equal(lib.permissionSummary('edit_file', { path: 'p', newString: '' }), 'p');
  });
});

describe('usage under an answer', () => {
  const step = (reason, usage, cost = 0) => ({ id: `prt_${reason}`, type: 'step-finish', reason, cost, usage: { inputTokens: 0, outputTokens: 0, reasoningTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, ...usage } });
  const zero = { inputTokens: 0, outputTokens: 0, reasoningTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 };

  test('a completed answer shows its tokens and cost', () => {
    const u = lib.describeUsage({ usage: { ...zero, inputTokens: 1200, outputTokens: 80 }, cost: 0.0004, finishReason: 'stop' }, [step('stop', { inputTokens: 1200, outputTokens: 80 }, 0.0004)]);
    assert.equal(u.text, '1.2k in · 80 out · $0.0004');
    assert.equal(u.unknownSteps, 0);
  });

  test('a stopped answer whose only step the model never reported is "usage unknown", not zeros', () => {
    for (const finishReason of ['aborted', 'error', 'interrupted']) {
      for (const parts of [[step(finishReason === 'aborted' ? 'aborted' : 'error', {})], []]) {
        const u = lib.describeUsage({ usage: zero, cost: 0, finishReason }, parts);
        assert.equal(u.text, 'usage unknown', `${finishReason} with ${parts.length} step(s)`);
        assert.doesNotMatch(u.text, /\$0\.00|(^|\D)0 in/);
        assert.match(u.title, /unknown/);
      }
    }
    // A message with no usage at all (an older daemon, or a partial message) is no different.
    assert.equal(lib.describeUsage({ finishReason: 'aborted' }, []).text, 'usage unknown');
  });

  test('a stopped answer after completed steps shows what they used and says the rest is unknown', () => {
    const parts = [step('tool-calls', { inputTokens: 900, outputTokens: 20 }, 0.001), step('aborted', {})];
    const u = lib.describeUsage({ usage: { ...zero, inputTokens: 900, outputTokens: 20 }, cost: 0.001, finishReason: 'aborted' }, parts);
    assert.equal(u.text, '900 in · 20 out · $0.001 + stopped step: usage unknown');
    assert.equal(u.unknownSteps, 1);
    assert.match(u.title, /Input tokens: 900/);
    assert.match(u.title, /completed steps only/);
    const two = lib.describeUsage({ usage: { ...zero, inputTokens: 900 }, cost: 0, finishReason: 'error' }, [...parts, step('error', {})]);
    assert.match(two.text, /\+ 2 steps: usage unknown$/);
  });

  test('a completed step the provider did not report (no usage in the stream) is unknown too', () => {
    const u = lib.describeUsage({ usage: zero, cost: 0, finishReason: 'stop' }, [step('stop', {})]);
    assert.equal(u.text, 'usage unknown');
  });
});

describe('Send Selection: the lines a selection covers', () => {
  const r = (a, b, c, d) => lib.selectionLineRange({ line: a, character: b }, { line: c, character: d });
  test('a selection ending at column 0 of a later line does not include that line', () => {
    assert.deepEqual(r(0, 0, 2, 0), { first: 1, last: 2 }, 'select all in a 2-line file with a final newline');
    assert.deepEqual(r(0, 0, 1, 0), { first: 1, last: 1 }, 'one whole line picked with Shift+Down');
    assert.deepEqual(r(4, 3, 9, 0), { first: 5, last: 9 });
  });
  test('otherwise the last line is the one the selection ends on', () => {
    assert.deepEqual(r(0, 0, 1, 14), { first: 1, last: 2 });
    assert.deepEqual(r(3, 2, 3, 7), { first: 4, last: 4 }, 'within one line');
    assert.deepEqual(r(3, 0, 3, 0), { first: 4, last: 4 }, 'empty, at column 0');
    assert.deepEqual(r(2, 5, 0, 0), { first: 1, last: 3 }, 'reversed (anchor after active)');
  });
});

describe('Restricted Mode', () => {
  const defs = lib.EDITOR_TOOL_DEFINITIONS;
  test('only the read-only built-ins are offered, whatever agentd.tools says', () => {
    assert.deepEqual(lib.restrictedBuiltinTools(undefined), ['read_file', 'list_dir', 'glob', 'grep']);
    assert.deepEqual(lib.restrictedBuiltinTools(['read_file', 'list_dir', 'glob', 'grep', 'write_file', 'edit_file', 'bash']), ['read_file', 'list_dir', 'glob', 'grep']);
    assert.deepEqual(lib.restrictedBuiltinTools(['bash', 'b*', 'time_*', 'write_file', 'edit_*', 'evil_*']), []);
    assert.deepEqual(lib.restrictedBuiltinTools(['grep', 'bash']), ['grep']);
    assert.deepEqual(lib.restrictedBuiltinTools([]), []);
  });
  test("wildcards in the user's agentd.tools name the read-only tools they match, as agentd matches them", () => {
    assert.deepEqual(lib.restrictedBuiltinTools(['*']), ['read_file', 'list_dir', 'glob', 'grep']);
    assert.deepEqual(lib.restrictedBuiltinTools(['*_*']), ['read_file', 'list_dir']);
    assert.deepEqual(lib.restrictedBuiltinTools(['g*', 'bash']), ['glob', 'grep']);
    assert.deepEqual(lib.restrictedBuiltinTools(['[!g]*']), ['read_file', 'list_dir']);
    // The same answers as Python's fnmatchcase, which agentd uses, on awkward patterns.
    const patterns = ['*', '?', 'g?ep', 'gr[a-f]p', 'gr[!a-f]p', '[]]*', '[!]]*', '[', 'read[', '*.*', 'a*b*c', '[^r]*', '\\*', '(r)*', 're+d_file', '[g-r]*', 'GREP', '**', 'grep*', '*file', 'r??d_f*e', '[\\]]'];
    const names = ['grep', 'glob', 'read_file', 'list_dir', ']x', '^x', 'read[', 'a.b', 'axbyc', '\\x', '(r)x', 'reed_file', 'Grep', '', 'r\nfile', 'x.y'];
    const py = execFileSync(
      process.env.AGENTD_PYTHON || 'python3',
      ['-c', 'import json,sys,fnmatch; p,n=json.load(sys.stdin); print(json.dumps([[fnmatch.fnmatchcase(x,q) for x in n] for q in p]))'],
      { input: JSON.stringify([patterns, names]), encoding: 'utf8' },
    );
    const expected = JSON.parse(py);
    for (const [i, p] of patterns.entries()) {
      for (const [j, n] of names.entries()) assert.equal(lib.wildcardMatches(p, n), expected[i][j], `${JSON.stringify(p)} vs ${JSON.stringify(n)}`);
    }
  });
  test('apply_edit is not declared; the read-only editor tools are', () => {
    assert.deepEqual(lib.restrictedClientTools(defs).map((t) => t.name), ['editor_selection', 'open_editors', 'read_document']);
    assert.deepEqual(lib.restrictedClientTools([{ name: 'apply_edit' }, { name: 'evil', description: '' }]), []);
  });
});
