#!/usr/bin/env bash
# Packaging: builds the static binary and the .deb with packaging/build.sh, then checks
#  - the binary: static (no interpreter, no DT_NEEDED), under 10 MiB, libblkid working
#    inside it (a real loop device), names resolved through /etc/hosts in a private network
#    namespace (no packet can leave it);
#  - the .deb: lintian without errors or warnings, the expected files, reproducible bytes;
#  - in a Debian 12 chroot (cached mmdebstrap tarball; never booted): install enables the
#    units and starts nothing, `systemd-analyze verify` accepts the units and `security` rates
#    its sandbox at most 5.0, the admin's
#    "disabled" survives a reinstall, remove keeps the conffile, purge leaves no file behind
#    and never touches RKE2, Longhorn or the data disk's mount unit.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

fail() { echo "40-packaging: FAIL: $*" >&2; exit 1; }
ok() { echo "40-packaging: ok: $*"; }

work=$(mktemp -d /var/tmp/canarie-packaging.XXXXXX)
loop=""
cleanup() {
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
deb=$(packaging/build.sh)
[ "$deb" = "$PWD/target/debian/canarie-agent_${version}_amd64.deb" ] || fail "build.sh printed $deb"
bin=target/x86_64-unknown-linux-gnu/release/canarie-agent

# --- the static binary ------------------------------------------------------------------
kind=$(file -b "$bin")
echo "$kind" | grep -Eq 'static-pie linked|statically linked' || fail "file says: $kind"
readelf -lW "$bin" | grep -q 'INTERP' && fail "$bin has a program interpreter"
readelf -dW "$bin" | grep -q '(NEEDED)' && fail "$bin needs shared libraries: $(readelf -dW "$bin" | grep NEEDED)"
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "$ldd_out" | grep -Eq 'statically linked|not a dynamic executable' || fail "ldd says: $ldd_out"
size=$(stat -c %s "$bin")
[ "$size" -lt $((10 * 1024 * 1024)) ] || fail "$bin is $size bytes, over 10 MiB"
"$bin" --version | grep -qx "canarie-agent $version" || fail "--version: $("$bin" --version)"
ok "static binary ($kind; ldd: $ldd_out; $size bytes)"

# libblkid is inside: probe a real ext4 on a loop device (read-only).
truncate -s 64M "$work/disk.img"
mkfs.ext4 -q -L longhorn "$work/disk.img"
loop=$(losetup --find --show "$work/disk.img")
"$bin" disk inspect "$loop" --json > "$work/inspect.json" 2>/dev/null || true
python3 - "$work/inspect.json" <<'PY' || fail "disk inspect did not see the ext4 through libblkid: $(cat "$work/inspect.json")"
import json, sys
sigs = json.load(open(sys.argv[1]))["signatures"]
assert any(s["type"] == "ext4" and s.get("label") == "longhorn" for s in sigs), sigs
PY
losetup -d "$loop"; loop=""
ok "libblkid probes inside the static binary"

# Name resolution: a private network and mount namespace where /etc/hosts maps a name to
# loopback, the only nameserver is a closed loopback port, and nsswitch.conf also lists
# modules that are not installed. The agent reads the join token from azure-sim by name;
# a name missing from /etc/hosts must fail as a DNS error.
[ -x target/debug/azure-sim ] || cargo build --locked -q -p azure-sim --bin azure-sim
cat > "$work/dns.sh" <<'EOF'
set -eu
work=$1 bin=$2 sim=$3
ip link set lo up
printf '127.0.0.1 localhost\n127.0.0.1 kv-canarie.vault.test\n' > "$work/hosts"
printf 'nameserver 127.0.0.1\n' > "$work/resolv.conf"
printf 'hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns\n' > "$work/nsswitch.conf"
for f in hosts resolv.conf nsswitch.conf; do mount --bind "$work/$f" "/etc/$f"; done
"$sim" --scenario "$work/scenario.json" --ca-out "$work/ca.pem" --ready-file "$work/ready.json" \
  --extra-san kv-canarie.vault.test 2>"$work/sim.log" &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
imds=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["imds_url"])' "$work/ready.json")
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vault_url"].rsplit(":", 1)[1])' "$work/ready.json")
mkdir -p "$work/root/etc"
echo 0123456789abcdef0123456789abcdef > "$work/root/etc/machine-id"
plan() {
  "$bin" plan --root "$work/root" --imds-url "$imds" --vault-url "https://$1:$port" \
    --ca-file "$work/ca.pem" --vault-deadline 3 --json
}
plan kv-canarie.vault.test > "$work/plan-ok.json" 2> "$work/plan-ok.err"
if plan missing.vault.test > "$work/plan-missing.json" 2> "$work/plan-missing.err"; then
  echo "a name missing from /etc/hosts resolved" >&2
  exit 1
