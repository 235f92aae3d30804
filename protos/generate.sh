#!/usr/bin/env bash
# Regenerates the committed Python stubs (hilfarm/v1/) from protos/hilfarm/v1/*.proto.
#
# The generator is pinned to grpcio-tools 1.66 on purpose: its gencode (protobuf 5.27)
# imports under every runtime our devices have (protobuf 5.27 .. 7.x, grpcio >= 1.66),
# while newer generators refuse older runtimes. It runs in its own virtual environment
# so the pin never drags the project's own protobuf down.
#
#   protos/generate.sh          rewrite hilfarm/v1/
#   protos/generate.sh --check  exit 1 if the committed stubs differ from the .proto files
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HILFARM_PROTOC_VENV:-.venv-protoc}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check 'grpcio-tools==1.66.2'

generate() {
  "$venv/bin/python" -m grpc_tools.protoc -Iprotos \
    --python_out="$1" --pyi_out="$1" --grpc_python_out="$1" protos/hilfarm/v1/*.proto
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r -x __init__.py -x __pycache__ "$tmp/hilfarm/v1" hilfarm/v1; then
    echo "hilfarm/v1 is stale: run protos/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "hilfarm/v1 matches protos/"
else
  generate .
  echo "regenerated hilfarm/v1 from protos/"
fi
