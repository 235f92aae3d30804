#!/usr/bin/env bash
# The package as a user installs it: builds the wheel (it must build without a warning), installs
# it into a fresh virtual environment with the extras `hilfarm demo` needs, and runs the demo
# from inside this checkout, where the checkout's own hilfarm/ folder sits in the working
# directory and must not shadow the installed package (neither for the CLI, nor for the agent,
# nor for the benchmark child each job runs in).
#
#   bash scripts/check-wheel.sh        (test.sh runs it; needs .venv from setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== wheel: build"
# The build backend comes from .venv (setuptools is in the provision extra): no download.
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
rm -rf build ./*.egg-info
if grep -iE "warning" "$work/build.log" | grep -v "^WARNING: Location" | grep -q .; then
  echo "building the wheel printed warnings:" >&2
  grep -iE "warning" "$work/build.log" | grep -v "^WARNING: Location" >&2
  exit 1
fi
wheel=$(ls "$work"/dist/hilfarm-*.whl)
echo "built $(basename "$wheel")"

echo "== wheel: install into a fresh environment"
"$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check \
  "hilfarm[agent,onnx,litert,controller,samples] @ file://$wheel"
# (Asked from elsewhere: `python -c` itself puts the working directory first on sys.path.)
installed=$(cd "$work" && "$work/venv/bin/python" -c 'import hilfarm, os; print(os.path.dirname(hilfarm.__file__))')
case "$installed" in
  "$checkout"*) echo "the fresh environment imports hilfarm from the checkout ($installed)" >&2; exit 1 ;;
esac

echo "== wheel: hilfarm demo from inside the checkout"
# The checkout's hilfarm/ is in the working directory here, on purpose.
set +e
# Bounded: a demo whose local agent can run neither model waits for a device that never comes.
HILFARM_DATA_DIR="$work/data" timeout 600 "$work/venv/bin/hilfarm" demo --runs 20 --min-seconds 0.2 --json >"$work/demo.json" 2>"$work/demo.log"
code=$?
set -e
if [ "$code" -ne 0 ]; then
  echo "hilfarm demo from the installed wheel exited $code" >&2
  cat "$work/demo.log" "$work/demo.json" >&2
  exit 1
fi
"$work/venv/bin/python" - "$work/demo.json" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
jobs = run["jobs"]
assert len(jobs) == 2 and all(j["state"] == "succeeded" for j in jobs), [(j["model"]["name"], j["state"], j["failure"]) for j in jobs]
for j in jobs:
    print(f"  {j['model']['name']}: p50 {j['result']['latency']['p50_seconds'] * 1e3:.3f} ms")
EOF
echo "installed wheel: demo ran from inside the checkout"
