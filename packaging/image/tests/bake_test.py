"""Tests of packaging/image/bake (docs/image.md), run by scripts/test.d/70-image-bake.sh:

    bake_test.py prepare          needs the network once: the open-iscsi .debs (cached)
    bake_test.py test --deb DEB   offline: argument handling, a real bake of a Debian 12
                                  cloud-style image, its checks, `verify` on broken copies,
                                  and the baked VHD booting in the vm-tests QEMU harness

The base image is the vm-tests root filesystem (vm-tests/harness/image.py, cached) laid out
like Ubuntu 24.04's cloud image: GPT, /boot on partition 16, an EFI partition 15, the root
filesystem last on partition 1, mounted by label; plus what a once-booted image would carry
(machine-id, SSH host keys, logs, apt caches, cloud-init state) for the bake to remove. RKE2
is a stand-in artifact set with the release's file layout, whose binary and units are the
vm-tests stand-ins."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "vm-tests"))

from harness import image as vm_image  # noqa: E402  (the vm-tests harness, reused)
from harness import vm  # noqa: E402
from harness.util import CACHE_DIR, log, run  # noqa: E402

BAKE = REPO / "packaging/image/bake"
VERIFY = REPO / "packaging/image/verify"
LIB = REPO / "packaging/image/lib.sh"
STANDIN_INSTALL = Path(__file__).resolve().parent / "rke2-standin/install.sh"
MIB = 1024 * 1024
BASE_SIZE = 1536 * MIB  # the root filesystem fills ~800 MB of it
BAKED_SIZE = "2G"  # grown by the bake (--size): exercises partition and filesystem growth
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
IMAGE_TARBALLS = ["rke2-images-cilium.linux-amd64.tar.gz", "rke2-images-core.linux-amd64.tar.gz"]


class Failed(Exception):
    pass


class Results:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def check(self, ok: bool, what: str) -> bool:
        self.count += 1
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


# --- inputs ------------------------------------------------------------------------------------

def debs_cache() -> Path:
    return CACHE_DIR / f"image-bake-debs-{vm_image.rootfs_key()}"


# What the base (the vm-tests root filesystem) lacks: open-iscsi for Longhorn, and for
# --provisioning agent systemd-resolved (DNS from DHCP without cloud-init).
EXTRA_PACKAGES = ["open-iscsi", "systemd-resolved"]


def prepare() -> None:
    """EXTRA_PACKAGES and what they need beyond the base image, resolved by the host's apt
    against the base image's own dpkg status (the recipe docs/image.md gives users)."""
    dest = debs_cache()
    if dest.exists() and all(any(dest.glob(f"{p}_*.deb")) for p in EXTRA_PACKAGES):
        log(f"image-bake: cached open-iscsi packages in {dest}")
        return
    vm_image.download_debs(EXTRA_PACKAGES, dest)
    log(f"image-bake: downloaded {', '.join(p.name for p in sorted(dest.glob('*.deb')))}")


