#!/usr/bin/env bash
# bench/cluster.sh: the clustering rows of the benchmark, measured through the real `ctl`
# CLI against three real `ctld` on this host sharing a private PostgreSQL 15:
#   cluster_list_N             `ctl list` on m1 with N stopped instances spread over m1..m3
#                              (m1 asks m2 and m3 over mutual TLS and merges)
#   cluster_list_N_json        the same with --format json
#   cluster_launch_placed      `ctl launch busybox pK` on m1 without a target: placement on
#                              the least-loaded member, creation there (forwarded unless m1)
#   cluster_launch_target_m2   `ctl launch busybox tK --target m2` on m1: always forwarded
# See bench/README.md. Must run as root; needs Debian's postgresql-15 and hyperfine.
#
# Environment:
#   CTL_BIN=DIR           use DIR/ctl and DIR/ctld instead of building release binaries
#   BENCH_CLUSTER_N=N     instances made for the list rows (default 1000), round-robin
#                         over the three members with `ctl init busybox lNNNN --target mX`
#   BENCH_CLUSTER_PAR=N   parallel `ctl init` while making them (default 4; 1: one by one)
#   BENCH_RUNS=N          timed runs per row (default 10)
#   BENCH_WARMUP=N        untimed warm-up runs per row (default 2)
#   BENCH_BUILD_CACHE=DIR ctld --build-cache (default /var/cache/ctl-tests/build)
#   CTL_PG_BIN=DIR        PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#   TMPDIR                where the temporary directories go (default /tmp)
set -euo pipefail

N=${BENCH_CLUSTER_N:-1000}
PAR=${BENCH_CLUSTER_PAR:-4}
RUNS=${BENCH_RUNS:-10}
WARMUP=${BENCH_WARMUP:-2}
BUILD_CACHE=${BENCH_BUILD_CACHE:-/var/cache/ctl-tests/build}
PG_BIN=${CTL_PG_BIN:-/usr/lib/postgresql/15/bin}
MEMBERS=(m1 m2 m3)

die() {
    echo "bench/cluster.sh: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it starts ctld and PostgreSQL, creates containers and cgroups); try: sudo bash bench/cluster.sh"
fi
for v in N PAR RUNS WARMUP; do
    case ${!v} in '' | *[!0-9]*) die "$v must be a number, got '${!v}'" ;; esac
done
[ "$RUNS" -ge 2 ] || die "BENCH_RUNS must be at least 2"
{ [ "$N" -ge 3 ] && [ "$N" -le 9999 ]; } || die "BENCH_CLUSTER_N must be between 3 and 9999"
[ "$PAR" -ge 1 ] || die "BENCH_CLUSTER_PAR must be at least 1"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

# --- state the exit trap cleans up ----------------------------------------------------------
# Indexed 0..2 for m1..m3.
CG=("ctl-bench-cl-$$-m1" "ctl-bench-cl-$$-m2" "ctl-bench-cl-$$-m3")  # cgroup parents
DIRS=("" "" "")            # each ctld's --dir (CTL_DIR)
PIDS=("" "" "")            # the ctld we started
PG_DIR=""                  # PostgreSQL's temp dir (data/, socket, log)
PG_PID=""                  # the postmaster we started
WORK=""                    # scratch: hooks, counters, logs
OUT=""                     # results of this run (kept)
CTL=""

# ctl against member I (0..2) through its Unix socket.
ctlm() {
    local i=$1
    shift
    CTL_DIR=${DIRS[$i]} "$CTL" "$@"
}

alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

