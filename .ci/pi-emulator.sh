#!/usr/bin/env bash
# An emulated Raspberry Pi on this machine: a Debian bookworm arm64 root file system (Raspberry Pi OS
# bookworm's base: Python 3.11) run by qemu-user through binfmt_misc, with an OpenSSH server on
# 127.0.0.1 that `edgesparse deploy/profile --target ssh://...` reach like a real Pi.
#
#   bash .ci/pi-emulator.sh start    # build once (cached), mount, start sshd; LAST LINE = target arguments
#   bash .ci/pi-emulator.sh status   # running or not; when running, the last line is the target arguments
#   bash .ci/pi-emulator.sh stop     # stop what start started (by PID), unmount what it mounted
#   bash .ci/pi-emulator.sh build    # only build the cached root file system
#
# Needs root (chroot, mounts, binfmt_misc) and Debian's qemu-user-static, binfmt-support, mmdebstrap and
# arch-test (installed here if missing). Exit code 3 (and a reason on stderr) when this machine cannot run
# it (not root, no binfmt_misc); the pytest `pi` tests then skip with that reason.
#
# Environment:
#   EDGESPARSE_PI_ROOTFS  the cached root file system (default ~/.cache/edgesparse/pi-rootfs). It is
#                         built in a temporary folder beside it and renamed into place when complete,
#                         so an interrupted build never leaves a half cache. Delete it to rebuild.
#   EDGESPARSE_PI_RUN     runtime state: PID file, mounts, client key and known_hosts
#                         (default: the rootfs path + ".run")
#   EDGESPARSE_PI_PORT    sshd port on 127.0.0.1 (default 2222)
#   EDGESPARSE_PI_MIRROR  Debian mirror (default: the one apt uses on this machine)
#   EDGESPARSE_PI_CPU     the CPU qemu emulates (default cortex-a72, a Raspberry Pi 4's; cortex-a76: a Pi 5's)
#
# What the device has: /opt/venv (python3.11, tflite-runtime 2.14.0, numpy<2 — what Raspberry Pi OS users
# install), /opt/venv-litert (ai-edge-litert 2.1.x with numpy<2, the newest LiteRT that loads under qemu),
# /opt/venv-nonumpy (no numpy, no runtime), /opt/venv-numpy-only (numpy<2, no runtime) and the system
# /usr/bin/python3 (no numpy): the last three for the tests of a device that lacks something.
set -euo pipefail

ROOTFS="${EDGESPARSE_PI_ROOTFS:-$HOME/.cache/edgesparse/pi-rootfs}"
ROOTFS="${ROOTFS%/}"
RUN="${EDGESPARSE_PI_RUN:-$ROOTFS.run}"
PORT="${EDGESPARSE_PI_PORT:-2222}"
# The CPU qemu emulates: a Raspberry Pi 4's Cortex-A72 (qemu's default "max" CPU advertises SVE/i8mm
# and more, and ai-edge-litert 2.1's XNNPACK then computes wrong int8 outputs: 39% top-1 agreement).
CPU="${EDGESPARSE_PI_CPU:-cortex-a72}"
TFLITE_RUNTIME="tflite-runtime==2.14.0"
LITERT="ai-edge-litert==2.1.*"
LITERT_MISSING="etc/edgesparse/litert-missing.log"  # in the rootfs: why /opt/venv-litert is absent
STAMP="edgesparse-pi-rootfs v1"  # bump to invalidate caches built by an older script

log() { echo "pi-emulator: $*" >&2; }
cannot() { log "cannot run the emulated Pi here: $*"; exit 3; }

need_root() {
  [ "$(id -u)" -eq 0 ] || cannot "needs root (chroot, mount, binfmt_misc); run it as root or with sudo"
}

install_host_packages() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v arch-test >/dev/null 2>&1 || missing+=(arch-test)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