def _tar(entries: dict[str, tuple[int, bytes]]) -> bytes:
    """A reproducible tarball: sorted, root-owned, fixed mtime, directories included."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parents[i]) for p in entries for i in range(len(Path(p).parts) - 1)})
        for name in dirs + sorted(entries):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1700000000, 0, 0, "root", "root"
            if name in entries:
                mode, data = entries[name]
                info.mode, info.size = mode, len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def make_rke2_artifacts(dest: Path) -> Path:
    """RKE2's air-gap release files for amd64, same names and tarball layout as a release,
    small: bin/rke2 and the two units are the vm-tests stand-ins (they check what the agent
    wrote and record each start), install.sh is tests/rke2-standin/install.sh."""
    guest = vm_image.GUEST_TREE
    units = guest / "usr/local/lib/systemd/system"
    dest.mkdir(parents=True)
    tarball = _tar({
        "bin/rke2": (0o755, (guest / "usr/local/bin/rke2").read_bytes()),
        "bin/rke2-killall.sh": (0o755, b"#!/bin/sh\n# stand-in for RKE2's killall script\nexit 0\n"),
        "bin/rke2-uninstall.sh": (0o755, b"#!/bin/sh\n# stand-in for RKE2's uninstall script (/usr/local)\nexit 0\n"),
        "lib/systemd/system/rke2-server.service": (0o644, (units / "rke2-server.service").read_bytes()),
        "lib/systemd/system/rke2-agent.service": (0o644, (units / "rke2-agent.service").read_bytes()),
        "lib/systemd/system/rke2-server.env": (0o644, b"HOME=/root\n"),
        "lib/systemd/system/rke2-agent.env": (0o644, b"HOME=/root\n"),
        "share/rke2/LICENSE.txt": (0o644, b"stand-in for RKE2's LICENSE.txt\n"),
        "share/rke2/rke2-cis-sysctl.conf": (0o644, b"# stand-in for RKE2's CIS sysctl settings\n"),
    })
    # A split image set (core + the CNI), as for a Cilium cluster, instead of the all-in-one
    # rke2-images.linux-amd64.tar.zst.
    sums = {"rke2.linux-amd64.tar.gz": tarball, "rke2.linux-amd64": b"not downloaded"}
    for part in IMAGE_TARBALLS:
        sums[part] = _tar({f"{part}.txt": (0o644, f"stand-in for {part}\n".encode())})
        (dest / part).write_bytes(sums[part])
    (dest / "rke2.linux-amd64.tar.gz").write_bytes(tarball)
    # Like a release's file, it lists more assets than the ones downloaded.
    (dest / "sha256sum-amd64.txt").write_text(
        "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(sums.items())))
    shutil.copyfile(STANDIN_INSTALL, dest / "install.sh")
    return dest


def build_base(work: Path) -> Path:
    """The Debian 12 base image as a qcow2 (the format of Ubuntu's downloadable .img)."""
    tarball = vm_image.rootfs_tarball()
    rootfs = work / "base-rootfs"
    rootfs.mkdir()
    try:
        run(["tar", "-xf", str(tarball), "-C", str(rootfs), "--numeric-owner"])
        # The vm-tests guest side (network, fw_cfg inputs, check unit), without its RKE2
        # stand-in: RKE2 comes from the artifact set, installed by the bake.
        vm_image.install_guest_tree(rootfs, rke2_standin=False)
        (rootfs / "etc/fstab").write_text(
            "LABEL=cloudimg-rootfs / ext4 rw,discard,errors=remount-ro 0 1\n"
            "LABEL=BOOT /boot ext4 defaults 0 2\n"
            "LABEL=UEFI /boot/efi vfat umask=0077,nofail 0 1\n")
        plant_leftovers(rootfs)
        boot = work / "boot.ext4"
        boot_tree = work / "boot-tree"
        (rootfs / "boot").rename(boot_tree)
        (rootfs / "boot").mkdir()  # the mount points, as in Ubuntu's image
        (boot_tree / "efi").mkdir()
        run(["truncate", "-s", "200M", str(boot)])
        run(["mkfs.ext4", "-q", "-F", "-L", "BOOT", "-d", str(boot_tree), str(boot)])
        esp = work / "esp.vfat"
        run(["mkfs.vfat", "-C", "-n", "UEFI", str(esp), str(32 * 1024)])
        root = work / "root.ext4"
        root_size = BASE_SIZE - 234 * MIB - MIB  # after 1 MiB gap, ESP and BOOT; GPT backup at the end
        run(["truncate", "-s", str(root_size), str(root)])
        run(["mkfs.ext4", "-q", "-F", "-L", "cloudimg-rootfs", "-d", str(rootfs), str(root)])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        shutil.rmtree(work / "boot-tree", ignore_errors=True)
    raw = work / "base.raw"
    run(["truncate", "-s", str(BASE_SIZE), str(raw)])
    s = 2048  # sectors: 1 MiB
    layout = (f"label: gpt\n"
              f"{raw}15 : start={s}, size={32 * 2048}, type={ESP}, name=UEFI\n"
              f"{raw}16 : start={s + 32 * 2048}, size={200 * 2048}, type={LINUX_FS}, name=BOOT\n"
              f"{raw}1 : start={s + 232 * 2048}, size={root_size // 512}, type={ROOT_X86_64}, name=cloudimg-rootfs\n")
    run(["sfdisk", "-q", str(raw)], input=layout)
    for part, start in ((esp, s), (boot, s + 32 * 2048), (root, s + 232 * 2048)):
        run(["dd", f"if={part}", f"of={raw}", "bs=1M", f"seek={start // 2048}", "conv=notrunc,sparse", "status=none"])
        part.unlink()
    qcow2 = work / "base.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    raw.unlink()
    return qcow2


LEFTOVERS = {
    # path: content; what a base image that was booted once would carry
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
    "etc/ssh/ssh_host_ed25519_key": "not a real key\n",
    "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA not-real\n",
    "var/log/syslog": "a log line from a previous boot\n",
    "var/log/syslog.1": "an older log line\n",
    "var/log/journal/0123456789abcdef0123456789abcdef/system.journal": "journal bytes\n",
    "var/cache/apt/archives/leftover_1.0_all.deb": "a cached package\n",
    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages": "Package: x\n",
    "var/lib/cloud/instances/previous-vm/boot-finished": "1\n",
    "var/lib/systemd/random-seed": "seed\n",
    "root/.bash_history": "history\n",
    # what cloud-init and walinuxagent wrote on the base's own first boot
    "etc/netplan/50-cloud-init.yaml": "network: {version: 2}\n",
    "etc/network/interfaces.d/50-cloud-init": "auto eth0\n",
    "etc/ssh/sshd_config.d/50-cloud-init.conf": "PasswordAuthentication yes\n",
    "etc/sudoers.d/90-cloud-init-users": "azureuser ALL=(ALL) NOPASSWD:ALL\n",
    "var/lib/waagent/Incarnation": "1\n",
    "etc/waagent.conf": "Provisioning.Agent=auto\n",
    "var/log/cloud-init.log": "a cloud-init log line\n",
}


def plant_leftovers(rootfs: Path) -> None:
    for rel, content in LEFTOVERS.items():
        p = rootfs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    (rootfs / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/previous-vm")
    # A stray link to a walinuxagent unit (the package is gone, its enablement is not).
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "walinuxagent.service").symlink_to("/lib/systemd/system/walinuxagent.service")


# --- running the commands ------------------------------------------------------------------------

def bake(out: Path, base: Path, deb: Path, artifacts: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BAKE), "--base", str(base), "--deb", str(deb), "--rke2-artifacts", str(artifacts),
                           "--output", str(out), *extra], capture_output=True, text=True)


