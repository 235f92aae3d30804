#!/usr/bin/env bash
# Creates .venv (Python >= 3.9; 3.11 preferred) with hilfarm and every extra installed editable.
# Sourced by demo.sh and test.sh; safe to run again (pip skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  local root candidate
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for candidate in "$root"/versions/3.11.*/bin/python; do
      [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
  fi
  for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
      command -v "$candidate"; return
    fi
  done
  echo "setup.sh: hilfarm needs Python >= 3.9" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
# An editable install maps the source tree, so only a changed pyproject.toml or setup.py (dependencies,
# packages) needs pip again; skipping it keeps `scripts/demo.sh` quick and quiet.
stamp=.venv/.hilfarm-pyproject.sha256
wanted=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x .venv/bin/hilfarm ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
echo "$wanted" >"$stamp"
