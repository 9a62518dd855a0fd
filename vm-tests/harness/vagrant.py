"""`vm-tests/run vagrant`: the project's real Vagrantfile brought up with vagrant-libvirt,
offline, then the vm-tests guest checks (docs/vm-tests.md, "Vagrant").

    python3 -m harness.vagrant prepare             needs the network once: the .debs the
                                                   box adds to the root filesystem (cached)
    python3 -m harness.vagrant test --deb DEB      in a loopback-only network namespace and a
                                                   private mount namespace (vm-tests/run)

The box is the vm-tests root filesystem plus what Vagrant needs (sshd, sudo, the `vagrant`
user with Vagrant's insecure key) and what provision.sh would otherwise download (socat,
open-iscsi), booted by its kernel directly. libvirtd runs inside the namespaces with its
state bind-mounted from the run's directory, so it defines no network and leaves nothing
behind; the guests use QEMU user-mode networking with restrict=on (vagrant/test-libvirt.rb).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from . import image, scenarios
from .cluster import Run, extract_binary
from .scenarios import Scenario
from .util import CACHE_DIR, REPO, log, run
from .vm import DATA_LINK, Boot, _parse_results

BOX_PACKAGES = ["openssh-server", "sudo", "socat", "open-iscsi"]
INSECURE_KEY = Path("/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/keys/vagrant.pub")
# libvirt's state, bind-mounted per run (private mount namespace): no domain, volume or
# network outlives the run or meets another run's.
LIBVIRT_DIRS = ["/etc/libvirt/qemu", "/etc/libvirt/storage", "/var/lib/libvirt", "/run/libvirt",
                "/var/cache/libvirt", "/var/log/libvirt"]
# QEMU as root (it writes the results file and reads the box's kernel), no virtlogd.
QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\nstdio_handler = "file"\n'
NODES = {"cp-01": "server", "wk-01": "agent"}
PROVISION_DROPIN = "/etc/rancher/rke2/config.yaml.d/50-vagrant.yaml"  # provision.sh's node-ip
BOOT_TIMEOUT = 900  # Vagrant waits this long for sshd (TCG, two guests on a shared machine)


def debs_cache() -> Path:
    return CACHE_DIR / f"vagrant-box-debs-{image.rootfs_key()}"


def prepare() -> None:
    """The box's extra packages, resolved by the host's apt against the root filesystem's
    own dpkg status (as packaging/image/tests/bake_test.py does for open-iscsi)."""
    dest = debs_cache()
    if dest.exists() and any(dest.glob("openssh-server_*.deb")):
        log(f"vagrant: cached box packages in {dest}")
        return
    log(f"vagrant: downloaded {image.download_debs(BOX_PACKAGES, dest)} packages for the box")


def build_box(work: Path) -> Path:
    """A libvirt box (metadata.json, box.img qcow2, Vagrantfile, kernel, initrd) from the
    cached root filesystem."""
    rootfs = work / "box-rootfs"
    box = work / "box"
    rootfs.mkdir()
    box.mkdir()
    try:
        run(["tar", "-xf", str(image.rootfs_tarball()), "-C", str(rootfs), "--numeric-owner"])
        debs = debs_cache()
        shutil.copytree(debs, rootfs / "tmp/debs")
        run(["chroot", str(rootfs), "sh", "-c", "dpkg -i /tmp/debs/*.deb"])
        shutil.rmtree(rootfs / "tmp/debs")
        image.install_guest_tree(rootfs, rke2_standin=False)  # RKE2 comes from the artifacts
        # provision.sh writes its own CA drop-in; the check runs once, when the host asks.
        (rootfs / "etc/systemd/system/canarie-agent.service.d/50-vmtest.conf").unlink()
        (rootfs / "etc/systemd/system/canarie-vmtest-check.service").unlink()
        (rootfs / "etc/systemd/system/canarie-vmtest-check.service").symlink_to("/dev/null")
        run(["chroot", str(rootfs), "useradd", "-m", "-s", "/bin/bash", "vagrant"])
        ssh = rootfs / "home/vagrant/.ssh"
        ssh.mkdir(mode=0o700)
        shutil.copyfile(INSECURE_KEY, ssh / "authorized_keys")
        run(["chroot", str(rootfs), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
        sudoers = rootfs / "etc/sudoers.d/vagrant"
        sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        run(["systemctl", f"--root={rootfs}", "enable", "ssh.service"])
        # The root filesystem is generalized (no SSH host keys), but Vagrant logs in before
        # provision.sh installs the .deb whose canarie-ssh-host-keys.service would make
        # them: the box carries its own, as published boxes do.
        run(["chroot", str(rootfs), "ssh-keygen", "-A"])
        shutil.copyfile(image._single(rootfs, "boot/vmlinuz-*"), box / "vmlinuz")
        shutil.copyfile(image._single(rootfs, "boot/initrd.img-*"), box / "initrd.img")
        raw = work / "box-root.raw"
        run(["truncate", "-s", image.ROOT_SIZE, str(raw)])
        run(["mkfs.ext4", "-q", "-F", "-L", "vmtest-root", "-d", str(rootfs), str(raw)])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(box / "box.img")])
    raw.unlink()
    (box / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": int(image.ROOT_SIZE.rstrip("G"))}))
    # The root filesystem has no partition table or boot loader: libvirt boots its kernel.
    (box / "Vagrantfile").write_text(
        'Vagrant.configure("2") do |config|\n'
        '  config.vm.provider "libvirt" do |lv|\n'
        '    lv.kernel = File.join(__dir__, "vmlinuz")\n'
        '    lv.initrd = File.join(__dir__, "initrd.img")\n'
        '    lv.cmd_line = "root=/dev/vda rw console=ttyS0 loglevel=4 cloud-init=disabled"\n'
        '  end\nend\n')
    out = work / "canarie-vmtest.box"
    run(["tar", "-C", str(box), "-cf", str(out), "."])
    shutil.rmtree(box)
    log(f"vagrant: box {out} ({out.stat().st_size >> 20} MiB)")
    return out


class Libvirtd:
    """libvirtd with the run's own state directories (this process is in a private mount
    namespace and a loopback-only network namespace: vm-tests/run)."""

    def __init__(self, work: Path):
        self.dir = work / "libvirt"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        for d in LIBVIRT_DIRS:
            src = self.dir / d.strip("/").replace("/", "_")
            src.mkdir(parents=True)
            Path(d).mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", str(src), d])
        conf = self.dir / "qemu.conf"
        conf.write_text(QEMU_CONF)
        run(["mount", "--bind", str(conf), "/etc/libvirt/qemu.conf"])
        logf = open(self.dir / "libvirtd.log", "wb")
        self.proc = subprocess.Popen(["libvirtd"], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not Path("/run/libvirt/libvirt-sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not start; see {self.dir / 'libvirtd.log'}")
            time.sleep(0.2)
        nets = run(["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"]).stdout.split()
        log(f"vagrant: libvirtd up (run-private state; networks defined: {nets or 'none'})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def vagrant(env: dict, *args: str, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess:
    log(f"vagrant {' '.join(args)}")
    p = subprocess.run(["vagrant", *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    name = "-".join(a for a in args[:3] if "/" not in a)
    with open(Path(env["CANARIE_VAGRANT_LOGS"]) / f"vagrant-{name}.log", "a") as f:
        f.write(p.stdout)
    if check and p.returncode != 0:
        raise RuntimeError(f"vagrant {' '.join(args)} exited {p.returncode}:\n" + "\n".join(p.stdout.splitlines()[-30:]))
    return p


def test(deb: Path, keep: bool) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="canarie-vagrant.", dir="/var/tmp"))
    log(f"work directory {work}")
    daemon = Libvirtd(work)
    results: list[Scenario] = []
    env = {}
    try:
        agent_binary = extract_binary(deb, work)
        box = build_box(work)
        daemon.start()
        env = vagrant_env(work)
        token = Run.new_token()
        dot = Path(env["VAGRANT_DOTFILE_PATH"])
        dot.mkdir()
        (dot / "canarie-join-token").write_text(token)
        (dot / "canarie-join-token").chmod(0o600)
        nodes = write_nodes(work, token)
        env["CANARIE_VAGRANT_TEST"] = str(nodes)
        env["CANARIE_RKE2_ARTIFACTS"] = str(rke2_artifacts(work))
        vagrant(env, "box", "add", "--name", env["CANARIE_BOX"], str(box))
        box.unlink()
        sc = Scenario("vagrant-up", f"`vagrant up` of {', '.join(NODES)} with the project's Vagrantfile "
                      "(vagrant-libvirt, stand-in RKE2 from an air-gap directory)")
        results.append(sc)
        try:
            up = vagrant(env, "up", "--provider", "libvirt", check=False)
            sc.check(up.returncode == 0, f"vagrant up exited {up.returncode}"
                     + ("" if up.returncode == 0 else ": " + " / ".join(up.stdout.strip().splitlines()[-8:])))
            # Also after a failed `up`: the guests' own checks say what went wrong where.
            for name in NODES:
                check_node(sc, env, work, name, agent_binary)
        except Exception as e:  # noqa: BLE001 (a broken step is a failed scenario, reported)
            sc.error = f"{type(e).__name__}: {e}"
        down = Scenario("vagrant-destroy", "`vagrant destroy` removes every VM and volume")
        results.append(down)
        try:
            p = vagrant(env, "destroy", "-f", check=False)
            left = run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).stdout.split()
            down.check(p.returncode == 0 and not left, f"vagrant destroy exited {p.returncode}; domains left: {left or 'none'}")
        except Exception as e:  # noqa: BLE001
            down.error = f"{type(e).__name__}: {e}"
    finally:
        if env:
            subprocess.run(["vagrant", "destroy", "-f"], env=env, cwd=REPO, capture_output=True, timeout=600)
        daemon.stop()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for sc in results:
        print(f"{'PASS' if sc.ok else 'FAIL'} vagrant: {sc.name}: {sc.description}")
        for ok, what in sc.checks:
            print(f"    {'ok  ' if ok else 'FAIL'} {what}")
        if sc.error:
            print(f"    FAIL {sc.error}")
    passed = sum(sc.ok for sc in results)
    log(f"total {time.monotonic() - started:.0f} s")
    print(f"vm-tests: {passed} passed, {len(results) - passed} failed")
    return 0 if results and passed == len(results) else 1


def vagrant_env(work: Path) -> dict:
    logs = work / "logs"
    logs.mkdir()
    return {
        **os.environ,
        "VAGRANT_HOME": str(work / "vagrant.d"),  # boxes and keys of this run only
        "VAGRANT_DOTFILE_PATH": str(work / "dot"),
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_CHECKPOINT_DISABLE": "1",  # no version check against the internet
        "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
        "LIBVIRT_DEFAULT_URI": "qemu:///system",
        "CANARIE_BOX": "canarie-vmtest",
        "CANARIE_NODES": ",".join(NODES),
        "CANARIE_VAGRANT_LOGS": str(logs),
    }


def write_nodes(work: Path, token: str) -> Path:
    nodes = {}
    for i, (name, role) in enumerate(NODES.items()):
        d = work / name
        d.mkdir()
        inputs = {
            "node": name, "boot": 1, "mode": "agent", "role": role,
            "expect": {"agent": "success", "rke2": True, "mount": role == "agent"},
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "data_link": DATA_LINK,
            "guest_deadline": 300,
        }
        (d / "vmtest.json").write_text(json.dumps(inputs))
        # fw_cfg wants a CA file; azure-sim runs in the guest and writes its own.
        (d / "sim-ca.pem").write_text("# unused: azure-sim runs inside the Vagrant guest\n")
        nodes[name] = {"ssh_port": 2201 + i, "boot_timeout": BOOT_TIMEOUT, "libvirt_uri": "qemu:///system",
                       "console": str(d / "console.log"), "inputs": str(d / "vmtest.json"),
                       "ca": str(d / "sim-ca.pem"), "results": str(d / "results.log")}
    path = work / "nodes.json"
    path.write_text(json.dumps(nodes, indent=1))
    return path


def rke2_artifacts(work: Path) -> Path:
    """The image bake tests' stand-in RKE2 air-gap set (release layout, checked install.sh)."""
    sys.path.insert(0, str(REPO / "packaging/image/tests"))
    import bake_test  # noqa: PLC0415 (the bake tests' artifact builder, reused)
    return bake_test.make_rke2_artifacts(work / "rke2-artifacts")


