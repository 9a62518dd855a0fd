#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, licenses, bans, sources) against deny.toml,
# offline, with the RustSec database copy in ../shared/advisory-db.
#
# cargo-deny reads a database from <db-path>/advisory-db-3157b0e258782691 (the folder name
# derives from the default RustSec URL) and asks git for its commit time, so the plain copy
# in shared/ is turned into a one-commit git repository under target/advisory-dbs (deny.toml
# db-path) on every run. Nothing is fetched (--offline).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

src=../shared/advisory-db
if [ ! -d "$src/crates" ]; then
  echo "supply-chain: $src/crates is missing: the RustSec database copy must sit beside the repo (shared/advisory-db)" >&2
  exit 1
fi
command -v cargo-deny >/dev/null || {
  echo "supply-chain: cargo-deny is not installed: run scripts/install-deps.sh (scripts/deps/cargo.txt)" >&2
  exit 1
}

root=target/advisory-dbs
db=$root/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p "$db"
cp -R "$src"/. "$db"/
chmod -R u+w "$db"
# The commit carries the snapshot's own date (SOURCE.txt), so `git log` tells its age.
when=$(grep -oE '\([0-9]{4}-[0-9]{2}-[0-9]{2}\)' "$src/SOURCE.txt" 2>/dev/null | tr -d '()' | head -1 || true)
stamp=${when:+${when}T00:00:00Z}
(
  cd "$db"
  git init -q -b main .
  git add -A
  GIT_AUTHOR_DATE="${stamp:-now}" GIT_COMMITTER_DATE="${stamp:-now}" \
    git -c user.name=canarie -c user.email=canarie@invalid -c commit.gpgsign=false \
    commit -q -m "RustSec advisory-db snapshot from shared/advisory-db"
)

# --hide-inclusion-graph keeps the duplicate-version warnings short; drop it to see who
# pulls a crate in.
cargo deny --offline --locked --workspace check --hide-inclusion-graph \
  advisories licenses bans sources
