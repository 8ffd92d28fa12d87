#!/usr/bin/env bash
# Times `ctr images import --no-unpack` and `ctr images rm --sync` of one
# archive against a private containerd and against berthd (release build),
# in the same run, and prints medians and the berthd/containerd ratios.
#
#   scripts/bench-import.sh [ARCHIVE] [REPS]
#
# ARCHIVE defaults to the bench's big image (../shared/bench/make-big-image.sh
# builds it into /tmp/berth-bench/images); REPS defaults to 5. As root.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHIVE=${1:-/tmp/berth-bench/images/big-oci.tar}
REPS=${2:-5}
[[ -f $ARCHIVE ]] || { echo "no archive at $ARCHIVE (run ../shared/bench/make-big-image.sh)" >&2; exit 1; }
cargo build --release --locked --bins -q

WORK=$(mktemp -d /tmp/berth-bench-import.XXXXXX)
# shellcheck source=scripts/bench-daemons.sh
source scripts/bench-daemons.sh
start_daemons

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# measure NAME SOCKET: REPS cycles of import then rm --sync; appends times.
measure() {
    local name=$1 sock=$2 t0 t1 image
    for _ in $(seq "$REPS"); do
        sync
        t0=$(now_ms)
        ctr -a "$sock" images import --no-unpack "$ARCHIVE" >/dev/null
        t1=$(now_ms)
        echo $((t1 - t0)) >>"$WORK/$name.import"
        image=$(ctr -a "$sock" images ls -q | head -1)
        t0=$(now_ms)
        ctr -a "$sock" images rm --sync "$image" >/dev/null
        t1=$(now_ms)
        echo $((t1 - t0)) >>"$WORK/$name.rm"
    done
}

# Interleave the daemons so both see the same machine state.
for _ in 1 2; do
    measure containerd "$WORK/containerd/sock"
    measure berthd "$WORK/berth/sock"
done

size=$(stat -c %s "$ARCHIVE")
printf '%-28s %12s %12s %8s\n' "median of $((REPS * 2)) runs (ms)" containerd berthd ratio
for op in import rm; do
    c=$(median <"$WORK/containerd.$op")
    b=$(median <"$WORK/berthd.$op")
    printf '%-28s %12s %12s %8s\n' "$op" "$c" "$b" "$(awk -v b="$b" -v c="$c" 'BEGIN {printf "%.2f", b / c}')"
done
for d in containerd berthd; do
    m=$(median <"$WORK/$d.import")
    echo "$d import throughput: $(awk -v s="$size" -v m="$m" 'BEGIN {printf "%.0f", s / 1048576 / (m / 1000)}') MiB/s"
done
for d in containerd berthd; do
    dir=$d; [[ $d == berthd ]] && dir=berth
    pid=$(pgrep -f "$WORK/$dir/" | head -1 || true)
    [[ -n $pid ]] && echo "$d after the runs: VmRSS $(awk '/^VmRSS:/{print $2}' /proc/"$pid"/status) kB, Pss $(awk '/^Pss:/{print $2}' /proc/"$pid"/smaps_rollup) kB"
done
