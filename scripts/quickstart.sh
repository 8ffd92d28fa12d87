#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running berthd: installs what is
# needed, builds release binaries, starts berthd on its default paths
# (root /var/lib/berth, state /run/berth, socket /run/berth/berth.sock) and
# talks to it with the stock ctr client.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --bins

BERTHD=$PWD/target/release/berthd
SOCKET=/run/berth/berth.sock
PIDFILE=/run/berth/berthd.pid
LOG=/var/log/berthd.log

# Replace a berthd this script started earlier.
if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
fi

mkdir -p /run/berth
nohup "$BERTHD" >>"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
for _ in $(seq 300); do
    ctr -a "$SOCKET" version >/dev/null 2>&1 && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "berthd failed to start; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
    sleep 0.1
done

echo "berthd is running (pid $(cat "$PIDFILE"), log $LOG)"
ctr -a "$SOCKET" version

# An image built here from Debian's busybox-static (no network), and a
# container from it, through berth's shim and runtime.
IMAGE_TAR=/var/lib/berth-quickstart/busybox.tar
mkdir -p "$(dirname "$IMAGE_TAR")"
IMAGE=$(./scripts/busybox-image.sh "$IMAGE_TAR")
ctr -a "$SOCKET" images import "$IMAGE_TAR"
ctr -a "$SOCKET" run --rm "$IMAGE" quickstart-hello echo "hello from a berth container"
