#!/usr/bin/env bash
# Daemon upgrade, end to end: builds berthd and its shim from an earlier
# commit of this repository (BASE, default: the commit in
# scripts/upgrade-base), runs containers with it, stops it, starts the
# current build (target/debug, built by `cargo build`) on the same root and
# state, and checks that it took the containers over: same pids, RUNNING,
# exec, kill and delete work through it, and a new container runs. As root.
#
#   scripts/upgrade-check.sh [BASE]
#
# The old build is cached under target/upgrade-base/<commit>.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${1:-$(cat scripts/upgrade-base)}
COMMIT=$(git rev-parse --verify "$BASE^{commit}")
NEW=$PWD/target/debug
OLD=$PWD/target/upgrade-base/$COMMIT
[[ -x $NEW/berthd && -x $NEW/containerd-shim-berth-v2 ]] || { echo "upgrade-check: build the workspace first (cargo build)" >&2; exit 1; }

if [[ ! -x $OLD/bin/berthd ]]; then
    echo "upgrade-check: building berthd at $COMMIT"
    src=$(mktemp -d /tmp/berth-upgrade-src.XXXXXX)
    git archive "$COMMIT" | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR=$OLD/target cargo build --locked -q -p berthd -p berth-shims --bins)
    mkdir -p "$OLD/bin"
    cp "$OLD/target/debug/berthd" "$OLD/target/debug/containerd-shim-berth-v2" "$OLD/bin/"
    rm -rf "$OLD/target" "$src"
fi

WORK=$(mktemp -d /tmp/berth-upgrade.XXXXXX)
SOCK=$WORK/berth.sock
DAEMON_PID=
fail() {
    echo "upgrade-check: $*" >&2
    exit 1
}
c() { ctr -a "$SOCK" -n upgrade "$@"; }
cleanup() {
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        c task ls -q 2>/dev/null | xargs -r -n 1 ctr -a "$SOCK" -n upgrade task rm --force >/dev/null 2>&1 || true
        c containers ls -q 2>/dev/null | xargs -r ctr -a "$SOCK" -n upgrade containers rm >/dev/null 2>&1 || true
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    pkill -KILL -f -- "containerd-shim-berth-v2 -namespace upgrade -address $SOCK" 2>/dev/null || true
    grep -F "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
    for h in /sys/fs/cgroup/*/upgrade; do rmdir "$h"/* "$h" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start BINDIR: berthd from BINDIR (its shim beside it) on the shared dirs.
start() {
    "$1/berthd" --root "$WORK/root" --state "$WORK/state" --address "$SOCK" >>"$WORK/berthd.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 600); do ctr -a "$SOCK" version >/dev/null 2>&1 && return; sleep 0.05; done
    cat "$WORK/berthd.log" >&2
    fail "berthd from $1 did not start"
}
tasks() { c task ls | awk 'NR > 1 {print $1, $2, $3}' | sort; }
shim_of() { readlink -f "/proc/$(cat "$WORK/state/tasks/upgrade/$1/shim.pid")/exe"; }

start "$OLD/bin"
scripts/busybox-image.sh "$WORK/busybox.tar" >/dev/null
c images import "$WORK/busybox.tar" >/dev/null
image=docker.io/berth/busybox:latest
c run -d "$image" keep sleep 100000 >/dev/null
c run -d "$image" stop sleep 100000 >/dev/null
tasks >"$WORK/before"
[[ $(grep -c RUNNING "$WORK/before") -eq 2 ]] || fail "the old berthd did not run both containers"
[[ $(shim_of keep) == "$OLD/bin/containerd-shim-berth-v2" ]] || fail "keep is not served by the old shim"

kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "the old berthd did not stop cleanly"
start "$NEW"

tasks >"$WORK/after"
cmp -s "$WORK/before" "$WORK/after" || fail "tasks changed across the upgrade: $(diff "$WORK/before" "$WORK/after")"
[[ $(c task exec --exec-id e1 keep echo through-the-new-daemon) == through-the-new-daemon ]] ||
    fail "exec through the new berthd"
c task kill -s SIGKILL stop
for _ in $(seq 200); do [[ $(c task ls | awk '$1 == "stop" {print $3}') == STOPPED ]] && break; sleep 0.05; done
[[ $(c task ls | awk '$1 == "stop" {print $3}') == STOPPED ]] || fail "kill through the new berthd"
c task rm stop >/dev/null 2>&1
c container rm stop
c task rm --force keep >/dev/null 2>&1
c container rm keep
[[ -z $(c task ls -q) ]] || fail "tasks left"
# A shim exits on its own once it has answered Shutdown: give it time.
for _ in $(seq 100); do
    pgrep -f -- "containerd-shim-berth-v2 -namespace upgrade -address $SOCK" >/dev/null || break
    sleep 0.1
done
pgrep -f -- "containerd-shim-berth-v2 -namespace upgrade -address $SOCK" >/dev/null && fail "old shims left running"
grep -qF "$WORK" /proc/self/mountinfo && fail "mounts left"
[[ $(c run --rm "$image" fresh echo new) == new ]] || fail "a new container under the new berthd"
echo "upgrade-check: berthd at ${COMMIT:0:12} → current build: containers taken over (exec, kill, delete work)"