def image_shell(vhd: Path, mode: str, script: str) -> subprocess.CompletedProcess:
    """Runs a bash script with the image's root filesystem (and /boot) mounted at $root,
    in a private mount namespace, using the bake's own lib.sh to find and mount them."""
    prelude = (f'PROG=test; . {LIB}; root=$(mktemp -d); trap \'umount_image; rmdir "$root"\' EXIT; '
               f'scan_partitions {vhd}; find_root {vhd} "$root"; mount_image {vhd} "$root" {mode}; ')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-euo", "pipefail", "-c",
                           prelude + script], capture_output=True, text=True)


def one_line_error(p: subprocess.CompletedProcess, prog: str, *words: str) -> tuple[bool, str]:
    lines = p.stderr.strip().splitlines()
    ok = (p.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"{prog}: ")
          and all(w in lines[0] for w in words))
    return ok, f"exit {p.returncode}, stderr: {p.stderr.strip()!r}"


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(".canarie-bake.*"))


def loops_on(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if str(path) in l]


# --- the tests ---------------------------------------------------------------------------------

def test_arguments(r: Results, work: Path, base: Path, deb: Path, artifacts: Path) -> None:
    """Bad input: one line naming what is wrong, non-zero exit, no output, nothing left."""
    out = work / "args" / "node.vhd"
    out.parent.mkdir()
    debs = debs_cache()

    def case(what: str, p: subprocess.CompletedProcess, *words: str) -> None:
        ok, detail = one_line_error(p, "bake", *words)
        r.check(ok and no_leftovers(out) and not loops_on(work / "args"), f"bake {what}: {detail}")

    case("without arguments", subprocess.run([str(BAKE)], capture_output=True, text=True), "--base is missing")
    case("with an unknown option", bake(out, base, deb, artifacts, "--colour"), "unknown argument '--colour'")
    case("with a missing base image", bake(out, work / "nope.qcow2", deb, artifacts), "nope.qcow2 does not exist")
    bare = work / "args" / "bare.raw"  # a filesystem, no partition table: not a cloud image
    run(["truncate", "-s", "64M", str(bare)])
    run(["mkfs.ext4", "-q", str(bare)])
    case("with a disk without a partition table", bake(out, bare, deb, artifacts, "--extra-debs", str(debs)),
         "bare.raw has no partition table")
    bare.unlink()
    other = sorted(debs.glob("open-iscsi_*.deb"))[0]
    case("with another package as --deb", bake(out, base, other, artifacts), "not canarie-agent")

    def broken_artifacts(name: str, change) -> Path:
        d = work / "args" / name
        shutil.copytree(artifacts, d)
        change(d)
        return d

    d = broken_artifacts("no-sums", lambda d: (d / "sha256sum-amd64.txt").unlink())
    case("without sha256sum-amd64.txt", bake(out, base, deb, d, "--extra-debs", str(debs)), "sha256sum-amd64.txt is missing")
    d = broken_artifacts("no-tarball", lambda d: (d / "rke2.linux-amd64.tar.gz").unlink())
    case("without the RKE2 tarball", bake(out, base, deb, d, "--extra-debs", str(debs)), "rke2.linux-amd64.tar.gz is missing")

    def tamper(d: Path) -> None:
        with open(d / "rke2.linux-amd64.tar.gz", "ab") as f:
            f.write(b"x")
    d = broken_artifacts("bad-sum", tamper)
    case("with a tarball that does not match its checksum", bake(out, base, deb, d, "--extra-debs", str(debs)),
         "rke2.linux-amd64.tar.gz does not match sha256sum-amd64.txt", "download it again")
    d = broken_artifacts("unlisted-images", lambda d: shutil.copyfile(
        d / IMAGE_TARBALLS[0], d / "rke2-images-extra.linux-amd64.tar.gz"))
    case("with an image tarball the checksum file does not list", bake(out, base, deb, d, "--extra-debs", str(debs)),
         "rke2-images-extra.linux-amd64.tar.gz is not listed")

    def big_images(d: Path) -> None:
        big = d / "rke2-images-big.linux-amd64.tar.zst"  # sparse: 1 GiB of zeros
        with open(big, "wb") as f:
            f.truncate(1024 * MIB)
        with open(d / "sha256sum-amd64.txt", "a") as f:
            f.write(f"{hashlib.sha256(bytes(1024 * MIB)).hexdigest()}  {big.name}\n")
    d = broken_artifacts("big-images", big_images)
    case("with more to install than the image has room for", bake(out, base, deb, d, "--extra-debs", str(debs)),
         "MiB free and the bake needs about", "pass --size")
    case("with an unknown provisioning mode", bake(out, base, deb, artifacts, "--provisioning", "ignition"),
         "--provisioning ignition is not a mode")
    case("with --size below the base's size", bake(out, base, deb, artifacts, "--size", "1G"), "smaller than the base image")
    # Found only inside the image: the base has no open-iscsi and none was given.
    case("without open-iscsi anywhere", bake(out, base, deb, artifacts), "open-iscsi is neither in the base image nor in --extra-debs")
    out.write_text("precious")
    p = bake(out, base, deb, artifacts, "--extra-debs", str(debs))
    ok, detail = one_line_error(p, "bake", "exists (pass --force")
    r.check(ok and out.read_text() == "precious", f"bake refuses to overwrite an existing output: {detail}")
    out.unlink()


