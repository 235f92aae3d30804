#!/usr/bin/env bash
# Builds the two extra virtual environments CI needs beside the main .venv:
#
#   .venv-tflite  Python 3.11 with tflite-runtime, which needs numpy < 2 (with numpy 2 it
#                 fails to import: "_ARRAY_API not found"), so it cannot share .venv with
#                 ai-edge-litert (which brings numpy 2).
#   .venv-py39    Python 3.9, the oldest Python a device runs the agent on; pip resolves the
#                 newest releases that still support 3.9, which is what such a device gets.
#
# Reruns are quick: an environment is reinstalled only when pyproject.toml, this script or its
# interpreter changed (a stamp file inside the environment records what it was built from).
#
#   .ci/envs.sh              build both
#   .ci/envs.sh tflite       build one (tflite | py39)
#   HILFARM_ENVS_FORCE=1 .ci/envs.sh   reinstall even when the stamp matches
set -euo pipefail
cd "$(dirname "$0")/.."

# Finds an interpreter for version $1 ("3.11"): pyenv's first, then one on PATH.
find_python() {
  local want=$1 candidate root
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for candidate in "$root"/versions/"$want".*/bin/python; do
      if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
  fi
  if command -v "python$want" >/dev/null 2>&1; then
    candidate=$(command -v "python$want")
    # A venv's python3.11 on PATH would nest venvs; ask for the base interpreter instead.
    "$candidate" -c 'import sys; print(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable)'
    return 0
  fi
  echo "envs.sh: no Python $want found (install it with pyenv or apt) — a CI image problem" >&2
  return 1
}

# build_env NAME PYTHON_VERSION PIP_ARGS...
build_env() {
  local name=$1 version=$2; shift 2
  local venv=".venv-$name" python stamp want started
  started=$(date +%s)
  python=$(find_python "$version")
  want=$( { "$python" -VV; cat pyproject.toml setup.py "$0"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
  stamp="$venv/.hilfarm-env-stamp"
  if [ -z "${HILFARM_ENVS_FORCE:-}" ] && [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv: up to date ($("$venv/bin/python" -V))"
  else
    echo "$venv: building with $python ($("$python" -V))"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
    echo "$want" >"$stamp"
  fi
  # Cheap on every run: the committed stubs must import under the versions resolved here.
  "$venv/bin/python" - <<'PY'
import importlib.metadata as md
import hilfarm.v1.farm_pb2, hilfarm.v1.farm_pb2_grpc, grpc  # noqa: F401
names = ["grpcio", "protobuf", "numpy", "onnxruntime", "onnx", "flatbuffers", "tflite-runtime", "psutil"]
found = []
for n in names:
    try:
        found.append(f"{n}={md.version(n)}")
    except md.PackageNotFoundError:
        pass
import sys
print(f"  python={sys.version.split()[0]} " + " ".join(found))
PY
  echo "$venv: ready in $(( $(date +%s) - started ))s"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tflite py39)
for target in "${targets[@]}"; do
  case $target in
    tflite) build_env tflite 3.11 -e '.[agent,onnx,tflite,samples,dev]' 'numpy<2' ;;
    py39) build_env py39 3.9 -e '.[agent,onnx,samples,dev]' ;;
    *) echo "envs.sh: unknown environment '$target' (expected tflite or py39)" >&2; exit 2 ;;
  esac
done
