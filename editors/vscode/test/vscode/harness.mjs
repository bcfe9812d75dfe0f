// A real VS Code for the end-to-end tests: code-server (VS Code in the browser, installed by
// scripts/install-code-server.sh) with the packaged extension (.vsix) in a private extensions
// dir and a private user-data dir whose settings point agentd at the scripted model, driven by
// playwright-core in Debian's Chromium through the workbench and into the chat view's frames.
//
// Everything a run makes lives in one temp dir: user data (settings, logs, workspace storage),
// extensions, workspaces, agentd's data and state. The daemon is this repository's agentd (a
// wrapper script runs `python -m agentd` with the repository on PYTHONPATH), so the tests run
// the checkout they belong to whatever `agentd` the machine has installed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, chromiumPath } from '../webview/harness.mjs';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const repo = resolve(root, '../..');
const EXTENSION_ID = 'agentd.agentd-vscode';

/** The python that runs agentd and the scripted model (absolute: the daemon's PATH is VS Code's). */
function python() {
  const exe = process.env.AGENTD_PYTHON || 'python3';
  return execFileSync(exe, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
}

/** The code-server install: $CODE_SERVER_HOME (ci.sh sets it), else the cached install (made on first use). */
function codeServerHome() {
  if (process.env.CODE_SERVER_HOME) return process.env.CODE_SERVER_HOME;
  const out = execFileSync('bash', [join(root, 'scripts/install-code-server.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').at(-1);
}

/** The packaged extension: $AGENTD_VSIX (ci.sh packages it first), else `vsce package` into `dir`. */
function vsix(dir) {
  if (process.env.AGENTD_VSIX) return resolve(process.env.AGENTD_VSIX);
  const out = join(dir, 'agentd-vscode.vsix');
  execFileSync('npx', ['--no-install', 'vsce', 'package', '--no-dependencies', '--allow-missing-repository', '--out', out], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return out;
}

/** Starts agentd's scripted model server; resolves once it printed its address. */
export async function startModel(py, env) {
  const child = spawn(py, ['-m', 'agentd.scripted_model', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const line = await firstLine(child, (l) => l.startsWith('{'), 20_000, () => `scripted model did not start: ${stderr}`);
  const { baseUrl } = JSON.parse(line);
  const origin = baseUrl.replace(/\/v1\/?$/, '');
  const post = async (path, body) => {
    const r = await fetch(origin + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  return {
    baseUrl,
    /** Queues response specs (see agentd/scripted_model.py) for the next chat completions. */
    enqueue: (...responses) => post('/_scripted/enqueue', { responses }),
    /** Every chat completion request the model received, oldest first. */
    requests: async () => (await (await fetch(origin + '/_scripted/requests')).json()).requests,
    close: () => stop(child),
  };
}

function firstLine(child, match, timeoutMs, why) {
  return new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => rej(new Error(why())), timeoutMs);
    rl.on('line', (l) => {
      const m = match(l);
      if (m) {
        clearTimeout(timer);
        res(typeof m === 'string' ? m : l);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`exited with ${code}: ${why()}`));
    });
  });
}

/** Stops a child (its whole process group when it leads one) and waits for it to exit. */
function stop(child, group = false) {
  const kill = (sig) => {
    try {
      if (group) process.kill(-child.pid, sig);
      else child.kill(sig);
    } catch {
      /* already gone */
    }
  };
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      if (group) kill('SIGKILL');
      return r();
    }
    const timer = setTimeout(() => kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(timer);
      if (group) kill('SIGKILL'); // what the group leader left behind
      r();
    });
    kill('SIGTERM');
  });
}

/**
 * Sets up a run: temp dirs, the scripted model, agentd's wrapper, the .vsix installed into a
 * private extensions dir, user settings, code-server on a free loopback port, and Chromium.
 */
