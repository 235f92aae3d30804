#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what the tests need (virtualenvs, PostgreSQL),
# checks the committed gRPC stubs and the built wheel (installed into a fresh environment, `hilfarm
# demo` run from inside the checkout), then runs the suite in the main environment and the
# agent's tests again under tflite-runtime (numpy < 2) and under Python 3.9.
#
#   bash scripts/test.sh [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

bash scripts/setup.sh

echo "== gRPC stubs"
protos/generate.sh --check

echo "== PostgreSQL"
bash scripts/ensure-postgres.sh
export HILFARM_TEST_POSTGRES_URL=${HILFARM_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}

echo "== Prometheus (promtool and the server the observability tests start)"
bash scripts/ensure-prometheus.sh

echo "== OpenSSH server (the provisioning tests start their own sshd on loopback)"
bash scripts/ensure-sshd.sh

echo "== extra environments"
.ci/envs.sh

echo "== the built wheel, installed fresh, run from inside the checkout"
bash scripts/check-wheel.sh
echo "== checkov (scans deploy/; in a venv of its own, so its pins never meet the project's)"
[ -x .venv-checkov/bin/python ] || "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv .venv-checkov
.venv-checkov/bin/python -m pip install -q --disable-pip-version-check 'checkov==3.3.30'

echo "== a C compiler (tests/security builds the hostile delegate library it must refuse)"
if ! command -v cc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
  else
    echo "no C compiler and no apt-get: the delegate attack test will fail" >&2
  fi
fi

status=0
run_pytest() {
  local label=$1; shift
  echo "== pytest ($label)"
  set +e
  "$@"
  local rc=$?
  set -e
  # 5 = nothing collected: a misconfigured run must not look green.
  if [ "$rc" -ne 0 ]; then echo "pytest ($label) failed with exit code $rc"; status=1; fi
}

run_pytest "main: Python 3.11, ai-edge-litert, numpy 2" .venv/bin/python -m pytest -q "$@"
run_pytest "tflite-runtime, numpy<2" .venv-tflite/bin/python -m pytest -q tests/agent tests/sensors tests/samples "$@"
run_pytest "agent on Python 3.9" .venv-py39/bin/python -m pytest -q tests/agent tests/sensors tests/samples "$@"

echo "== done in $(( $(date +%s) - started ))s"
exit $status
