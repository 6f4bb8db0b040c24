#!/usr/bin/env bash
# What the test suite needs beyond pip, installed quietly and idempotently (root or sudo; Debian/Ubuntu):
#  1. OpenSSH server + client from Debian: the SSH target is tested against a real sshd that
#     tests/sshd.py starts on 127.0.0.1 (the package's own sshd is NOT started here).
#  2. A "device" Python shaped like Raspberry Pi OS's: tflite-runtime 2.14 with numpy<2 in a venv
#     (default ~/.cache/edgesparse/device-venv, override with EDGESPARSE_DEVICE_VENV). Optional outside CI: if it
#     cannot be made, the three tests that use it skip and say why; with EDGESPARSE_PI_REQUIRED=1 (CI as root)
#     this script fails with the install log.
#  adb is optional and not installed (its `adb devices` leaves a server running): set
#  EDGESPARSE_INSTALL_ADB=1 to install it; the live adb test still needs an attached device.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
if [ "${EDGESPARSE_INSTALL_ADB:-0}" = "1" ] && ! command -v adb >/dev/null 2>&1; then missing+=(adb); fi

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Keep maintainer scripts from starting a system sshd on port 22 during the install.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
  fi
  cleanup() { if [ "$made_policy" = "1" ]; then $SUDO rm -f "$policy"; fi; }
  trap cleanup EXIT
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  cleanup
  trap - EXIT
fi

# ---- optional: the Raspberry Pi OS-like device Python ------------------------------------------
# Where it cannot be made, the tests that use it skip and print why (from $log, written here). In CI as root
# (EDGESPARSE_PI_REQUIRED=1, set by .ci/run) they must run: the script then fails with the log instead.
venv="${EDGESPARSE_DEVICE_VENV:-$HOME/.cache/edgesparse/device-venv}"
log="$venv.install.log"
if "$venv/bin/python" -c "import numpy, tflite_runtime.interpreter" >/dev/null 2>&1; then
  rm -f "$log"
  exit 0
fi
mkdir -p "$(dirname "$venv")"
unavailable() {  # $1: why; the install log is already in $log
  echo "system-deps: $1" >>"$log"
  if [ "${EDGESPARSE_PI_REQUIRED:-0}" = "1" ]; then
    tail -40 "$log" >&2
    echo "system-deps: EDGESPARSE_PI_REQUIRED=1: the tflite-runtime device-Python tests must run, not skip" >&2
    exit 1
  fi
  echo "system-deps: $1; the tflite-runtime device-Python tests will skip (why: $log)" >&2
  exit 0
}
: >"$log"
py=""
for candidate in python3.9 "$HOME"/.pyenv/versions/3.9*/bin/python3.9 /usr/bin/python3; do
  if "$candidate" -c "import sys, venv, ensurepip; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))" \
      >/dev/null 2>&1; then
    py="$candidate"
    break
  fi
done
[ -n "$py" ] || unavailable "no Python 3.9-3.11 with venv (tried python3.9, ~/.pyenv/versions/3.9*, /usr/bin/python3)"
rm -rf "$venv"
if ! { "$py" -m venv "$venv" >>"$log" 2>&1 &&
       "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
         "tflite-runtime==2.14.0" "numpy<2" >>"$log" 2>&1; }; then
  rm -rf "$venv"
  unavailable "could not install tflite-runtime 2.14 with numpy<2 into $venv with $py"
fi
rm -f "$log"
exit 0