def test_failed_check(r: Results, work: Path, base: Path, deb: Path, artifacts: Path) -> None:
    """A check that fails at the end of a bake fails the bake: one line, no output. Here an
    installer that slips cluster logic into cloud-init's configuration."""
    out = work / "check" / "node.vhd"
    out.parent.mkdir()
    d = out.parent / "rke2-artifacts"
    shutil.copytree(artifacts, d)
    with open(d / "install.sh", "a") as f:
        f.write("mkdir -p /etc/cloud/cloud.cfg.d\n"
                "printf 'runcmd:\\n  - systemctl enable --now rke2-server\\n' >/etc/cloud/cloud.cfg.d/50-rke2.cfg\n")
    # With --provisioning agent, /etc/cloud goes with cloud-init; the split keeps it.
    p = bake(out, base, deb, d, "--extra-debs", str(debs_cache()), "--provisioning", "cloud-init")
    ok, detail = one_line_error(p, "bake", "check failed: /etc/cloud/cloud.cfg.d/50-rke2.cfg mentions rke2")
    r.check(ok and no_leftovers(out) and not loops_on(out.parent), f"a failed check fails the bake, nothing left: {detail}")


def test_bake(r: Results, work: Path, base: Path, deb: Path, artifacts: Path) -> tuple[Path, float]:
    vhd = work / "canarie-node.vhd"
    base_sum = hashlib.sha256(base.read_bytes()).hexdigest()
    t0 = time.monotonic()
    p = bake(vhd, base, deb, artifacts, "--extra-debs", str(debs_cache()), "--size", BAKED_SIZE)
    seconds = time.monotonic() - t0
    print(p.stdout, end="")
    if not r.check(p.returncode == 0 and vhd.exists(), f"bake succeeds in {seconds:.0f} s (stderr: {p.stderr.strip()!r})"):
        raise Failed("the bake failed; nothing else to test")
    r.check(hashlib.sha256(base.read_bytes()).hexdigest() == base_sum, "the base image is unchanged")
    r.check(not list(work.glob(".canarie-bake.*")) and not loops_on(work), "no work directory or loop device left")

    info = json.loads(run(["qemu-img", "info", "-f", "vpc", "--output=json", str(vhd)]).stdout)
    vsize = info["virtual-size"]
    r.check(info["format"] == "vpc" and vsize == 2048 * MIB and vhd.stat().st_size == vsize + 512,
            f"fixed VHD: format {info['format']}, virtual size {vsize} (2 GiB, whole MiB), file {vhd.stat().st_size} bytes")
    p = subprocess.run([str(VERIFY), str(vhd)], capture_output=True, text=True)
    r.check(p.returncode == 0 and not p.stderr, f"verify accepts the baked image: {p.stdout.strip().splitlines()[-1:]} {p.stderr.strip()}")

    # What the image holds, read back from the VHD.
    script = r"""
      cd "$root"
      printf 'machine-id %s\n' "$(stat -c %s etc/machine-id)"
      for p in """ + " ".join(LEFTOVERS) + r""" var/lib/cloud/instance; do
        if [ -s "$p" ] || [ -L "$p" ]; then echo "left $p"; fi
      done
      echo "dbus-machine-id $(stat -c %F var/lib/dbus/machine-id 2>/dev/null || echo none)"
      echo "agent $(chroot . dpkg-query -W -f '${Version}' canarie-agent)"
      echo "iscsi $(chroot . dpkg-query -W -f '${Version}' open-iscsi)"
      echo "initiator $(cat etc/iscsi/initiatorname.iscsi)"
      echo "rke2 $(cmp -s usr/local/bin/rke2 """ + str(vm_image.GUEST_TREE / "usr/local/bin/rke2") + r""" && echo stand-in)"
      echo "units $(ls usr/local/lib/systemd/system | tr '\n' ' ')"
      echo "images $(ls var/lib/rancher/rke2/agent/images | tr '\n' ' ')"
      echo "wants $(ls etc/systemd/system/multi-user.target.wants | tr '\n' ' ')"
      echo "sysinit $(ls etc/systemd/system/sysinit.target.wants | tr '\n' ' ')"
      echo "preset $(grep -c . etc/systemd/system-preset/20-canarie.preset)"
      echo "policy-rc.d $(test -e usr/sbin/policy-rc.d && echo present || echo absent)"
      echo "initrd-iscsi $(chroot . lsinitramfs "/boot/$(cd boot && ls initrd.img-*)" | grep -c 'scripts/local-top/iscsi' || true)"
      echo "provisioning $(cat usr/share/canarie-image/provisioning)"
      for p in cloud-init walinuxagent openssh-server systemd-resolved; do
        echo "pkg $p $(chroot . dpkg-query -W -f '${Status}' $p 2>/dev/null | awk '{print $NF}')"
      done
      echo "stray $(find etc/systemd \( -name 'cloud-*' -o -name 'walinuxagent*' \) | tr '\n' ' ')"
      echo "network $(cat etc/systemd/network/50-canarie-azure.network | grep -c 'Driver=hv_netvsc')"
      echo "resolv $(readlink etc/resolv.conf)"
      echo "networkd $(chroot . env SYSTEMD_OFFLINE=1 systemctl is-enabled systemd-networkd.service systemd-resolved.service | tr '\n' ' ')"
      echo "host-keys $(ls etc/ssh | grep -c '^ssh_host_' || true)"
      echo "root-size $(df -B1M --output=size . | tail -n 1 | tr -d ' ')"
      echo "tmp $(find tmp var/tmp -mindepth 1 | wc -l)"
      echo "journal-dirs $(find var/log/journal -mindepth 1 | wc -l)"
    """
    p = image_shell(vhd, "ro", script)
    facts = {}
    for line in p.stdout.splitlines():
        key, _, value = line.partition(" ")
        facts.setdefault(key, []).append(value)
    get = lambda k: (facts.get(k) or [""])[0]  # noqa: E731
    r.check(p.returncode == 0, f"the baked image mounts read-only ({p.stderr.strip()[-300:]})")
    r.check(get("machine-id") == "0", f"/etc/machine-id is empty ({get('machine-id')} bytes)")
    r.check(not facts.get("left"), f"the base's leftovers are gone (machine ids, SSH host keys, logs, journal, apt caches, "
                                   f"cloud-init state, random seed, history): left {facts.get('left')}")
    r.check(get("dbus-machine-id") == "none", f"/var/lib/dbus/machine-id removed ({get('dbus-machine-id')})")
    r.check(get("agent") == deb_version(deb), f"canarie-agent {get('agent')} installed")
    r.check(get("iscsi").startswith("2."), f"open-iscsi {get('iscsi')} installed from --extra-debs")
    r.check(get("initiator") == "GenerateName=yes", f"iSCSI initiator name generated per VM ({get('initiator')})")
    r.check(get("rke2") == "stand-in", "rke2 binary installed by install.sh into /usr/local/bin")
    r.check("rke2-server.service" in get("units") and "rke2-agent.service" in get("units"),
            f"RKE2's units in /usr/local/lib/systemd/system ({get('units')})")
    r.check(get("images").split() == IMAGE_TARBALLS, f"air-gap image tarballs in place ({get('images')})")
    r.check("canarie-agent.service" in get("wants") and "rke2" not in get("wants"),
            f"multi-user.target wants the agent and no RKE2 unit ({get('wants')})")
    r.check("iscsid.service" in get("sysinit"), f"iscsid enabled ({get('sysinit')})")
    r.check(get("policy-rc.d") == "absent", "no policy-rc.d left behind")
    r.check(int(get("initrd-iscsi") or 0) > 0, "the initramfs on /boot was rebuilt with open-iscsi's hook")
    r.check(get("provisioning") == "agent", f"baked for --provisioning agent by default ({get('provisioning')})")
    pkgs = dict(v.split(" ", 1) if " " in v else (v, "") for v in facts.get("pkg", []))
    r.check(pkgs.get("cloud-init") in ("", "not-installed") and pkgs.get("walinuxagent") in ("", "not-installed"),
            f"cloud-init and walinuxagent purged ({pkgs})")
    r.check(pkgs.get("openssh-server") == "installed" and pkgs.get("systemd-resolved") == "installed",
            f"openssh-server and systemd-resolved installed ({pkgs})")
    r.check(get("stray").strip() == "", f"no unit or link of cloud-init or walinuxagent left under /etc/systemd ({get('stray')})")
    r.check(get("network") == "1", "systemd-networkd does DHCP on the hv_netvsc NIC")
    r.check(get("resolv") == "../run/systemd/resolve/stub-resolv.conf", f"/etc/resolv.conf is resolved's stub ({get('resolv')})")
    r.check(get("networkd").split() == ["enabled", "enabled"], f"systemd-networkd and systemd-resolved enabled ({get('networkd')})")
    r.check(get("host-keys") == "0", f"no SSH host keys in the image ({get('host-keys')})")
    p = subprocess.run([str(VERIFY), "--provisioning", "cloud-init", str(vhd)], capture_output=True, text=True)
    ok, detail = one_line_error(p, "verify", "baked with --provisioning agent, not cloud-init")
    r.check(ok, f"verify --provisioning cloud-init refuses the agent image: {detail}")
    r.check(int(get("root-size") or 0) > 1600, f"root filesystem grown with --size ({get('root-size')} MiB)")
    r.check(get("tmp") == "0", "/tmp and /var/tmp are empty")
    r.check(get("journal-dirs") == "0", "no journal directory named after the old machine-id")
    return vhd, seconds


