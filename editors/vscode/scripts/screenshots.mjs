#!/usr/bin/env node
// The README's screenshots: the real workbench (code-server with the packaged extension, in
// Chromium), taken by the real-VS-Code tests as they go (AGENTD_SCREENSHOTS). Replaces
// media/screenshots/*.png with what this run shows; fails, writing nothing, if a test fails.
// Needs what those tests need (scripts/install-code-server.sh runs on first use).
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from '../test/vscode/harness.mjs';

const out = join(root, 'media/screenshots');
const fresh = mkdtempSync(join(tmpdir(), 'agentd-screenshots-'));
try {
  const run = spawnSync(process.execPath, ['--test', 'test/vscode/'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, AGENTD_SCREENSHOTS: fresh },
  });
  if (run.status !== 0) {
    console.error('screenshots: the tests failed; media/screenshots is unchanged');
    process.exit(1);
  }
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(out)) if (f.endsWith('.png')) rmSync(join(out, f));
  const shots = readdirSync(fresh).filter((f) => f.endsWith('.png')).sort();
  for (const f of shots) copyFileSync(join(fresh, f), join(out, f));
  console.log(`screenshots: ${shots.length} written to ${out}: ${shots.join(', ')}`);
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
