#!/usr/bin/env bash
# Installs the OpenSSH server (Debian package `openssh-server`) for the provisioning tests.
# Idempotent. The tests start their own sshd on 127.0.0.1 with a temporary host key, config
# and authorized key; the system service the package may start is not used.
set -euo pipefail
sshd_bin() { command -v sshd 2>/dev/null || { [ -x /usr/sbin/sshd ] && echo /usr/sbin/sshd; }; }
if [ -n "$(sshd_bin)" ] && command -v ssh-keygen >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
[ -n "$(sshd_bin)" ] && command -v ssh-keygen >/dev/null
