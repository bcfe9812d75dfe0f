// How the extension's settings become the daemon's command line and environment.
// Pure functions, tested under plain Node.

export interface DaemonSettings {
  /** `agentd.path`: the executable, looked up on PATH when it has no directory part. */
  path: string;
  /** `agentd.model`: AGENTD_MODEL and `model` on session/create; empty means the daemon's default. */
  model: string;
  /** `agentd.env`: extra environment variables. */
  env: Record<string, string>;
  /** `agentd.dataDir`: AGENTD_DATA_DIR; empty means the daemon's default. */
  dataDir: string;
}

export const defaultSettings: DaemonSettings = { path: 'agentd', model: '', env: {}, dataDir: '' };

/** Reads loosely typed configuration values (as VS Code returns them) into `DaemonSettings`. */
export function normalizeSettings(raw: Partial<Record<keyof DaemonSettings, unknown>>): DaemonSettings {
  const str = (v: unknown, d: string) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : d);
  const env: Record<string, string> = {};
  if (raw.env && typeof raw.env === 'object' && !Array.isArray(raw.env)) {
    for (const [k, v] of Object.entries(raw.env as Record<string, unknown>)) {
      if (v === null || v === undefined) continue;
      env[k] = String(v);
    }
  }
  return {
    path: str(raw.path, defaultSettings.path),
    model: str(raw.model, ''),
    env,
    dataDir: str(raw.dataDir, ''),
  };
}

/**
 * The daemon's environment: the editor's own, then `agentd.env`, then the dedicated settings
 * (which win, since they are what the user set for exactly that purpose).
 */
export function daemonEnvironment(
  settings: DaemonSettings,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, ...settings.env };
  if (settings.model) env.AGENTD_MODEL = settings.model;
  if (settings.dataDir) env.AGENTD_DATA_DIR = expandHome(settings.dataDir, base);
  // The daemon's stdout is the protocol stream; make sure Python never buffers a partial frame
  // behind a crash and never prints colour codes into stderr logs.
  env.PYTHONUNBUFFERED = env.PYTHONUNBUFFERED ?? '1';
  env.NO_COLOR = env.NO_COLOR ?? '1';
  return env;
}

export function expandHome(p: string, env: NodeJS.ProcessEnv = process.env): string {
  const home = env.HOME ?? env.USERPROFILE;
  if (home && (p === '~' || p.startsWith('~/'))) return home + p.slice(1);
  return p;
}

/** True when two settings values need a daemon restart to take effect. */
export function needsRestart(a: DaemonSettings, b: DaemonSettings): boolean {
  return (
    a.path !== b.path ||
    a.model !== b.model ||
    a.dataDir !== b.dataDir ||
    JSON.stringify(sortKeys(a.env)) !== JSON.stringify(sortKeys(b.env))
  );
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}