fi
EOF
python3 - examples/server.json "$work/scenario.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
jt = config["join_token"]
json.dump({"user_data_json": config, "secrets": {jt["secret"]: {"value": "join-token-not-shown"}}},
          open(sys.argv[2], "w"))
PY
unshare --net --mount sh "$work/dns.sh" "$work" "$PWD/$bin" "$PWD/target/debug/azure-sim" ||
  fail "name resolution in the namespace: $(cat "$work/sim.log" "$work/plan-ok.err" "$work/plan-missing.err" 2>/dev/null)"
python3 - "$work/plan-ok.json" <<'PY' || fail "plan through the resolved name: $(cat "$work/plan-ok.json")"
import json, sys
report = json.load(open(sys.argv[1]))
token = next(s for s in report["steps"] if s["name"] == "join-token")
assert report["converged"] is not False and token["outcome"] == "changed", token
PY
grep -q 'dns error' "$work/plan-missing.err" || fail "the unresolvable name failed otherwise: $(cat "$work/plan-missing.err")"
ok "the static binary resolves names from /etc/hosts (glibc's built-in files source)"

# --- the .deb ---------------------------------------------------------------------------
lintian_rc=0
lintian --fail-on error,warning -L '>=pedantic' --display-experimental "$deb" > "$work/lintian.txt" 2>&1 || lintian_rc=$?
grep -v 'running with root privileges' "$work/lintian.txt" || true
[ "$lintian_rc" -eq 0 ] || fail "lintian reports errors or warnings (above)"
ok "lintian: no errors, no warnings (overrides: packaging/deb/lintian-overrides)"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$work/contents.txt"
for path in /usr/bin/canarie-agent /lib/systemd/system/canarie-agent.service \
  /lib/systemd/system/canarie-ssh-host-keys.service /usr/lib/tmpfiles.d/canarie-agent.conf \
  /etc/canarie-agent/environment /usr/share/man/man1/canarie-agent.1.gz \
  /usr/share/man/man1/canarie-agent-disk-inspect.1.gz \
  /usr/share/bash-completion/completions/canarie-agent \
  /usr/share/zsh/vendor-completions/_canarie-agent \
  /usr/share/fish/vendor_completions.d/canarie-agent.fish \
  /usr/share/doc/canarie-agent/copyright /usr/share/doc/canarie-agent/changelog.gz \
  /usr/share/doc/canarie-agent/rust-crates.txt.gz; do
  grep -qx "$path" "$work/contents.txt" || fail "the .deb lacks $path"
done
grep -E '^/(var/lib|etc/rancher|etc/systemd)' "$work/contents.txt" && fail "the .deb ships state or RKE2 paths (above)"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "package version is not $version"
sum1=$(sha256sum < "$deb")
packaging/deb/build-deb.sh "$bin" > "$work/rebuild.log" 2>&1 || fail "second build: $(cat "$work/rebuild.log")"
[ "$(sha256sum < "$deb")" = "$sum1" ] || fail "two builds of the .deb from the same binary differ"
ok "package contents, version $version, reproducible"

