#!/usr/bin/env bash
# Pull + unpack of the big bench image (../shared/bench/make-big-image.sh)
# from a private Debian docker-registry on loopback, in one run:
#   - containerd: `ctr images pull --plain-http` (ctr does the registry work)
#   - berthd, Transfer: one Transfer call from the Python grpcio client
#     (the registry work in the daemon; the call's own time)
#   - berthd, ctr: `ctr images pull --plain-http` against berthd
# ROUNDS interleaved rounds; before each pull the image is removed with a
# synchronous GC and the page cache dropped. Medians and ratios printed.
# BUSY=1 keeps both cores busy meanwhile (two nice'd hashing loops).
#
#   scripts/bench-transfer-pull.sh [ROUNDS]
#
# As root, after scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
PYTHON=tests/clients/python/.venv/bin/python
[[ -x $PYTHON ]] || { echo "no $PYTHON: run scripts/install-deps.sh" >&2; exit 1; }
cargo build --release --locked --bins -q

IMAGES=${IMAGES:-/tmp/berth-bench/images}
[[ -f $IMAGES/big-oci.tar ]] || ../shared/bench/make-big-image.sh "$IMAGES" >/dev/null

WORK=$(mktemp -d /tmp/berth-bench-pull.XXXXXX)
# shellcheck source=scripts/bench-daemons.sh
source scripts/bench-daemons.sh
start_daemons

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOT
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
EOT
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
REF=127.0.0.1:$port/bench/big:latest
skopeo copy --quiet --dest-tls-verify=false "oci-archive:$IMAGES/big-oci.tar" "docker://$REF"

if [[ ${BUSY:-0} == 1 ]]; then
    for _ in 1 2; do nice -n 10 sha256sum /dev/zero & PIDS+=($!); done
fi

fresh() {
    ctr -a "$1" images rm --sync "$REF" >/dev/null 2>&1 || true
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
now() { date +%s.%N; }
timed_ctr_pull() {
    local start end
    start=$(now)
    ctr -a "$1" images pull --plain-http "$REF" >/dev/null
    end=$(now)
    awk -v s="$start" -v e="$end" 'BEGIN {print e - s}'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
: >"$WORK/containerd.times"
: >"$WORK/transfer.times"
: >"$WORK/berth-ctr.times"
for _ in $(seq "$ROUNDS"); do
    fresh "$WORK/containerd/sock"
    timed_ctr_pull "$WORK/containerd/sock" >>"$WORK/containerd.times"
    fresh "$WORK/berth/sock"
    $PYTHON tests/clients/python/transfer_pull.py --target "unix://$WORK/berth/sock" --ref "$REF" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])' >>"$WORK/transfer.times"
    fresh "$WORK/berth/sock"
    timed_ctr_pull "$WORK/berth/sock" >>"$WORK/berth-ctr.times"
done
c=$(median <"$WORK/containerd.times")
t=$(median <"$WORK/transfer.times")
b=$(median <"$WORK/berth-ctr.times")
label=""
[[ ${BUSY:-0} == 1 ]] && label=", busy host"
echo "pull + unpack of $REF (median of $ROUNDS$label, seconds):"
echo "  containerd, ctr pull     $c   ($(tr '\n' ' ' <"$WORK/containerd.times"))"
echo "  berthd, Transfer         $t   ($(tr '\n' ' ' <"$WORK/transfer.times"))"
echo "  berthd, ctr pull         $b   ($(tr '\n' ' ' <"$WORK/berth-ctr.times"))"
awk -v c="$c" -v t="$t" -v b="$b" 'BEGIN {printf "  containerd/Transfer: %.2fx   berthd ctr pull/Transfer: %.2fx\n", c / t, b / t}'
