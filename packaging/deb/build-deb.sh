#!/usr/bin/env bash
# Assembles the canarie-agent .deb with dpkg-deb from a static binary and prints the .deb's
# path (everything else goes to stderr).
#   packaging/deb/build-deb.sh [BINARY]   (default: the path static-build.sh prints)
# Output: target/debian/canarie-agent_<version>_amd64.deb, <version> from the workspace
# Cargo.toml. Two runs on the same inputs give the same bytes (SOURCE_DATE_EPOCH is the
# changelog's date).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
here=packaging/deb
die() { echo "build-deb: $*" >&2; exit 1; }

target=x86_64-unknown-linux-gnu
bin=${1:-target/$target/release/canarie-agent}
[ -x "$bin" ] || die "no binary at $bin; run packaging/static-build.sh first (or packaging/build.sh)"
# The package declares no libc dependency, so a dynamic binary must not slip in.
file -b "$bin" | grep -Eq 'static(-pie)? linked|statically linked' ||
  die "$bin is dynamically linked ($(file -b "$bin")); build it with packaging/static-build.sh"

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in [workspace.package] of Cargo.toml"
changelog_version=$(dpkg-parsechangelog -l "$here/changelog" -SVersion)
[ "$changelog_version" = "$version" ] ||
  die "Cargo.toml says version $version but $here/changelog's top entry is $changelog_version; add a changelog entry for $version"
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$here/changelog" -STimestamp)
export SOURCE_DATE_EPOCH

out=target/debian
deb="$out/canarie-agent_${version}_amd64.deb"
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
umask 022
doc="$stage/usr/share/doc/canarie-agent"

install -D -m 0755 "$bin" "$stage/usr/bin/canarie-agent"
# Debian 12 keeps packaged units under /lib (the /usr move is trixie's, DEP-17).
for unit in canarie-agent.service canarie-ssh-host-keys.service; do
  install -D -m 0644 "$here/$unit" "$stage/lib/systemd/system/$unit"
done

# The RKE2 directories the unit makes writable, made on every boot (docs/packaging.md).
install -D -m 0644 "$here/canarie-agent.tmpfiles" "$stage/usr/lib/tmpfiles.d/canarie-agent.conf"

# Man pages, completions and /etc/canarie-agent/environment, from the CLI definition.
cargo run --locked --quiet -p canarie-packaging-gen -- "$stage" >/dev/null
gzip -9n "$stage"/usr/share/man/man1/*.1

install -D -m 0644 "$here/copyright" "$doc/copyright"
install -D -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/canarie-agent"
gzip -9nc "$here/changelog" > "$doc/changelog.gz"
install -D -m 0644 -t "$doc/examples" examples/*.json
# The Rust crates linked into the binary, with their licenses (copyright points here).
{
  echo "# Rust crates statically linked into /usr/bin/canarie-agent: name version license"
  cargo tree --locked --offline -p canarie-agent -e normal --target "$target" \
    --prefix none --format '{p} {l}' |
    grep -v -e '(proc-macro)' -e '(/' | sed 's/ (\*)//' | sort -u
} > "$doc/rust-crates.txt"
gzip -9n "$doc/rust-crates.txt"

for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"
# Sources of the C libraries inside the static binary, kept by Debian for their LGPL.
built_using=$(dpkg-query -W -f='${source:Package} (= ${source:Version})\n' libc6-dev libblkid-dev |
  paste -sd, - | sed 's/,/, /g')
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  -e "s/@BUILT_USING@/$built_using/" "$here/control.in" > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$PWD/$deb"
