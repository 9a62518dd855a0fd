#!/usr/bin/env bash
# Builds the statically linked canarie-agent and prints its path (everything else goes to
# stderr). glibc with crt-static, libblkid from Debian's libblkid.a; docs/packaging.md says
# why not musl.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

target=x86_64-unknown-linux-gnu
# With an explicit --target, RUSTFLAGS reach only the target's crates, not build scripts
# or proc macros (which are loaded by the compiler and must stay dynamic). BLKID_STATIC
# makes libblkid-rs-sys's pkg-config probe emit `static=blkid`, so libblkid.a is linked.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" BLKID_STATIC=1 \
  cargo build --release --locked -p canarie-agent --bin canarie-agent --target "$target" >&2

bin="$PWD/target/$target/release/canarie-agent"
# The profile strips symbols; .comment only lists the compilers' version strings (lintian:
# binary-has-unneeded-section). The build-id note stays, for matching debug info.
objcopy --remove-section=.comment "$bin"
if ! file -b "$bin" | grep -Eq 'static(-pie)? linked|statically linked'; then
  echo "static-build: $bin is not statically linked ($(file -b "$bin")); check that libblkid-dev (libblkid.a) is installed" >&2
  exit 1
fi
echo "$bin"
