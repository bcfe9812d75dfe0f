#!/usr/bin/env bash
# Run the Neovim plugin's test suite on every installed Neovim
# (see install-nvim.sh). Extra arguments go to pytest.
# AGENTD_NVIM=path1:path2 picks the Neovim binaries explicitly.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PREFIX="${AGENTD_NVIM_PREFIX:-$HOME/.cache/agentd-nvim}"

# Install the Neovims and the test driver first (quick when they are there).
if [ "${AGENTD_NVIM_NO_INSTALL:-}" != "1" ]; then
  bash "$HERE/install-nvim.sh"
fi

if [ -z "${AGENTD_NVIM:-}" ]; then
  bins=()
  [ -x /usr/bin/nvim ] && bins+=(/usr/bin/nvim)
  [ -x "$PREFIX/bin/nvim-current" ] && bins+=("$(readlink -f "$PREFIX/bin/nvim-current")")
  if [ ${#bins[@]} -eq 0 ]; then
    echo "run.sh: no Neovim found; run $HERE/install-nvim.sh first" >&2
    exit 1
  fi
  AGENTD_NVIM="$(IFS=:; echo "${bins[*]}")"
fi
export AGENTD_NVIM

if ! command -v agentd >/dev/null 2>&1; then
  echo "run.sh: agentd is not installed; pip install -e $ROOT" >&2
  python3 -m pip install -q --disable-pip-version-check -e "$ROOT"
fi

for b in ${AGENTD_NVIM//:/ }; do
  echo "run.sh: $("$b" --version | head -n1) ($b)"
done

cd "$ROOT"
exec python3 -m pytest -p no:cacheprovider "$HERE/test_nvim_plugin.py" -v "$@"
