#!/usr/bin/env bash
# Fresh-clone check: does the test command pass for someone who just cloned the repository?
# Clones this checkout's HEAD (committed work only) into a new directory and runs the
# README's test command, ./scripts/test.sh, there as a new user on this machine would:
#   - a new HOME whose ~/.cargo holds nothing but the rustup proxies (cargo, rustc, ...):
#     an empty crate registry and git cache, so install-deps must fetch every crate the
#     offline steps need, and no cargo tools, so install-deps reinstalls them
#     (scripts/deps/cargo.txt: cargo-deny, several minutes to build);
#   - the installed Rust toolchain (RUSTUP_HOME): the toolchain is not what this checks, and
#     rustup's own download site is not reachable from every test machine;
#   - no .venv and no target directory (a new clone has neither; CARGO_TARGET_DIR unset);
#   - beside the clone, the RustSec mirror the supply-chain step looks for, as a link, when
#     this checkout has it (as in CI). Nothing else beside it: a test that still read data
#     from outside the repository fails here.
# Run it before a release and after changing the install steps (scripts/install-deps.sh,
# scripts/deps/*, vm-tests/install-deps.sh). It takes as long as a full test run plus the
# installs (about 40 minutes on 2 cores). Needs root, like the test command.
#
# Usage: scripts/fresh-clone-check.sh [--quick] [--reuse-tools] [--without-mirror] [--keep]
#   --quick           stop after the install step and the supply-chain check (the first step
#                     that needs the whole crate cache): minutes instead of the full run
#   --reuse-tools     link the installed cargo tools (scripts/deps/cargo.txt) instead of
#                     rebuilding them
#   --without-mirror  no RustSec mirror beside the clone: the supply-chain step fetches the
#                     database itself (needs git access to github.com)
#   --keep            keep the directory afterwards (it is printed); else it is removed
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

quick='' reuse_tools='' mirror=yes keep=''
for arg in "$@"; do
  case $arg in
    --quick) quick=yes ;;
    --reuse-tools) reuse_tools=yes ;;
    --without-mirror) mirror='' ;;
    --keep) keep=yes ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-clone-check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-clone-check: run as root (the test command installs packages and uses loop devices)" >&2
  exit 2
fi

old_home=$HOME
rustup_home=${RUSTUP_HOME:-$old_home/.rustup}
old_cargo_bin=${CARGO_HOME:-$old_home/.cargo}/bin
[ -x "$old_cargo_bin/rustup" ] || {
  echo "fresh-clone-check: no rustup in $old_cargo_bin: install the toolchain first (scripts/install-deps.sh)" >&2
  exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/canarie-fresh-clone.XXXXXX")
finish() {
  local rc=$?
  if [ -n "$keep" ]; then
    echo "fresh-clone-check: kept $work"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap finish EXIT

head=$(git -C "$here" rev-parse HEAD)
if [ -n "$(git -C "$here" status --porcelain)" ]; then
  echo "fresh-clone-check: note: uncommitted changes in $here are not part of the check"
fi
clone=$work/canarie
git clone -q --no-checkout "$here" "$clone"
git -C "$clone" checkout -q --detach "$head"
echo "fresh-clone-check: cloned $head into $clone"

# The supply-chain step names its mirror once (mirror=...); place it the same way here.
mirror_rel=$(sed -n 's/^mirror=//p' "$here/scripts/test.d/20-supply-chain.sh")
if [ -n "$mirror" ] && [ -n "$mirror_rel" ] && [ -d "$here/$mirror_rel" ]; then
  mkdir -p "$(dirname "$clone/$mirror_rel")"
  ln -s "$(cd "$here/$mirror_rel" && pwd)" "$clone/$mirror_rel"
  echo "fresh-clone-check: RustSec mirror linked at $(cd "$clone/$(dirname "$mirror_rel")" && pwd)/$(basename "$mirror_rel")"
else
  echo "fresh-clone-check: no RustSec mirror beside the clone: the supply-chain step fetches the database"
fi

# A new user's home: rustup's proxies only (every file in ~/.cargo/bin that is rustup).
export HOME=$work/home
export CARGO_HOME=$HOME/.cargo
export RUSTUP_HOME=$rustup_home
mkdir -p "$CARGO_HOME/bin"
for tool in "$old_cargo_bin"/*; do
  if [ "$tool" -ef "$old_cargo_bin/rustup" ] || cmp -s "$tool" "$old_cargo_bin/rustup"; then
    ln -s "$old_cargo_bin/rustup" "$CARGO_HOME/bin/$(basename "$tool")"
  fi
done
if [ -n "$reuse_tools" ]; then
  while read -r tool; do
    if [ -x "$old_cargo_bin/$tool" ]; then ln -s "$old_cargo_bin/$tool" "$CARGO_HOME/bin/$tool"; fi
  done < <(grep -v -e '^\s*#' -e '^\s*$' "$here/scripts/deps/cargo.txt" | sed 's/@.*//')
fi
# The old cargo bin directory (which this environment may list in PATH) must not leak in.
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$old_cargo_bin" | paste -sd: -)
export PATH="$CARGO_HOME/bin:$PATH"
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR VIRTUAL_ENV
echo "fresh-clone-check: HOME=$HOME (empty cargo home), RUSTUP_HOME=$RUSTUP_HOME"

start=$(date +%s)
cd "$clone"
if [ -n "$quick" ]; then
  scripts/install-deps.sh
  bash scripts/test.d/20-supply-chain.sh
  what="install step and supply-chain check"
else
  ./scripts/test.sh
  what="./scripts/test.sh"
fi
echo "fresh-clone-check: $what passed from a fresh clone of $head in $(( ($(date +%s) - start) / 60 )) min"