enable_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
      cannot "binfmt_misc is not mounted and cannot be mounted at /proc/sys/fs/binfmt_misc"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
    cannot "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
  arch-test arm64 >/dev/null 2>&1 || cannot "arm64 binaries do not run here (arch-test arm64 failed)"
}

debian_mirror() {
  if [ -n "${EDGESPARSE_PI_MIRROR:-}" ]; then echo "$EDGESPARSE_PI_MIRROR"; return; fi
  local url=""
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    # deb822: the URIs of the first stanza whose Suites name a release (not -security)
    url=$(awk 'BEGIN{RS=""} /Suites:[^\n]*(bookworm|trixie|bullseye|stable)( |\n|$)/ && !/security/ {
                 if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s=substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s; exit } }' \
            /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  fi
  if [ -z "$url" ] && [ -f /etc/apt/sources.list ]; then
    url=$(awk '$1=="deb" && $0 !~ /security/ && $0 ~ /debian/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list || true)
  fi
  echo "${url:-http://deb.debian.org/debian}"
}

# ---- build (once) -------------------------------------------------------------------------------

built() { [ -f "$ROOTFS/etc/edgesparse-pi" ] && [ "$(cat "$ROOTFS/etc/edgesparse-pi")" = "$STAMP" ]; }

chroot_mounts() {  # mount proc, dev, sys into $1 (for the build); prints nothing
  mount -t proc proc "$1/proc"
  mount --bind /dev "$1/dev"
  mount -t sysfs sysfs "$1/sys"
}

chroot_umounts() {
  local d
  for d in sys dev proc; do
    if mountpoint -q "$1/$d"; then umount "$1/$d" 2>/dev/null || umount -l "$1/$d"; fi
  done
}