# --- install, enable, verify, purge in a Debian 12 chroot --------------------------------
# Cached by the package list, mirrors and mmdebstrap's version: a rerun starts in seconds.
packages="systemd,dbus,e2fsprogs,man-db"
mirrors=("deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main")
cache=/var/cache/canarie-tests
key=$(printf '%s\n' "$packages" "${mirrors[@]}" "$(dpkg-query -W -f='${Version}' mmdebstrap)" |
  sha256sum | cut -c1-16)
tarball="$cache/packaging-chroot-bookworm-$key.tar"
mkdir -p "$cache"
(
  flock 9
  if [ ! -s "$tarball" ]; then
    echo "40-packaging: building the Debian 12 chroot (cached as $tarball)"
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar --include="$packages" \
      --aptopt='Acquire::Retries "3"' bookworm "$tarball.partial" "${mirrors[@]}"
    mv "$tarball.partial" "$tarball"
    find "$cache" -maxdepth 1 -name 'packaging-chroot-bookworm-*.tar' ! -name "${tarball##*/}" -delete
  fi
) 9> "$cache/.packaging.lock"
root="$work/chroot"
mkdir "$root"
tar -C "$root" -xf "$tarball"
# dpkg runs maintainer scripts with this PATH: the logging shims below come first.
in_root() { chroot "$root" env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# Debian 12's own systemctl, offline (--root), past the logging shim below.
unit_ctl() { chroot "$root" /bin/systemctl --root=/ "$@"; }

# What the node has besides the agent: RKE2's config and state, Longhorn's data, the data
# disk's mount unit (the agent writes it). Purge must leave all of it as it was.
mkdir -p "$root/etc/rancher/rke2/config.yaml.d" "$root/var/lib/rancher/rke2/server/manifests" \
  "$root/var/lib/longhorn/replicas"
echo 'token: from-a-test' > "$root/etc/rancher/rke2/config.yaml.d/10-token.yaml"
echo 'node-name: test' > "$root/etc/rancher/rke2/config.yaml"
echo 'kind: HelmChart' > "$root/var/lib/rancher/rke2/server/manifests/cilium.yaml"
echo replica > "$root/var/lib/longhorn/replicas/r1"
printf '[Mount]\nWhat=/dev/disk/by-label/longhorn\nWhere=/var/lib/longhorn\n' \
  > "$root/etc/systemd/system/var-lib-longhorn.mount"
# Pretend systemd runs (the maintainer scripts then talk to it) and log every call, to show
# that installing starts nothing even on a live system. systemctl calls go on to the real
# systemctl, which in a chroot does the file-level work (deb-systemd-helper enables a new
# unit with `systemctl preset`) and ignores the rest; deb-systemd-invoke only logs.
mkdir -p "$root/run/systemd/system"
printf '#!/bin/sh\necho "systemctl $*" >> /var/log/canarie-test-calls\nexec /bin/systemctl "$@"\n' \
  > "$root/usr/local/sbin/systemctl"
printf '#!/bin/sh\necho "deb-systemd-invoke $*" >> /var/log/canarie-test-calls\n' \
  > "$root/usr/local/sbin/deb-systemd-invoke"
chmod 755 "$root/usr/local/sbin/systemctl" "$root/usr/local/sbin/deb-systemd-invoke"
: > "$root/var/log/canarie-test-calls"
starts=' (start|restart|try-restart|reload-or-restart|try-reload-or-restart|isolate)( |$)|--now'

# Every path and its content (checksums for files, targets for links), minus what dpkg
# and man-db keep about packages and what this test itself puts in /tmp and /var/log.
snapshot() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp \
    -o -path ./run -o -path ./var/lib/dpkg -o -path ./var/cache/man -o -path ./var/log \) -prune \
    -o -printf '%p %y %m %l\n' | sort) > "$1"
  (cd "$root" && find etc/rancher var/lib/rancher var/lib/longhorn etc/systemd/system/var-lib-longhorn.mount \
    -type f -exec sha256sum {} + | sort) >> "$1"
}
snapshot "$work/before.txt"