export async function startVsCode() {
  const base = mkdtempSync(join(tmpdir(), 'agentd-vscode-real-'));
  const dirs = {
    base,
    userData: join(base, 'user-data'),
    extensions: join(base, 'extensions'),
    data: join(base, 'agentd-data'),
    state: join(base, 'agentd-state'),
    bin: join(base, 'bin'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  // The run's agentd attach to one shared daemon (as users' do), in a directory of the run's
  // own (private: 0700) so that no other daemon is met; it is ended in close().
  dirs.runtime = join(base, 'run');
  mkdirSync(dirs.runtime, { mode: 0o700 });
  const py = python();
  const pyEnv = { ...process.env, PYTHONPATH: [repo, process.env.PYTHONPATH].filter(Boolean).join(':') };
  const model = await startModel(py, pyEnv);

  // agentd.path: this checkout's agentd, with no arguments, as the extension spawns it.
  const agentd = join(dirs.bin, 'agentd');
  writeFileSync(agentd, `#!/bin/sh\nPYTHONPATH='${repo}'\${PYTHONPATH:+:$PYTHONPATH} exec '${py}' -m agentd "$@"\n`);
  chmodSync(agentd, 0o755);

  const home = codeServerHome();
  const node = join(home, 'bin/node');
  const entry = join(home, 'node_modules/code-server/out/node/entry.js');
  const common = ['--config', join(base, 'code-server.yaml'), '--user-data-dir', dirs.userData, '--extensions-dir', dirs.extensions];
  execFileSync(node, [entry, ...common, '--install-extension', vsix(base)], { stdio: ['ignore', 'ignore', 'inherit'] });

  const settings = {
    'workbench.colorTheme': 'Default Dark Modern',
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'workbench.enableExperiments': false,
    'workbench.secondarySideBar.defaultVisibility': 'hidden',
    'chat.disableAIFeatures': true,
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'extensions.ignoreRecommendations': true,
    'git.enabled': false,
    'editor.minimap.enabled': false,
    'workbench.reduceMotion': 'on', // menus and widgets take clicks as soon as they show
    // An untrusted folder opens in Restricted Mode without the trust dialog; the tests trust
    // a folder the way a person does, from the Restricted Mode status bar item.
    'security.workspace.trust.startupPrompt': 'never',
    'agentd.path': agentd,
    'agentd.model': 'scripted',
    'agentd.dataDir': dirs.data,
    'agentd.env': {
      OPENAI_BASE_URL: model.baseUrl,
      OPENAI_API_KEY: 'test',
      AGENTD_STATE_DIR: dirs.state,
      AGENTD_CONFIG: join(base, 'no-agentd-config.toml'),
      AGENTD_SHARED: '1',
      AGENTD_RUNTIME_DIR: dirs.runtime,
    },
  };
  const settingsFile = join(dirs.userData, 'User/settings.json');
  mkdirSync(dirname(settingsFile), { recursive: true });
  writeFileSync(settingsFile, JSON.stringify(settings, null, 2));
  // agentd.path, agentd.env and agentd.dataDir are machine settings (`machine-overridable`): in
  // a remote window (code-server's) VS Code reads them from the machine's settings, and in a
  // Restricted Mode window code-server drops their User values at times (the extension then
  // starts with the defaults). The machine's settings hold them too, as a remote user sets them.
  const machineFile = join(dirs.userData, 'Machine/settings.json');
  mkdirSync(dirname(machineFile), { recursive: true });
  const machine = Object.fromEntries(Object.entries(settings).filter(([k]) => ['agentd.path', 'agentd.env', 'agentd.dataDir'].includes(k)));
  writeFileSync(machineFile, JSON.stringify(machine, null, 2));

  const server = spawn(
    node,
    [
      entry,
      ...common,
      ...['--auth', 'none', '--bind-addr', '127.0.0.1:0', '--disable-telemetry', '--disable-update-check', '--disable-getting-started-override', '--ignore-last-opened'],
      // More options for a debugging run (e.g. --disable-workspace-trust, --verbose).
      ...(process.env.CODE_SERVER_ARGS ?? '').split(' ').filter(Boolean),
    ],
    // Its own process group: code-server leaves helpers (file watcher, agent host) behind when
    // only its main process is killed.
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XDG_CONFIG_HOME: join(base, 'config') }, detached: true },
  );
  let serverLog = '';
  server.stderr.on('data', (d) => (serverLog += d));
  const url = await firstLine(
    server,
    (l) => {
      serverLog += l + '\n';
      return /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(l)?.[1];
    },
    60_000,
    () => `code-server did not start:\n${serverLog}`,
  );

  const browser = await chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS, headless: true });
  // One browser context for the whole run: VS Code in the browser keeps workspace trust and
  // window state in the browser's storage, as a person's browser does across reloads.
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const consoleErrors = [];
  let consoleMessages = 0;
  page.on('console', (m) => {
    consoleMessages++;
    if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location()?.url ?? '' });
  });
  page.on('pageerror', (e) => consoleErrors.push({ text: `uncaught: ${e.message}`, url: e.stack ?? '' }));

  return {
    dirs,
    model,
    url,
    page,
    settingsFile,
    settings,
    consoleErrors,
    get consoleMessages() {
      return consoleMessages;
    },
    serverLog: () => serverLog,
    /** Rewrites user settings (VS Code applies them live, as when a person edits settings.json). */
    updateSettings(patch) {
      Object.assign(settings, patch);
      writeFileSync(settingsFile, JSON.stringify(settings, null, 2));
    },
    /** A new folder under the run's temp dir, with the given files. */
    folder(name, files = {}) {
      const dir = join(base, name);
      for (const [rel, text] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, rel)), { recursive: true });
        writeFileSync(join(dir, rel), text);
      }
      mkdirSync(dir, { recursive: true });
      return dir;
    },
    /** The shared daemons of the run (their command line names its runtime directory). */
    daemons: () => sharedDaemons(dirs.runtime),
    async close() {
      await browser.close().catch(() => {});
      await stop(server, true);
      for (const pid of sharedDaemons(dirs.runtime)) process.kill(pid, 'SIGTERM');
      for (const end = Date.now() + 15_000; sharedDaemons(dirs.runtime).length && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
      await model.close();
      if (!process.env.AGENTD_KEEP_TEMP) rmSync(base, { recursive: true, force: true });
    },
  };
}

