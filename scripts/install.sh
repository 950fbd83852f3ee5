#!/usr/bin/env bash
# scripts/install.sh: quick start on a fresh Debian/Ubuntu host. Run as root from the root of
# a ctl checkout:
#
#     sudo scripts/install.sh
#
# It installs the build and runtime packages, builds ctl and ctld (release, --locked),
# installs them to /usr/local/bin and (re)starts ctld: as the systemd unit ctld.service when
# systemd is PID 1, else in the background (log: /var/log/ctld.log). Re-running it upgrades
# the binaries and restarts the daemon; running containers survive the restart.
set -euo pipefail

BIN_DIR=/usr/local/bin
UNIT=/etc/systemd/system/ctld.service
STATE_DIR=/var/lib/ctld
SOCKET=$STATE_DIR/unix.socket
LOG=/var/log/ctld.log
PIDFILE=/run/ctld.pid

say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/install.sh)"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ ! -f Cargo.toml ] || [ ! -d daemon ] || [ ! -d client ]; then
    die "$ROOT is not a ctl checkout"
fi
command -v apt-get >/dev/null || die "apt-get not found: this installer supports Debian and Ubuntu"

# --- Rust: use the cargo that is there; never install one behind the user's back ------------
if ! command -v cargo >/dev/null; then
    for d in "$HOME/.cargo/bin" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin"}; do
        if [ -x "$d/cargo" ]; then
            PATH=$d:$PATH
            break
        fi
    done
fi
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
need=${need:-1.94}
if ! command -v cargo >/dev/null; then
    cat >&2 <<EOF
install.sh: error: cargo is not installed.

ctl needs Rust $need or newer. The distribution's 'cargo' package is usually older than
that, so install the current stable toolchain with rustup (needs curl), then re-run:

    apt-get install -y curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "\$HOME/.cargo/env"
    scripts/install.sh

EOF
    exit 1
fi
have=$(cargo --version | awk '{ print $2 }')
if [ "$(printf '%s\n%s\n' "$need" "${have%%-*}" | sort -V | head -n 1)" != "$need" ]; then
    die "cargo $have is too old: ctl needs Rust $need or newer (rustup update stable)"
fi
say "using $(cargo --version) from $(command -v cargo)"

# --- packages -------------------------------------------------------------------------------
say "installing packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# busybox-static (the built-in image), lxcfs (container /proc views), dnsmasq-base and nftables
# (DHCP/DNS and NAT of managed networks), debootstrap (debian/<suite> images), squashfs-tools
# (squashfs images from image servers), libseccomp-dev (ctld links libseccomp for the
# containers' syscall filters; it pulls in the libseccomp2 runtime library).
apt-get install -y --no-install-recommends \
    busybox-static build-essential gcc libc6-dev libseccomp-dev ca-certificates lxcfs \
    dnsmasq-base nftables debootstrap debian-archive-keyring squashfs-tools

# --- build and install ----------------------------------------------------------------------
say "cargo build --release --locked"
cargo build --release --locked
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$ROOT/$target ;; esac
for b in ctl ctld; do
    [ -x "$target/release/$b" ] || die "build did not produce $target/release/$b"
    # Copy next to the destination, then rename: replacing a running ctld in place would fail
    # (ETXTBSY) or corrupt it.
    install -m 0755 "$target/release/$b" "$BIN_DIR/.$b.new"
    mv -f "$BIN_DIR/.$b.new" "$BIN_DIR/$b"
    say "installed $BIN_DIR/$b"
done

# --- shell completion (bash and zsh; picked up by new shells) -------------------------------
BASH_COMPLETION_DIR=/usr/share/bash-completion/completions
ZSH_COMPLETION_DIR=/usr/local/share/zsh/site-functions
mkdir -p "$BASH_COMPLETION_DIR" "$ZSH_COMPLETION_DIR"
"$BIN_DIR/ctl" completion bash >"$BASH_COMPLETION_DIR/ctl"
"$BIN_DIR/ctl" completion zsh >"$ZSH_COMPLETION_DIR/_ctl"
say "installed completions: $BASH_COMPLETION_DIR/ctl, $ZSH_COMPLETION_DIR/_ctl"

# --- (re)start ctld -------------------------------------------------------------------------
# A ctld started by an earlier run without systemd: stop it by its recorded PID.
stop_background_ctld() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    case $pid in '' | *[!0-9]*) rm -f "$PIDFILE"; return 0 ;; esac
    if [ -d "/proc/$pid" ] && readlink "/proc/$pid/exe" | grep -q "^$BIN_DIR/ctld"; then
        say "stopping the previous ctld (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ ! -d "/proc/$pid" ] || die "ctld (pid $pid) did not exit within 10 s of SIGTERM"
    fi
    rm -f "$PIDFILE"
}

# Whether a ctld answers on the socket. (`ctl version` is no probe: it exits 0 and prints
# "Server version: unreachable" when no daemon listens.)
ctld_answers() {
    [ -S "$SOCKET" ] && "$BIN_DIR/ctl" --dir "$STATE_DIR" list --format csv >/dev/null 2>&1
}

wait_for_socket() {
    for _ in $(seq 150); do
        if ctld_answers; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

if [ -d /run/systemd/system ]; then
    stop_background_ctld
    install -m 0644 "$ROOT/scripts/ctld.service" "$UNIT"
    systemctl daemon-reload
    systemctl enable ctld.service
    say "restarting ctld.service"
    systemctl restart ctld.service
    wait_for_socket || {
        systemctl --no-pager status ctld.service || true
        die "ctld.service did not bring up $SOCKET (journalctl -u ctld.service)"
    }
else
    say "systemd is not running: starting ctld in the background (log: $LOG)"
    stop_background_ctld
    if ctld_answers; then
        die "a ctld not started by this script is serving $SOCKET: stop it, then re-run"
    fi
    mkdir -p "$STATE_DIR"
    # lxcfs gives containers their own /proc/meminfo & co (systemd starts it by itself).
    if ! grep -q ' - fuse.lxcfs ' /proc/self/mountinfo; then
        mkdir -p /var/lib/lxcfs
        setsid nohup lxcfs /var/lib/lxcfs </dev/null >>/var/log/lxcfs.log 2>&1 &
    fi
    # Its own session, immune to the hangup of this terminal. setsid does not fork here
    # (a background job is not a process-group leader), so $! is ctld's PID.
    NO_COLOR=1 setsid nohup "$BIN_DIR/ctld" </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    wait_for_socket || {
        tail -n 20 "$LOG" >&2 || true
        die "ctld did not bring up $SOCKET (see $LOG)"
    }
fi

"$BIN_DIR/ctl" --dir "$STATE_DIR" version
say "ctld is running; try: ctl launch busybox c1 && ctl exec c1 -- uname -a"