build() {
  need_root
  install_host_packages
  enable_binfmt
  if built; then return 0; fi
  local parent tmp mirror t0
  parent=$(dirname "$ROOTFS")
  mkdir -p "$parent"
  # a leftover of an interrupted build: unmount and remove it
  for tmp in "$ROOTFS".build.*; do
    [ -d "$tmp" ] || continue
    chroot_umounts "$tmp/rootfs"
    rm -rf --one-file-system "$tmp"
  done
  tmp=$(mktemp -d "$ROOTFS.build.XXXXXX")
  trap 'chroot_umounts "$tmp/rootfs"; rm -rf --one-file-system "$tmp"' EXIT
  mirror=$(debian_mirror)
  t0=$(date +%s)
  log "building the arm64 root file system from $mirror into $ROOTFS (about 4-5 min, once)"
  mmdebstrap --quiet --arch=arm64 --variant=minbase --mode=root \
    --include=python3,python3-venv,python3-pip,openssh-server,ca-certificates,procps \
    bookworm "$tmp/rootfs" "$mirror" >"$tmp/mmdebstrap.log" 2>&1 ||
    { tail -20 "$tmp/mmdebstrap.log" >&2; log "mmdebstrap failed"; exit 1; }
  local r="$tmp/rootfs"
  # This machine's CA bundle (a TLS-intercepting proxy's CA may be in it) and pip settings, so pip and
  # anything else on the device reach PyPI as this machine does.
  mkdir -p "$r/etc/edgesparse"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/edgesparse/host-ca.crt"
  cat "$r/etc/edgesparse/host-ca.crt" >>"$r/etc/ssl/certs/ca-certificates.crt"
  local index
  index=$(pip config get global.index-url 2>/dev/null || true)
  index="${PIP_INDEX_URL:-$index}"
  {
    echo "[global]"
    echo "cert = /etc/edgesparse/host-ca.crt"
    echo "disable-pip-version-check = true"
    if [ -n "$index" ] && [[ "$index" != file:* ]]; then echo "index-url = $index"; fi
  } >"$r/etc/pip.conf"
  chroot_mounts "$r"
  local pipenv=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_DEFAULT_TIMEOUT=180
                PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off)
  log "device venvs: /opt/venv ($TFLITE_RUNTIME, numpy<2), /opt/venv-litert ($LITERT), /opt/venv-nonumpy, /opt/venv-numpy-only"
  chroot "$r" "${pipenv[@]}" python3 -m venv /opt/venv
  chroot "$r" "${pipenv[@]}" /opt/venv/bin/pip install -q "$TFLITE_RUNTIME" "numpy<2" ||
    { chroot_umounts "$r"; log "pip install $TFLITE_RUNTIME failed on the device"; exit 1; }
  # The other venvs get no pip of their own (ensurepip takes ~40 s under qemu): /opt/venv's pip installs
  # into them with --python.
  local v
  for v in venv-nonumpy venv-numpy-only venv-litert; do
    chroot "$r" "${pipenv[@]}" python3 -m venv --without-pip "/opt/$v"
  done
  chroot "$r" "${pipenv[@]}" /opt/venv/bin/pip --python /opt/venv-numpy-only/bin/python install -q "numpy<2"
  # ai-edge-litert on the device is optional where nothing requires it: without it the litert tests skip and
  # say why (LITERT_MISSING, read by tests/test_pi.py). In CI as root (EDGESPARSE_PI_REQUIRED=1, set by .ci/run)
  # they must run, so a failed install fails the build with pip's log instead of shrinking the tests.
  if ! chroot "$r" "${pipenv[@]}" /opt/venv/bin/pip --python /opt/venv-litert/bin/python install -q "$LITERT" "numpy<2" \
      >"$tmp/litert-install.log" 2>&1; then
    if [ "${EDGESPARSE_PI_REQUIRED:-0}" = "1" ]; then
      tail -40 "$tmp/litert-install.log" >&2
      chroot_umounts "$r"
      log "pip install $LITERT failed on the device (log above); EDGESPARSE_PI_REQUIRED=1: its tests must run"
      exit 1
    fi
    log "warning: $LITERT did not install on the device; its tests will skip (log: /$LITERT_MISSING in the rootfs)"
    { echo "pip install $LITERT \"numpy<2\" failed on the device when the rootfs was built:"
      tail -40 "$tmp/litert-install.log"; } >"$r/$LITERT_MISSING"
    rm -rf "$r/opt/venv-litert"
  fi
  chroot_umounts "$r"
  # sshd: its own config and a host key made now (the client side is made per start in $RUN)
  mkdir -p "$r/etc/edgesparse/ssh" "$r/run/sshd"
  rm -f "$r"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N "" -C edgesparse-pi -f "$r/etc/edgesparse/ssh/host_key"
  rm -rf "$r/var/cache/apt/archives/"*.deb "$r/root/.cache/pip"
  echo "$STAMP" >"$r/etc/edgesparse-pi"
  if [ -e "$ROOTFS" ]; then rm -rf --one-file-system "$ROOTFS"; fi  # an outdated cache
  mv "$r" "$ROOTFS"
  trap - EXIT
  rm -rf --one-file-system "$tmp"
  log "built $ROOTFS in $(( $(date +%s) - t0 )) s ($(du -sm "$ROOTFS" | cut -f1) MB)"
}

# ---- start / stop / status ----------------------------------------------------------------------

sshd_pid() {  # the PID start recorded, if that process still runs sshd in our rootfs
  local pid
  [ -f "$RUN/sshd.pid" ] || return 1
  pid=$(cat "$RUN/sshd.pid")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$(readlink -f "$ROOTFS")" ] || return 1
  echo "$pid"
}

target_args() {
  echo "--target ssh://root@127.0.0.1:$PORT/root/edgesparse --identity $RUN/id_ed25519 --known-hosts $RUN/known_hosts --python /opt/venv/bin/python"
}