cp "$deb" "$root/tmp/canarie-agent.deb"
in_root dpkg -i /tmp/canarie-agent.deb > "$work/install.log" 2>&1 || fail "dpkg -i: $(cat "$work/install.log")"
link="$root/etc/systemd/system/multi-user.target.wants/canarie-agent.service"
[ "$(readlink "$link")" = /lib/systemd/system/canarie-agent.service ] || fail "no enable symlink: $(ls -l "$link" 2>&1)"
[ "$(unit_ctl is-enabled canarie-agent.service)" = enabled ] || fail "the unit is not enabled"
grep -E "$starts" "$root/var/log/canarie-test-calls" && fail "installing started a unit (above)"
grep -q 'daemon-reload' "$root/var/log/canarie-test-calls" || fail "postinst did not reload a running systemd"
cmp -s packaging/deb/canarie-agent.service "$root/lib/systemd/system/canarie-agent.service" ||
  fail "the installed unit differs from packaging/deb/canarie-agent.service"
# The host-key unit is enabled whether or not openssh-server is installed (inert without it).
keys_link="$root/etc/systemd/system/multi-user.target.wants/canarie-ssh-host-keys.service"
[ "$(readlink "$keys_link")" = /lib/systemd/system/canarie-ssh-host-keys.service ] ||
  fail "canarie-ssh-host-keys.service is not wanted by multi-user.target: $(ls -l "$keys_link" 2>&1)"
[ "$(unit_ctl is-enabled canarie-ssh-host-keys.service)" = enabled ] || fail "canarie-ssh-host-keys.service is not enabled"
[ "$(in_root canarie-agent --version)" = "canarie-agent $version" ] || fail "the installed binary does not run"
in_root dpkg-query -W -f='${Conffiles}\n' canarie-agent | grep -q '/etc/canarie-agent/environment' ||
  fail "/etc/canarie-agent/environment is not a conffile"
ok "installed into a Debian 12 chroot: enabled, nothing started"

# The tmpfiles.d entry that makes the unit's RKE2 directories, by Debian 12's own
# systemd-tmpfiles in a scratch root: a missing one is made 0755, an existing one keeps its mode.
mkdir -p "$root/tmp/tf/etc" "$root/tmp/tf/var/lib/rancher"
chmod 0700 "$root/tmp/tf/var/lib/rancher"
# (it refuses to run without /proc: a private one, gone with the namespace)
unshare --mount --pid --fork --mount-proc="$root/proc" chroot "$root" \
  systemd-tmpfiles --root=/tmp/tf --create /usr/lib/tmpfiles.d/canarie-agent.conf > "$work/tmpfiles.log" 2>&1 ||
  fail "systemd-tmpfiles --create canarie-agent.conf: $(cat "$work/tmpfiles.log")"
[ "$(stat -c %a "$root/tmp/tf/etc/rancher")" = 755 ] && [ "$(stat -c %a "$root/tmp/tf/var/lib/rancher")" = 700 ] ||
  fail "tmpfiles.d: /etc/rancher $(stat -c %a "$root/tmp/tf/etc/rancher" 2>&1) (want 755, made), /var/lib/rancher $(stat -c %a "$root/tmp/tf/var/lib/rancher") (want 700, kept)"
rm -r "$root/tmp/tf"
ok "tmpfiles.d makes /etc/rancher and /var/lib/rancher when missing and leaves an existing one's mode"

# Debian 12's own systemd-analyze, in the chroot: the unit's syntax, its dependencies, the
# ExecStart binary and the Documentation= man page (man-db is in the chroot).
verify_out=$(in_root systemd-analyze verify /lib/systemd/system/canarie-agent.service 2>&1) ||
  fail "systemd-analyze verify: $verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify warns: $verify_out"
