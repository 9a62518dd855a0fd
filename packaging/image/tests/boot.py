"""The baked VHD booted by the vm-tests QEMU harness (vm-tests/harness, docs/vm-tests.md):
the VHD itself is the backing file of each VM's OS disk, the kernel and initramfs come from
its /boot, and cp-01 and wk-01 go through the harness's own fresh-cluster scenario, with
its guest and host checks, exactly like the images the VM tests build directly."""

from __future__ import annotations

from pathlib import Path

from harness import image as vm_image
from harness import scenarios, sim, timing, vm
from harness.cluster import Run, extract_binary
from harness.scenarios import Cluster, Scenario, run_guarded

NODES = ["cp-01", "wk-01"]  # a server and an agent with a data disk: two guests, one round


def boot_files(vhd: Path, dest: Path, image_shell) -> tuple[Path, Path]:
    """The kernel and initramfs from the image's /boot (QEMU boots them with -kernel)."""
    p = image_shell(vhd, "ro", f"""
      set -- "$root"/boot/vmlinuz-*; [ $# -eq 1 ] || {{ echo "kernels: $*" >&2; exit 1; }}
      cp "$1" {dest}/vmlinuz
      set -- "$root"/boot/initrd.img-*; [ $# -eq 1 ] || {{ echo "initramfs: $*" >&2; exit 1; }}
      cp "$1" {dest}/initrd.img
    """)
    if p.returncode != 0:
        raise RuntimeError(f"cannot take the kernel and initramfs out of {vhd}: {p.stderr.strip()}")
    return dest / "vmlinuz", dest / "initrd.img"


def boot_baked(results, work: Path, vhd: Path, deb: Path, image_shell) -> None:
    work = work / "vms"
    work.mkdir()
    kernel, initrd = boot_files(vhd, work, image_shell)
    # GPT: the root filesystem is partition 1; the VHD (vpc) is read as it will be on Azure.
    image = vm_image.Image(root=vhd, kernel=kernel, initrd=initrd, root_device="/dev/vda1", format="vpc")
    r = Run(work=work, image=image, agent_binary=extract_binary(deb, work), join_token=Run.new_token())
    sc = Scenario("baked-image", "cp-01 and wk-01 boot from the baked VHD and converge")
    try:
        run_guarded(sc, scenarios.fresh_cluster, Cluster(r), NODES)
    finally:
        vm.kill_all()
        sim.stop_all(r.sims)
    print("\n".join(timing.table(sc.boots)))
    for ok, what in sc.checks:
        results.check(ok, f"baked image boot: {what}")
    if sc.error:
        results.check(False, f"baked image boot: {sc.error}")
    for label, b in sc.boots:
        iscsid = b.data.get("units", {}).get("iscsid.service", {})
        results.check(iscsid.get("ActiveState") == "active" and iscsid.get("UnitFileState") == "enabled",
                      f"baked image boot: {label}: iscsid.service {iscsid.get('ActiveState')} "
                      f"({iscsid.get('UnitFileState')}), started at boot")
