#!/usr/bin/env bash
# Prepares the emulated Raspberry Pi OS board the device tests run on:
#
#   rootfs      an arm64 Debian bullseye root filesystem (Python 3.9.2, the base of Raspberry Pi
#               OS bullseye) made with debootstrap, with openssh-server and a user `pi`; its
#               programs run on this x86_64 machine through qemu-user-static and binfmt_misc.
#   wheelhouse  aarch64 / CPython 3.9 wheels of everything the agent installs (grpcio, protobuf,
#               numpy, psutil, tflite-runtime, onnxruntime and their dependencies), fetched with
#               `pip download --platform --python-version --only-binary`, so `hilfarm device
#               provision --no-index --find-links` installs the agent inside the board offline.
#
# Both are cached under ${HILFARM_CACHE:-~/.cache/hilfarm}, keyed by what built them (the recipe
# below), and built only when missing: a cold build takes minutes, a warm one nothing. The
# debootstrap mirror is the Debian mirror this machine's apt uses (HILFARM_DEBIAN_MIRROR
# overrides it). Needs root (debootstrap, binfmt_misc).
#
#   scripts/emulated-rpi.sh        build what is missing; print ROOTFS=... and WHEELHOUSE=...
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${HILFARM_CACHE:-$HOME/.cache/hilfarm}
say() { echo "emulated-rpi: $*" >&2; }

# ------------------------------------------------------------------ what builds the board
suite=bullseye
arch=arm64
variant=minbase
include=python3,python3-venv,openssh-server,passwd,mawk,procps
# The agent's wheels for the board: the newest with aarch64 cp39 wheels (see README, "Emulated
# Raspberry Pi board"); pip picks the newest that fit these bounds.
wheel_platform=manylinux2014_aarch64
wheel_python=3.9
wheel_requirements=(
  "grpcio>=1.66,<=1.80.1" "protobuf>=5.27,<=6.33.6" "numpy>=1.21,<2" "psutil>=5.9"
  "tflite-runtime==2.13.*" "onnxruntime==1.16.3"
  "click>=8.1" "PyYAML>=6" "jsonschema>=4.17" "platformdirs>=3" "rich>=13"
)
recipe_version=2  # bump when the steps below change what a build produces

rootfs_key=$(printf '%s\n' "$recipe_version" "$suite" "$arch" "$variant" "$include" | sha256sum | cut -c1-16)
wheels_key=$(printf '%s\n' "$recipe_version" "$wheel_platform" "$wheel_python" "${wheel_requirements[@]}" | sha256sum | cut -c1-16)
rootfs="$cache/rootfs/$suite-$arch-$rootfs_key"
wheelhouse="$cache/wheelhouse/cp39-aarch64-$wheels_key"

# ------------------------------------------------------------------ binfmt_misc + qemu
need_packages=()
command -v debootstrap >/dev/null || need_packages+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need_packages+=(qemu-user-static)
command -v update-binfmts >/dev/null || need_packages+=(binfmt-support)
if [ ${#need_packages[@]} -gt 0 ]; then
  say "installing ${need_packages[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_packages[@]}" >/dev/null
fi
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
  update-binfmts --enable qemu-aarch64
fi
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
  { say "qemu-aarch64 is registered without the F (fix binary) flag: it would not run inside a chroot"; exit 1; }

# ------------------------------------------------------------------ root filesystem
debian_mirror() {
  if [ -n "${HILFARM_DEBIAN_MIRROR:-}" ]; then echo "$HILFARM_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
  [ -n "$uri" ] || uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
  [ -n "$uri" ] || { say "no Debian mirror in /etc/apt; set HILFARM_DEBIAN_MIRROR"; exit 1; }
  echo "$uri"
}

if [ ! -x "$rootfs/usr/bin/python3" ]; then
  started=$(date +%s)
  mirror=$(debian_mirror)
  say "building $rootfs (debootstrap $suite $arch from $mirror; several minutes)"
  mkdir -p "$cache/rootfs"
  tmp="$rootfs.partial"
  rm -rf "$tmp"
  debootstrap --arch="$arch" --variant="$variant" --include="$include" "$suite" "$tmp" "$mirror" >"$cache/rootfs/debootstrap.log" 2>&1 ||
    { tail -n 30 "$cache/rootfs/debootstrap.log" >&2; say "debootstrap failed (log: $cache/rootfs/debootstrap.log)"; exit 1; }
  # The login Raspberry Pi OS has, sshd's privilege separation directory, and a clean apt cache.
  chroot "$tmp" /usr/sbin/useradd --create-home --shell /bin/bash pi
  # No password, but not locked either: sshd (without PAM) refuses a locked account's key login.
  chroot "$tmp" /usr/sbin/usermod -p '*' pi
  mkdir -p "$tmp/run/sshd"
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  echo "rpi5-emulated" >"$tmp/etc/hostname"
  mv "$tmp" "$rootfs"
  say "rootfs ready in $(( $(date +%s) - started ))s"
fi

# ------------------------------------------------------------------ wheelhouse
if [ ! -f "$wheelhouse/.complete" ]; then
  started=$(date +%s)
  say "downloading aarch64 cp39 wheels into $wheelhouse"
  python=.venv/bin/python
  [ -x "$python" ] || python=python3
  tmp="$wheelhouse.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  "$python" -m pip download -q --disable-pip-version-check --dest "$tmp" --only-binary=:all: \
    --platform "$wheel_platform" --python-version "$wheel_python" --implementation cp \
    "${wheel_requirements[@]}"
  touch "$tmp/.complete"
  rm -rf "$wheelhouse"
  mv "$tmp" "$wheelhouse"
  say "wheelhouse ready in $(( $(date +%s) - started ))s ($(ls "$wheelhouse" | wc -l) wheels)"
fi

echo "ROOTFS=$rootfs"
echo "WHEELHOUSE=$wheelhouse"