def test_rebake(r: Results, work: Path, vhd: Path, deb: Path, artifacts: Path) -> None:
    """A fixed VHD as the base (Ubuntu's Azure image is one): the baked image baked again,
    which also shows that a second bake over its own result changes nothing it checks."""
    out = work / "rebaked.vhd"
    p = bake(out, vhd, deb, artifacts, "--extra-debs", str(debs_cache()))
    first = p.stdout.splitlines()[:1]
    r.check(p.returncode == 0 and "(fixed vhd, 2.0G)" in p.stdout,
            f"a fixed VHD as the base bakes again: {first} {p.stderr.strip()}")
    if p.returncode == 0:
        v = subprocess.run([str(VERIFY), str(out)], capture_output=True, text=True)
        r.check(v.returncode == 0 and out.stat().st_size == vhd.stat().st_size,
                f"verify accepts it, same size {out.stat().st_size} ({v.stderr.strip()})")
        out.unlink()


def test_bake_cloud_init(r: Results, work: Path, base: Path, deb: Path, artifacts: Path) -> None:
    """--provisioning cloud-init: today's split, cloud-init stays (its state is cleaned)."""
    out = work / "cloud-init.vhd"
    p = bake(out, base, deb, artifacts, "--extra-debs", str(debs_cache()), "--provisioning", "cloud-init")
    if not r.check(p.returncode == 0, f"bake --provisioning cloud-init succeeds ({p.stderr.strip()})"):
        return
    v = subprocess.run([str(VERIFY), "--provisioning", "cloud-init", str(out)], capture_output=True, text=True)
    r.check(v.returncode == 0, f"verify --provisioning cloud-init accepts it ({v.stdout.strip()[-200:]} {v.stderr.strip()})")
    q = image_shell(out, "ro", 'cd "$root"; cat usr/share/canarie-image/provisioning; '
                    "chroot . dpkg-query -W -f '${Status}\n' cloud-init; test -e etc/systemd/network/50-canarie-azure.network && echo network || true")
    r.check(q.stdout.split("\n")[:2] == ["cloud-init", "install ok installed"] and "network" not in q.stdout,
            f"cloud-init kept, no networkd file of the agent mode ({q.stdout.strip()!r})")
    v = subprocess.run([str(VERIFY), "--provisioning", "agent", str(out)], capture_output=True, text=True)
    ok, detail = one_line_error(v, "verify", "not agent")
    r.check(ok, f"verify --provisioning agent refuses it: {detail}")
    out.unlink()


