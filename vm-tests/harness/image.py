"""The guest image: a cached Debian 12 root filesystem (mmdebstrap), and per run the
project's .deb, the guest-side test files and an ext4 image made with `mkfs.ext4 -d`."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .util import CACHE_DIR, VM_TESTS, log, run

IMAGE_DIR = VM_TESTS / "image"
GUEST_TREE = VM_TESTS / "guest"
ROOT_SIZE = "3G"  # sparse; the root filesystem uses about 700 MB of it


def _lines(path: Path) -> list[str]:
    return [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]


def rootfs_key() -> str:
    """Digest of everything that decides the cached tarball's contents."""
    h = hashlib.sha256()
    for name in ("packages.txt", "mirrors.txt", "rootfs-hook.sh"):
        h.update(name.encode() + b"\0" + (IMAGE_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def rootfs_tarball() -> Path:
    """The cached root filesystem tarball, built with mmdebstrap when missing (~2 min)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"rootfs-bookworm-{rootfs_key()}.tar"
    with open(CACHE_DIR / ".lock", "w") as lock:
        # Two runs on one machine (a developer and CI) build it once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            log(f"image: cached root filesystem {tarball}")
            return tarball
        log(f"image: building the root filesystem with mmdebstrap (cached as {tarball})")
        partial = tarball.with_suffix(".tar.partial")
        cmd = [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            "--include=" + ",".join(_lines(IMAGE_DIR / "packages.txt")),
            "--aptopt=Acquire::Retries \"3\"",
            # Documentation and translations only make the image (and mkfs -d) bigger.
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--customize-hook=" + str(IMAGE_DIR / "rootfs-hook.sh") + ' "$1"',
            "bookworm", str(partial), *_lines(IMAGE_DIR / "mirrors.txt"),
        ]
        run(cmd)
        partial.rename(tarball)
        for old in CACHE_DIR.glob("rootfs-bookworm-*.tar"):
            if old != tarball:
                old.unlink()
        return tarball



def download_debs(packages: list[str], dest: Path) -> int:
    """`packages` and what they need beyond the cached root filesystem, resolved by the
    host's apt against that filesystem's own dpkg status, into `dest` (replaced whole, so
    an interrupted download leaves no half set). Returns how many .debs it holds."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        run(["tar", "-xf", str(rootfs_tarball()), "-C", tmp, "./var/lib/dpkg/status"])
        partial = Path(tmp) / "debs"
        (partial / "partial").mkdir(parents=True)
        run(["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
             "-o", f"Dir::State::status={tmp}/var/lib/dpkg/status",
             "-o", f"Dir::Cache::archives={partial}", "-o", "APT::Sandbox::User=root",
             "-o", "Debug::NoLocking=1", "install", *packages])
        (partial / "partial").rmdir()
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(partial), dest)
    return len(list(dest.glob("*.deb")))

@dataclass
class Image:
    root: Path  # the backing file of every VM's qcow2 overlay
    kernel: Path
    initrd: Path
    root_device: str = "/dev/vda"  # the guest's root= (a partitioned image: /dev/vda1)
    format: str = "raw"  # of `root`, for qemu-img (a baked Azure VHD: vpc)


def build(work: Path, deb: Path) -> Image:
    tarball = rootfs_tarball()
    rootfs = work / "rootfs"
    rootfs.mkdir()
    try:
        run(["tar", "-xf", str(tarball), "-C", str(rootfs), "--numeric-owner"])
        _install_deb(rootfs, deb)
        install_guest_tree(rootfs)
        _check_units(rootfs)
        image = Image(root=work / "root.raw", kernel=work / "vmlinuz", initrd=work / "initrd.img")
        shutil.copyfile(_single(rootfs, "boot/vmlinuz-*"), image.kernel)
        shutil.copyfile(_single(rootfs, "boot/initrd.img-*"), image.initrd)
        run(["truncate", "-s", ROOT_SIZE, str(image.root)])
        run(["mkfs.ext4", "-q", "-F", "-L", "vmtest-root", "-d", str(rootfs), str(image.root)])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    log(f"image: {image.root} ready")
    return image


def _single(rootfs: Path, pattern: str) -> Path:
    found = sorted(rootfs.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one {pattern} in the root filesystem, found {found}")
    return found[0]


def _install_deb(rootfs: Path, deb: Path) -> None:
    """The project's package, as an image build would install it (its postinst enables the
    agent's unit; nothing runs in the chroot)."""
    log(f"image: installing {deb.name}")
    shutil.copyfile(deb, rootfs / "tmp" / deb.name)
    run(["chroot", str(rootfs), "dpkg", "-i", f"/tmp/{deb.name}"])
    (rootfs / "tmp" / deb.name).unlink()


def install_guest_tree(rootfs: Path, rke2_standin: bool = True) -> None:
    """The guest side of the tests (network, udev rule, fw_cfg inputs, check unit) and,
    unless an image brings its own RKE2, the stand-in RKE2."""
    exclude = [] if rke2_standin else ["--exclude=usr/local/bin/rke2", "--exclude=usr/local/lib/systemd"]
    # root-owned, not writable by group or others whatever the checkout's umask; the image's
    # own directories keep their owners and modes.
    run(["tar", "-C", str(GUEST_TREE), "-c", "--owner=0", "--group=0", "--mode=go-w", *exclude,
         "-f", str(rootfs / "tmp/guest.tar"), "."])
    run(["tar", "-C", str(rootfs), "-x", "--no-overwrite-dir", "-f", str(rootfs / "tmp/guest.tar")])
    (rootfs / "tmp/guest.tar").unlink()
    run(["systemctl", f"--root={rootfs}", "enable",
         "systemd-networkd.service", "systemd-networkd-wait-online.service",
         "canarie-vmtest-setup.service"])
    # Nothing in the guest may try the internet (restrict=on would drop it anyway); these
    # timers would only add noise to the boot being measured.
    run(["systemctl", f"--root={rootfs}", "mask", "apt-daily.timer", "apt-daily-upgrade.timer",
         "e2scrub_all.timer", "fstrim.timer"])
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")


def _check_units(rootfs: Path) -> None:
    """The package enables the agent; the RKE2 units stay installed but disabled (the agent
    is their one owner). A wrong image would make every boot's result meaningless."""
    for unit, want in (("canarie-agent.service", "enabled"), ("rke2-server.service", "disabled"),
                       ("rke2-agent.service", "disabled")):
        state = subprocess.run(["systemctl", f"--root={rootfs}", "is-enabled", unit],
                               capture_output=True, text=True).stdout.strip()
        if state != want:
            raise RuntimeError(f"image: {unit} is {state or 'unknown'}, not {want}")
