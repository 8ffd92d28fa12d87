#!/usr/bin/env bash
# Runs berth's whole test suite, as CI does: formatting, clippy, a build of
# every binary (the integration tests run them), then every test. As root:
# the integration tests start real daemons and use namespaces, mounts and
# cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

# The tests kill and stall berthd and its shims at named steps: they need
# the failpoints that release builds leave out (core/src/failpoint.rs).
FEATURES=(--features berth-core/failpoints)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings
cargo build --workspace --bins --locked "${FEATURES[@]}"
cargo test --workspace --locked "${FEATURES[@]}"

# A daemon upgrade from an earlier commit (needs the repository's history).
base=$(cat scripts/upgrade-base)
if git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    ./scripts/upgrade-check.sh "$base"
else
    echo "upgrade check not run: commit $base is not in this checkout's history" >&2
fi
