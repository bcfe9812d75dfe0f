#!/usr/bin/env bash
# CI for the VS Code extension, from a clean checkout: installs what is missing (Debian's
# Chromium, agentd itself), then npm ci, the generated-types staleness check, the build, the unit
# + client tests (against the real daemon and its scripted model), the webview tests (headless
# Chromium), and the .vsix. Run from anywhere: bash editors/vscode/scripts/ci.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
step() { printf '\n== %s\n' "$*"; }

step "chromium"
if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "$CHROMIUM_PATH" ]; then
  :
elif [ -x /usr/bin/chromium ]; then
  export CHROMIUM_PATH=/usr/bin/chromium
else
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  export CHROMIUM_PATH=/usr/bin/chromium
fi
"$CHROMIUM_PATH" --version

step "agentd"
if ! command -v agentd >/dev/null 2>&1 || ! agentd --help >/dev/null 2>&1; then
  python3 -m pip install -q -e "$repo"
fi
agentd --version
python3 -c 'import agentd.scripted_model' # the scripted model server the client tests use

step "npm ci"
npm ci --no-audit --no-fund

step "generated protocol types are up to date"
npm run --silent check:types

step "build (tsc + esbuild)"
npm run --silent build

step "tests: unit, client (real agentd), webview (headless Chromium), end to end"
node --test test/unit/ test/client/ test/webview/ test/e2e/

step "package"
rm -f ./*.vsix
npx --no-install vsce package --no-dependencies --allow-missing-repository --out agentd-vscode.vsix
ls -l agentd-vscode.vsix
