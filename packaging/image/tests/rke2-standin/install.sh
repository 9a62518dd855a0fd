#!/bin/sh
# Stand-in for RKE2's install.sh (https://get.rke2.io), air-gap path only: the contract the
# bake relies on, so that the tests run it exactly as a user runs the real one:
#   INSTALL_RKE2_ARTIFACT_PATH=DIR [INSTALL_RKE2_SKIP_RELOAD=true] sh install.sh
# - needs root; takes rke2.linux-amd64.tar.gz and sha256sum-amd64.txt from DIR and refuses
#   a tarball whose sha256 differs from the listed one;
# - moves a listed rke2-images.linux-amd64.tar.{zst,gz} to /var/lib/rancher/rke2/agent/images
#   (a gzip one decompressed to .tar), and copies any other rke2-images-*.linux-amd64* there;
# - unpacks the tarball into INSTALL_RKE2_TAR_PREFIX (/usr/local; /opt/rke2 when /usr/local
#   is read-only), where the units land in lib/systemd/system;
# - enables and starts nothing; runs `systemctl daemon-reload` unless INSTALL_RKE2_SKIP_RELOAD
#   is set (in a chroot that reload fails, as with the real script).
set -e
info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR]  $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fatal "You need to be root to perform this install"
[ -n "${INSTALL_RKE2_ARTIFACT_PATH}" ] || fatal "this stand-in only installs from INSTALL_RKE2_ARTIFACT_PATH"
case "$(uname -m)" in x86_64 | amd64) ARCH=amd64 ;; *) fatal "unsupported architecture $(uname -m)" ;; esac
SUFFIX=linux-${ARCH}
dir=${INSTALL_RKE2_ARTIFACT_PATH}
prefix=${INSTALL_RKE2_TAR_PREFIX:-/usr/local}
if [ -z "${INSTALL_RKE2_TAR_PREFIX}" ] && ! touch /usr/local/.rke2-ro-test 2>/dev/null; then
  prefix=/opt/rke2
fi
rm -f /usr/local/.rke2-ro-test
images_dir=${INSTALL_RKE2_AGENT_IMAGES_DIR:-/var/lib/rancher/rke2/agent/images}
tmp=$(mktemp -d -t rke2-install.XXXXXXXXXX)
trap 'rm -rf "$tmp"' EXIT

info "staging local checksums from ${dir}/sha256sum-${ARCH}.txt"
cp -f "${dir}/sha256sum-${ARCH}.txt" "$tmp/checksums"
expected=$(grep "rke2.${SUFFIX}.tar.gz" "$tmp/checksums" | awk '{print $1}')
for fmt in zst gz; do
  if [ -f "${dir}/rke2-images.${SUFFIX}.tar.${fmt}" ]; then
    images_expected=$(grep "rke2-images.${SUFFIX}.tar.${fmt}" "$tmp/checksums" | awk '{print $1}')
    cp -f "${dir}/rke2-images.${SUFFIX}.tar.${fmt}" "$tmp/images"
    images_format=$fmt
    break
  fi
done
cp -f "${dir}/rke2.${SUFFIX}.tar.gz" "$tmp/tarball"

if [ -n "${images_expected}" ]; then
  info "verifying airgap tarball"
  actual=$(sha256sum "$tmp/images" | awk '{print $1}')
  [ "$images_expected" = "$actual" ] || fatal "download sha256 does not match ${images_expected}, got ${actual}"
  mkdir -p "$images_dir"
  if [ "$images_format" = zst ]; then
    mv -f "$tmp/images" "$images_dir/rke2-images.${SUFFIX}.tar.zst"
  else
    gzip -dc "$tmp/images" >"$images_dir/rke2-images.${SUFFIX}.tar"
  fi
  for image in "${dir}"/rke2-images-*."${SUFFIX}"*; do
    [ -f "$image" ] && cp "$image" "$images_dir"
  done
fi

info "verifying tarball"
actual=$(sha256sum "$tmp/tarball" | awk '{print $1}')
[ "$expected" = "$actual" ] || fatal "download sha256 does not match ${expected}, got ${actual}"
info "unpacking tarball file to ${prefix}"
mkdir -p "$prefix"
tar xzf "$tmp/tarball" -C "$prefix"
if [ "$prefix" != /usr/local ]; then
  sed -i "s|/usr/local|${prefix}|" "$prefix"/lib/systemd/system/rke2-*.service "$prefix/bin/rke2-uninstall.sh"
  mv -f "$prefix"/lib/systemd/system/rke2-*.service /etc/systemd/system/
fi
if [ -z "${INSTALL_RKE2_SKIP_RELOAD}" ]; then
  systemctl daemon-reload
fi
