#!/usr/bin/env bash
# bench/run.sh: measure ctl through the real `ctl` CLI and a real `ctld`, with hyperfine,
# and LXC side by side when Debian's `lxc` package is installed. See bench/README.md.
#
# Environment:
#   CTL_BIN=DIR        use DIR/ctl and DIR/ctld instead of building release binaries
#   BENCH_RUNS=N       timed runs per measurement (default 25)
#   BENCH_WARMUP=N     untimed warm-up runs per measurement (default 2)
#   BENCH_LIST_N=N     instance count of the large `list` measurement (default 100)
#   BENCH_SKIP_LXC=1   do not measure LXC even when it is installed
#   BENCH_SKIP_DEBIAN=1  do not measure the debian/bookworm launch
#   BENCH_DEBIAN_RUNS=N  timed runs of the debian/bookworm launch (default 10)
#   BENCH_BUILD_CACHE=DIR  ctld --build-cache (default /var/cache/ctl-tests/build, shared
#                      with the tests: a debootstrap of today is reused)
#   BENCH_SNAP_MIB=N   size of the instance snapshotted, restored and copied (default 1024)
#   BENCH_SNAP_RUNS=N  timed runs of those three (default 5)
#   TMPDIR             where the temporary state directory goes (default /tmp)
set -euo pipefail

RUNS=${BENCH_RUNS:-25}
DEBIAN_RUNS=${BENCH_DEBIAN_RUNS:-10}
BUILD_CACHE=${BENCH_BUILD_CACHE:-/var/cache/ctl-tests/build}
DEBIAN_BUILD_S=
WARMUP=${BENCH_WARMUP:-2}
LIST_N=${BENCH_LIST_N:-100}

die() {
    echo "bench/run.sh: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it starts ctld, creates containers, cgroups and mounts); try: sudo bash bench/run.sh"
fi
for v in RUNS WARMUP LIST_N DEBIAN_RUNS; do
    case ${!v} in '' | *[!0-9]*) die "BENCH_$v must be a number, got '${!v}'" ;; esac
done
[ "$RUNS" -ge 2 ] || die "BENCH_RUNS must be at least 2"
[ "$LIST_N" -ge 1 ] || die "BENCH_LIST_N must be at least 1"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

