#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, as root.
# Idempotent and quick when everything is already there.
set -euo pipefail

# Debian packages: the reference client and daemon (containerd: ctr), OCI
# runtimes, busybox for test images, a registry and skopeo for pull/push
# tests, containerd's protos for the wire-compatibility test, xfsprogs and
# attr for the snapshotter tests (reflinks, xattrs), libseccomp (the
# runtime compiles seccomp profiles with it), a C toolchain for crates
# that build C, and protoc for the containerd-client crate, a test client
# whose build script compiles containerd's protos with it (berth's own
# protos are compiled by protox, without protoc).
PACKAGES=(
    containerd runc crun busybox-static docker-registry skopeo
    golang-github-containerd-containerd-dev xfsprogs attr libseccomp-dev
    build-essential pkg-config git ca-certificates curl python3-venv openssl
    protobuf-compiler
)
# Node for the @grpc/grpc-js test client: Debian's, unless a node and npm
# are already there (a packaged nodejs from elsewhere bundles npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(nodejs npm)
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps.sh: run as root (berth manages namespaces, mounts and cgroups)" >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi

# Rust: berth needs 1.90 or newer (Debian 12's packaged rustc is older).
export PATH="$HOME/.cargo/bin:$PATH"
need_rust() {
    command -v cargo >/dev/null 2>&1 || return 0
    local v
    v=$(rustc --version | awk '{print $2}')
    [[ $(printf '%s\n1.90.0\n' "$v" | sort -V | head -1) != 1.90.0 ]]
}
if need_rust; then
    echo "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
fi

# The other-language gRPC clients the tests drive (tests/clients): Python's
# grpcio in a venv and Node's @grpc/grpc-js in a local node_modules, from
# PyPI and npm at the pinned versions. Redone only when a pin changes.
clients="$(cd "$(dirname "$0")/.." && pwd)/tests/clients"
python_pins="$clients/python/requirements.txt"
venv="$clients/python/.venv"
if ! cmp -s "$python_pins" "$venv/installed-requirements.txt" 2>/dev/null; then
    echo "installing the Python gRPC client (grpcio) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$python_pins"
    cp "$python_pins" "$venv/installed-requirements.txt"
fi
node_lock="$clients/node/package-lock.json"
if ! cmp -s "$node_lock" "$clients/node/node_modules/.installed-lock.json" 2>/dev/null; then
    echo "installing the Node gRPC client (@grpc/grpc-js) into $clients/node/node_modules"
    (cd "$clients/node" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$node_lock" "$clients/node/node_modules/.installed-lock.json"
fi
