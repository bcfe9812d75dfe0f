// End to end without VS Code (which cannot be downloaded here): the bundled extension
// (dist/extension.js) runs under Node with a stand-in `vscode` module, spawns the real agentd
// (with the scripted model), and its webview view is the real page, served with the HTML the
// extension generates (CSP and nonce included) and loaded in headless Chromium. A person's
// actions are clicks and keys in that page, and the answers of the VS Code dialogs are scripted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { AGENTD, root, startScriptedModel, tempDirs, waitFor } from '../client/helpers.mjs';
import { launch } from '../webview/harness.mjs';
import { themes } from '../webview/themes.mjs';
import { deactivateExtension, installVscodeStub } from './harness.mjs';

const require = createRequire(import.meta.url);
// `require('vscode')` from the bundle gets the stand-in.
const { vscode, stub, restore: restoreVscode } = installVscodeStub();

let model, dirs, server, browser, page, ext, context, origin;
let viewListeners = [];
let deliverChain = Promise.resolve();
const FILE_TEXT = 'let total = items.reduce((a, b) => a + b, 0);\nexport { total };\n';

/** The agentd processes this test process started (children whose command line names agentd). */
function daemonPids() {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes('agentd') && !cmd.includes('scripted_model')) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

before(async () => {
  model = await startScriptedModel();
  dirs = tempDirs();
  mkdirSync(join(dirs.workspace, 'src'), { recursive: true });
  writeFileSync(join(dirs.workspace, 'src/app.ts'), FILE_TEXT);
  stub.workspaceFolder = dirs.workspace;
  stub.config = {
    path: AGENTD,
    model: 'scripted',
    tools: ['read_file', 'list_dir', 'glob', 'grep', 'write_file', 'edit_file', 'bash'],
    dataDir: dirs.data,
    // The extension's own agentd (follow.test.mjs runs it shared).
    env: { OPENAI_BASE_URL: model.baseUrl, OPENAI_API_KEY: 'test', AGENTD_STATE_DIR: dirs.state, AGENTD_CONFIG: join(dirs.base, 'none.toml'), AGENTD_SHARED: '0' },
  };
  // An open editor with the first line selected.
  const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(join(dirs.workspace, 'src/app.ts')));
  doc.languageId = 'typescript';
  stub.activeTextEditor = vscode.__makeEditor(doc, new vscode.Selection(new vscode.Position(0, 0), new vscode.Position(0, 45)));

  // The page is served from loopback; asWebviewUri maps extension files there.
  let html = '';
  server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(html);
    }
    const m = /^\/ext\/((dist|media)\/[\w.-]+)$/.exec(url.pathname);
    if (m) {
      res.writeHead(200, { 'content-type': m[1].endsWith('.js') ? 'text/javascript' : 'text/css' });
      return res.end(readFileSync(join(root, m[1])));
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${server.address().port}`;

  ext = require(join(root, 'dist/extension.js'));
  const mem = new Map();
  context = {
    subscriptions: [],
    extensionUri: vscode.Uri.file(root),
    workspaceState: { get: (k) => mem.get(k), update: async (k, v) => void mem.set(k, v), keys: () => [...mem.keys()] },
    extension: { packageJSON: JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) },
  };
  ext.activate(context);

  browser = await launch();
  const ctx = await browser.newContext({ viewport: { width: 440, height: 800 } });
  page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.exposeFunction('__toHost', (m) => viewListeners.forEach((l) => l(m)));
  await page.addInitScript((vars) => {
    let state = null;
    window.acquireVsCodeApi = () => ({ postMessage: (m) => window.__toHost(JSON.parse(JSON.stringify(m))), getState: () => state, setState: (s) => (state = s) });
    document.addEventListener('DOMContentLoaded', () => {
      for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
    });
  }, themes.dark.vars);

  const provider = stub.providers.get('agentd.chatView');
  assert.ok(provider, 'the chat view provider is registered');
  const webview = {
    options: {},
    html: '',
    cspSource: origin,
    asWebviewUri: (uri) => `${origin}/ext${uri.path.slice(root.length)}`,
    postMessage: (m) => {
      deliverChain = deliverChain.then(() => page.evaluate((msg) => window.dispatchEvent(new MessageEvent('message', { data: msg })), m).catch(() => undefined));
      return Promise.resolve(true);
    },
    onDidReceiveMessage: (l) => {
      viewListeners.push(l);
      return { dispose: () => (viewListeners = viewListeners.filter((x) => x !== l)) };
    },
  };
  provider.resolveWebviewView({ webview, visible: true, show() {}, onDidDispose: () => ({ dispose() {} }) });
  html = webview.html;
  assert.match(html, /Content-Security-Policy/);
  assert.match(html, new RegExp(`script-src 'nonce-`));
  await page.goto(origin + '/');
  await page.locator('#empty-state').waitFor();
});