# --- state the exit trap cleans up ----------------------------------------------------------
CG="ctl-bench-$$"          # our own cgroup parent, in every hierarchy
STATE_DIR=""               # ctld's --dir (CTL_DIR)
WORK=""                    # scratch: hooks, counters, logs
CTLD_PID=""                # the ctld we started
BENCH_NET=""               # the network of the NIC measurement, once made
LXC_NAME=""                # set once lxc-create succeeded
LXC_PATH=""
OUT=""                     # results of this run (kept)
CTL=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    echo
    echo "--- cleanup"
    # 1. Every instance of our private daemon is one this script made: force-delete them all.
    if [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null && [ -S "$STATE_DIR/unix.socket" ]; then
        local names
        names=$("$CTL" list --format json 2>/dev/null |
            python3 -c 'import json,sys; print(" ".join(i["name"] for i in json.load(sys.stdin)))' 2>/dev/null)
        if [ -n "$names" ]; then
            # shellcheck disable=SC2086  # names are ctl instance names: no spaces or globs
            "$CTL" delete --force $names >/dev/null || echo "cleanup: ctl delete --force failed for: $names"
        fi
        # The btrfs pool (a loop file the daemon made and mounted) goes with its instances.
        if "$CTL" storage show benchbtrfs >/dev/null 2>&1; then
            "$CTL" storage delete benchbtrfs >/dev/null || echo "cleanup: ctl storage delete benchbtrfs failed"
        fi
        # The NIC measurement's network (bridge, dnsmasq, nftables table) goes with it.
        if [ -n "$BENCH_NET" ] && "$CTL" network show "$BENCH_NET" >/dev/null 2>&1; then
            "$CTL" network delete "$BENCH_NET" >/dev/null || echo "cleanup: ctl network delete $BENCH_NET failed"
        fi
    fi
    # 2. Stop the ctld we started, by PID.
    if [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null; then
        kill -TERM "$CTLD_PID"
        local i
        for i in $(seq 50); do
            kill -0 "$CTLD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$CTLD_PID" 2>/dev/null; then
            echo "cleanup: ctld (pid $CTLD_PID) ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$CTLD_PID"
        fi
        wait "$CTLD_PID" 2>/dev/null
    fi
    # 3. Anything still inside our cgroups is a container process ctl failed to remove:
    #    report it and kill it by PID so the cgroups can go.
    local d f pids
    for d in /sys/fs/cgroup/*/"$CG"; do
        [ -d "$d" ] || continue
        while IFS= read -r f; do
            pids=$(cat "$f" 2>/dev/null)
            if [ -n "$pids" ]; then
                echo "cleanup: leftover processes in ${f%/cgroup.procs}: $(echo "$pids" | tr '\n' ' ')"
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null
            fi
        done < <(find "$d" -name cgroup.procs 2>/dev/null)
    done
    for d in /sys/fs/cgroup/*/"$CG"; do
        [ -d "$d" ] || continue
        find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$d" 2>/dev/null || sleep 0.2
        [ -d "$d" ] && { rmdir "$d" || echo "cleanup: could not remove cgroup $d"; }
    done
    # 4. The LXC container.
    if [ -n "$LXC_NAME" ]; then
        lxc-stop -n "$LXC_NAME" -k >/dev/null 2>&1
        lxc-destroy -n "$LXC_NAME" -f >/dev/null 2>&1 || echo "cleanup: lxc-destroy -f -n $LXC_NAME failed"
        # lxc-start leaves its monitor's (and sometimes the payload's) cgroups behind.
        for d in /sys/fs/cgroup/*/lxc.monitor."$LXC_NAME" /sys/fs/cgroup/*/lxc.payload."$LXC_NAME" \
                 /sys/fs/cgroup/lxc.monitor."$LXC_NAME" /sys/fs/cgroup/lxc.payload."$LXC_NAME"; do
            [ -d "$d" ] && rmdir "$d" 2>/dev/null
        done
    fi
    # 5. Keep the logs with the results, then remove the temp dirs (never across a mount).
    if [ -n "$OUT" ] && [ -d "$OUT" ] && [ -n "$WORK" ]; then
        cp "$WORK"/*.log "$OUT/" 2>/dev/null
    fi
    for d in "$STATE_DIR" "$WORK"; do
        if [ -z "$d" ] || [ ! -d "$d" ]; then continue; fi
        findmnt -rn -o TARGET | awk -v p="$d/" 'index($0, p) == 1' | sort -r |
            while IFS= read -r f; do
                echo "cleanup: unmounting leftover $f"
                umount -l "$f"
            done
        rm -rf --one-file-system "$d"
    done
    [ "$rc" -eq 0 ] || echo "bench/run.sh: FAILED (exit $rc); logs in ${OUT:-$WORK}"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- tools and binaries ---------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required (it reads hyperfine's JSON)"
if ! command -v hyperfine >/dev/null; then
    echo "--- installing hyperfine"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hyperfine
fi

if [ -n "${CTL_BIN:-}" ]; then
    BIN=$(cd "$CTL_BIN" && pwd)
    if [ ! -x "$BIN/ctl" ] || [ ! -x "$BIN/ctld" ]; then
        die "CTL_BIN=$CTL_BIN must contain executable ctl and ctld"
    fi
else
    command -v cargo >/dev/null || die "cargo not found: install Rust, or set CTL_BIN to a dir with ctl and ctld"
    echo "--- cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins)
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BIN=$target/release
fi
CTL=$BIN/ctl
CTLD=$BIN/ctld

# --- results and scratch --------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$HERE/results/$STAMP
mkdir -p "$OUT"
WORK=$(mktemp -d -t ctl-bench-work.XXXXXX)
STATE_DIR=$(mktemp -d -t ctl-bench-dir.XXXXXX)
ERRLOG=$WORK/ctl-errors.log
: >"$ERRLOG"

# ctl must talk to our daemon only.
unset CTL_SOCKET
export CTL_DIR=$STATE_DIR

# --- start our own ctld ---------------------------------------------------------------------
echo "--- starting $CTLD --dir $STATE_DIR --cgroup-parent $CG"
# setsid: its own session, so a ^C to this script does not also stop the daemon before the
# trap has deleted the containers through it. (setsid does not fork here: $! is ctld.)
# No default network: the busybox measurements are of containers without a NIC; the NIC
# cost is measured separately on a network of this run's own (BENCH_NET).
NO_COLOR=1 setsid "$CTLD" --dir "$STATE_DIR" --cgroup-parent "$CG" --build-cache "$BUILD_CACHE" \
    --default-network=false </dev/null >"$WORK/ctld.log" 2>&1 &
CTLD_PID=$!
for _ in $(seq 100); do
    [ -S "$STATE_DIR/unix.socket" ] && break
    kill -0 "$CTLD_PID" 2>/dev/null || { cat "$WORK/ctld.log" >&2; die "ctld exited during start-up"; }
    sleep 0.1
done
[ -S "$STATE_DIR/unix.socket" ] || { cat "$WORK/ctld.log" >&2; die "ctld did not create its socket within 10 s"; }
"$CTL" version
# (`ctl version` exits 0 even when the server is unreachable: probe with `ctl list`.)
"$CTL" list --format csv >/dev/null || die "ctld does not answer on $STATE_DIR/unix.socket"

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$CTLD_PID/status"
}

# Run a ctl command outside hyperfine; on failure show exactly what ctl said and stop.
run_ctl() {
    local out
    if ! out=$("$CTL" "$@" 2>&1); then
        echo "ANOMALY: \`ctl $*\` failed:" >&2
        echo "$out" >&2
        exit 1
    fi
}

echo "--- warming the image cache: ctl launch busybox warm && ctl delete -f warm"
run_ctl launch busybox warm
run_ctl delete -f warm
RSS_IDLE=$(rss_mib)

# Hooks run by hyperfine (--prepare/--cleanup). Each timed command is `. FILE`, where FILE
# is a one-line `exec ctl ...` written by the prepare hook: the name changes per run while
# the timed part stays one `sh -c` (whose start-up hyperfine measures and subtracts).
HOOK=$WORK/hook
cat >"$HOOK" <<EOF
#!/usr/bin/env bash
set -eu
exec 2>>$(printf %q "$ERRLOG")
ctl=$(printf %q "$CTL")
w=$(printf %q "$WORK")
EOF
cat >>"$HOOK" <<'EOF'
bump() { # bump COUNTER -> next number
    local n
    n=$(( $(cat "$w/$1.n" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$w/$1.n"
    echo "$n"
}
all() { # all COUNTER PREFIX -> every name used so far
    local n i
    n=$(cat "$w/$1.n" 2>/dev/null || echo 0)
    for ((i = 1; i <= n; i++)); do printf '%s%d ' "$2" "$i"; done
}
case $1 in
launch-next)
    n=$(bump launch)
    printf 'exec %q launch busybox bl%d >/dev/null 2>>%q\n' "$ctl" "$n" "$w/ctl-errors.log" >"$w/launch.sh"
    ;;
launch-cleanup)
    # shellcheck disable=SC2046
    "$ctl" delete --force $(all launch bl) >/dev/null
    ;;
btrfs-next)
    n=$(bump btrfs)
    printf 'exec %q launch busybox bb%d -s benchbtrfs >/dev/null 2>>%q\n' "$ctl" "$n" "$w/ctl-errors.log" >"$w/btrfs.sh"
    ;;
btrfs-cleanup)
    # shellcheck disable=SC2046
    "$ctl" delete --force $(all btrfs bb) >/dev/null
    ;;
debian-next)
    n=$(bump debian)
    printf '%q launch debian/bookworm dl%d >/dev/null 2>>%q && exec %q exec dl%d -- true 2>>%q\n' \
        "$ctl" "$n" "$w/ctl-errors.log" "$ctl" "$n" "$w/ctl-errors.log" >"$w/debian.sh"
    ;;
debian-cleanup)
    # shellcheck disable=SC2046
    "$ctl" delete --force $(all debian dl) >/dev/null
    ;;
delete-next)
    n=$(bump delete)
    "$ctl" init busybox "dl$n" >/dev/null
    printf 'exec %q delete dl%d >/dev/null 2>>%q\n' "$ctl" "$n" "$w/ctl-errors.log" >"$w/delete.sh"
    ;;
*)
    echo "hook: unknown $1" >&2
    exit 2
    ;;
esac
EOF
chmod +x "$HOOK"
q() { printf '%q' "$1"; }
QCTL=$(q "$CTL")
QERR=$(q "$ERRLOG")

# bench NAME COMMAND [hyperfine options...]   (BENCH_N=N bench ... for another run count)
bench() {
    local name=$1 cmd=$2
    shift 2
    echo
    echo "=== $name"
    if ! hyperfine --runs "${BENCH_N:-$RUNS}" --warmup "$WARMUP" --export-json "$OUT/$name.json" \
        --command-name "$name" "$@" "$cmd"; then
        echo "ANOMALY: hyperfine failed for $name: $cmd" >&2
        if [ -s "$ERRLOG" ]; then
            echo "ctl/lxc said (last lines of $ERRLOG):" >&2
            tail -n 20 "$ERRLOG" >&2
        fi
        echo "ctld log (last lines):" >&2
        tail -n 20 "$WORK/ctld.log" >&2
        exit 1
    fi
}

# --- LXC set-up (measured below, each right after the matching ctl measurement) ------------
LXC_NOTE=""
HAVE_LXC=0
if [ -n "${BENCH_SKIP_LXC:-}" ]; then
    LXC_NOTE="LXC skipped (BENCH_SKIP_LXC set)."
elif ! { command -v lxc-create && command -v lxc-start && command -v lxc-attach &&
    command -v lxc-stop && command -v lxc-destroy; } >/dev/null; then
    LXC_NOTE="LXC skipped: lxc-create/lxc-start/lxc-attach not found (apt-get install lxc)."
else
    HAVE_LXC=1
    echo
    echo "--- LXC: lxc-create -n ctlbench-$$ -t busybox"
    LXC_PATH=$(lxc-config lxc.lxcpath)
    [ ! -e "$LXC_PATH/ctlbench-$$" ] || die "$LXC_PATH/ctlbench-$$ already exists"
    LXC_NAME=ctlbench-$$   # from here on the trap destroys it (even a half-made one)
    lxc-create -n "$LXC_NAME" -t busybox >"$WORK/lxc-create.log" 2>&1 ||
        { cat "$WORK/lxc-create.log" >&2; die "lxc-create -t busybox failed"; }
    LXC_NET=$(awk -F' *= *' '$1 == "lxc.net.0.type" { print $2 }' "$LXC_PATH/$LXC_NAME/config")
    if ! lxc-start -n "$LXC_NAME" -d -l ERROR -o "$WORK/lxc-start.log" 2>/dev/null; then
        if grep -qiE 'network|bridge|veth' "$WORK/lxc-start.log"; then
            echo "lxc-start failed on networking:"
            grep -iE 'network|bridge|veth' "$WORK/lxc-start.log" | head -n 3
            echo "setting lxc.net.0.type = empty for $LXC_NAME"
            sed -i '/^lxc\.net\.0\./d' "$LXC_PATH/$LXC_NAME/config"
            echo "lxc.net.0.type = empty" >>"$LXC_PATH/$LXC_NAME/config"
            LXC_NET="empty (lxc-start failed with $LXC_NET networking)"
            lxc-start -n "$LXC_NAME" -d || die "lxc-start still fails with lxc.net.0.type = empty"
        else
            cat "$WORK/lxc-start.log" >&2
            die "lxc-start -n $LXC_NAME -d failed (not a networking error)"
        fi
    fi
    lxc-stop -n "$LXC_NAME" -k
    LXC_COUNT=$(lxc-ls -1 | wc -l)
    LXC_NOTE="LXC $(lxc-start --version): one busybox container (lxc-create -t busybox), network: $LXC_NET; lxc-ls -f saw $LXC_COUNT container(s). Each LXC measurement ran right after the matching ctl one."
fi
QL=$(q "$LXC_NAME")

# --- measurements ---------------------------------------------------------------------------
# (a) launch of the cached image; returns once the start operation finished (init runs).
bench ctl_launch ". $(q "$WORK/launch.sh")" \
    --prepare "bash $(q "$HOOK") launch-next" \
    --cleanup "bash $(q "$HOOK") launch-cleanup"

# (a2) launch of the cached debian/bookworm image until `exec` works (LXD: ~5.5 s here).
# The image is built once first (debootstrap, or the build cache: BENCH_BUILD_CACHE).
if [ -z "${BENCH_SKIP_DEBIAN:-}" ]; then
    echo "--- building debian/bookworm (ctl launch debian/bookworm warm-deb)"
    t0=$(date +%s.%N)
    run_ctl launch debian/bookworm warm-deb
    DEBIAN_BUILD_S=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")
    run_ctl delete -f warm-deb
    BENCH_N=$DEBIAN_RUNS bench ctl_launch_debian ". $(q "$WORK/debian.sh")" \
        --prepare "bash $(q "$HOOK") debian-next" \
        --cleanup "bash $(q "$HOOK") debian-cleanup"
fi

# One instance, c1 (and the LXC container), for stop / start / exec / list. Each
# measurement leaves the instance in the state the next one's prepare hook expects.
run_ctl init busybox c1
# (c) stop --force of a running instance (c1 is stopped; each prepare starts it).
bench ctl_stop "$QCTL stop --force c1 2>>$QERR" \
    --prepare "$QCTL start c1 2>>$QERR"
if [ "$HAVE_LXC" = 1 ]; then
    bench lxc_stop "lxc-stop -n $QL -k 2>>$QERR" \
        --prepare "lxc-start -n $QL -d 2>>$QERR"
fi
# start of a stopped instance (start once so each prepare can stop it).
run_ctl start c1
bench ctl_start "$QCTL start c1 2>>$QERR" \
    --prepare "$QCTL stop --force c1 2>>$QERR"
# (a3) the same start with one NIC on a managed network: veth with its peer made in the
# container's netns, address and route over netlink, dnsmasq told about the lease.
BENCH_NET=ctlb$(($$ % 100000))
run_ctl network create "$BENCH_NET"
run_ctl init busybox cn
run_ctl config device add cn eth0 nic network="$BENCH_NET" name=eth0
run_ctl start cn
bench ctl_start_nic "$QCTL start cn 2>>$QERR" \
    --prepare "$QCTL stop --force cn 2>>$QERR"
run_ctl delete --force cn
run_ctl network delete "$BENCH_NET"
if [ "$HAVE_LXC" = 1 ]; then
    lxc-start -n "$LXC_NAME" -d
    bench lxc_start "lxc-start -n $QL -d 2>>$QERR" \
        --prepare "lxc-stop -n $QL -k 2>>$QERR"
fi
# (b) exec `true` in a running instance.
bench ctl_exec "$QCTL exec c1 -- true 2>>$QERR"
if [ "$HAVE_LXC" = 1 ]; then
    bench lxc_attach "lxc-attach -n $QL -- true 2>>$QERR"
fi
# The same exec through LXD's own client (Debian lxd-client) against ctld, when installed:
# what an LXD user's tooling costs on top of the API.
if lxc --version 2>/dev/null | grep -q '^5\.'; then
    LXD_CONF_DIR=$WORK/lxd-conf
    mkdir -p "$LXD_CONF_DIR"
    # Its first run prints a welcome banner: get it out of the way before timing.
    LXD_DIR=$STATE_DIR LXD_CONF=$LXD_CONF_DIR lxc list >/dev/null 2>&1 || true
    bench lxd_exec "LXD_DIR=$(q "$STATE_DIR") LXD_CONF=$(q "$LXD_CONF_DIR") lxc exec c1 -- true 2>>$QERR"
fi
# (e1) list with 1 (running) instance.
bench ctl_list_1 "$QCTL list >/dev/null 2>>$QERR"
if [ "$HAVE_LXC" = 1 ]; then
    bench lxc_ls_1 "lxc-ls -f >/dev/null 2>>$QERR"
    lxc-stop -n "$LXC_NAME" -k
fi
# (e2) the same list and exec over HTTPS (core.https_address on loopback, a client that
# joined with a token): a TLS handshake per request on top.
HTTPS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_ctl config set core.https_address "127.0.0.1:$HTTPS_PORT"
BENCH_CONF=$WORK/ctl-conf
TOKEN=$("$CTL" config trust add bench 2>>"$ERRLOG" | tail -n 1)
CTL_CONF=$BENCH_CONF "$CTL" remote add r "$TOKEN" >/dev/null 2>>"$ERRLOG" || die "ctl remote add (see $ERRLOG)"
bench ctl_list_1_https "CTL_CONF=$(q "$BENCH_CONF") $QCTL list r: >/dev/null 2>>$QERR"
bench ctl_exec_https "CTL_CONF=$(q "$BENCH_CONF") $QCTL exec r:c1 -- true 2>>$QERR"
run_ctl config unset core.https_address
run_ctl delete --force c1

# (d) delete of a stopped instance (created by `ctl init` in the prepare hook).
bench ctl_delete ". $(q "$WORK/delete.sh")" \
    --prepare "bash $(q "$HOOK") delete-next"

# (e2) list with LIST_N instances: first all stopped (created with `ctl init`), then all
# running (`ctl start` of the same instances).
echo
echo "--- creating $LIST_N instances with ctl init"
names=()
for ((i = 1; i <= LIST_N; i++)); do
    names+=("$(printf 'l%04d' "$i")")
    run_ctl init busybox "${names[-1]}"
done
bench ctl_list_n_stopped "$QCTL list >/dev/null 2>>$QERR"
echo "--- starting the $LIST_N instances"
run_ctl start "${names[@]}"
bench ctl_list_n_running "$QCTL list >/dev/null 2>>$QERR"
RSS_N=$(rss_mib)
run_ctl delete --force "${names[@]}"

# (f) snapshot, restore and copy of a stopped instance holding 1 GiB of its own files
# (BENCH_SNAP_MIB to change the size; BENCH_SNAP_RUNS timed runs, default 5: each run
# copies all of it unless the filesystem reflinks).
SNAP_MIB=${BENCH_SNAP_MIB:-1024}
SNAP_RUNS=${BENCH_SNAP_RUNS:-5}
echo
echo "--- filling an instance with $SNAP_MIB MiB (ctl exec big -- dd)"
run_ctl launch busybox big
run_ctl exec big -- dd if=/dev/urandom of=/root/big bs=1M count="$SNAP_MIB"
run_ctl stop --force big
BENCH_N=$SNAP_RUNS bench ctl_snapshot_big "$QCTL snapshot create big s 2>>$QERR" \
    --prepare "$QCTL snapshot delete big s >/dev/null 2>&1 || true"
BENCH_N=$SNAP_RUNS bench ctl_restore_big "$QCTL restore big s 2>>$QERR"
BENCH_N=$SNAP_RUNS bench ctl_copy_big "$QCTL copy big bigcopy --instance-only 2>>$QERR" \
    --prepare "$QCTL delete bigcopy >/dev/null 2>&1 || true"
run_ctl delete --force big bigcopy

# (g) the same on a btrfs pool (a loop file ctld makes): the instance's layer is a
# subvolume over the pool's copy of the image, so launch, snapshot, restore and copy are
# subvolume creates and snapshots whatever the size.
if command -v mkfs.btrfs >/dev/null; then
    echo
    echo "--- btrfs pool on a loop file; filling an instance with $SNAP_MIB MiB"
    run_ctl storage create benchbtrfs btrfs "size=$((SNAP_MIB * 3 + 2048))MiB"
    run_ctl launch busybox warm-btrfs -s benchbtrfs   # the pool's copy of the image, once
    run_ctl delete --force warm-btrfs
    bench ctl_launch_btrfs ". $(q "$WORK/btrfs.sh")" \
        --prepare "bash $(q "$HOOK") btrfs-next" \
        --cleanup "bash $(q "$HOOK") btrfs-cleanup"
    run_ctl launch busybox bigb -s benchbtrfs
    run_ctl exec bigb -- dd if=/dev/urandom of=/root/big bs=1M count="$SNAP_MIB"
    run_ctl stop --force bigb
    BENCH_N=$SNAP_RUNS bench ctl_snapshot_big_btrfs "$QCTL snapshot create bigb s 2>>$QERR" \
        --prepare "$QCTL snapshot delete bigb s >/dev/null 2>&1 || true"
    BENCH_N=$SNAP_RUNS bench ctl_restore_big_btrfs "$QCTL restore bigb s 2>>$QERR"
    BENCH_N=$SNAP_RUNS bench ctl_copy_big_btrfs "$QCTL copy bigb bigbcopy --instance-only 2>>$QERR" \
        --prepare "$QCTL delete bigbcopy >/dev/null 2>&1 || true"
    run_ctl delete --force bigb bigbcopy
    run_ctl storage delete benchbtrfs
fi

# --- summary --------------------------------------------------------------------------------
export SNAP_MIB OUT LIST_N RUNS WARMUP LXC_NOTE RSS_IDLE RSS_N STAMP DEBIAN_BUILD_S
export COMMIT KERNEL CGFS DIRFS HFV
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
KERNEL=$(uname -r)
CGFS=$(stat -fc %T /sys/fs/cgroup)
DIRFS=$(findmnt -no FSTYPE -T "$STATE_DIR" 2>/dev/null || stat -fc %T "$STATE_DIR")
HFV=$(hyperfine --version)
python3 - >"$OUT/summary.md" <<'PY'
import json, os

out = os.environ["OUT"]
n = os.environ["LIST_N"]

def med(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    r = json.load(open(path))["results"][0]
    return r

def cell(r, spread=False):
    if r is None:
        return "–"
    s = f"{r['median'] * 1000:.1f}"
    if spread:
        s += f" (σ {r['stddev'] * 1000:.1f}, min {r['min'] * 1000:.1f})"
    return s

rows = [
    ("launch busybox (create + start, cached image)", "ctl_launch", None, "≤ 20"),
    ("launch debian/bookworm (cached image) until exec works", "ctl_launch_debian", None, "LXD ~5500"),
    ("start a stopped instance", "ctl_start", "lxc_start", ""),
    ("start a stopped instance with one NIC on a managed network", "ctl_start_nic", None, "start + a few ms"),
    ("exec -- true (lxc-attach -- true)", "ctl_exec", "lxc_attach", "≤ 10"),
    ("exec -- true via LXD's `lxc` client against ctld", "lxd_exec", None, ""),
    ("stop --force (lxc-stop -k)", "ctl_stop", "lxc_stop", "≤ 20"),
    ("delete a stopped instance", "ctl_delete", None, ""),
    ("list, 1 running instance (lxc-ls -f)", "ctl_list_1", "lxc_ls_1", ""),
    ("list, 1 running instance, over HTTPS (`ctl list r:`)", "ctl_list_1_https", None, ""),
    ("exec -- true over HTTPS (`ctl exec r:c1`)", "ctl_exec_https", None, ""),
    (f"list, {n} stopped instances (made by ctl init)", "ctl_list_n_stopped", None, ""),
    (f"list, {n} running instances", "ctl_list_n_running", None, "≤ 50 for 1000"),
    (f"snapshot a stopped instance with {os.environ['SNAP_MIB']} MiB of changes", "ctl_snapshot_big", None, ""),
    (f"restore that snapshot", "ctl_restore_big", None, ""),
    (f"copy that instance (--instance-only)", "ctl_copy_big", None, ""),
    ("launch busybox on a btrfs pool (layer subvolume over the pool's image)", "ctl_launch_btrfs", None, ""),
    (f"btrfs pool: snapshot a stopped instance with {os.environ['SNAP_MIB']} MiB of changes", "ctl_snapshot_big_btrfs", None, "O(1)"),
    (f"btrfs pool: restore that snapshot", "ctl_restore_big_btrfs", None, "O(1)"),
    (f"btrfs pool: copy that instance (--instance-only)", "ctl_copy_big_btrfs", None, "O(1)"),
]
e = os.environ
print(f"# ctl benchmark {e['STAMP']}")
print()
print(f"commit {e['COMMIT']}, kernel {e['KERNEL']}, /sys/fs/cgroup is {e['CGFS']}, "
      f"CTL_DIR on {e['DIRFS']}, {e['HFV']}, {e['RUNS']} runs + {e['WARMUP']} warm-up each.")
print("Medians in milliseconds, measured through the `ctl` CLI against a real `ctld` "
      "(shell start-up subtracted by hyperfine).")
print()
print("| operation | ctl median ms (σ, min) | LXC median ms | target (PERF.md) |")
print("|---|---|---|---|")
for label, c, l, target in rows:
    print(f"| {label} | {cell(med(c), True)} | {cell(med(l)) if l else '–'} | {target} |")
print()
print(f"ctld RSS: {e['RSS_IDLE']} MiB idle after the warm-up, {e['RSS_N']} MiB with {n} running instances.")
if e.get("DEBIAN_BUILD_S"):
    print()
    print(f"debian/bookworm image made in {float(e['DEBIAN_BUILD_S']):.1f} s before the launches "
          "(debootstrap, or today's build cache).")
print()
print(e["LXC_NOTE"] or "")
PY
cp "$OUT/summary.md" "$HERE/results/latest.md"

if [ -s "$ERRLOG" ]; then
    echo >>"$HERE/results/latest.md"
    echo "ANOMALY: ctl/lxc printed errors during the timed runs (see $OUT/ctl-errors.log)." >>"$HERE/results/latest.md"
fi
if grep -qE 'WARN|ERROR' "$WORK/ctld.log"; then
    echo >>"$HERE/results/latest.md"
    echo "Note: ctld logged warnings/errors (see $OUT/ctld.log)." >>"$HERE/results/latest.md"
fi

echo
echo "================================================================================"
cat "$HERE/results/latest.md"
echo "================================================================================"
echo "JSON: $OUT/*.json; summary: $HERE/results/latest.md"
