#!/bin/sh
# mmdebstrap --customize-hook for the cached root filesystem; $1 is the root.
# A small initramfs (the VMs boot with -kernel/-initrd and need only virtio + ext4), which
# also makes the TCG boot faster than MODULES=most.
set -eu
root=$1
echo 'MODULES=list' > "$root/etc/initramfs-tools/conf.d/canarie-vmtest.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ext4 crc32c_generic >> "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all
# openssh-server's postinst generated host keys: a generalized image carries none (every VM
# would share them); canarie-agent (or cloud-init, in the baseline) creates them per VM.
rm -f "$root"/etc/ssh/ssh_host_*