after(async () => {
  await deactivateExtension(ext, context);
  await browser?.close();
  await new Promise((r) => server?.close(r));
  await model?.close();
  dirs?.cleanup();
  restoreVscode();
});

const assistant = () => page.locator('article.message.assistant').last();
async function send(text) {
  await page.locator('#input').fill(text);
  await page.locator('#input').press('Enter');
}
const lastToolCard = () => page.locator('.tool-card').last();
const completedTurns = () => page.evaluate(() => [...document.querySelectorAll('article.message.assistant .message-meta')].filter((m) => !m.hidden).length);
/** Sends from the page's input and waits for the answer to complete. */
async function sendAndWait(text) {
  const before = await completedTurns();
  await send(text);
  await page.waitForFunction((n) => [...document.querySelectorAll('article.message.assistant .message-meta')].filter((m) => !m.hidden).length > n, before);
}

describe('extension end to end (stand-in vscode, real agentd, real page)', () => {
  test('first message creates the session, streams the answer, and the title arrives', async () => {
    await send('hello agent');
    await assistant().locator('.message-meta').waitFor();
    assert.match(await assistant().innerText(), /You said: hello agent/);
    await page.waitForFunction(() => document.getElementById('chat-title').textContent === 'hello agent');
    assert.equal(await page.locator('#stop').isVisible(), false);
    assert.match(await assistant().locator('.message-meta').innerText(), / in · .* out/);
  });

  test('editor_selection: the editor tool answers tool/execute with the selection', async () => {
    await sendAndWait('/tool editor_selection {}');
    const card = lastToolCard();
    await card.locator('summary').click();
    const output = JSON.parse(await card.locator('.tool-output').innerText());
    assert.equal(output.path, 'src/app.ts');
    assert.equal(output.languageId, 'typescript');
    assert.equal(output.text, 'let total = items.reduce((a, b) => a + b, 0);');
  });

  test('read_document returns the unsaved text; open_editors lists the editor', async () => {
    stub.activeTextEditor.document.text = FILE_TEXT + '// unsaved line\n';
    stub.activeTextEditor.document.isDirty = true;
    await sendAndWait('/tool read_document {"path": "src/app.ts"}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'completed');
    assert.match(await assistant().innerText(), /unsaved line/);
    await sendAndWait('/tool open_editors {}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'completed');
    assert.match(await assistant().innerText(), /src\/app\.ts/);
  });

  test('apply_edit shows a diff; Accept applies the edit, Reject leaves the file', async () => {
    stub.answers.push({ match: /proposes an edit to src\/app\.ts/, answer: 'Accept' });
    const before = stub.commandsRun.length;
    await sendAndWait('/tool apply_edit {"path": "src/app.ts", "edits": [{"oldString": "let total", "newString": "const total"}], "description": "use const"}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'completed');
    const diff = stub.commandsRun.slice(before).find((c) => c.id === 'vscode.diff');
    assert.ok(diff, 'a diff editor was opened');
    assert.match(diff.args[2], /src\/app\.ts \(proposed\)/);
    assert.match(stub.activeTextEditor.document.text, /^const total = /);
    assert.match(await assistant().innerText(), /accepted the edit/);

    stub.answers.push({ match: /proposes an edit/, answer: 'Reject' });
    await sendAndWait('/tool apply_edit {"path": "src/app.ts", "content": "wiped"}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'error');
    assert.match(await assistant().innerText(), /rejected the edit/);
    assert.match(stub.activeTextEditor.document.text, /^const total = /);
    assert.match(await lastToolCard().locator('.tool-badge').innerText(), /Error/);
  });

  test('permission/request asks with three choices, Reject first: Reject refuses the write, Escape too, Allow once permits it', async () => {
    const picks = stub.quickPicks.length;
    stub.answers.push({ quickPick: true, match: /^agentd: allow/, answer: 'Reject' });
    await sendAndWait('/tool write_file {"path": "notes.txt", "content": "from the model"}');
    const ask = stub.quickPicks.slice(picks).find((q) => /^agentd: allow/.test(q.title));
    assert.ok(ask, 'the permission was asked');
    assert.deepEqual(ask.items.map((i) => i.outcome), ['reject_once', 'allow_once', 'allow_always']);
    assert.deepEqual(ask.activeItems.map((i) => i.outcome), ['reject_once'], 'Reject is the default for Enter');
    assert.match(ask.items[1].detail, /notes\.txt/);
    assert.equal(await lastToolCard().getAttribute('data-status'), 'error');
    assert.throws(() => readFileSync(join(dirs.workspace, 'notes.txt')));

    stub.answers.push({ quickPick: true, match: /^agentd: allow/, answer: undefined }); // Escape
    await sendAndWait('/tool write_file {"path": "notes.txt", "content": "from the model"}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'error');
    assert.throws(() => readFileSync(join(dirs.workspace, 'notes.txt')));

    stub.answers.push({ quickPick: true, match: /^agentd: allow/, answer: 'Allow once' });
    await sendAndWait('/tool write_file {"path": "notes.txt", "content": "from the model"}');
    assert.equal(await lastToolCard().getAttribute('data-status'), 'completed');
    assert.equal(readFileSync(join(dirs.workspace, 'notes.txt'), 'utf8'), 'from the model');
  });

  test("a command's permission quick pick and tool card say it runs in agentd's sandbox", async () => {
    const picks = stub.quickPicks.length;
    stub.answers.push({ quickPick: true, match: /^agentd: allow/, answer: 'Allow once' });
    await sendAndWait('/tool bash {"command": "echo from-the-sandbox"}');
    const ask = stub.quickPicks.slice(picks).find((q) => /^agentd: allow/.test(q.title));
    assert.ok(ask, 'the permission was asked');
    const once = ask.items.find((i) => i.outcome === 'allow_once');
    assert.equal(once.detail, 'It runs in the workspace-write sandbox: writes only in the workspace and a private /tmp, no network.');
    assert.equal(ask.placeholder, '$ echo from-the-sandbox');
    const card = lastToolCard();
    assert.equal(await card.getAttribute('data-status'), 'completed');
    assert.equal(await card.locator('.tool-sandbox').innerText(), 'workspace-write');
  });

  test('the stop button aborts a running turn', async () => {
    await send('/stream 200 30');
    await page.waitForFunction(() => /w3/.test(document.querySelector('article.message.assistant:last-of-type')?.innerText ?? ''));
    assert.equal(stub.contexts['agentd.busy'], true, 'agentd.busy context while running');
    await page.locator('#stop').click();
    await assistant().locator('.message-meta', { hasText: 'Stopped' }).waitFor();
    assert.ok(!/w200/.test(await assistant().innerText()));
    await page.waitForFunction(() => document.getElementById('stop').hidden);
    await waitFor(() => stub.contexts['agentd.busy'] === false, { what: 'busy context cleared' });
  });

  test('Send Selection asks a question and sends it with the code; code blocks copy and insert', async () => {
    stub.answers.push({ match: /Send selection to agentd/, answer: 'Explain this' });
    stub.activeTextEditor.selection = new vscode.Selection(new vscode.Position(0, 0), new vscode.Position(0, 11));
    stub.activeTextEditor.selections = [stub.activeTextEditor.selection];
    await vscode.commands.executeCommand('agentd.sendSelection');
    await page.waitForFunction(() => /You said: Explain this/.test(document.querySelector('article.message.assistant:last-of-type')?.innerText ?? ''));
    const userText = await page.locator('article.message.user').last().innerText();
    assert.match(userText, /Explain this/);
    assert.match(userText, /src\/app\.ts:1-1/);
    // The echo carries the fenced code: a code block with buttons.
    const block = assistant().locator('.code-block').first();
    assert.equal(await block.locator('.code-lang').innerText(), 'typescript');
    await block.locator('.code-copy').click();
    await waitFor(() => stub.clipboard === 'const total', { what: 'clipboard' });
    stub.activeTextEditor.selection = new vscode.Selection(new vscode.Position(1, 0), new vscode.Position(1, 0));
    stub.activeTextEditor.selections = [stub.activeTextEditor.selection];
    await block.locator('.code-insert').click();
    await waitFor(() => stub.activeTextEditor.document.text.split('\n')[1].startsWith('const total'), { what: 'inserted at cursor' });
  });

  test('the Sessions command shows the session list in the view; a session opens from it', async () => {
    await vscode.commands.executeCommand('agentd.newChat');
    await page.locator('#empty-state').waitFor();
    await sendAndWait('a second chat');
    await vscode.commands.executeCommand('agentd.sessions');
    await page.locator('.session-item', { hasText: 'hello agent' }).waitFor();
    await page.locator('.session-item', { hasText: 'a second chat' }).waitFor();
    await page.locator('#session-search').fill('hello');
    await page.waitForFunction(() => document.querySelectorAll('.session-item').length === 1);
    await page.locator('.session-item .session-open').first().click();
    await page.waitForFunction(() => document.getElementById('chat-title').textContent === 'hello agent');
    await page.waitForFunction(() => /You said: hello agent/.test(document.getElementById('messages').innerText));
    assert.equal(await page.locator('#sessions-panel').isVisible(), false);
  });

  test('session list in the view: rename and delete go to the daemon', async () => {
    await vscode.commands.executeCommand('agentd.sessions');
    await page.locator('#session-search').fill('');
    await page.locator('.session-item', { hasText: 'hello agent' }).waitFor();
    const item = page.locator('.session-item', { hasText: 'hello agent' });
    await item.hover();
    await item.locator('.session-rename').click();
    await page.locator('.rename-input').fill('Renamed from the view');
    await page.locator('.rename-input').press('Enter');
    await page.waitForFunction(() => document.getElementById('chat-title').textContent === 'Renamed from the view');
    // Search goes to session/list with a query.
    await page.locator('#session-search').fill('renamed from');
    await page.waitForFunction(() => document.querySelectorAll('.session-item').length === 1);
    stub.answers.push({ match: /Delete the chat “Renamed from the view”/, answer: 'Delete' });
    await page.locator('.session-item').first().hover();
    await page.locator('.session-item .session-delete').first().click();
    await page.waitForFunction(() => document.querySelectorAll('.session-item').length === 0);
    // It was the current chat: the view starts a fresh one.
    await page.locator('#empty-state').waitFor();
    assert.equal(await page.locator('#chat-title').innerText(), 'New chat');
  });

  // --- fork, revert, unrevert, export, instruction files -------------------------------------
  const articles = () => page.evaluate(() => document.querySelectorAll('#messages article.message:not(.pending)').length);
  const allow = () => stub.answers.push({ quickPick: true, match: /^agentd: allow/, answer: 'Allow once' });
  const ws = (p) => join(dirs.workspace, p);
  async function freshChat() {
    await vscode.commands.executeCommand('agentd.newChat');
    await page.locator('#empty-state').waitFor();
  }
  /** Fork or revert from the message's own buttons, as a person does (they show on hover). */
  async function messageAction(message, action) {
    await message.hover();
    await message.locator(`.message-${action}`).click();
  }

  test('fork from a message: the fork opens in the view with the history up to that message', async () => {
    await freshChat();
    await sendAndWait('the fork point');
    await sendAndWait('after the fork point');
    const original = await page.evaluate(() => window.__agentdView.sessionId);
    await messageAction(page.locator('article.message.assistant').first(), 'fork');
    await page.waitForFunction((id) => window.__agentdView.sessionId !== id && document.getElementById('chat-title').textContent === 'the fork point (fork)', original);
    await page.waitForFunction(() => document.querySelectorAll('#messages article.message').length === 2);
    const text = await page.locator('#messages').innerText();
    assert.match(text, /You said: the fork point/);
    assert.doesNotMatch(text, /after the fork point/);
    assert.ok(stub.messages.some((m) => m.level === 'info' && m.text === 'agentd: forked into “the fork point (fork)”.'));
    // The fork goes on from there.
    await sendAndWait('in the fork');
    assert.equal(await articles(), 4);

    // A message of a run still going cannot be forked from: the daemon's reason is shown.
    await send('/stream 400 30');
    await page.waitForFunction(() => /w3/.test(document.querySelector('article.message.assistant:last-of-type')?.innerText ?? ''));
    const shown = stub.messages.length;
    await messageAction(assistant(), 'fork');
    await waitFor(() => stub.messages.slice(shown).some((m) => m.level === 'error' && /^agentd: fork failed: .*belongs to a run still going/.test(m.text)), { what: 'fork error shown' });
    await page.locator('#stop').click();
    await page.waitForFunction(() => document.getElementById('stop').hidden);
  });

  test('revert to a message: the modal names each file; the files come back and later messages go', async () => {
    writeFileSync(ws('rev.txt'), 'original\n');
    await freshChat();
    await sendAndWait('before the change');
    allow();
    await sendAndWait('/tool write_file {"path": "rev.txt", "content": "changed by the model\\n"}');
    allow();
    await sendAndWait('/tool write_file {"path": "made/new.txt", "content": "a new file\\n"}');
    assert.equal(readFileSync(ws('rev.txt'), 'utf8'), 'changed by the model\n');
    assert.equal(await articles(), 6);
    const shown = stub.messages.length;
    stub.answers.push({ match: /^Revert the chat to this message\?/, answer: 'Revert' });
    await messageAction(page.locator('article.message.assistant').first(), 'revert');
    await page.waitForFunction(() => document.querySelectorAll('#messages article.message').length === 2);
    const modal = stub.messages.slice(shown).find((m) => /^Revert the chat to this message\?/.test(m.text));
    assert.ok(modal, 'asked first');
    assert.equal(modal.level, 'warning');
    assert.equal(modal.options.modal, true);
    assert.deepEqual(modal.items, ['Revert']);
    assert.equal(modal.options.detail, '4 messages are affected.\ndelete: made/new.txt\nrestore: rev.txt');
    // The workspace is as it was before the first change; only the kept messages show.
    assert.equal(readFileSync(ws('rev.txt'), 'utf8'), 'original\n');
    assert.throws(() => readFileSync(ws('made/new.txt')));
    assert.doesNotMatch(await page.locator('#messages').innerText(), /write_file/);
    assert.ok(stub.messages.slice(shown).some((m) => m.text === 'agentd: reverted 4 messages; deleted made/new.txt; restored rev.txt.'));
    // The chat goes on after the kept message.
    await sendAndWait('after the revert');
    assert.equal(await articles(), 4);
  });

  test('revert with a conflict: Cancel changes nothing, Overwrite restores; unrevert puts it back; errors are said', async () => {
    writeFileSync(ws('conf.txt'), 'original\n');
    await freshChat();
    await sendAndWait('before the change');
    allow();
    await sendAndWait('/tool write_file {"path": "conf.txt", "content": "changed by the model\\n"}');
    writeFileSync(ws('conf.txt'), 'changed by the user\n'); // someone else edits it afterwards
    const sessionId = await page.evaluate(() => window.__agentdView.sessionId);
    const firstId = await page.locator('article.message.assistant').first().getAttribute('data-message-id');

    let shown = stub.messages.length;
    stub.answers.push({ match: /^Revert the chat to this message\?/, answer: undefined }); // the modal's Cancel
    await vscode.commands.executeCommand('agentd.revertToMessage', firstId);
    const modal = stub.messages.slice(shown).find((m) => /^Revert the chat/.test(m.text));
    assert.deepEqual(modal.items, ['Revert, Keep Changed Files', 'Revert and Overwrite']);
    assert.match(modal.options.detail, /^conflict: conf\.txt — .+$/m);
    assert.equal(readFileSync(ws('conf.txt'), 'utf8'), 'changed by the user\n');
    assert.equal(await articles(), 4);

    stub.answers.push({ match: /^Revert the chat to this message\?/, answer: 'Revert and Overwrite' });
    await vscode.commands.executeCommand('agentd.revertToMessage', firstId);
    assert.equal(readFileSync(ws('conf.txt'), 'utf8'), 'original\n');
    await page.waitForFunction(() => document.querySelectorAll('#messages article.message').length === 2);

    // Unrevert: the messages come back, and the file as the revert found it.
    shown = stub.messages.length;
    stub.answers.push({ match: /^Undo the latest revert\?/, answer: 'Unrevert' });
    await vscode.commands.executeCommand('agentd.unrevert');
    await page.waitForFunction(() => document.querySelectorAll('#messages article.message').length === 4);
    const undo = stub.messages.slice(shown).find((m) => /^Undo the latest revert\?/.test(m.text));
    assert.equal(undo.options.detail, '2 messages are affected.\nrestore: conf.txt');
    assert.equal(readFileSync(ws('conf.txt'), 'utf8'), 'changed by the user\n');
    assert.equal(await page.evaluate(() => window.__agentdView.sessionId), sessionId);

    // Nothing left to unrevert; a busy chat cannot be reverted: each said in plain words.
    shown = stub.messages.length;
    await vscode.commands.executeCommand('agentd.unrevert');
    assert.ok(stub.messages.slice(shown).some((m) => m.level === 'error' && /^agentd: unrevert failed: there is nothing to unrevert/.test(m.text)), JSON.stringify(stub.messages.slice(shown)));
    await send('/stream 400 30');
    await page.waitForFunction(() => /w3/.test(document.querySelector('article.message.assistant:last-of-type')?.innerText ?? ''));
    shown = stub.messages.length;
    await vscode.commands.executeCommand('agentd.revertToMessage', firstId);
    assert.ok(stub.messages.slice(shown).some((m) => m.level === 'error' && /^agentd: revert failed: the chat is busy/.test(m.text)), JSON.stringify(stub.messages.slice(shown)));
    assert.equal(readFileSync(ws('conf.txt'), 'utf8'), 'changed by the user\n');
    await page.locator('#stop').click();
    await page.waitForFunction(() => document.getElementById('stop').hidden);
  });

  test('export: Markdown and JSON open in new untitled editors', async () => {
    const sessionId = await page.evaluate(() => window.__agentdView.sessionId);
    let docs = stub.documents.length;
    await vscode.commands.executeCommand('agentd.exportChat', 'markdown');
    const md = stub.documents[docs];
    assert.equal(md.uri.scheme, 'untitled');
    assert.equal(md.languageId, 'markdown');
    assert.match(md.text, /^## User$/m);
    assert.match(md.text, /^## Assistant$/m);
    assert.match(md.text, /You said: before the change/);
    assert.equal(stub.shownDocuments.at(-1), md);
    docs = stub.documents.length;
    await vscode.commands.executeCommand('agentd.exportChat', 'json');
    const doc = stub.documents[docs];
    assert.equal(doc.languageId, 'json');
    const exported = JSON.parse(doc.text);
    assert.equal(exported.agentdExport, 1);
    assert.equal(exported.session.id, sessionId);
    assert.equal(exported.messages[0].role, 'user');
  });

  test('the instruction files an answer was given are listed under it, and open', async () => {
    writeFileSync(ws('AGENTS.md'), 'Be brief.\n'.repeat(120));
    try {
      await freshChat();
      await sendAndWait('with instructions');
      const list = assistant().locator('.instructions');
      assert.equal(await list.locator('summary').innerText(), 'Instructions: AGENTS.md (1.2 kB)');
      await list.locator('summary').click();
      const opened = stub.shownDocuments.length;
      await list.locator('.instructions-file').first().click();
      await waitFor(() => stub.shownDocuments.length > opened, { what: 'AGENTS.md opened' });
      assert.equal(stub.shownDocuments.at(-1).fsPath, ws('AGENTS.md'));
      // A user message has none; an answer without instruction files shows none.
      assert.equal(await page.locator('article.message.user .instructions:not([hidden])').count(), 0);
    } finally {
      (await import('node:fs')).unlinkSync(ws('AGENTS.md'));
    }
    await sendAndWait('without them');
    assert.equal(await assistant().locator('.instructions').isHidden(), true);
  });


  test('a crashed daemon is restarted with a visible notice and the chat goes on', async () => {
    await send('before the crash');
    await page.waitForFunction(() => /You said: before the crash/.test(document.body.innerText));
    const pids = daemonPids();
    assert.equal(pids.length, 1, 'one daemon');
    const shown = stub.messages.length;
    process.kill(pids[0], 'SIGKILL');
    await waitFor(() => stub.messages.slice(shown).some((m) => m.level === 'warning' && /stopped unexpectedly.*restarting in/.test(m.text)), { what: 'restart notice' });
    await waitFor(() => daemonPids().length === 1 && daemonPids()[0] !== pids[0], { what: 'new daemon', timeoutMs: 15_000 });
    // The conversation is reloaded from the daemon's store after the restart.
    await page.waitForFunction(() => /You said: before the crash/.test(document.body.innerText));
    await send('after the crash');
    await page.waitForFunction(() => /You said: after the crash/.test(document.body.innerText));
    await page.waitForFunction(() => document.getElementById('daemon-banner').hidden);
  });

  test('New Chat clears the view; deactivate shuts the daemon down', async () => {
    await vscode.commands.executeCommand('agentd.newChat');
    await page.locator('#empty-state').waitFor();
    assert.equal(await page.locator('article.message').count(), 0);
    const pids = daemonPids();
    await ext.deactivate();
    await waitFor(() => daemonPids().length === 0, { what: 'daemon gone' });
    assert.ok(pids.length === 1);
  });
});