def deb_version(deb: Path) -> str:
    return run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


BROKEN = [
    # (what, break it, repair it, words the one line must hold); run inside the image's root
    ("a machine-id", "echo 0123456789abcdef0123456789abcdef > etc/machine-id", ": > etc/machine-id", "/etc/machine-id"),
    ("an SSH host key", "echo k > etc/ssh/ssh_host_rsa_key", "rm etc/ssh/ssh_host_rsa_key", "ssh_host_rsa_key"),
    ("RKE2 enabled", "ln -s /usr/local/lib/systemd/system/rke2-server.service etc/systemd/system/multi-user.target.wants/",
     "rm etc/systemd/system/multi-user.target.wants/rke2-server.service", "rke2-server.service is enabled"),
    ("RKE2 missing", "mv usr/local/lib/systemd/system/rke2-agent.service .",
     "mv rke2-agent.service usr/local/lib/systemd/system/", "rke2-agent.service is not installed"),
    ("the agent disabled", "mv etc/systemd/system/multi-user.target.wants/canarie-agent.service .",
     "mv canarie-agent.service etc/systemd/system/multi-user.target.wants/", "canarie-agent.service is not enabled"),
    ("the host-key unit disabled", "mv etc/systemd/system/multi-user.target.wants/canarie-ssh-host-keys.service .",
     "mv canarie-ssh-host-keys.service etc/systemd/system/multi-user.target.wants/", "canarie-ssh-host-keys.service is not enabled"),
    ("iscsid disabled", "mv etc/systemd/system/sysinit.target.wants/iscsid.service .",
     "mv iscsid.service etc/systemd/system/sysinit.target.wants/", "iscsid.service is disabled"),
    ("a fixed iSCSI initiator name", "echo InitiatorName=iqn.1993-08.org.debian:01:abc > etc/iscsi/initiatorname.iscsi",
     "echo GenerateName=yes > etc/iscsi/initiatorname.iscsi", "fixed InitiatorName"),
    ("a non-empty log", "echo x > var/log/dpkg.log", ": > var/log/dpkg.log", "log file /var/log/dpkg.log"),
    ("a cached package", "touch var/cache/apt/archives/x_1_all.deb", "rm var/cache/apt/archives/x_1_all.deb",
     "apt cache file /var/cache/apt/archives/x_1_all.deb"),
    ("a file under the unmounted /boot/efi", "touch boot/efi/x", "rm boot/efi/x", "written into /boot/efi"),
    ("hosts: resolve with libnss-resolve", "sed -i 's/^hosts:.*/hosts: files resolve dns/' etc/nsswitch.conf; "
     "touch usr/lib/x86_64-linux-gnu/libnss_resolve.so.2",
     "sed -i 's/^hosts:.*/hosts: files dns/' etc/nsswitch.conf; rm usr/lib/x86_64-linux-gnu/libnss_resolve.so.2",
     "uses 'resolve'"),
    ("cloud-init's configuration", "mkdir -p etc/cloud/cloud.cfg.d && printf 'runcmd:\\n - systemctl start rke2-server\\n' > etc/cloud/cloud.cfg.d/99-old.cfg",
     "rm -r etc/cloud", "/etc/cloud is left"),
    ("walinuxagent's state", "mkdir var/lib/waagent", "rmdir var/lib/waagent", "/var/lib/waagent is left"),
    ("a stray cloud-init unit link", "ln -s /lib/systemd/system/cloud-final.service etc/systemd/system/multi-user.target.wants/",
     "rm etc/systemd/system/multi-user.target.wants/cloud-final.service", "cloud-final.service is left"),
    ("systemd-networkd masked", "ln -s /dev/null etc/systemd/system/systemd-networkd.service",
     "rm etc/systemd/system/systemd-networkd.service", "systemd-networkd.service is masked"),
    ("the DHCP network file changed", "sed -i s/hv_netvsc/eth0/ etc/systemd/network/50-canarie-azure.network",
     "sed -i s/eth0/hv_netvsc/ etc/systemd/network/50-canarie-azure.network", "50-canarie-azure.network is missing or changed"),
    ("no openssh-server", "mv var/lib/dpkg/status status; sed '/^Package: openssh-server$/,/^$/d' status > var/lib/dpkg/status",
     "mv status var/lib/dpkg/status", "openssh-server is not installed"),
    ("no provisioning marker", "mv usr/share/canarie-image/provisioning .", "mv provisioning usr/share/canarie-image/",
     "provisioning is missing"),
]