ok "systemd-analyze verify accepts canarie-agent.service"
# The chroot has no OpenSSH: a stand-in ssh-keygen lets verify check the rest of the unit
# (it refuses an ExecStart= binary that does not exist); removed right after.
printf '#!/bin/sh\nexit 0\n' > "$root/usr/bin/ssh-keygen"
chmod 755 "$root/usr/bin/ssh-keygen"
verify_rc=0
verify_out=$(in_root systemd-analyze verify /lib/systemd/system/canarie-ssh-host-keys.service 2>&1) || verify_rc=$?
rm "$root/usr/bin/ssh-keygen"
[ "$verify_rc" -eq 0 ] && [ -z "$verify_out" ] || fail "systemd-analyze verify canarie-ssh-host-keys.service: $verify_out"
keys_security=$(in_root systemd-analyze security --offline=true --threshold=50 --no-pager \
  /lib/systemd/system/canarie-ssh-host-keys.service 2>&1) ||
  fail "canarie-ssh-host-keys.service's exposure is above 5.0: $(echo "$keys_security" | grep '✗')"
ok "systemd-analyze: canarie-ssh-host-keys.service verified, $(echo "$keys_security" | grep -o 'Overall exposure level.*')"

# The sandbox: Debian 12's systemd-analyze rates the unit's exposure (0 safe .. 10 unsafe);
# --threshold (0..100) fails above 5.0. docs/packaging.md states the figure; it must match.
security_rc=0
security_out=$(in_root systemd-analyze security --offline=true --threshold=50 --no-pager \
  /lib/systemd/system/canarie-agent.service 2>&1) || security_rc=$?
exposure=$(echo "$security_out" | sed -n 's/.*Overall exposure level for canarie-agent.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security printed no exposure level: $security_out"
[ "$security_rc" -eq 0 ] || fail "the unit's exposure is $exposure, above 5.0:
$(echo "$security_out" | grep '✗')"
grep -q "rates it \*\*$exposure " docs/packaging.md ||
  fail "docs/packaging.md does not state the measured exposure $exposure (\"rates it **$exposure ...**\")"
ok "systemd-analyze security: exposure $exposure (at most 5.0), as docs/packaging.md says"

# An administrator's "disabled" survives a reinstall (an upgrade).
unit_ctl disable --quiet canarie-agent.service
in_root dpkg -i /tmp/canarie-agent.deb > "$work/reinstall.log" 2>&1 || fail "reinstall: $(cat "$work/reinstall.log")"
[ -e "$link" ] && fail "a reinstall re-enabled a unit the administrator disabled"
[ -L "$keys_link" ] || fail "a reinstall disabled canarie-ssh-host-keys.service"
unit_ctl enable --quiet canarie-agent.service
ok "a reinstall keeps the administrator's choice"

# The agent's state, as a node would have it; purge removes it with everything else.
mkdir -p "$root/var/lib/canarie-agent"
echo '{}' > "$root/var/lib/canarie-agent/state.json"
echo '{}' > "$root/var/lib/canarie-agent/last-config.json"
in_root dpkg -r canarie-agent > "$work/remove.log" 2>&1 || fail "dpkg -r: $(cat "$work/remove.log")"
[ -e "$root/usr/bin/canarie-agent" ] && fail "remove left the binary"
[ -e "$root/etc/canarie-agent/environment" ] || fail "remove (not purge) dropped the conffile"
in_root dpkg --purge canarie-agent > "$work/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$work/purge.log")"
grep -E "$starts" "$root/var/log/canarie-test-calls" && fail "remove or purge started a unit (above)"
rm "$root/tmp/canarie-agent.deb"
snapshot "$work/after.txt"
diff -u "$work/before.txt" "$work/after.txt" > "$work/purge.diff" ||
  fail "purge left the system different from before the install:
$(cat "$work/purge.diff")"
ok "purge leaves no file behind; RKE2, Longhorn and the mount unit untouched"
