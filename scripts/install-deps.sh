#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine (as root):
# apt packages, a Rust toolchain if there is none, and a Python venv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

list() { grep -v '^\s*#' "$1" | grep -v '^\s*$'; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (it installs apt packages and uses loop devices)" >&2
  exit 2
fi

missing=()
for pkg in $(list scripts/deps/apt.txt); do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Packages whose files the tests use but which must not be installed here (promtool,
# WALinuxAgent's protocol code): downloaded and unpacked only.
scripts/deps/fetch-debs.sh

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    # Debian 12's own cargo (1.63) is too old for the workspace (rust-version 1.89).
    echo "install-deps: no cargo; installing the stable toolchain with rustup"
    apt-get install -y -qq curl >/dev/null
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  }
fi
export PATH="$HOME/.cargo/bin:$PATH"
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true

if [ -f scripts/deps/cargo.txt ]; then
  for tool in $(list scripts/deps/cargo.txt); do
    name=${tool%%@*}
    command -v "$name" >/dev/null 2>&1 || cargo install --locked "$tool"
  done
fi

# The offline steps (`cargo deny --offline` runs `cargo metadata`, the tests run with
# --offline) need every crate of every target in each lock file, not only what a host build
# downloads: a new machine's cargo cache has none of them.
for manifest in Cargo.toml fuzz/Cargo.toml; do
  cargo fetch --locked -q --manifest-path "$manifest"
done

stamp=.venv/.pip-stamp
if [ ! -x .venv/bin/python ] || ! cmp -s scripts/deps/pip.txt "$stamp"; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/deps/pip.txt
  cp scripts/deps/pip.txt "$stamp"
fi
echo "install-deps: ok"
