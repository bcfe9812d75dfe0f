#!/usr/bin/env node
// Renders the chat view in headless Chromium, fed the recorded agentd notifications, in the
// light and dark default themes; writes media/screenshots/*.png for the README.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launch, loadFixture, openView, replay, root, startServer } from '../test/webview/harness.mjs';

const out = join(root, 'media/screenshots');
mkdirSync(out, { recursive: true });
const fixture = loadFixture();
const server = await startServer();
const browser = await launch();
const turn = (n) => fixture.turns.find((t) => t.name === n);
try {
  for (const theme of ['dark', 'light']) {
    // 1. A conversation: markdown with a code block, a tool call, reasoning.
    let view = await openView(browser, server.url, { theme, width: 440, height: 900 });
    await view.deliver({ type: 'history', session: { ...fixture.session, title: 'Tour of the chat view' }, messages: [] });
    for (const name of ['tool', 'reasoning', 'markdown']) await replay(view, turn(name).events);
    await view.page.locator('.tool-card').first().locator('summary').click();
    await view.page.evaluate(() => (document.getElementById('messages').scrollTop = 0));
    await view.page.screenshot({ path: join(out, `chat-${theme}.png`) });
    await view.page.evaluate(() => { const m = document.getElementById('messages'); m.scrollTop = m.scrollHeight; });
    await view.page.screenshot({ path: join(out, `chat-end-${theme}.png`) });
    await view.context.close();

    // 2. A turn in progress: streaming text, a running tool, the stop button.
    view = await openView(browser, server.url, { theme, width: 440, height: 560 });
    await view.deliver({ type: 'history', session: { ...fixture.session, title: 'Streaming' }, messages: [] });
    const ev = turn('tool').events;
    const running = ev.findIndex((e) => e.method === 'part/updated' && e.params.part.type === 'tool' && e.params.part.state.status === 'running');
    await replay(view, ev, { until: (_e, i) => i === running + 1 });
    const ab = turn('abort').events;
    await view.page.screenshot({ path: join(out, `running-${theme}.png`) });
    await view.context.close();

    // 3. Errors and an aborted turn.
    view = await openView(browser, server.url, { theme, width: 440, height: 560 });
    await view.deliver({ type: 'history', session: { ...fixture.session, title: 'Stopped and failed turns' }, messages: [] });
    await replay(view, ab);
    await replay(view, turn('error').events);
    await view.page.screenshot({ path: join(out, `errors-${theme}.png`) });
    await view.context.close();

    // 4. The session list.
    view = await openView(browser, server.url, { theme, width: 440, height: 560 });
    await view.deliver({ type: 'history', session: fixture.session, messages: [] });
    await replay(view, turn('markdown').events);
    await view.page.locator('#sessions-toggle').click();
    const now = Date.now();
    const titles = ['Refactor the session store', 'Why does the build fail on CI?', 'Explain the restart policy', 'Write tests for apply_edit', 'Markdown rendering', 'Review my SQL query'];
    await view.deliver({
      type: 'sessions',
      sessions: titles.map((title, i) => ({ ...fixture.session, id: i === 4 ? fixture.session.id : `ses_shot_${i}`, title, status: i === 1 ? 'busy' : 'idle', time: { created: now - i * 3_600_000, updated: now - i * 3_000_000 - 60_000 } })),
      nextCursor: 'more',
      query: '',
      append: false,
    });
    await view.page.locator('.session-item').nth(2).hover();
    await view.page.screenshot({ path: join(out, `sessions-${theme}.png`) });
    await view.context.close();
  }
  console.log(`screenshots written to ${out}`);
} finally {
  await browser.close();
  await server.close();
}