start() {
  build
  if pid=$(sshd_pid); then
    log "already running (sshd PID $pid, port $(cat "$RUN/port"))"
    PORT=$(cat "$RUN/port")
    target_args
    return 0
  fi
  mkdir -p "$RUN"
  chmod 700 "$RUN"
  local r="$ROOTFS" rr
  rr=$(readlink -f "$r")
  # mounts start makes, recorded so that stop unmounts exactly these
  : >"$RUN/mounts"
  local d
  for d in proc dev sys; do
    if ! mountpoint -q "$rr/$d"; then
      case $d in
        proc) mount -t proc proc "$rr/proc" ;;
        dev) mount --bind /dev "$rr/dev" ;;
        sys) mount -t sysfs sysfs "$rr/sys" ;;
      esac
      echo "$rr/$d" >>"$RUN/mounts"
    fi
  done
  # a fresh client key per start; the device accepts only it
  rm -f "$RUN/id_ed25519" "$RUN/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N "" -C edgesparse-pi-client -f "$RUN/id_ed25519"
  install -m 600 "$RUN/id_ed25519.pub" "$rr/etc/edgesparse/ssh/authorized_keys"
  mkdir -p "$rr/run/sshd"
  cat >"$rr/etc/edgesparse/ssh/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey /etc/edgesparse/ssh/host_key
PidFile /run/edgesparse-sshd.pid
AuthorizedKeysFile /etc/edgesparse/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
X11Forwarding no
AllowTcpForwarding no
LogLevel ERROR
MaxStartups 50
SetEnv QEMU_CPU=$CPU
EOF
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$rr/etc/edgesparse/ssh/host_key.pub")" >"$RUN/known_hosts"
  echo "$PORT" >"$RUN/port"
  # setsid: its own session, so a Ctrl-C or the end of the calling shell does not end it; stop ends it.
  QEMU_CPU="$CPU" setsid chroot "$rr" /usr/sbin/sshd -D -e -f /etc/edgesparse/ssh/sshd_config \
    </dev/null >"$RUN/sshd.log" 2>&1 &
  echo $! >"$RUN/sshd.pid"
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$(cat "$RUN/sshd.pid")" 2>/dev/null; then
      log "sshd exited: $(tail -3 "$RUN/sshd.log")"
      stop >/dev/null 2>&1 || true
      exit 1
    fi
    if ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$RUN/known_hosts" \
        -o IdentitiesOnly=yes -i "$RUN/id_ed25519" -p "$PORT" root@127.0.0.1 true >/dev/null 2>&1; then
      log "running: sshd PID $(cat "$RUN/sshd.pid") on 127.0.0.1:$PORT, $(chroot "$rr" uname -m), rootfs $ROOTFS"
      target_args
      return 0
    fi
    sleep 0.3
  done
  log "sshd did not answer within 30 s: $(tail -3 "$RUN/sshd.log")"
  stop >/dev/null 2>&1 || true
  exit 1
}

in_rootfs_pids() {  # processes whose root is our rootfs: sshd and the sessions it started
  local rr p
  rr=$(readlink -f "$ROOTFS")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$rr" ] && echo "${p#/proc/}"
  done
  return 0
}

stop() {
  local pid rr
  if pid=$(sshd_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # sessions sshd started and that outlived it (only processes inside our rootfs)
  if [ -d "$ROOTFS" ]; then
    for pid in $(in_rootfs_pids); do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in $(in_rootfs_pids); do kill -9 "$pid" 2>/dev/null || true; done
  fi
  if [ -f "$RUN/mounts" ]; then
    tac "$RUN/mounts" | while read -r m; do
      if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
    rm -f "$RUN/mounts"
  fi
  rm -f "$RUN/sshd.pid"
  log "stopped"
}

status() {
  if pid=$(sshd_pid); then
    PORT=$(cat "$RUN/port")
    log "running: sshd PID $pid on 127.0.0.1:$PORT, rootfs $ROOTFS"
    target_args
    return 0
  fi
  if built; then log "stopped (rootfs cached at $ROOTFS)"; else log "stopped (not built; start builds $ROOTFS)"; fi
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) [ "$(id -u)" -eq 0 ] || cannot "needs root"; stop ;;
  status) status ;;
  build) build; log "rootfs ready at $ROOTFS" ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
