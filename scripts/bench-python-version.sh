#!/usr/bin/env bash
# Unary Version calls per second from one Python grpcio client over the
# Unix socket, berthd (release build) against a private containerd, in the
# same run: ROUNDS alternating rounds of SECONDS each, medians and the
# berthd/containerd ratio printed. BUSY=1 keeps both cores busy meanwhile
# (two nice'd hashing loops), as on a host that runs containers.
#
#   scripts/bench-python-version.sh [ROUNDS] [SECONDS]
#
# As root, after scripts/install-deps.sh (the client's venv).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
SECONDS_EACH=${2:-3}
PYTHON=tests/clients/python/.venv/bin/python
[[ -x $PYTHON ]] || { echo "no $PYTHON: run scripts/install-deps.sh" >&2; exit 1; }
cargo build --release --locked --bins -q

WORK=$(mktemp -d /tmp/berth-bench-python.XXXXXX)
# shellcheck source=scripts/bench-daemons.sh
source scripts/bench-daemons.sh
start_daemons

if [[ ${BUSY:-0} == 1 ]]; then
    for _ in 1 2; do nice -n 10 sha256sum /dev/zero & PIDS+=($!); done
fi

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
: >"$WORK/berthd.rates"
: >"$WORK/containerd.rates"
for _ in $(seq "$ROUNDS"); do
    $PYTHON tests/clients/python/version_rate.py --target "unix://$WORK/berth/sock" --seconds "$SECONDS_EACH" >>"$WORK/berthd.rates"
    $PYTHON tests/clients/python/version_rate.py --target "unix://$WORK/containerd/sock" --seconds "$SECONDS_EACH" >>"$WORK/containerd.rates"
done
berth=$(median <"$WORK/berthd.rates")
containerd=$(median <"$WORK/containerd.rates")
label=""
[[ ${BUSY:-0} == 1 ]] && label=", busy host"
echo "Version calls/s from one Python client (median of $ROUNDS x ${SECONDS_EACH}s$label):"
echo "  berthd     $berth   (rounds: $(tr '\n' ' ' <"$WORK/berthd.rates"))"
echo "  containerd $containerd   (rounds: $(tr '\n' ' ' <"$WORK/containerd.rates"))"
awk -v b="$berth" -v c="$containerd" 'BEGIN {printf "  berthd/containerd: %.2f\n", b / c}'
