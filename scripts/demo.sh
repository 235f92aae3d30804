#!/usr/bin/env bash
# One command from a fresh clone to measured results: installs hilfarm into .venv, starts the
# embedded farm (controller + local agent, SQLite in the user data dir) and benchmarks
# MODEL... — or, with no model given, a small ONNX and a small TFLite model it makes itself.
#
#   bash scripts/demo.sh                    # sample models
#   bash scripts/demo.sh path/to/model.onnx [--runs 200] [--threads 2] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hilfarm demo "$@"
