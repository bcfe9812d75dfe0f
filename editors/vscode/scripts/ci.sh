#!/usr/bin/env bash
# CI for the VS Code extension, from a clean checkout: installs what is missing (Debian's
# Chromium, agentd itself; code-server through scripts/install-code-server.sh, cached per
# machine), then npm ci, the generated-types staleness check, the build, the unit + client tests
# (against the real daemon and its scripted model), the webview tests (headless Chromium), the
# stand-in end-to-end tests, the .vsix, and the tests in a real VS Code (code-server with that
# .vsix, driven in Chromium). Ends with the test counts of the run and where the .vsix is.
# Run from anywhere: bash editors/vscode/scripts/ci.sh
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

# Each test run writes TAP to a file as well, so the summary below counts what ran.
tap="$(mktemp -d)"
trap 'rm -rf "$tap"' EXIT
count() { grep -E "^# $1 [0-9]+$" "$tap/$2.tap" | tail -1 | awk '{print $3}'; }
run_tests() { # name, paths...
  local name="$1"; shift
  node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap/$name.tap" "$@"
}

step "tests: unit, client (real agentd), webview (headless Chromium), end to end (stand-in vscode)"
run_tests fast test/unit/ test/client/ test/webview/ test/e2e/

step "package"
rm -f ./*.vsix
npx --no-install vsce package --no-dependencies --allow-missing-repository --out agentd-vscode.vsix
ls -l agentd-vscode.vsix

step "code-server for the tests in a real VS Code (installed once per machine, then cached)"
CODE_SERVER_HOME="$(bash scripts/install-code-server.sh | tail -1)"
export CODE_SERVER_HOME

step "tests in a real VS Code: code-server, the .vsix, Chromium"
started=$SECONDS
AGENTD_VSIX="$here/agentd-vscode.vsix" run_tests vscode test/vscode/
real_s=$((SECONDS - started))

step "summary"
echo "VS Code extension: $(count pass fast) of $(count tests fast) tests passed (unit, client, webview, stand-in end to end)"
echo "VS Code extension: $(count pass vscode) of $(count tests vscode) tests passed in a real VS Code (code-server), in ${real_s} s"
echo "VS Code extension package: $here/agentd-vscode.vsix"
