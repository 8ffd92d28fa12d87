#!/usr/bin/env bash
# Recovery at scale: runs N containers (busybox `sleep`), SIGKILLs the
# daemon, SIGKILLs DEAD of the shims while it is down, starts the daemon
# again and times spawn → the first `ctr task ls` that lists exactly the
# N-DEAD survivors RUNNING with their pids. Prints the time and the
# daemon's RSS/PSS after recovery. As root.
#
#   scripts/bench-recovery.sh [N] [DEAD] [berthd|containerd]...
#
# N defaults to 1000, DEAD to 3, the daemons to berthd only (containerd's
# runc shims take ~10 MiB each: give it a smaller N).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000}
DEAD=${2:-3}
shift $(($# > 2 ? 2 : $#))
DAEMONS=("${@:-berthd}")
PARALLEL=4
cargo build --release --locked --bins -q

WORK=$(mktemp -d /tmp/berth-bench-recovery.XXXXXX)
DAEMON_PID=
SOCK=
cleanup() {
    if [[ -n $SOCK ]] && ctr -a "$SOCK" version >/dev/null 2>&1; then
        ctr -a "$SOCK" -n bench task ls -q | xargs -r -P "$PARALLEL" -n 1 ctr -a "$SOCK" -n bench task rm --force >/dev/null 2>&1 || true
        ctr -a "$SOCK" -n bench containers ls -q | xargs -r -n 50 ctr -a "$SOCK" -n bench containers rm >/dev/null 2>&1 || true
    fi
    [[ -n $DAEMON_PID ]] && { kill -TERM "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; }
    for h in /sys/fs/cgroup/*/bench; do rmdir "$h" 2>/dev/null || true; done
    # The runc shim's runtime state (containerd's default runc root).
    rm -rf /run/containerd/runc/bench
    grep -F "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

scripts/busybox-image.sh "$WORK/busybox.tar" >/dev/null
IMAGE=docker.io/berth/busybox:latest

now_ms() { date +%s%3N; }

# start_daemon KIND DIR: starts it in the background; sets DAEMON_PID, SOCK.
start_daemon() {
    local kind=$1 dir=$2
    SOCK=$dir/sock
    case $kind in
    berthd)
        target/release/berthd --root "$dir/root" --state "$dir/state" --address "$SOCK" \
            >>"$dir/daemon.log" 2>&1 &
        ;;
    containerd)
        cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
        containerd --config "$dir/config.toml" >>"$dir/daemon.log" 2>&1 &
        ;;
    esac
    DAEMON_PID=$!
}

wait_ready() {
    for _ in $(seq 600); do ctr -a "$SOCK" version >/dev/null 2>&1 && return; sleep 0.05; done
    echo "daemon did not start" >&2
    exit 1
}

# pss_kib PID, rss_kib PID
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

run_one() {
    local kind=$1 dir=$WORK/$1 t0 t1 victims
    mkdir -p "$dir"
    start_daemon "$kind" "$dir"
    wait_ready
    ctr -a "$SOCK" -n bench images import "$WORK/busybox.tar" >/dev/null
    seq -f "c%05g" "$N" | xargs -P "$PARALLEL" -I{} \
        ctr -a "$SOCK" -n bench run -d "$IMAGE" {} sleep 100000 >/dev/null
    ctr -a "$SOCK" -n bench task ls | awk 'NR > 1 {print $1, $2, $3}' | sort >"$dir/before"
    [[ $(wc -l <"$dir/before") -eq $N ]] || { echo "$kind: not all $N containers run" >&2; exit 1; }

    kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    victims=$(awk '{print $1}' "$dir/before" | shuf -n "$DEAD" --random-source=<(yes))
    for id in $victims; do
        # The serving shim of that container (runc's shims leave their
        # `start` parent briefly; match the long-lived one by its flags).
        pkill -KILL -f -- "-namespace bench .*-id $id( |\$)"
    done
    grep -v -w -F "$(printf '%s\n' $victims)" "$dir/before" >"$dir/expected"

    t0=$(now_ms)
    start_daemon "$kind" "$dir"
    until ctr -a "$SOCK" -n bench task ls 2>/dev/null | awk 'NR > 1 {print $1, $2, $3}' | sort |
        cmp -s - "$dir/expected"; do
        t1=$(now_ms)
        ((t1 - t0 < 120000)) || { echo "$kind: no correct task ls after 120 s" >&2; exit 1; }
        sleep 0.005
    done
    t1=$(now_ms)
    printf '%-10s N=%-5s dead=%-2s spawn → correct task ls: %6d ms   daemon RSS %6d KiB  PSS %6d KiB\n' \
        "$kind" "$N" "$DEAD" $((t1 - t0)) "$(rss_kib "$DAEMON_PID")" "$(pss_kib "$DAEMON_PID")"

    ctr -a "$SOCK" -n bench task ls -q | xargs -r -P "$PARALLEL" -n 1 ctr -a "$SOCK" -n bench task rm --force >/dev/null
    ctr -a "$SOCK" -n bench containers ls -q | xargs -r -n 50 ctr -a "$SOCK" -n bench containers rm >/dev/null
    ctr -a "$SOCK" -n bench images rm --sync "$IMAGE" >/dev/null
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
    SOCK=
}

for kind in "${DAEMONS[@]}"; do
    run_one "$kind"
done
