#!/usr/bin/env bash
# Runs every test: installs what is missing, then format, lint, the Rust suites (as root:
# loop devices), and each area's extra checks in scripts/test.d/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries the tests start)"
cargo build --workspace --bins --locked
echo "== cargo test (offline: a network namespace with only loopback)"
cargo test --workspace --locked --no-run -q
scripts/offline.sh cargo test --workspace --locked --offline -- --test-threads=4

for t in scripts/test.d/*.sh; do
  [ -e "$t" ] || continue
  echo "== $t"
  bash "$t"
done
echo "== all tests passed"
