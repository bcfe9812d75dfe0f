// Answers that go on without the window that asked, end to end (stand-in `vscode`, the bundled
// extension, the real page in Chromium, the real agentd): every agentd here attaches to one
// shared daemon, in a private runtime directory, ended at the end. A window reload is the
// extension deactivated (`shutdown`, `exit`: the daemon keeps the run) and activated again with a
// new page; another window is a second client of the same daemon (the extension's own client
// class). What is asserted is what the page shows: each answer once, every state it went
// through a beginning of it (a delta lost, or drawn twice, would show before the part's last
// update hid it), Stop while it runs, idle at its end.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { AGENTD, makeClient, root, startScriptedModel, tempDirs, textOf, waitFor } from '../client/helpers.mjs';
import { launch } from '../webview/harness.mjs';
import { themes } from '../webview/themes.mjs';
import { deactivateExtension, installVscodeStub } from './harness.mjs';

const require = createRequire(import.meta.url);
const { vscode, stub, restore: restoreVscode } = installVscodeStub();

let model, dirs, runDir, server, browser, ext, context, win, origin;
let html = '';
const others = [];
const shared = () => ({ AGENTD_SHARED: '1', AGENTD_RUNTIME_DIR: runDir });
const words = (n) => Array.from({ length: n }, (_, i) => `w${i + 1}`).join(' ');

