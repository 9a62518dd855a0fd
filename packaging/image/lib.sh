# shellcheck shell=bash
# Shared by packaging/image/bake and packaging/image/verify (sourced, bash): finding and
# mounting a disk image's filesystems without partition scanning, running commands inside
# the image (chroot), and the checks every baked image must pass. docs/image.md explains why.
#
# Callers set PROG (the name in messages) and run inside a private mount namespace, so every
# mount (and the loop device `mount -o loop` made for it) goes away with the process even if
# it is killed.

# --- messages -------------------------------------------------------------------------------
# Progress goes to stdout; a failure is exactly one line on stderr (tools' own output, when
# it explains the failure, is printed to stdout before it).
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
check_failed() {
  printf '%s: check failed: %s\n' "$PROG" "$*" >&2
  exit 1
}

# --- partitions -----------------------------------------------------------------------------
# PARTS: one line per partition, "index offset size type uuid label partuuid partlabel"
# (bytes; "-" for an empty field; type, uuid and label of the filesystem in it).
PARTS=""

scan_partitions() { # RAW [NAME for messages]
  local raw=$1 json table idx start size ssize partuuid partlabel probe type uuid label
  PARTS=""
  json=$(sfdisk --json "$raw" 2>/dev/null) ||
    die "${2:-$raw} has no partition table; a cloud image (a partitioned disk) is needed"
  table=$(jq -r '.partitiontable.label' <<<"$json")
  ssize=$(jq -r '.partitiontable.sectorsize // 512' <<<"$json")
  while read -r idx start size partuuid partlabel; do
    if [ "$table" = dos ] && [ "$partuuid" = - ]; then
      # An MBR disk's PARTUUID is its disk id and the partition number.
      partuuid=$(printf '%s-%02x' "$(jq -r '.partitiontable.id' <<<"$json" | sed 's/^0x//')" "$idx")
    fi
    probe=$(blkid -p -o export --offset $((start * ssize)) --size $((size * ssize)) "$raw" 2>/dev/null || true)
    type=$(sed -n 's/^TYPE=//p' <<<"$probe")
    uuid=$(sed -n 's/^UUID=//p' <<<"$probe")
    label=$(sed -n 's/^LABEL=//p' <<<"$probe" | tr ' ' '_')
    PARTS+="$idx $((start * ssize)) $((size * ssize)) ${type:--} ${uuid:--} ${label:--} ${partuuid,,} ${partlabel}"$'\n'
  done < <(jq -r '.partitiontable.partitions | to_entries[] |
      "\(.value.node | capture("(?<n>[0-9]+)$").n) \(.value.start) \(.value.size) \(.value.uuid // "-") \((.value.name // "-") | gsub(" "; "_"))"' <<<"$json")
}

part_field() { # INDEX FIELD(2=offset 3=size 4=type ...)
  awk -v i="$1" -v f="$2" '$1 == i { print $f }' <<<"$PARTS"
}

# The partition an fstab source names (UUID=, LABEL=, PARTUUID=, PARTLABEL=, /dev/disk/by-*).
resolve_source() { # SOURCE
  local src=$1 col value
  case "$src" in
    UUID=* | /dev/disk/by-uuid/*) col=5 value=${src#UUID=} value=${value#/dev/disk/by-uuid/} ;;
    LABEL=* | /dev/disk/by-label/*) col=6 value=${src#LABEL=} value=${value#/dev/disk/by-label/} ;;
    PARTUUID=* | /dev/disk/by-partuuid/*) col=7 value=${src#PARTUUID=} value=${value#/dev/disk/by-partuuid/} value=${value,,} ;;
    PARTLABEL=* | /dev/disk/by-partlabel/*) col=8 value=${src#PARTLABEL=} value=${value#/dev/disk/by-partlabel/} ;;
    *) return 1 ;;
  esac
  value=${value//\"/}
  awk -v c="$col" -v v="${value// /_}" '$c == v { print $1; exit }' <<<"$PARTS"
}

linux_fs() { case "$1" in ext2 | ext3 | ext4 | xfs | btrfs) return 0 ;; *) return 1 ;; esac; }

mount_part() { # RAW INDEX DIR ro|rw
  local raw=$1 idx=$2 dir=$3 mode=$4 type opts
  type=$(part_field "$idx" 4)
  opts="loop,offset=$(part_field "$idx" 2),sizelimit=$(part_field "$idx" 3),$mode"
  # A read-only look must not replay a journal (that would write to the image).
  if [ "$mode" = ro ]; then
    case "$type" in ext3 | ext4) opts+=",noload" ;; xfs) opts+=",norecovery" ;; esac
  fi
  mount -t "$type" -o "$opts" "$raw" "$dir"
}

# ROOT_INDEX: the partition holding the operating system (etc/os-release and etc/fstab).
ROOT_INDEX=""
find_root() { # RAW PROBE_DIR
  local raw=$1 probe=$2 idx type
  ROOT_INDEX=""
  mkdir -p "$probe"
  while read -r idx _ _ type _; do
    [ -n "$idx" ] && linux_fs "$type" || continue
    mount_part "$raw" "$idx" "$probe" ro 2>/dev/null || continue
    if [ -e "$probe/etc/os-release" ] || [ -e "$probe/usr/lib/os-release" ]; then
      [ -f "$probe/etc/fstab" ] && ROOT_INDEX=$idx
    fi
    umount "$probe"
    [ -n "$ROOT_INDEX" ] && return 0
  done <<<"$PARTS"
  die "no partition of the image holds an operating system (/etc/os-release and /etc/fstab); is it a cloud image?"
}

# MOUNTED: the image's mount points under the root, innermost last (unmounted in reverse).
MOUNTED=()
EFI_DIR=""
mount_image() { # RAW ROOT_DIR ro|rw
  local raw=$1 root=$2 mode=$3 src mp idx
  mount_part "$raw" "$ROOT_INDEX" "$root" "$mode"
  MOUNTED=("$root")
  EFI_DIR=""
  # /boot on its own partition (Ubuntu 24.04's cloud images): initramfs updates write
  # there. The EFI system partition is never mounted: the bake does not touch the boot
  # loader, and the checks make sure nothing was written into its mount point.
  while read -r src mp _; do
    case "$src" in '' | \#*) continue ;; esac
    case "$mp" in
      /boot)
        idx=$(resolve_source "$src") || idx=""
        [ -n "$idx" ] || die "/etc/fstab mounts /boot from $src, which is no partition of this image"
        mount_part "$raw" "$idx" "$root/boot" "$mode"
        MOUNTED+=("$root/boot")
        ;;
      /boot/efi) EFI_DIR=/boot/efi ;;
    esac
  done <"$root/etc/fstab"
}

# Unmounts every mount point in the array named ARRAY, the last mounted first (lazily if it
# is busy), then empties the array.
umount_all() { # ARRAY
  local -n mounts=$1
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
  done
  mounts=()
}

umount_image() { umount_all MOUNTED; }

# --- inside the image -------------------------------------------------------------------------
# /proc, a minimal /dev and an empty /run: enough for dpkg, maintainer scripts, systemctl's
# offline mode and update-initramfs. No /sys, so nothing probes the build machine's hardware.
CHROOT_MOUNTS=()
chroot_prepare() { # ROOT
  local root=$1 n
  mount -t proc proc "$root/proc"
  CHROOT_MOUNTS=("$root/proc")
  mount -t tmpfs -o mode=0755,size=1m tmpfs "$root/dev"
  CHROOT_MOUNTS+=("$root/dev")
  for n in null zero full random urandom tty; do
    : >"$root/dev/$n"
    mount --bind "/dev/$n" "$root/dev/$n"
    CHROOT_MOUNTS+=("$root/dev/$n")
  done
  ln -s /proc/self/fd "$root/dev/fd"
  mkdir "$root/dev/shm" "$root/dev/pts"
  # A private pty instance: apt logs the packages' output through one.
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
  CHROOT_MOUNTS+=("$root/dev/pts")
  ln -s pts/ptmx "$root/dev/ptmx"
  mount -t tmpfs -o mode=0755 tmpfs "$root/run"
  CHROOT_MOUNTS+=("$root/run")
}

chroot_release() { umount_all CHROOT_MOUNTS; }

in_image() { # ROOT CMD...  (a clean environment; systemctl works on files, offline)
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    SYSTEMD_OFFLINE=1 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    NEEDRESTART_SUSPEND=1 "$@"
}

unit_state() { # ROOT UNIT -> enabled | disabled | static | ... | missing
  local out
  out=$(in_image "$1" systemctl is-enabled "$2" 2>/dev/null) || true
  echo "${out:-missing}"
}

pkg_installed() { # ROOT PACKAGE
  [ "$(in_image "$1" dpkg-query -W -f '${Status}' "$2" 2>/dev/null)" = "install ok installed" ]
}

# --- provisioning: who answers Azure's first boot (docs/image.md) ------------------------------
# agent: canarie-agent provisions the VM from IMDS and reports to WireServer; cloud-init and
# walinuxagent are purged with their leftovers. cloud-init: the base image's agent does
# Azure's provisioning, canarie-agent the cluster (the split of images baked before).
PROVISIONING_MODES="agent cloud-init"
PROVISIONING_MARKER=/usr/share/canarie-image/provisioning
PROVISIONING_AGENTS="cloud-init walinuxagent azure-init"
# Purged in agent mode (cloud-init-base: Debian 13 splits cloud-init; waagent: Debian's name).
PURGED_AGENTS="cloud-init cloud-init-base walinuxagent waagent"
# What they leave behind when purged, or what a booted base carries: state, config, logs,
# and the network and SSH configuration cloud-init wrote for the base's own first boot.
AGENT_LEFTOVERS="/etc/cloud /var/lib/cloud /var/lib/waagent /etc/waagent.conf /var/log/cloud-init.log
/var/log/cloud-init-output.log /var/log/waagent.log /etc/netplan/50-cloud-init.yaml
/etc/network/interfaces.d/50-cloud-init /etc/network/interfaces.d/50-cloud-init.cfg
/etc/sudoers.d/90-cloud-init-users /etc/ssh/sshd_config.d/50-cloud-init.conf
/etc/systemd/system/cloud-init.target.wants /etc/systemd/system/cloud-config.target.wants"
# Without cloud-init nothing writes a network configuration at boot: systemd-networkd runs
# DHCP on Azure's synthetic NIC (hv_netvsc; with accelerated networking the Mellanox VF
# with the same MAC is its slave and must stay unconfigured), and systemd-resolved takes
# the DNS servers DHCP names (Azure's 168.63.129.16, or the VNet's own).
NETWORK_FILE=/etc/systemd/network/50-canarie-azure.network
NETWORK_UNITS="systemd-networkd.service systemd-resolved.service"
network_file_content() {
  cat <<'NETWORK'
# canarie node image (packaging/image/bake, --provisioning agent): no cloud-init writes a
# network configuration, so systemd-networkd does DHCP on Azure's synthetic NIC. The
# accelerated-networking VF (mlx4/mlx5, same MAC) is driven through it and left alone.
[Match]
Driver=hv_netvsc

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseDomains=true
NETWORK
}

# A unit or link under /etc/systemd that still belongs to a purged agent.
stray_agent_link() { # ROOT -> the first such path, or nothing
  find "$1/etc/systemd" \( -type l -o -type f \) \( -name 'cloud-init*' -o -name 'cloud-config*' -o -name 'cloud-final*' \
    -o -name 'walinuxagent*' -o -name 'waagent*' \) -print -quit 2>/dev/null || true
}

provisioning_checks() { # ROOT MODE
  local root=$1 mode=$2 f pkg state unit
  pkg_installed "$root" openssh-server || check_failed "openssh-server is not installed (Azure's admin login needs sshd)"
  case "$mode" in
    agent)
      for pkg in $PURGED_AGENTS azure-init; do
        state=$(in_image "$root" dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null || true)
        case "$state" in
          "" | *" not-installed") ;;
          "install ok installed") check_failed "$pkg is installed, but the image is baked for --provisioning agent (canarie-agent provisions the VM)" ;;
          *) check_failed "$pkg is not purged (dpkg: $state): its configuration is left in the image" ;;
        esac
      done
      for f in $AGENT_LEFTOVERS; do
        [ ! -e "$root$f" ] && [ ! -L "$root$f" ] || check_failed "$f is left in the image (a cloud-init/walinuxagent leftover)"
      done
      f=$(stray_agent_link "$root")
      [ -z "$f" ] || check_failed "${f#"$root"} is left in the image (a unit of a purged provisioning agent)"
      [ -f "$root$NETWORK_FILE" ] && [ "$(cat "$root$NETWORK_FILE")" = "$(network_file_content)" ] ||
        check_failed "$NETWORK_FILE is missing or changed: without cloud-init the NIC gets no address"
      for unit in $NETWORK_UNITS; do
        state=$(unit_state "$root" "$unit")
        [ "$state" = enabled ] || check_failed "$unit is $state, not enabled (the network without cloud-init needs it)"
      done
      ;;
    cloud-init)
      for f in $PROVISIONING_AGENTS; do
        pkg_installed "$root" "$f" && return 0
      done
      check_failed "no provisioning agent (${PROVISIONING_AGENTS// /, }) in the image: Azure would never see the VM as ready"
      ;;
    *) check_failed "the image's provisioning mode is '$mode' ($PROVISIONING_MARKER; one of: $PROVISIONING_MODES)" ;;
  esac
}

# --- the checks every baked image passes ------------------------------------------------------
RKE2_UNITS="rke2-server.service rke2-agent.service"
ISCSI_UNITS="iscsid.service iscsid.socket"

image_checks() { # ROOT [AGENT_VERSION] [PROVISIONING MODE; default: the image's marker]
  local root=$1 want_version=${2:-} mode=${3:-} got unit state f line src
  if [ -z "$mode" ]; then
    mode=$(cat "$root$PROVISIONING_MARKER" 2>/dev/null || true)
    [ -n "$mode" ] || check_failed "$PROVISIONING_MARKER is missing: not an image the bake wrote (or baked before --provisioning)"
  fi
  got=$(in_image "$root" dpkg-query -W -f '${Status} ${Version}' canarie-agent 2>/dev/null || true)
  case "$got" in
    "install ok installed "*) ;;
    *) check_failed "canarie-agent is not installed in the image (dpkg: ${got:-unknown package})" ;;
  esac
  [ -z "$want_version" ] || [ "${got##* }" = "$want_version" ] ||
    check_failed "canarie-agent ${got##* } is installed, not the .deb's $want_version"
  state=$(unit_state "$root" canarie-agent.service)
  [ "$state" = enabled ] && [ -L "$root/etc/systemd/system/multi-user.target.wants/canarie-agent.service" ] ||
    check_failed "canarie-agent.service is not enabled (systemctl is-enabled: $state; it must be wanted by multi-user.target)"
  # Without it sshd's first start finds no host keys (the image has none) and fails.
  state=$(unit_state "$root" canarie-ssh-host-keys.service)
  [ "$state" = enabled ] && [ -L "$root/etc/systemd/system/multi-user.target.wants/canarie-ssh-host-keys.service" ] ||
    check_failed "canarie-ssh-host-keys.service is not enabled (systemctl is-enabled: $state; it must be wanted by multi-user.target)"

  for unit in $RKE2_UNITS; do
    state=$(unit_state "$root" "$unit")
    [ "$state" != missing ] || check_failed "$unit is not installed (did RKE2's install.sh run?)"
    [ "$state" = disabled ] ||
      check_failed "$unit is $state, it must be installed but disabled: canarie-agent is the one that starts RKE2"
  done
  [ -x "$root/usr/local/bin/rke2" ] || [ -x "$root/opt/rke2/bin/rke2" ] ||
    check_failed "no rke2 binary in /usr/local/bin or /opt/rke2/bin"

  pkg_installed "$root" open-iscsi || check_failed "open-iscsi is not installed (Longhorn needs it)"
  for unit in $ISCSI_UNITS; do
    state=$(unit_state "$root" "$unit")
    [ "$state" = enabled ] || check_failed "$unit is $state, not enabled (Longhorn needs iscsid)"
  done
  grep -qx 'GenerateName=yes' "$root/etc/iscsi/initiatorname.iscsi" 2>/dev/null &&
    ! grep -q '^InitiatorName=' "$root/etc/iscsi/initiatorname.iscsi" ||
    check_failed "/etc/iscsi/initiatorname.iscsi holds a fixed InitiatorName; every VM from the image would share it"

  [ -f "$root/etc/machine-id" ] && [ ! -L "$root/etc/machine-id" ] && [ ! -s "$root/etc/machine-id" ] ||
    check_failed "/etc/machine-id is not an empty file (every VM from the image would share its id)"
  [ ! -f "$root/var/lib/dbus/machine-id" ] || [ -L "$root/var/lib/dbus/machine-id" ] ||
    check_failed "/var/lib/dbus/machine-id holds an id (remove it; D-Bus then uses /etc/machine-id)"
  f=$(compgen -G "$root/etc/ssh/ssh_host_*" | head -n 1 || true)
  [ -z "$f" ] || check_failed "SSH host key ${f#"$root"} is left in the image (every VM would share it)"
  [ ! -e "$root/var/lib/systemd/random-seed" ] || check_failed "/var/lib/systemd/random-seed is left in the image"

  f=$(find "$root/var/log" -type f -size +0 -print -quit 2>/dev/null || true)
  [ -z "$f" ] || check_failed "log file ${f#"$root"} is not empty"
  f=$(find "$root/var/cache/apt" "$root/var/lib/apt/lists" -type f ! -name lock -print -quit 2>/dev/null || true)
  [ -z "$f" ] || check_failed "apt cache file ${f#"$root"} is left in the image"
  [ ! -e "$root/var/lib/cloud/instance" ] || check_failed "cloud-init's state from a previous boot is left in /var/lib/cloud"
  if [ -n "${EFI_DIR:-}" ] && [ -n "$(ls -A "$root$EFI_DIR" 2>/dev/null)" ]; then
    check_failed "files were written into $EFI_DIR on the root filesystem (the EFI partition was not mounted)"
  fi

  provisioning_checks "$root" "$mode"
  f=$(grep -rlis -e 'rke2' -e 'k3s' "$root/etc/cloud" 2>/dev/null | head -n 1 || true)
  [ -z "$f" ] || check_failed "${f#"$root"} mentions rke2/k3s: the image must carry no cluster logic for cloud-init (canarie-agent bootstraps the cluster)"

  # The static agent resolves names with glibc's built-in files/dns; an installed NSS module
  # on the hosts: line would be loaded from the image's glibc (docs/packaging.md).
  line=$(sed -n 's/^hosts:[[:space:]]*//p' "$root/etc/nsswitch.conf" 2>/dev/null | head -n 1)
  for src in $line; do
    case "$src" in files | dns | \[*) continue ;; esac
    if compgen -G "$root/usr/lib/x86_64-linux-gnu/libnss_${src}.so.*" >/dev/null ||
      compgen -G "$root/lib/x86_64-linux-gnu/libnss_${src}.so.*" >/dev/null; then
      check_failed "/etc/nsswitch.conf's hosts: line uses '$src', whose NSS module is installed; the static agent needs 'hosts: files dns' (docs/packaging.md)"
    fi
  done
}

# --- the VHD Azure takes ------------------------------------------------------------------------
# Fixed subformat (Azure takes no dynamic VHD), virtual size a whole number of MiB: the file
# is the raw disk followed by a 512-byte footer whose disk type is 2 (fixed).
vhd_checks() { # VHD [EXPECTED_VIRTUAL_SIZE]
  local vhd=$1 want=${2:-} info format vsize fsize cookie type
  # A fixed VHD has no header, only the footer: qemu-img's format probe calls it raw.
  info=$(qemu-img info -f vpc --output=json "$vhd" 2>&1) ||
    check_failed "$vhd is not a VHD (qemu-img: $(tail -n 1 <<<"$info"))"
  format=$(jq -r .format <<<"$info")
  vsize=$(jq -r '."virtual-size"' <<<"$info")
  fsize=$(stat -c %s "$vhd")
  [ "$format" = vpc ] || check_failed "$vhd is $format, not a VHD"
  [ $((vsize % 1048576)) -eq 0 ] || check_failed "$vhd's virtual size $vsize is not a whole number of MiB (Azure refuses it)"
  [ -z "$want" ] || [ "$vsize" -eq "$want" ] || check_failed "$vhd's virtual size is $vsize, not $want"
  cookie=$(tail -c 512 "$vhd" | head -c 8 | tr -d '\0')
  type=$(tail -c 512 "$vhd" | od -An -tx1 -j 60 -N 4 | tr -d ' \n')
  [ "$fsize" -eq $((vsize + 512)) ] && [ "$cookie" = conectix ] && [ "$type" = 00000002 ] ||
    check_failed "$vhd is not a fixed VHD (file $fsize bytes for virtual size $vsize, footer '$cookie' type $type)"
}
