// Serves the real chat page (the extension's HTML template, CSP included) over loopback with a
// stand-in for `acquireVsCodeApi`, and drives it in Debian's Chromium with playwright-core.
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { themes } from './themes.mjs';

const require = createRequire(import.meta.url);
export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { renderWebviewHtml } = require(join(root, 'out/webviewHtml.cjs'));

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function chromiumPath() {
  const p = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  if (!existsSync(p)) throw new Error(`Chromium not found at ${p} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  return p;
}

function prelude(theme, initialState) {
  const t = themes[theme] ?? themes.dark;
  return `(() => {
  const vars = ${JSON.stringify(t.vars)};
  for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
  document.body.classList.add(${JSON.stringify(t.bodyClass)});
  window.__posted = [];
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample }));
  let state = ${JSON.stringify(initialState ?? null)};
  window.acquireVsCodeApi = () => ({
    postMessage: (m) => window.__posted.push(JSON.parse(JSON.stringify(m))),
    getState: () => state,
    setState: (s) => { state = s; },
  });
  window.__deliver = (msg) => window.dispatchEvent(new MessageEvent('message', { data: msg }));
})();`;
}

export async function startServer() {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const origin = `http://${req.headers.host}`;
    if (url.pathname === '/' || url.pathname === '/index.html') {
      const html = renderWebviewHtml({
        cspSource: origin,
        nonce: 'test-nonce-' + Math.random().toString(36).slice(2),
        scriptUri: `${origin}/dist/webview.js`,
        styleUri: `${origin}/media/webview.css`,
        preludeScript: prelude(url.searchParams.get('theme') ?? 'dark', url.searchParams.get('state') ? JSON.parse(url.searchParams.get('state')) : null),
      });
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
      return;
    }
    const files = { '/dist/webview.js': 'text/javascript', '/media/webview.css': 'text/css', '/dist/webview.js.map': 'application/json' };
    if (files[url.pathname]) {
      const p = join(root, url.pathname);
      if (existsSync(p)) {
        res.writeHead(200, { 'content-type': files[url.pathname] });
        res.end(readFileSync(p));
        return;
      }
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    res.writeHead(404);
    res.end('not found');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((r) => server.close(r)) };
}

export async function launch() {
  return chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS, headless: true });
}

/** Opens the chat page; returns the page plus helpers. */
export async function openView(browser, baseUrl, { theme = 'dark', width = 420, height = 760, state } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, colorScheme: theme === 'light' ? 'light' : 'dark' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(new Error(m.text()));
  });
  const q = new URLSearchParams({ theme, ...(state ? { state: JSON.stringify(state) } : {}) });
  await page.goto(`${baseUrl}?${q}`);
  await page.waitForFunction(() => window.__posted?.some((m) => m.type === 'ready'));
  const deliver = (msg) => page.evaluate((m) => window.__deliver(m), msg);
  const posted = () => page.evaluate(() => window.__posted);
  return { page, context, errors, deliver, posted };
}

export function loadFixture() {
  return JSON.parse(readFileSync(join(root, 'test/fixtures/agentd-notifications.json'), 'utf8'));
}

/** Delivers a turn's notifications, optionally stopping at (before) the event `until` returns true for. */
export async function replay(view, events, { until, from = 0, perFrame = false } = {}) {
  let i = from;
  for (; i < events.length; i++) {
    if (until && until(events[i], i)) break;
    await view.deliver({ type: 'notification', notification: events[i] });
    if (perFrame) await view.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  }
  // Let the view's requestAnimationFrame flush happen.
  await view.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
  return i;
}