def test_checks_refuse(r: Results, work: Path, vhd: Path) -> None:
    """Each check fails with one line naming the problem: a copy of the baked image is
    broken one way at a time and repaired, all in one mount; `verify` itself end to end
    on the first case, on the repaired copy and on a raw disk."""
    copy = work / "broken.vhd"
    run(["cp", "--sparse=always", str(vhd), str(copy)])
    what, breaks, repairs, words = BROKEN[0]
    image_shell(copy, "rw", f'cd "$root"; {breaks}')
    v = subprocess.run([str(VERIFY), str(copy)], capture_output=True, text=True)
    ok, detail = one_line_error(v, "verify", "check failed", words)
    r.check(ok, f"verify refuses an image with {what}: {detail}")
    image_shell(copy, "rw", f'cd "$root"; {repairs}')

    # The checks verify (and the bake) run, as verify runs them, once per broken copy.
    script = 'chroot_prepare "$root"; trap \'chroot_release; umount_image; rmdir "$root"\' EXIT; cd "$root"\n'
    for i, (_, breaks, repairs, _) in enumerate(BROKEN):
        script += (f'{breaks}\nerr=$(PROG=verify; image_checks "$root" 2>&1 >/dev/null) && rc=0 || rc=$?\n'
                   f'printf "case {i} %s %s\\n" "$rc" "$err"\n{repairs}\n')
    p = image_shell(copy, "rw", script)
    got = {}
    for line in p.stdout.splitlines():
        _, i, rc, err = (line.split(" ", 3) + [""])[:4]
        got[int(i)] = (int(rc), err)
    for i, (what, _, _, words) in enumerate(BROKEN):
        rc, err = got.get(i, (None, p.stderr.strip()[-300:]))
        r.check(rc == 1 and err.startswith("verify: check failed: ") and "\n" not in err and words in err,
                f"the checks refuse an image with {what}: exit {rc}, {err!r}")

    v = subprocess.run([str(VERIFY), str(copy)], capture_output=True, text=True)
    r.check(v.returncode == 0, f"verify accepts the repaired copy ({v.stderr.strip()})")
    run(["truncate", "-s", f"-{512}", str(copy)])  # without its footer: a raw disk
    v = subprocess.run([str(VERIFY), str(copy)], capture_output=True, text=True)
    ok, detail = one_line_error(v, "verify", "not a VHD")
    r.check(ok, f"verify refuses a raw disk: {detail}")
    copy.unlink()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bake_test.py")
    p.add_argument("command", choices=["prepare", "test"])
    p.add_argument("--deb", type=Path)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--no-boot", action="store_true", help="skip the QEMU boot")
    args = p.parse_args(argv)
    if args.command == "prepare":
        prepare()
        return 0
    if not args.deb:
        raise SystemExit("bake_test.py test needs --deb")

    def terminate(signum, _frame):
        vm.kill_all()  # QEMU runs in its own session: it would outlive this process
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    r = Results()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="canarie-image-bake.", dir="/var/tmp"))
    timings = {}
    try:
        # A copy: the package in target/ may be rebuilt while this runs (another suite).
        deb = work / args.deb.name
        shutil.copyfile(args.deb, deb)
        t0 = time.monotonic()
        base = build_base(work)
        artifacts = make_rke2_artifacts(work / "rke2-artifacts")
        timings["base image"] = time.monotonic() - t0
        t0 = time.monotonic()
        test_arguments(r, work, base, deb, artifacts)
        timings["argument checks"] = time.monotonic() - t0
        t0 = time.monotonic()
        test_failed_check(r, work, base, deb, artifacts)
        timings["failed check"] = time.monotonic() - t0
        vhd, timings["bake"] = test_bake(r, work, base, deb, artifacts)
        t0 = time.monotonic()
        test_rebake(r, work, vhd, deb, artifacts)
        timings["re-bake"] = time.monotonic() - t0
        t0 = time.monotonic()
        test_bake_cloud_init(r, work, base, deb, artifacts)
        timings["cloud-init bake"] = time.monotonic() - t0
        t0 = time.monotonic()
        test_checks_refuse(r, work, vhd)
        timings["broken images"] = time.monotonic() - t0
        if not args.no_boot:
            t0 = time.monotonic()
            import boot  # noqa: PLC0415  (the harness's QEMU side, only needed here)
            boot.boot_baked(r, work, vhd, deb, image_shell)
            timings["QEMU boot"] = time.monotonic() - t0
    except Failed as e:
        r.failed.append(str(e))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("image-bake timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.monotonic() - started:.0f} s")
    print(f"image-bake: {r.count - len(r.failed)} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