# stop_pid PID WHAT SIGNAL SECONDS: signal, wait, then SIGKILL.
stop_pid() {
    local pid=$1 what=$2 sig=$3 secs=$4 i
    alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "cleanup: $what (pid $pid) ignored SIG$sig for $secs s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    echo
    echo "--- cleanup"
    # 1. Every instance of the cluster is one this script made. Each live member
    #    force-deletes the ones it holds itself (location = its name; none when it never
    #    became a member), 100 names per `ctl delete`.
    local i names n
    for i in 0 1 2; do
        { alive "${PIDS[$i]}" && [ -S "${DIRS[$i]}/unix.socket" ]; } || continue
        names=$(ctlm "$i" list --format json 2>/dev/null |
            python3 -c '
import json, sys
me = sys.argv[1]
for i in json.load(sys.stdin):
    if i.get("location") in (me, "", "none", None):
        print(i["name"])' "${MEMBERS[$i]}" 2>/dev/null)
        n=$(printf '%s' "$names" | grep -c . || true)
        [ "$n" -gt 0 ] || continue
        echo "cleanup: deleting $n instance(s) on ${MEMBERS[$i]}"
        printf '%s\n' "$names" |
            CTL_DIR=${DIRS[$i]} xargs -r -n 100 "$CTL" delete --force >/dev/null ||
            echo "cleanup: ctl delete --force failed on ${MEMBERS[$i]} (some of: $(echo "$names" | head -n 5 | tr '\n' ' ')...)"
    done
    # 2. Stop the ctld we started, by PID: all three asked at once, then waited for.
    for i in 0 1 2; do
        alive "${PIDS[$i]}" && kill -TERM "${PIDS[$i]}" 2>/dev/null
    done
    for i in 0 1 2; do
        stop_pid "${PIDS[$i]}" "ctld ${MEMBERS[$i]}" TERM 5
    done
    # 3. Anything still inside our cgroups is a container process ctl failed to remove:
    #    report it and kill it by PID so the cgroups can go.
    local d f pids cg
    for cg in "${CG[@]}"; do
        for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
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
        for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
            [ -d "$d" ] || continue
            find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
            rmdir "$d" 2>/dev/null || sleep 0.2
            [ -d "$d" ] && { rmdir "$d" || echo "cleanup: could not remove cgroup $d"; }
        done
    done
    # 4. PostgreSQL, by its PID: fast shutdown, immediate after 20 s, then SIGKILL.
    if alive "$PG_PID"; then
        kill -INT "$PG_PID" 2>/dev/null
        for ((i = 0; i < 200; i++)); do
            alive "$PG_PID" || break
            sleep 0.1
        done
        stop_pid "$PG_PID" postgres QUIT 5
    fi
    # 5. Keep the logs with the results, then remove the temp dirs (never across a mount).
    if [ -n "$OUT" ] && [ -d "$OUT" ]; then
        [ -n "$WORK" ] && cp "$WORK"/*.log "$OUT/" 2>/dev/null
        # The members' warnings and errors, shutdown included, for a quick look.
        for f in "$OUT"/ctld-m?.log; do
            [ -f "$f" ] && grep -E 'WARN|ERROR' "$f" >"${f%.log}-warn.log"
        done
        [ -n "$PG_DIR" ] && [ -f "$PG_DIR/log" ] && cp "$PG_DIR/log" "$OUT/postgres.log" 2>/dev/null
    fi
    for d in "${DIRS[@]}" "$PG_DIR" "$WORK"; do
        if [ -z "$d" ] || [ ! -d "$d" ]; then continue; fi
        findmnt -rn -o TARGET | awk -v p="$d/" 'index($0, p) == 1' | sort -r |
            while IFS= read -r f; do
                echo "cleanup: unmounting leftover $f"
                umount -l "$f"
            done
        rm -rf --one-file-system "$d"
    done
    [ "$rc" -eq 0 ] || echo "bench/cluster.sh: FAILED (exit $rc); logs in ${OUT:-$WORK}"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- tools and binaries ---------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required (it reads JSON)"
command -v setpriv >/dev/null || die "setpriv (util-linux) is required to run PostgreSQL as postgres"
{ [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ]; } ||
    die "PostgreSQL server binaries not found in $PG_BIN (apt-get install postgresql-15, or set CTL_PG_BIN)"
id postgres >/dev/null 2>&1 || die "no user postgres (it comes with Debian's postgresql package)"
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
OUT=$HERE/results/$STAMP-cluster
mkdir -p "$OUT"
WORK=$(mktemp -d -t ctl-bench-cl-work.XXXXXX)
for i in 0 1 2; do
    DIRS[i]=$(mktemp -d -t "ctl-bench-cl-${MEMBERS[$i]}.XXXXXX")
done
ERRLOG=$WORK/ctl-errors.log
: >"$ERRLOG"

# ctl must talk to our daemons only; by default to m1.
unset CTL_SOCKET
export CTL_DIR=${DIRS[0]}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Four distinct free ports: PostgreSQL, then m1..m3's HTTPS.
PORTS=()
while [ "${#PORTS[@]}" -lt 4 ]; do
    p=$(free_port)
    case " ${PORTS[*]} " in *" $p "*) continue ;; esac
    PORTS+=("$p")
done
PG_PORT=${PORTS[0]}
HTTPS=("${PORTS[1]}" "${PORTS[2]}" "${PORTS[3]}")

# --- PostgreSQL -----------------------------------------------------------------------------
# As tests/src/pg.rs does it: a cluster in a temp dir owned by postgres (initdb refuses
# root), listening on 127.0.0.1 and on a Unix socket in that dir for the superuser; a role
# ctl with a random password over SCRAM owning a database ctl.
PG_DIR=$(mktemp -d -t ctl-bench-cl-pg.XXXXXX)
chown postgres:postgres "$PG_DIR"
as_postgres() {
    (cd "$PG_DIR" && LC_ALL=C.UTF-8 setpriv --reuid=postgres --regid=postgres --init-groups -- "$@")
}
echo "--- PostgreSQL: initdb in $PG_DIR, port $PG_PORT"
as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --no-sync >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
# setsid: its own session, so a ^C to this script does not stop it before the trap has
# deleted the instances (whose records it holds). setsid and setpriv exec: $! is postgres.
(cd "$PG_DIR" && LC_ALL=C.UTF-8 exec setsid setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$PG_BIN/postgres" -D "$PG_DIR/data" -k "$PG_DIR" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=100 </dev/null >>"$PG_DIR/log" 2>&1) &
PG_PID=$!
for _ in $(seq 300); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    alive "$PG_PID" || { cat "$PG_DIR/log" >&2; die "postgres exited during start-up"; }
    sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$PG_DIR/log" >&2; die "postgres did not come up within 30 s"; }
# The postmaster's PID from its own file, to be sure we stop the right process.
PM_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
[ "$PM_PID" = "$PG_PID" ] || { echo "note: postmaster pid $PM_PID (job $PG_PID)"; PG_PID=$PM_PID; }
PG_PASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
psql_su() {
    as_postgres "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -X -q -A -t -c "$1"
}
psql_su "CREATE ROLE ctl LOGIN PASSWORD '$PG_PASS';" >/dev/null
psql_su "CREATE DATABASE ctl OWNER ctl;" >/dev/null
PG_URL="postgres://ctl:$PG_PASS@127.0.0.1:$PG_PORT/ctl"
PG_VERSION=$("$PG_BIN/postgres" --version)

# --- three ctld -----------------------------------------------------------------------------
rss_mib() { # rss_mib PID
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"
}
rss_all() {
    echo "m1 $(rss_mib "${PIDS[0]}"), m2 $(rss_mib "${PIDS[1]}"), m3 $(rss_mib "${PIDS[2]}")"
}

# Run a ctl command against member I outside hyperfine; on failure show what ctl said.
run_ctl() {
    local i=$1 out
    shift
    if ! out=$(ctlm "$i" "$@" 2>&1); then
        echo "ANOMALY: \`ctl $*\` on ${MEMBERS[$i]} failed:" >&2
        echo "$out" >&2
        echo "ctld ${MEMBERS[$i]} log (last lines):" >&2
        tail -n 20 "$WORK/ctld-${MEMBERS[$i]}.log" >&2
        exit 1
    fi
    printf '%s\n' "$out"
}

for i in 0 1 2; do
    m=${MEMBERS[$i]}
    echo "--- starting ctld $m: --dir ${DIRS[$i]} --cgroup-parent ${CG[$i]}, https 127.0.0.1:${HTTPS[$i]}"
    # setsid: as in run.sh, so a ^C does not stop it before the trap deleted through it.
    NO_COLOR=1 setsid "$CTLD" --dir "${DIRS[$i]}" --cgroup-parent "${CG[$i]}" \
        --build-cache "$BUILD_CACHE" --default-network=false </dev/null >"$WORK/ctld-$m.log" 2>&1 &
    PIDS[i]=$!
done
for i in 0 1 2; do
    m=${MEMBERS[$i]}
    for _ in $(seq 100); do
        [ -S "${DIRS[$i]}/unix.socket" ] && break
        alive "${PIDS[$i]}" || { cat "$WORK/ctld-$m.log" >&2; die "ctld $m exited during start-up"; }
        sleep 0.1
    done
    [ -S "${DIRS[$i]}/unix.socket" ] || { cat "$WORK/ctld-$m.log" >&2; die "ctld $m did not create its socket within 10 s"; }
    run_ctl "$i" list --format csv >/dev/null
    run_ctl "$i" config set core.https_address "127.0.0.1:${HTTPS[$i]}" >/dev/null
done
"$CTL" version

echo "--- forming the cluster: m1 enable, m2 and m3 join with tokens from m1"
t0=$(date +%s.%N)
run_ctl 0 cluster enable m1 --database "$PG_URL" >/dev/null
for i in 1 2; do
    token=$(run_ctl 0 cluster add "${MEMBERS[$i]}" --quiet | tail -n 1)
    run_ctl "$i" cluster join "$token" --address "127.0.0.1:${HTTPS[$i]}" >/dev/null
done
online=""
for _ in $(seq 150); do
    if ctlm 0 cluster list --format json 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
sys.exit(0 if len(m) == 3 and all(x.get("status") == "Online" for x in m) else 1)'; then
        online=1
        break
    fi
    sleep 0.2
done
[ -n "$online" ] || { ctlm 0 cluster list >&2; die "the cluster did not show 3 Online members within 30 s"; }
FORM_S=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
ctlm 0 cluster list | tee "$OUT/cluster-list.txt"
RSS_FORMED=$(rss_all)

# --- N stopped instances, round-robin ---------------------------------------------------------
# One per member first, one at a time: each member builds its busybox image then.
# The rest PAR at a time, in batches ending at multiples of 100 (progress after each).
MK=$WORK/mk
cat >"$MK" <<EOF
#!/usr/bin/env bash
# mk NAME MEMBER: ctl init busybox NAME --target MEMBER through m1; failures are recorded.
export CTL_DIR=$(printf %q "${DIRS[0]}")
if ! out=\$($(printf %q "$CTL") init busybox "\$1" --target "\$2" 2>&1 >/dev/null); then
    echo "\$1 \$2" >>$(printf %q "$WORK/failed")
    echo "init \$1 --target \$2: \$out" >>$(printf %q "$WORK/create-errors.log")
fi
exit 0
EOF
chmod +x "$MK"
: >"$WORK/failed"
PAIRS=()
for ((k = 1; k <= N; k++)); do
    PAIRS+=("$(printf 'l%04d' "$k") ${MEMBERS[$(((k - 1) % 3))]}")
done
echo "--- creating $N instances (ctl init busybox lNNNN --target mX on m1, $PAR in parallel)"
t0=$(date +%s.%N)
for k in 0 1 2; do
    # shellcheck disable=SC2086  # "NAME MEMBER"
    run_ctl 0 init busybox ${PAIRS[$k]%% *} --target ${PAIRS[$k]##* } >/dev/null
done
PAR_FAILS=0
for ((k = 3; k < N; k = next)); do
    next=$(((k / 100 + 1) * 100))
    printf '%s\n' "${PAIRS[@]:k:next-k}" | xargs -P "$PAR" -n 2 "$MK"
    if [ -s "$WORK/failed" ]; then
        nf=$(wc -l <"$WORK/failed")
        PAR_FAILS=$((PAR_FAILS + nf))
        echo "ANOMALY: $nf parallel ctl init failed in this batch (see create-errors.log); retrying them one at a time"
        mv "$WORK/failed" "$WORK/retry"
        while read -r name member; do
            run_ctl 0 init busybox "$name" --target "$member" >/dev/null
        done <"$WORK/retry"
        : >"$WORK/failed"
    fi
    printf '  %d/%d (%.1f s)\n' "$((next < N ? next : N))" "$N" \
        "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")"
done
CREATE_S=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
echo "--- created $N instances in $CREATE_S s"
# Check what m1 lists: N instances, all Stopped, a third on each member.
LIST_CHECK=$(run_ctl 0 list --format json | python3 -c '
import collections, json, sys
n = int(sys.argv[1])
items = json.load(sys.stdin)
loc = collections.Counter(i.get("location") for i in items)
st = collections.Counter(i.get("status") for i in items)
print("listed %d: %s; %s" % (len(items),
      ", ".join("%s %d" % kv for kv in sorted(loc.items())),
      ", ".join("%s %d" % kv for kv in sorted(st.items()))))
sys.exit(0 if len(items) == n and st.get("Stopped") == n else 1)' "$N") ||
    die "m1 does not list $N stopped instances: $LIST_CHECK"
echo "$LIST_CHECK"
RSS_CREATED=$(rss_all)

# --- hooks for the launch rows -------------------------------------------------------------
# As in run.sh: each timed command is `. FILE`, a one-line `exec ctl ...` written by the
# prepare hook, so the name changes per run while the timed part is one ctl process.
HOOK=$WORK/hook
cat >"$HOOK" <<EOF
#!/usr/bin/env bash
set -eu
exec 2>>$(printf %q "$ERRLOG")
export CTL_DIR=$(printf %q "${DIRS[0]}")
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
locations() { # locations COUNTER PREFIX -> "mX COUNT ..." of those instances, to a file
    "$ctl" list --format json | python3 -c '
import collections, json, sys
names = set(sys.argv[1].split())
c = collections.Counter(i.get("location") for i in json.load(sys.stdin) if i["name"] in names)
print(", ".join("%s %d" % kv for kv in sorted(c.items())))' "$(all "$1" "$2")" >"$w/$1.locations"
}
case $1 in
placed-next)
    n=$(bump placed)
    printf 'exec %q launch busybox p%d >/dev/null 2>>%q\n' "$ctl" "$n" "$w/ctl-errors.log" >"$w/placed.sh"
    ;;
placed-cleanup)
    locations placed p
    # shellcheck disable=SC2046
    "$ctl" delete --force $(all placed p) >/dev/null
    ;;
target-next)
    n=$(bump target)
    printf 'exec %q launch busybox t%d --target m2 >/dev/null 2>>%q\n' "$ctl" "$n" "$w/ctl-errors.log" >"$w/target.sh"
    ;;
target-cleanup)
    locations target t
    # shellcheck disable=SC2046
    "$ctl" delete --force $(all target t) >/dev/null
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

# bench NAME COMMAND [hyperfine options...]
bench() {
    local name=$1 cmd=$2 m
    shift 2
    echo
    echo "=== $name"
    if ! hyperfine --runs "$RUNS" --warmup "$WARMUP" --export-json "$OUT/$name.json" \
        --command-name "$name" "$@" "$cmd"; then
        echo "ANOMALY: hyperfine failed for $name: $cmd" >&2
        if [ -s "$ERRLOG" ]; then
            echo "ctl said (last lines of $ERRLOG):" >&2
            tail -n 20 "$ERRLOG" >&2
        fi
        for m in "${MEMBERS[@]}"; do
            echo "ctld $m log (last lines):" >&2
            tail -n 10 "$WORK/ctld-$m.log" >&2
        done
        exit 1
    fi
}

# --- measurements ---------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bench "cluster_list_$N" "$QCTL list >/dev/null 2>>$QERR"
RSS_LIST=$(rss_all)
bench "cluster_list_${N}_json" "$QCTL list --format json >/dev/null 2>>$QERR"
bench cluster_launch_placed ". $(q "$WORK/placed.sh")" \
    --prepare "bash $(q "$HOOK") placed-next" \
    --cleanup "bash $(q "$HOOK") placed-cleanup"
bench cluster_launch_target_m2 ". $(q "$WORK/target.sh")" \
    --prepare "bash $(q "$HOOK") target-next" \
    --cleanup "bash $(q "$HOOK") target-cleanup"
RSS_END=$(rss_all)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
PLACED_LOC=$(cat "$WORK/placed.locations" 2>/dev/null || echo "?")
TARGET_LOC=$(cat "$WORK/target.locations" 2>/dev/null || echo "?")

# --- summary --------------------------------------------------------------------------------
WARNS=$(for m in "${MEMBERS[@]}"; do printf '%s %d, ' "$m" "$(grep -cE 'WARN|ERROR' "$WORK/ctld-$m.log")"; done)
WARNS=${WARNS%, }
export OUT N RUNS WARMUP PAR STAMP COMMIT KERNEL CGFS DIRFS HFV PG_VERSION FORM_S CREATE_S
export LOAD_BEFORE LOAD_AFTER LIST_CHECK RSS_FORMED RSS_CREATED RSS_LIST RSS_END PLACED_LOC TARGET_LOC PAR_FAILS WARNS
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
KERNEL=$(uname -r)
CGFS=$(stat -fc %T /sys/fs/cgroup)
DIRFS=$(findmnt -no FSTYPE -T "${DIRS[0]}" 2>/dev/null || stat -fc %T "${DIRS[0]}")
HFV=$(hyperfine --version)
python3 - >"$OUT/summary.md" <<'PY'
import json, os

e = os.environ
out, n = e["OUT"], e["N"]

def res(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    return json.load(open(path))["results"][0]

def cell(r):
    if r is None:
        return "–"
    return f"{r['median'] * 1000:.1f} (σ {r['stddev'] * 1000:.1f}, min {r['min'] * 1000:.1f})"

rows = [
    (f"cluster_list_{n}", f"`ctl list` on m1, {n} stopped instances over 3 members (fan-out over mutual TLS, merged)"),
    (f"cluster_list_{n}_json", f"`ctl list --format json`, the same"),
    ("cluster_launch_placed", "`ctl launch busybox pK` on m1, no target: placed on the least-loaded member "
                              f"(ended on: {e['PLACED_LOC']})"),
    ("cluster_launch_target_m2", "`ctl launch busybox tK --target m2` on m1: always forwarded"),
]
print(f"# ctl cluster benchmark {e['STAMP']}")
print()
print(f"commit {e['COMMIT']}, kernel {e['KERNEL']}, /sys/fs/cgroup is {e['CGFS']}, state dirs on "
      f"{e['DIRFS']}, {e['PG_VERSION']} (fsync off) on 127.0.0.1, {e['HFV']}, "
      f"{e['RUNS']} runs + {e['WARMUP']} warm-up each; load average {e['LOAD_BEFORE']} "
      f"before the rows, {e['LOAD_AFTER']} after.")
print("Three ctld on this host (HTTPS on 127.0.0.1, no network namespaces, no NIC); medians in "
      "milliseconds through the `ctl` CLI on m1's Unix socket (shell start-up subtracted).")
print()
print("| row | what | median ms (σ, min) |")
print("|---|---|---|")
for name, label in rows:
    print(f"| {name} | {label} | {cell(res(name))} |")
print()
print(f"Cluster formed (enable + 2 joins + all Online) in {e['FORM_S']} s. "
      f"{n} instances made with `ctl init busybox lNNNN --target mX` on m1 "
      f"({e['PAR']} in parallel) in {e['CREATE_S']} s; m1 {e['LIST_CHECK']}.")
if e["PAR_FAILS"] != "0":
    print(f"ANOMALY: {e['PAR_FAILS']} parallel `ctl init` failed and were retried one at a time "
          "(create-errors.log).")
print()
print("ctld RSS (MiB):")
print(f"- cluster formed, no instances: {e['RSS_FORMED']}")
print(f"- {n} stopped instances made: {e['RSS_CREATED']}")
print(f"- after the list row: {e['RSS_LIST']}")
print(f"- after the launch rows: {e['RSS_END']}")
print()
print(f"`--target m2` launches ended on: {e['TARGET_LOC']}. "
      f"ctld WARN/ERROR lines before clean-up: {e['WARNS']} (all of them: ctld-mN-warn.log).")
PY
if [ -s "$ERRLOG" ]; then
    echo >>"$OUT/summary.md"
    echo "ANOMALY: ctl printed errors during the timed runs (see $OUT/ctl-errors.log)." >>"$OUT/summary.md"
fi
cp "$OUT/summary.md" "$HERE/results/latest-cluster.md"

echo
echo "================================================================================"
cat "$HERE/results/latest-cluster.md"
echo "================================================================================"
echo "JSON and logs: $OUT/; summary: $HERE/results/latest-cluster.md"
