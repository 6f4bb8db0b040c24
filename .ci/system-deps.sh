#!/usr/bin/env bash
# System packages the test suite needs: a real OpenSSH server (the SSH target is tested against
# sshd on 127.0.0.1) and the client. Idempotent; needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail
if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then
  command -v ssh >/dev/null 2>&1 && exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
# The package may start a system sshd on port 22; the tests start their own on a free port.
