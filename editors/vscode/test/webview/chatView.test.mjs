// The chat view in headless Chromium, fed a recorded stream of agentd notifications
// (test/fixtures/agentd-notifications.json, recorded from the real daemon by
// scripts/record-fixture.mjs). Checks what a person sees.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, loadFixture, openView, replay, startServer } from './harness.mjs';

const fixture = loadFixture();
const turn = (name) => {
  const t = fixture.turns.find((x) => x.name === name);
  assert.ok(t, `fixture has no turn named ${name}`);
  return t;
};
const session = fixture.session;

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

async function freshView(opts) {
  const view = await openView(browser, server.url, opts);
  await view.deliver({ type: 'history', session, messages: [] });
  return view;
}

const text = (page, sel) => page.locator(sel).innerText();

describe('chat view', () => {
  test('streams a markdown answer, renders it, and shows usage and cost', async () => {
    const view = await freshView();
    const { page } = view;
    const t = turn('markdown');
    await replay(view, t.events);
    const assistant = page.locator('article.message.assistant').last();
    await assistant.locator('h1', { hasText: 'Result' }).waitFor();
    assert.match(await assistant.innerText(), /Here is bold text, inline code and a list/);
    assert.equal(await assistant.locator("a[href=\"https://example.com\"]").count(), 1, "safe links stay links");
    assert.equal(await assistant.locator('strong', { hasText: 'bold' }).count(), 1);
    assert.equal(await assistant.locator('li').count(), 2);
    // Code block with its toolbar.
    const block = assistant.locator('.code-block').first();
    assert.equal(await block.locator('.code-lang').innerText(), 'ts');
    assert.match(await block.locator('pre').innerText(), /const x: number = 1;/);
    assert.equal(await block.locator('button.code-copy').count(), 1);
    assert.equal(await block.locator('button.code-insert').count(), 1);
    // The user's message.
    assert.match(await text(page, 'article.message.user'), new RegExp(t.userText.split(/\s+/)[0]));
    // Usage and cost of the turn.
    const meta = await assistant.locator('.message-meta').innerText();
    const m = t.result.message;
    assert.match(meta, /\d+(\.\d+)?k? in/);
    assert.match(meta, /\d+(\.\d+)?k? out/);
    assert.match(meta, /\$\d/);
    assert.ok(m.usage, 'recorded message has usage');
    assert.deepEqual(view.errors, []);
    await view.context.close();
  });

  test('model output cannot inject markup or script', async () => {
    const view = await freshView();
    const { page } = view;
    await replay(view, turn('markdown').events);
    await page.waitForTimeout(100);
    const result = await page.evaluate(() => ({
      pwned: window.__pwned,
      scripts: document.querySelectorAll('#messages script').length,
      handlers: [...document.querySelectorAll('#messages *')].filter((el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
      jsLinks: [...document.querySelectorAll('#messages a')].filter((a) => (a.getAttribute('href') ?? '').toLowerCase().startsWith('javascript')).length,
      imgs: [...document.querySelectorAll('#messages img')].map((i) => i.getAttribute('src')),
      csp: window.__cspViolations,
    }));
    assert.equal(result.pwned, undefined, 'no payload ran');
    assert.equal(result.scripts, 0);
    assert.equal(result.handlers, 0);
    assert.equal(result.jsLinks, 0);
    for (const src of result.imgs) assert.equal(src, null, 'remote image sources are removed');
    // The payload is shown as text, which is what the model wrote.
    assert.match(await page.locator('article.message.assistant').last().innerText(), /<script>/);

    // And a payload that did get into the DOM would still be stopped by the CSP.
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__pwned = "inline"';
      document.body.append(s);
    });
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'CSP blocks inline script');
    assert.ok((await page.evaluate(() => window.__cspViolations)).some((v) => v.directive.startsWith('script-src')));
    await view.context.close();
  });

  test('appends deltas to the streaming part without re-rendering the history', async () => {
    const view = await freshView();
    const { page } = view;
    const t = turn('markdown');
    const events = t.events;
    const deltaIdx = events.map((e, i) => (e.method === 'part/delta' ? i : -1)).filter((i) => i >= 0);
    assert.ok(deltaIdx.length >= 3, 'fixture streams several deltas');
    const mid = deltaIdx[Math.floor(deltaIdx.length / 2)];
    await replay(view, events, { until: (_e, i) => i === mid });
    // Mark the existing user message element: it must survive further deltas untouched.
    await page.evaluate(() => {
      document.querySelector('article.message.user').__marker = 1;
    });
    const partId = events[mid].params.partId;
    const sel = `[data-part-id="${partId}"]`;
    const before = await page.locator(sel).innerText();
    const expectedSoFar = events
      .slice(0, mid)
      .filter((e) => e.method === 'part/delta' && e.params.partId === partId)
      .map((e) => e.params.delta)
      .join('');
    assert.ok(expectedSoFar.length > 0);
    // The stop button is shown while the turn runs.
    assert.equal(await page.locator('#stop').isVisible(), true);
    assert.equal(await page.locator('#turn-status').isVisible(), true);

    await replay(view, events, { from: mid, until: (_e, i) => i === deltaIdx[deltaIdx.length - 1] + 1 });
    const afterText = await page.locator(sel).innerText();
    assert.ok(afterText.length > before.length, 'more text after more deltas');
    assert.equal(await page.evaluate(() => document.querySelector('article.message.user').__marker), 1, 'history not re-rendered');
    await view.context.close();
  });

  test("a running MCP call shows the server's progress in its badge", async () => {
    const view = await freshView();
    const { page } = view;
    const events = turn('tool').events;
    const firstTool = events.findIndex((e) => e.method === 'part/updated' && e.params.part.type === 'tool');
    for (const e of events.slice(0, firstTool)) await view.deliver({ type: 'notification', notification: e });
    const base = events[firstTool];
    const running = (progress) => ({
      ...base,
      params: {
        ...base.params,
        part: {
          ...base.params.part,
          state: { status: 'running', input: {}, time: { start: 1 }, metadata: { mcpServer: 'ctx', mcpTool: 'progress', progress } },
        },
      },
    });
    const badge = page.locator(`.tool-card[data-part-id="${base.params.part.id}"] .tool-badge`);
    await view.deliver({ type: 'notification', notification: running({ progress: 3, total: 5, message: 'step 3' }) });
    assert.equal(await badge.innerText(), 'Running 3/5');
    await view.deliver({ type: 'notification', notification: running({ progress: 7 }) });
    assert.equal(await badge.innerText(), 'Running 7');
    await view.context.close();
  });

  test("a command's card shows its sandbox mode; other tools' cards show none", async () => {
    const view = await freshView();
    const { page } = view;
    const events = turn('tool').events;
    const firstTool = events.findIndex((e) => e.method === 'part/updated' && e.params.part.type === 'tool');
    for (const e of events.slice(0, firstTool + 1)) await view.deliver({ type: 'notification', notification: e });
    const base = events[firstTool];
    const chip = page.locator(`.tool-card[data-part-id="${base.params.part.id}"] .tool-sandbox`);
    assert.equal(await chip.isVisible(), false, 'no chip without a sandbox');
    const command = (sandbox, status = 'running') => ({
      ...base,
      params: {
        ...base.params,
        part: {
          ...base.params.part,
          tool: 'bash',
          state: { status, input: { command: 'make' }, time: { start: 1, end: 2 }, output: '', sandbox },
        },
      },
    });
    await view.deliver({ type: 'notification', notification: command({ mode: 'workspace-write', network: false }) });
    assert.equal(await chip.innerText(), 'workspace-write');
    assert.match(await chip.getAttribute('title'), /workspace-write sandbox: writes only in the workspace/);
    assert.equal(await chip.evaluate((e) => e.classList.contains('unconfined')), false);
    const blocked = { mode: 'full-access', network: true, blocked: 'writing outside the workspace', rerunOf: 'workspace-write' };
    await view.deliver({ type: 'notification', notification: command(blocked, 'completed') });
    assert.equal(await chip.innerText(), 'full access, rerun');
    assert.equal(await chip.evaluate((e) => e.classList.contains('unconfined')), true);
    await view.deliver({ type: 'notification', notification: command({ mode: 'full-access', network: true, fallback: 'no user namespaces' }, 'completed') });
    assert.equal(await chip.innerText(), 'unconfined: no sandbox');
    await view.context.close();
  });

  test('tool calls are cards that move through their states', async () => {
    const view = await freshView();
    const { page } = view;
    const t = turn('tool');
    const events = t.events;
    const toolEvents = events.filter((e) => e.method === 'part/updated' && e.params.part.type === 'tool');
    assert.ok(toolEvents.length >= 2, 'fixture has tool part updates');
    const toolPartId = toolEvents[0].params.part.id;
    const card = page.locator(`.tool-card[data-part-id="${toolPartId}"]`);
    const seen = [];
    for (let i = 0; i < events.length; i++) {
      await view.deliver({ type: 'notification', notification: events[i] });
      const e = events[i];
      if (e.method === 'part/updated' && e.params.part.id === toolPartId) {
        const status = e.params.part.state.status;
        assert.equal(await card.getAttribute('data-status'), status);
        assert.equal((await card.locator('.tool-badge').innerText()).toLowerCase(), status);
        assert.equal(await page.locator('#stop').isVisible(), true, 'stop button while the tool runs');
        seen.push(status);
      }
    }
    assert.equal(seen.at(-1), 'completed');
    assert.ok(seen.includes('running') || seen.includes('pending'));
    // Expand the card: input and output.
    assert.equal(await card.evaluate((d) => d.open), false, 'collapsed by default');
    await card.locator('summary').click();
    assert.equal(await card.locator('.tool-input').isVisible(), true);
    const completed = toolEvents.at(-1).params.part.state;
    const shown = await card.locator('.tool-output').innerText();
    assert.deepEqual(JSON.parse(shown), JSON.parse(completed.output), 'JSON output shown indented');
    assert.match(shown, /\n  "path"/);
    assert.equal(await card.locator('.tool-name').innerText(), toolEvents[0].params.part.tool);
    // Turn over: the stop button goes away and the answer after the tool is shown.
    await page.waitForFunction(() => document.getElementById('stop').hidden);
    assert.match(await page.locator('article.message.assistant').last().innerText(), /returned/);
    await view.context.close();
  });

  test('reasoning is collapsed and expandable', async () => {
    const view = await freshView();
    const { page } = view;
    await replay(view, turn('reasoning').events);
    const r = page.locator('details.reasoning').first();
    assert.equal(await r.evaluate((d) => d.open), false);
    assert.equal(await r.locator('.reasoning-body').isVisible(), false);
    await r.locator('summary').click();
    assert.match(await r.locator('.reasoning-body').innerText(), /Thinking about/);
    await view.context.close();
  });

  test('stop button aborts; an aborted turn keeps its text and says it stopped', async () => {
    const view = await freshView();
    const { page } = view;
    const events = turn('abort').events;
    const firstDelta = events.findIndex((e) => e.method === 'part/delta');
    await replay(view, events, { until: (_e, i) => i === firstDelta + 2 });
    await page.locator('#stop').click();
    const posted = await view.posted();
    assert.deepEqual(posted.filter((m) => m.type === 'abort'), [{ type: 'abort', sessionId: session.id }]);
    await replay(view, events, { from: firstDelta + 2 });
    const assistant = page.locator('article.message.assistant').last();
    assert.match(await assistant.innerText(), /w1 w2/);
    const meta = await assistant.locator('.message-meta').innerText();
    assert.match(meta, /Stopped/);
    // The model never reported usage for the stopped step: unknown, not "0 in · 0 out · $0.00".
    assert.match(meta, /usage unknown/);
    assert.doesNotMatch(meta, /(^|\D)0 in|\$0\.00/);
    assert.equal(await page.locator('#stop').isVisible(), false);
    await view.context.close();
  });

  test('errors are shown plainly', async () => {
    const view = await freshView();
    const { page } = view;
    const t = turn('error');
    await replay(view, t.events);
    const err = page.locator('article.message.assistant .message-error').last();
    await err.waitFor();
    const e = t.result.message.error;
    assert.ok(e, 'recorded turn has an error');
    assert.match(await err.innerText(), new RegExp(e.name));
    // The run's session/error says the same: shown once, in the message.
    assert.equal(await page.locator('.error-block').count(), 0);
    // A failed request (JSON-RPC error) from the host.
    await view.deliver({ type: 'error', sessionId: session.id, message: 'no model configured (error 1003)' });
    assert.match(await page.locator('.error-block').last().innerText(), /no model configured/);
    await view.context.close();
  });

  test('applying the notifications reproduces the session/chat result', async () => {
    const view = await freshView();
    for (const t of fixture.turns) {
      await replay(view, t.events);
      const snap = await view.page.evaluate((id) => window.__agentdView.snapshot(id), t.result.message.id);
      assert.deepEqual(snap, t.result.message, `turn ${t.name}`);
    }
    await view.context.close();
  });

  test('Enter sends, Shift+Enter makes a new line', async () => {
    const view = await freshView();
    const { page } = view;
    await page.locator('#input').click();
    await page.keyboard.type('first line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    assert.equal(await page.locator('#input').inputValue(), 'first line\nsecond line');
    await page.keyboard.press('Enter');
    const sends = (await view.posted()).filter((m) => m.type === 'send');
    assert.deepEqual(sends, [{ type: 'send', text: 'first line\nsecond line', sessionId: session.id }]);
    assert.equal(await page.locator('#input').inputValue(), '');
    assert.match(await page.locator('article.message.pending').innerText(), /first line/);
    assert.equal(await page.locator('#stop').isVisible(), true);
    await view.context.close();
  });

  test('code block buttons copy and insert the code', async () => {
    const view = await freshView();
    const { page } = view;
    await replay(view, turn('markdown').events);
    const block = page.locator('.code-block').first();
    await block.locator('button.code-copy').click();
    await block.locator('button.code-insert').click();
    const posted = (await view.posted()).filter((m) => m.type === 'copy' || m.type === 'insert');
    assert.equal(posted.length, 2);
    assert.equal(posted[0].type, 'copy');
    assert.match(posted[0].text, /const x: number = 1;\nconsole\.log\(x\);/);
    assert.equal(posted[1].type, 'insert');
    assert.equal(posted[1].text, posted[0].text);
    await view.context.close();
  });

  test('a list that answers an earlier request does not undo a title that arrived since', async () => {
    const view = await freshView();
    const { page } = view;
    const at = (id, title, updated) => ({ ...session, id, title, time: { created: 1, updated } });
    await view.deliver({ type: 'showSessions', visible: true });
    const updated = (s) => view.deliver({ type: 'notification', notification: { method: 'session/updated', params: { session: s } } });
    // The host posts the title as it arrives, and the list it asked for before, after it.
    await updated(at('ses_a', 'a second chat', 2_000));
    await view.deliver({ type: 'sessions', sessions: [at('ses_a', 'New session', 1_000), at('ses_b', 'hello agent', 500)], query: '', append: false });
    assert.deepEqual(await page.locator('.session-title').allInnerTexts(), ['a second chat', 'hello agent']);
    // An update older than the list changes nothing; a list newer than an update wins.
    await updated(at('ses_b', 'old title', 400));
    await view.deliver({ type: 'sessions', sessions: [at('ses_a', 'renamed elsewhere', 3_000), at('ses_b', 'hello agent', 500)], query: '', append: false });
    assert.deepEqual(await page.locator('.session-title').allInnerTexts(), ['renamed elsewhere', 'hello agent']);
    // Searching: a session retitled since, no longer matching, is left out; others are as listed.
    await updated(at('ses_a', 'unrelated', 4_000));
    await view.deliver({ type: 'sessions', sessions: [at('ses_a', 'hello again', 3_500), at('ses_b', 'hello agent', 500)], query: 'hello', append: false });
    assert.deepEqual(await page.locator('.session-title').allInnerTexts(), ['hello agent']);
    await view.context.close();
  });

  test('session list: search, paging, open, rename, delete', async () => {
    const view = await freshView();
    const { page } = view;
    const mk = (i) => ({ ...session, id: `ses_test_${i}`, title: `Chat number ${i}`, time: { created: Date.now() - i * 60_000, updated: Date.now() - i * 60_000 } });
    // The view title bar's Show Sessions button (agentd.sessions) asks the page to show the list.
    await view.deliver({ type: 'showSessions' });
    let posted = await view.posted();
    assert.deepEqual(posted.filter((m) => m.type === 'listSessions').at(-1), { type: 'listSessions', query: '' });
    await view.deliver({ type: 'sessions', sessions: [1, 2, 3].map(mk), nextCursor: 'cur-1', query: '', append: false });
    assert.equal(await page.locator('.session-item').count(), 3);
    await page.locator('#sessions-more').click();
    posted = await view.posted();
    assert.deepEqual(posted.filter((m) => m.type === 'listSessions').at(-1), { type: 'listSessions', query: '', cursor: 'cur-1' });
    await view.deliver({ type: 'sessions', sessions: [4, 5].map(mk), query: '', append: true });
    assert.equal(await page.locator('.session-item').count(), 5);
    assert.equal(await page.locator('#sessions-more').isVisible(), false);

    await page.locator('#session-search').fill('number 4');
    await page.waitForFunction(() => window.__posted.some((m) => m.type === 'listSessions' && m.query === 'number 4'));
    await view.deliver({ type: 'sessions', sessions: [mk(4)], query: 'number 4', append: false });
    assert.equal(await page.locator('.session-item').count(), 1);

    const item = page.locator('.session-item').first();
    await item.hover();
    await item.locator('.session-rename').click();
    await page.locator('.rename-input').fill('Renamed chat');
    // Lists that arrive while the title is typed (the debounced search's, a title update) do
    // not take the field away or its text.
    await view.deliver({ type: 'sessions', sessions: [mk(4), mk(5)], query: 'number 4', append: false });
    await view.deliver({ type: 'notification', notification: { method: 'session/updated', params: { session: { ...mk(4), title: 'Chat number 4 (titled)' } } } });
    assert.equal(await page.locator('.rename-input').inputValue(), 'Renamed chat');
    assert.equal(await page.locator('.rename-input').evaluate((el) => el === document.activeElement), true, 'still typing');
    await page.locator('.rename-input').press('Enter');
    posted = await view.posted();
    assert.deepEqual(posted.filter((m) => m.type === 'renameSession'), [{ type: 'renameSession', sessionId: 'ses_test_4', title: 'Renamed chat' }]);
    assert.equal(await page.locator('.session-title').first().innerText(), 'Renamed chat');
    assert.equal(await page.locator('.session-item').count(), 2, 'the list that came meanwhile is shown now');
    // Escape ends a rename without renaming, even after the text changed.
    await page.locator('.session-item').first().hover();
    await page.locator('.session-item').first().locator('.session-rename').click();
    await page.locator('.rename-input').fill('Not this');
    await page.locator('.rename-input').press('Escape');
    assert.equal(await page.locator('.rename-input').count(), 0);
    posted = await view.posted();
    assert.equal(posted.filter((m) => m.type === 'renameSession').length, 1);
    assert.equal(await page.locator('.session-title').first().innerText(), 'Renamed chat');
    await view.deliver({ type: 'sessions', sessions: [{ ...mk(4), title: 'Renamed chat' }], query: 'number 4', append: false });

    await page.locator('.session-item').first().hover();
    await page.locator('.session-item .session-delete').first().click();
    posted = await view.posted();
    assert.equal(posted.filter((m) => m.type === 'deleteSession').at(-1).sessionId, 'ses_test_4');
    await view.deliver({ type: 'sessionDeleted', sessionId: 'ses_test_4' });
    assert.equal(await page.locator('.session-item').count(), 0);

    await view.deliver({ type: 'sessions', sessions: [1, 2].map(mk), query: '', append: false });
    await page.locator('.session-item .session-open').nth(1).click();
    posted = await view.posted();
    assert.deepEqual(posted.filter((m) => m.type === 'openSession').at(-1), { type: 'openSession', sessionId: 'ses_test_2' });
    assert.equal(await page.locator('#sessions-panel').isVisible(), false);
    await view.context.close();
  });

  test('session/updated sets the title; notifications of other sessions are ignored', async () => {
    const view = await freshView();
    const { page } = view;
    await view.deliver({ type: 'notification', notification: { method: 'session/updated', params: { session: { ...session, title: 'A better title' } } } });
    assert.equal(await page.locator('#chat-title').innerText(), 'A better title');
    const other = turn('markdown').events.map((e) => JSON.parse(JSON.stringify(e).replaceAll(session.id, 'ses_other')));
    await replay(view, other);
    assert.equal(await page.locator('article.message').count(), 0);
    await view.context.close();
  });

  test('daemon restarts are shown in a banner', async () => {
    const view = await freshView();
    const { page } = view;
    await view.deliver({ type: 'daemon', state: 'restarting', message: 'agentd stopped unexpectedly (exit code 1); restarting in 1 s (attempt 1 of 5).' });
    assert.match(await page.locator('#daemon-banner').innerText(), /restarting in 1 s/);
    await view.deliver({ type: 'daemon', state: 'running' });
    assert.equal(await page.locator('#daemon-banner').isVisible(), false);
    await view.context.close();
  });

  test('Restricted Mode: a notice says what agentd may not do, until the folder is trusted', async () => {
    const view = await freshView();
    const { page } = view;
    assert.equal(await page.locator('#restricted-notice').isVisible(), false, 'trusted until told otherwise');
    await view.deliver({ type: 'trust', trusted: false });
    const notice = await page.locator('#restricted-notice').innerText();
    assert.match(notice, /Restricted Mode/);
    assert.match(notice, /no file edits, no commands, no MCP servers/);
    await page.locator('#restricted-notice button', { hasText: 'Trust this folder' }).click();
    assert.ok((await view.posted()).some((m) => m.type === 'manageTrust'), 'the link opens the trust editor');
    await view.deliver({ type: 'trust', trusted: true });
    assert.equal(await page.locator('#restricted-notice').isVisible(), false);
    await view.context.close();
  });

  test('the page has no buttons of its own for New Chat or Sessions (the view title bar has them)', async () => {
    const view = await freshView();
    const { page } = view;
    assert.equal(await page.locator('header button').count(), 0);
    await view.deliver({ type: 'showSessions' });
    assert.equal(await page.locator('#sessions-panel').isVisible(), true);
    await view.deliver({ type: 'showSessions' });
    assert.equal(await page.locator('#sessions-panel').isVisible(), false, 'the title bar button toggles the list');
    await view.context.close();
  });
});
