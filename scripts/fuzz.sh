#!/usr/bin/env bash
# Bounded fuzzing of the parsers of untrusted input (node config, userData, IMDS token and
# instance answers, Key Vault secret and error bodies). A separate command, not part of
# scripts/test.sh: the kept corpus is replayed by the normal suite (agent/tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    default: 30 s for each of the 6 targets
#   FUZZ_KEEP=1 scripts/fuzz.sh ...                     also merge inputs that reach new code
#                                                       into fuzz/corpus/<target>/ (commit them)
#
# A crash leaves its input in fuzz/artifacts/<target>/; the script goes on with the other
# targets and exits 1 at the end. docs/hardening.md says how to reproduce and keep one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# cargo-fuzz builds with -Zsanitizer=address and friends. Only the stable toolchain can be
# installed here; RUSTC_BOOTSTRAP=1 lets stable rustc accept those flags.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2

secs=${1:-30}
[ $# -gt 0 ] && shift
case $secs in '' | *[!0-9]*)
  echo "fuzz: SECONDS_PER_TARGET must be a number, got '$secs'" >&2
  exit 2
  ;;
esac

cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

echo "== building ${#targets[@]} fuzz targets (release, ASan, sanitizer coverage)"
cargo fuzz build

failed=()
for t in "${targets[@]}"; do
  # New inputs go to a scratch corpus under target/; the kept corpus is only read.
  work=target/corpus-work/$t
  mkdir -p "$work" "artifacts/$t"
  echo "== $t: ${secs}s"
  if ! cargo fuzz run "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -dict=dict/json.dict -print_final_stats=1 2>"target/$t.log"; then
    failed+=("$t")
    grep -E "panicked at|ERROR: AddressSanitizer|SUMMARY|crash-|timeout-|oom-" "target/$t.log" | head -8 >&2 || true
    continue
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "target/$t.log" || true
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    cargo fuzz run "$t" "corpus/$t" "$work" -- -merge=1 2>>"target/$t.log"
    echo "   kept corpus: $(find "corpus/$t" -type f | wc -l) inputs"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}: see fuzz/artifacts/ and fuzz/target/<target>.log" >&2
  exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${secs}s each)"
