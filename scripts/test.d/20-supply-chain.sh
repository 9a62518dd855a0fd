#!/usr/bin/env bash
# Supply chain: `cargo deny check` (advisories, licenses, bans, sources) against deny.toml.
#
# The RustSec advisory database comes from one of two places, and the step says which:
# - a local mirror, when ../shared/advisory-db sits beside the repository (CI, the
#   development machines): a plain copy of the RustSec tree, made usable below;
# - otherwise cargo-deny's own fetch (`cargo deny fetch db`, a git clone of
#   https://github.com/rustsec/advisory-db), as on a new contributor's machine.
# Either way the database lands in <db-path>/advisory-db-3157b0e258782691 (deny.toml
# db-path; the folder name derives from the default RustSec URL), and the check itself then
# runs with --offline: the crates come from the cargo cache (scripts/install-deps.sh fetches
# every crate of the lock file).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

command -v cargo-deny >/dev/null || {
  echo "supply-chain: cargo-deny is not installed: run scripts/install-deps.sh (scripts/deps/cargo.txt)" >&2
  exit 1
}

mirror=../shared/advisory-db
db=target/advisory-dbs/advisory-db-3157b0e258782691
url=https://github.com/rustsec/advisory-db

if [ -d "$mirror/crates" ]; then
  # cargo-deny asks git for the database's commit time, so the plain copy is turned into a
  # one-commit git repository, rebuilt on every run. The commit carries the snapshot's own
  # date (SOURCE.txt), so `git log` tells its age.
  rm -rf "$db"
  mkdir -p "$db"
  cp -R "$mirror"/. "$db"/
  chmod -R u+w "$db"
  when=$(grep -oE '\([0-9]{4}-[0-9]{2}-[0-9]{2}\)' "$mirror/SOURCE.txt" 2>/dev/null | tr -d '()' | head -1 || true)
  upstream=$(grep -oE 'commit [0-9a-f]{40}' "$mirror/SOURCE.txt" 2>/dev/null | head -1 || true)
  stamp=${when:+${when}T00:00:00Z}
  (
    cd "$db"
    git init -q -b main .
    git add -A
    GIT_AUTHOR_DATE="${stamp:-now}" GIT_COMMITTER_DATE="${stamp:-now}" \
      git -c user.name=canarie -c user.email=canarie@invalid -c commit.gpgsign=false \
      commit -q -m "RustSec advisory-db snapshot from $mirror"
  )
  echo "supply-chain: RustSec database: local mirror $mirror (${upstream:-commit unknown}, ${when:-date unknown})"
else
  # A repository left by the mirror branch above has no remote to fetch from: start over.
  if [ -d "$db" ] && ! git -C "$db" remote get-url origin >/dev/null 2>&1; then
    rm -rf "$db"
  fi
  echo "supply-chain: RustSec database: no $mirror beside the repository; cargo-deny fetches $url"
  if ! cargo deny --locked fetch db; then
    echo "supply-chain: cargo-deny could not fetch the RustSec database from $url; allow git access to github.com, or put a copy of it (a plain tree) at $mirror" >&2
    exit 1
  fi
  echo "supply-chain: RustSec database: fetched $url ($(git -C "$db" log -1 --format='commit %H, %cs'))"
fi

# --hide-inclusion-graph keeps the duplicate-version warnings short; drop it to see who
# pulls a crate in.
cargo deny --offline --locked --workspace check --hide-inclusion-graph \
  advisories licenses bans sources
