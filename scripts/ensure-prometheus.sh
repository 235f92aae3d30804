#!/usr/bin/env bash
# Installs the Prometheus server and promtool (Debian package `prometheus`) for the
# observability tests. Idempotent. The tests start their own Prometheus on loopback with a
# temporary config and storage; the system service the package may start is not used.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
