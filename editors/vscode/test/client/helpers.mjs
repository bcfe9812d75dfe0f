// Test helpers: the scripted model server that ships with agentd, and clients of the real daemon.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const lib = require(join(root, 'out/client.cjs'));

export const AGENTD = process.env.AGENTD_PATH || 'agentd';
export const PYTHON = process.env.AGENTD_PYTHON || 'python3';

/** Starts `python -m agentd.scripted_model --port 0`; resolves once it printed its address. */
export async function startScriptedModel() {
  const child = spawn(PYTHON, ['-m', 'agentd.scripted_model', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const line = await new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => rej(new Error(`scripted model did not start: ${stderr}`)), 15_000);
    rl.once('line', (l) => {
      clearTimeout(timer);
      res(l);
    });
    child.once('exit', (code) => rej(new Error(`scripted model exited ${code}: ${stderr}`)));
  });
  const { baseUrl } = JSON.parse(line);
  const origin = baseUrl.replace(/\/v1\/?$/, '');
  const post = async (path, body) => {
    const r = await fetch(origin + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json().catch(() => null);
  };
  return {
    baseUrl,
    origin,
    enqueue: (responses) => post('/_scripted/enqueue', { responses }),
    reset: () => post('/_scripted/reset'),
    requests: async () => (await (await fetch(origin + '/_scripted/requests')).json()).requests,
    close: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once('exit', () => r());
        child.kill('SIGTERM');
      }),
  };
}

/** A temporary data + state dir pair, removed by `cleanup()`. */
export function tempDirs() {
  const base = mkdtempSync(join(tmpdir(), 'agentd-vscode-test-'));
  return {
    base,
    data: join(base, 'data'),
    state: join(base, 'state'),
    workspace: base,
    cleanup: () => rmSync(base, { recursive: true, force: true }),
  };
}

export function daemonEnv(model, dirs, extra = {}) {
  return lib.daemonEnvironment(
    {
      path: AGENTD,
      model: 'scripted',
      dataDir: dirs.data,
      env: {
        OPENAI_BASE_URL: model.baseUrl,
        OPENAI_API_KEY: 'test',
        AGENTD_STATE_DIR: dirs.state,
        // No configuration file of the user's: only what the test gives.
        AGENTD_CONFIG: join(dirs.base, 'no-config.toml'),
        // Each client's own agentd; a test of the shared daemon passes AGENTD_SHARED=1 with a
        // private AGENTD_RUNTIME_DIR (left to the default, each test would leave a shared
        // daemon of its own running for minutes).
        AGENTD_SHARED: '0',
        ...extra,
      },
    },
    process.env,
  );
}

/** A client of the real daemon, recording every notification. */
export function makeClient(model, dirs, options = {}) {
  const { env: extraEnv, ...rest } = options;
  const client = new lib.AgentdClient({
    command: AGENTD,
    cwd: dirs.workspace,
    workspaceRoot: dirs.workspace,
    clientInfo: { name: 'agentd-vscode-tests', version: '0' },
    restartPolicy: { baseDelayMs: 100, maxDelayMs: 400, maxRestarts: 3, windowMs: 60_000 },
    ...rest,
    env: daemonEnv(model, dirs, extraEnv),
  });
  const notifications = [];
  const states = [];
  const logs = [];
  client.onNotification((n) => notifications.push(n));
  client.onDidChangeState((s) => states.push(s));
  client.onLog((l) => logs.push(l));
  return { client, notifications, states, logs };
}

export function waitFor(predicate, { timeoutMs = 10_000, intervalMs = 10, what = 'condition' } = {}) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      let v;
      try {
        v = predicate();
      } catch (e) {
        return reject(e);
      }
      if (v) return resolve(v);
      if (Date.now() - start > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, intervalMs);
    };
    tick();
  });
}

/** The notifications of one run (by runId, plus the idle status that closes it). */
export function runEvents(notifications, sessionId, runId) {
  const out = [];
  let started = false;
  for (const n of notifications) {
    const p = n.params ?? {};
    const sid = p.sessionId ?? p.session?.id;
    if (sid !== sessionId) continue;
    if (n.method === 'session/status' && p.status === 'busy' && p.runId === runId) started = true;
    if (!started) continue;
    if (n.method === 'session/updated') continue;
    out.push(n);
    if (n.method === 'session/status' && p.status === 'idle') break;
  }
  return out;
}

export function textOf(message) {
  return (message.parts ?? [])
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');
}
