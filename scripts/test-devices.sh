#!/usr/bin/env bash
# The device tests: the agent on an emulated Raspberry Pi OS board end to end (provisioned over
# SSH, ONNX and TFLite jobs through a real controller) and phones over a real adb server. Needs
# root (debootstrap, binfmt_misc, mounts and namespaces). The board's root filesystem and its
# wheelhouse are cached under ${HILFARM_CACHE:-~/.cache/hilfarm} (scripts/emulated-rpi.sh): a
# cold run builds them first (about 8 minutes), a warm one starts at once.
#
#   bash scripts/test-devices.sh [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

[ -x .venv/bin/python ] || bash scripts/setup.sh

echo "== adb, ssh-keygen, unshare"
missing=()
command -v adb >/dev/null || missing+=(adb)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

echo "== emulated Raspberry Pi board (arm64 bullseye under qemu-user)"
board_started=$(date +%s)
eval "$(bash scripts/emulated-rpi.sh)"
echo "board ready in $(( $(date +%s) - board_started ))s: $ROOTFS"

export HILFARM_EMULATED_ROOTFS=$ROOTFS HILFARM_EMULATED_WHEELHOUSE=$WHEELHOUSE HILFARM_DEVICE_TESTS=required
report=$(mktemp)
export HILFARM_DEVICE_REPORT=$report
status=0
echo "== pytest (device tests)"
.venv/bin/python -m pytest -q -s -p no:cacheprovider tests/devices tests/agent/test_agent_android.py "$@" || status=$?
if [ -s "$report" ]; then
  echo "== figures"
  cat "$report"
fi
rm -f "$report"
echo "== device tests done in $(( $(date +%s) - started ))s"
exit $status