/** The shared daemons listening in the run's runtime directory (their command line names it). */
function sharedDaemons() {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.[0];
      if (state !== 'Z' && argv.includes('daemon') && argv.some((a) => a.startsWith(runDir + '/'))) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/** One VS Code window: the extension activated, its chat view a new page. */
async function openWindow() {
  context = {
    subscriptions: [],
    extensionUri: vscode.Uri.file(root),
    workspaceState: context.workspaceState, // VS Code keeps it across reloads
    storageUri: vscode.Uri.file(join(dirs.base, 'workspace-storage')),
    extension: context.extension,
  };
  ext.activate(context);
  const page = await (await browser.newContext({ viewport: { width: 440, height: 800 } })).newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  let listeners = [];
  let chain = Promise.resolve();
  await page.exposeFunction('__toHost', (m) => listeners.forEach((l) => l(m)));
  await page.addInitScript((vars) => {
    window.acquireVsCodeApi = () => ({ postMessage: (m) => window.__toHost(JSON.parse(JSON.stringify(m))), getState: () => null, setState: () => {} });
    document.addEventListener('DOMContentLoaded', () => {
      for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
      // Every state the answers' text went through, as the page showed it.
      window.__states = [];
      new MutationObserver(() => {
        for (const el of document.querySelectorAll('#messages article.message.assistant .part.text')) window.__states.push(el.textContent.trim());
      }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
    });
  }, themes.dark.vars);
  const webview = {
    options: {},
    html: '',
    cspSource: origin,
    asWebviewUri: (uri) => `${origin}/ext${uri.path.slice(root.length)}`,
    postMessage: (m) => {
      chain = chain.then(() => page.evaluate((msg) => window.dispatchEvent(new MessageEvent('message', { data: msg })), m).catch(() => undefined));
      return Promise.resolve(true);
    },
    onDidReceiveMessage: (l) => {
      listeners.push(l);
      return { dispose: () => (listeners = listeners.filter((x) => x !== l)) };
    },
  };
  stub.providers.get('agentd.chatView').resolveWebviewView({ webview, visible: true, show() {}, onDidDispose: () => ({ dispose() {} }) });
  html = webview.html;
  await page.goto(origin + '/');
  await page.locator('#input').waitFor();
  return { page };
}

async function reload() {
  await deactivateExtension(ext, context);
  await win.page.context().close();
  win = await openWindow();
}

/** A second editor window: a client of the same shared daemon. */
async function otherWindow() {
  const h = makeClient(model, dirs, { env: shared() });
  others.push(h);
  await h.client.start();
  return h;
}

const view = (fn, arg) => win.page.evaluate(fn, arg);
const sessionId = () => view(() => window.__agentdView.sessionId);
const stopShown = () => win.page.locator('#stop').isVisible();
const answers = () => view(() => [...document.querySelectorAll('#messages article.message.assistant .part.text')].map((e) => e.textContent.trim()));
const showsWords = (n) => win.page.waitForFunction((w) => [...document.querySelectorAll('#messages article.message.assistant .part.text')].some((e) => e.textContent.includes(w)), `w${n} `);

/**
 * The page shows `expected` (each answer once, in order), showed nothing on the way that was not
 * a beginning of one of them, and stands idle: no Stop, not busy, agentd.busy off.
 */
async function assertShownOnce(expected) {
  // Every answer ended (its usage line shows) and nothing runs.
  await win.page.waitForFunction((n) => {
    const metas = [...document.querySelectorAll('#messages article.message.assistant .message-meta')];
    return metas.length === n && metas.every((m) => !m.hidden) && !window.__agentdView.busy && document.getElementById('stop').hidden;
  }, expected.length);
  assert.deepEqual(await answers(), expected);
  for (const state of await view(() => window.__states)) {
    assert.ok(
      expected.some((a) => a.startsWith(state)),
      `the page showed ${JSON.stringify(state.slice(-80))}, not a beginning of an answer`,
    );
  }
  const roles = await view(() => [...document.querySelectorAll('#messages article.message')].map((e) => (e.classList.contains('user') ? 'user' : 'assistant')));
  assert.deepEqual(roles, expected.flatMap(() => ['user', 'assistant']));
  await waitFor(() => stub.contexts['agentd.busy'] === false, { what: 'agentd.busy off' });
}

before(async () => {
  model = await startScriptedModel();
  dirs = tempDirs();
  runDir = mkdtempSync('/tmp/agentd-vs-'); // private (0700), short: a socket's path is
  stub.workspaceFolder = dirs.workspace;
  stub.config = {
    path: AGENTD,
    model: 'scripted',
    dataDir: dirs.data,
    env: {
      OPENAI_BASE_URL: model.baseUrl,
      OPENAI_API_KEY: 'test',
      AGENTD_STATE_DIR: dirs.state,
      AGENTD_CONFIG: join(dirs.base, 'no-config.toml'),
      ...shared(),
    },
  };
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
  browser = await launch();
  ext = require(join(root, 'dist/extension.js'));
  const mem = new Map();
  context = {
    workspaceState: { get: (k) => mem.get(k), update: async (k, v) => void mem.set(k, v), keys: () => [...mem.keys()] },
    extension: { packageJSON: JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) },
  };
  win = await openWindow();
});

after(async () => {
  await deactivateExtension(ext, context);
  for (const h of others) await h.client.stop();
  await browser?.close();
  await new Promise((r) => server?.close(r));
  for (const pid of sharedDaemons()) process.kill(pid, 'SIGTERM');
  await waitFor(() => sharedDaemons().length === 0, { what: 'the shared daemon ended', timeoutMs: 15_000 });
  rmSync(runDir, { recursive: true, force: true });
  await model?.close();
  dirs?.cleanup();
  restoreVscode();
});

describe('answers that go on without the window that asked (shared daemon)', () => {
  test('a reload while an answer streams: the answer goes on and the view shows it live, with Stop, then idle', async () => {
    await win.page.locator('#input').fill('/stream 150 30');
    await win.page.locator('#input').press('Enter');
    await showsWords(5);
    const sid = await sessionId();
    assert.equal(stub.contexts['agentd.busy'], true);
    await reload();
    await win.page.waitForFunction((id) => window.__agentdView.sessionId === id, sid);
    // Shown running as its own: Stop, and agentd.busy (Escape stops it).
    await win.page.locator('#stop').waitFor();
    await waitFor(() => stub.contexts['agentd.busy'] === true, { what: 'agentd.busy after the reload' });
    await assertShownOnce([words(150)]);
    const states = await view(() => window.__states);
    assert.ok(states[0] !== words(150) && new Set(states).size >= 3, 'it was streaming when the view reopened it');
    // The status bar says which daemon serves the window.
    const tooltip = stub.statusBarItems.at(-1).tooltip;
    assert.match(tooltip, /^agentd \S+ is running: the shared daemon \(pid \d+\), 1 editor connected when this window joined; answers go on through a window reload$/);
    assert.ok(stub.logLines.some((l) => l.startsWith('[info] agentd ') && l.includes('the shared daemon (pid')));
  });

  test('reloads before the first word, then twice while it streams: each answer once', async () => {
    // The model waits 1.5 s before its first word.
    await model.enqueue([{ text: words(200), delayMs: 10, firstDelayMs: 1500 }]);
    await win.page.locator('#input').fill('slow to start');
    await win.page.locator('#input').press('Enter');
    await win.page.waitForFunction(() => document.querySelectorAll('#messages article.message').length === 4 && !document.querySelector('#messages .pending'));
    await reload();
    await win.page.locator('#stop').waitFor();
    await showsWords(3);
    await reload();
    await showsWords(20);
    await reload();
    await assertShownOnce([words(150), words(200)]);
  });

  test("another window's answer, opened from the session list while it streams, reopened, then stopped from here", async () => {
    const other = await otherWindow();
    assert.equal(other.client.initializeResult.daemon.connections, 2);
    const { session } = await other.client.createSession({ title: 'from the other window' });
    await model.enqueue([{ text: words(300), delayMs: 8 }]);
    const done = other.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: 'go' }] });
    await waitFor(() => other.notifications.filter((n) => n.method === 'part/delta').length >= 5, { what: "the other window's stream" });
    await vscode.commands.executeCommand('agentd.sessions');
    const item = win.page.locator('.session-item', { hasText: 'from the other window' });
    await item.waitFor();
    assert.equal(await item.locator('.session-dot').getAttribute('title'), 'busy');
    await view(() => (window.__states = []));
    await item.locator('.session-open').click();
    await win.page.waitForFunction((id) => window.__agentdView.sessionId === id, session.id);
    await win.page.locator('#stop').waitFor();
    await showsWords(10);
    // Opened again and again while this window follows it: its notifications arrive while
    // each opening waits for the history (some before the answer, which holds them).
    const mine = (await other.client.listSessions({ limit: 50 })).sessions.find((s) => s.id !== session.id).id;
    for (const id of [session.id, mine, session.id, session.id, session.id, session.id]) {
      await view((sid) => window.__toHost({ type: 'openSession', sessionId: sid }), id); // as its list item does
      await win.page.waitForFunction((sid) => window.__agentdView.sessionId === sid && document.querySelectorAll('#messages article.message').length > 0, id);
    }
    const result = await done;
    assert.equal(textOf(result.message), words(300));
    await assertShownOnce([words(300)]);

    // Stopped from this window, which did not start it.
    const second = other.client.chat({ sessionId: session.id, parts: [{ type: 'text', text: '/stream 400 30' }] });
    await showsWords(5);
    await win.page.locator('#stop').click();
    const stopped = await second;
    assert.equal(stopped.message.finishReason, 'aborted');
    const text = textOf(stopped.message).trim(); // (the page shows it trimmed)
    assert.ok(words(400).startsWith(text) && text.length < words(400).length);
    await assertShownOnce([words(300), text]);
  });

  test("a new chat sent while another session's answer streams in this window gets its own answer", async () => {
    // The current chat is the other window's session, a run of which streams: this window
    // follows it, so its deltas keep coming while the new chat's session is being created.
    const other = others[0];
    const sid = await sessionId();
    const running = other.client.chat({ sessionId: sid, parts: [{ type: 'text', text: '/stream 300 10' }] });
    await showsWords(5);
    await vscode.commands.executeCommand('agentd.newChat');
    await win.page.locator('#empty-state').waitFor();
    await view(() => (window.__states = []));
    await win.page.locator('#input').fill('a chat of its own');
    await win.page.locator('#input').press('Enter');
    await win.page.waitForFunction(() => /You said: a chat of its own/.test(document.getElementById('messages').innerText));
    const fresh = await sessionId();
    assert.notEqual(fresh, sid);
    assert.ok(!(await answers()).some((a) => a.startsWith('w1')), 'nothing of the other session shows');
    const { messages } = await other.client.messages({ sessionId: fresh });
    assert.deepEqual(messages.map((m) => m.role), ['user', 'assistant']);
    assert.equal(textOf(messages[0]), 'a chat of its own');
    await running;
  });
});
