#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, as root.
# Idempotent and quick when everything is already there.
set -euo pipefail

# Debian packages: the reference client and daemon (containerd: ctr), OCI
# runtimes, busybox for test images, a registry and skopeo for pull/push
# tests, containerd's protos for the wire-compatibility test, xfsprogs and
# attr for the snapshotter tests (reflinks, xattrs), libseccomp (the
# runtime compiles seccomp profiles with it), and a C toolchain for crates
# that build C.
PACKAGES=(
    containerd runc crun busybox-static docker-registry skopeo
    golang-github-containerd-containerd-dev xfsprogs attr libseccomp-dev
    build-essential pkg-config git ca-certificates curl
)

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