def check_node(sc: Scenario, env: dict, work: Path, name: str, agent_binary: Path) -> None:
    """The vm-tests guest check, run once over `vagrant ssh` (it reports on the virtio-serial
    port and powers the guest off), then the host's file comparison with `render`."""
    d = work / name
    p = vagrant(env, "ssh", name, "-c", "sudo /usr/local/lib/canarie-vmtest/check", check=False, timeout=900)
    (d / "check.log").write_text(p.stdout)
    boot = Boot(node=name, role=NODES[name], number=1, mode="agent")
    _parse_results(d / "results.log", boot)
    sc.boots.append((f"{name} (vagrant)", boot))
    sc.check(boot.ok, f"{name}: guest checks ({len(boot.checks)}): "
             + ("; ".join(f"{c} {'ok' if ok else 'FAILED: ' + det}" for ok, c, det in boot.checks) if boot.checks
                else "no report from the guest"))
    files = boot.data.get("files", [])
    dropin = [f for f in files if f["path"] == PROVISION_DROPIN]
    sc.check(len(dropin) == 1 and dropin[0]["mode"] == "600", f"{name}: provision.sh's node-ip drop-in {PROVISION_DROPIN} 0600")
    boot.data["files"] = [f for f in files if f["path"] != PROVISION_DROPIN]
    scenario = json.loads((Path(env["VAGRANT_DOTFILE_PATH"]) / f"canarie-{name}-scenario.json").read_text())
    node = SimpleNamespace(dir=d, node=SimpleNamespace(config=scenario["user_data_json"]))
    r = SimpleNamespace(expected_files=lambda vm: Run.expected_files(SimpleNamespace(agent_binary=agent_binary), vm))
    scenarios.check_files(sc, r, node, boot, name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m harness.vagrant")
    p.add_argument("command", choices=["prepare", "test"])
    p.add_argument("--deb", type=Path)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.command == "prepare":
        prepare()
        return 0
    if not args.deb:
        raise SystemExit("vm-tests: vagrant test needs --deb (packaging/build.sh makes it)")
    return test(args.deb.resolve(), args.keep)


if __name__ == "__main__":
    sys.exit(main())