function sharedDaemons(runtime) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.[0];
      if (state !== 'Z' && argv.includes('daemon') && argv.some((a) => a.startsWith(runtime + '/'))) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/**
 * Waits until the extension has the user's settings: the newest line of its log that names
 * its settings names agentd.path (see the machine settings above: without them it may never).
 */
export async function extensionSettled(vs, timeout = 30_000) {
  const end = Date.now() + timeout;
  for (;;) {
    const logs = extensionHostLogs(vs.dirs.userData).filter((l) => l.file.endsWith('agentd.log'));
    const newest = logs.sort((a, b) => statSync(b.file).mtimeMs - statSync(a.file).mtimeMs)[0];
    const last = newest?.lines.filter((l) => /\[info\] settings/.test(l)).at(-1);
    if (last?.includes(`path ${vs.settings['agentd.path']},`)) return;
    if (Date.now() > end) throw new Error(`the extension did not get the user's settings: ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Lines of the extension host's logs (VS Code's own and the extension's output channel). */
export function extensionHostLogs(userData) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/^(remoteexthost|agentd)\.log$/.test(name)) out.push({ file: p, lines: readFileSync(p, 'utf8').split('\n') });
    }
  };
  if (existsSync(join(userData, 'logs'))) walk(join(userData, 'logs'));
  return out;
}

// --- the workbench -------------------------------------------------------------------------------

/** Opens a folder in the window (a new workbench load) and waits for the workbench. */
export async function openFolder(page, url, folder) {
  await page.goto(`${url}/?folder=${encodeURIComponent(folder)}`);
  await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: 60_000 });
}

export const activityIcon = (page) => page.locator('.activitybar .action-item a[aria-label="agentd"]');

/** The chat view's page: the webview's outer frame, then its content frame. */
export function chatFrame(page) {
  return page.frameLocator(`iframe.webview.ready[src*="extensionId=${EXTENSION_ID}"]`).frameLocator('#active-frame');
}

/** Shows the agentd view (clicking its activity bar icon unless it is showing) and waits for its page. */
export async function showChat(page, timeout = 30_000) {
  const chat = chatFrame(page);
  const input = chat.locator('#input');
  const sideBar = page.locator('.part.sidebar');
  const end = Date.now() + timeout;
  // While the workbench restores itself the side bar may show with no title yet: wait then, as
  // clicking the icon of the container that shows would close the side bar.
  while (!(await input.isVisible().catch(() => false))) {
    if (Date.now() > end) throw new Error('the agentd view did not show');
    const visible = await sideBar.isVisible();
    const title = visible ? ((await sideBar.locator('.composite.title .title-label h2').textContent({ timeout: 1_000 }).catch(() => '')) ?? '').trim() : '';
    if (!visible || (title && title !== 'agentd')) {
      await activityIcon(page).click();
      await sideBar.locator('.composite.title .title-label h2', { hasText: /^agentd$/ }).waitFor({ timeout: 5_000 }).catch(() => {});
    } else {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return chat;
}

/** Runs a command from the command palette by its full title (e.g. "agentd: New Chat"). */
export async function runCommand(page, title) {
  await page.keyboard.press('F1');
  const box = page.locator('.quick-input-widget input');
  await box.waitFor();
  await box.fill(`>${title}`);
  const row = page.locator('.quick-input-widget .monaco-list-row', { has: page.locator('.label-name', { hasText: new RegExp(`^${escapeRe(title)}$`) }) });
  await row.first().waitFor();
  await row.first().click();
}

export function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The modal dialog, if one shows. */
export const dialog = (page) => page.locator('.monaco-dialog-box');

/** The label of the element that has keyboard focus in the workbench (not inside a webview). */
export function focusedLabel(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    return el ? (el.getAttribute('aria-label') || el.textContent || '').trim() : '';
  });
}

/** Writes a screenshot of the window to $AGENTD_SCREENSHOTS/<name>.png when that is set. */
export async function screenshot(page, name, options = {}) {
  const dir = process.env.AGENTD_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  // No tooltip of what the test last pointed at (the activity bar's, a button's).
  await page.mouse.move(900, 700);
  // Only the picture depends on it (screenshot mode only): a hover still shown after 5 s is in it.
  await page.locator('.monaco-hover:visible, .workbench-hover-container:visible').first().waitFor({ state: 'detached', timeout: 5_000 }).catch(() => {});
  await page.screenshot({ path: join(dir, `${name}.png`), ...options });
}
