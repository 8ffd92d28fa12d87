# Sourced by the bench scripts: a private containerd (configured as
# ../shared/bench/compare.sh configures it: its own root, state and socket,
# CRI off) and a release berthd side by side under $WORK, stopped and
# removed on exit. Sockets: $WORK/containerd/sock and $WORK/berth/sock.

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

start_daemons() {
    mkdir -p "$WORK/containerd"
    cat >"$WORK/containerd/config.toml" <<EOT
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/containerd/sock"
[ttrpc]
  address = "$WORK/containerd/sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
EOT
    containerd --config "$WORK/containerd/config.toml" >"$WORK/containerd.log" 2>&1 &
    PIDS+=($!)
    target/release/berthd --root "$WORK/berth/root" --state "$WORK/berth/state" \
        --address "$WORK/berth/sock" --config /dev/null >"$WORK/berthd.log" 2>&1 &
    PIDS+=($!)
    local sock
    for sock in "$WORK/containerd/sock" "$WORK/berth/sock"; do
        for _ in $(seq 300); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    done
}
