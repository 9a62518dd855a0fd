"""One QEMU guest: its OS disk (a qcow2 overlay on the run's image), its data disk (raw, at
SCSI LUN 0), its azure-sim, and one boot at a time. A boot ends when the guest's check unit
powers it off (QEMU runs with -no-reboot), or when the host-side timeout kills QEMU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .image import Image
from .sim import AzureSim
from .util import VM_TESTS, log, run

# Guest addresses QEMU forwards to azure-sim on 127.0.0.1 (restrict=on: nothing else).
IMDS_ADDR = "169.254.169.254"
VAULT_ADDR = "169.254.169.253"
# Azure's WireServer, on a second NIC: QEMU forwards a guest address only inside its netdev's
# subnet, and 168.63.129.16 is not in 169.254.169.0/24 (docs/vm-tests.md, "How a run works").
WIRESERVER_ADDR = "168.63.129.16"
# The NIC's MAC, read from the guest's network file that matches it (one place for it).
WIRESERVER_NETWORK = VM_TESTS / "guest/etc/systemd/network/05-vmtest-wireserver.network"
WIRESERVER_MAC = re.search(r"^MACAddress=(\S+)$", WIRESERVER_NETWORK.read_text(), re.M).group(1)
DATA_LINK = "/dev/disk/azure/scsi1/lun0"
# A server's state disk sits at LUN 1 on the same controller (infra-tofu's LUN).
STATE_LUN = 1
# Two guests at a time on the 2-core machine, one vCPU each (docs/vm-tests.md).
SLOTS = threading.Semaphore(2)

_running: set[subprocess.Popen] = set()
# Reentrant: the interrupt handler runs in the main thread, which may hold it already.
_running_lock = threading.RLock()
# Set on an interrupt: no new boot starts (boots run in worker threads).
STOPPING = threading.Event()


def _kill(proc: subprocess.Popen) -> None:
    """QEMU leads its own process group, with the socat forwarders it spawned: all go."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def kill_all() -> None:
    """Kills every QEMU still running (cleanup after a failure or an interrupt)."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill(proc)


def stop_all() -> None:
    """On an interrupt: no boot starts any more, and the running ones end now."""
    STOPPING.set()
    kill_all()


@dataclass
class Node:
    name: str
    role: str  # "server" | "agent"
    config: dict  # the node config served as IMDS userData
    uuid: str  # SMBIOS system UUID: the agent's machine identity
    has_data_disk: bool
    has_state_disk: bool = False  # server_state_disk at LUN 1
    sim_scenario: dict | None = None  # added to its azure-sim's scenario (docs/azure-sim.md)


@dataclass
class Boot:
    node: str
    role: str
    number: int
    mode: str
    checks: list[tuple[bool, str, str]] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    complete: bool = False  # END seen
    exit_status: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    console: Path | None = None
    qemu_log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.complete and bool(self.checks) and all(ok for ok, _, _ in self.checks)

    def failures(self) -> list[str]:
        out = [f"{name}: {detail}" for ok, name, detail in self.checks if not ok]
        if not self.complete:
            why = "timed out" if self.timed_out else f"QEMU exited {self.exit_status}"
            qemu = self.qemu_log.read_text(errors="replace").strip() if self.qemu_log and self.qemu_log.exists() else ""
            out.append(f"no complete report from the guest ({why}); console: {self.console}"
                       + (f"; QEMU said: {qemu.splitlines()[-1]}" if qemu else ""))
        return out


class VM:
    def __init__(self, node: Node, image: Image, workdir: Path, sim: AzureSim, token_sha256: str):
        self.node = node
        self.image = image
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sim = sim
        self.token_sha256 = token_sha256
        self.os_disk = self.dir / "os.qcow2"
        self.data_disk = self.dir / "data.raw" if node.has_data_disk else None
        self.state_disk = self.dir / "state.raw" if node.has_state_disk else None
        self.boots: list[Boot] = []
        # More user-networking options (guestfwd to a registration address, hostfwd of 9345).
        self.netdev_extra: list[str] = []
        # A guest left running after its report (a server others join), until halt().
        self.lingering: subprocess.Popen | None = None
        self.new_os_disk()
        for disk in (self.data_disk, self.state_disk):
            if disk:
                # A new Azure "Empty" data disk reads back as zeros: a sparse file does too.
                run(["truncate", "-s", "2G", str(disk)])

    def new_os_disk(self) -> None:
        """A fresh OS disk from the image (a new VM, or a rebuild that keeps the data disk)."""
        self.os_disk.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.image.format, "-b", str(self.image.root),
             str(self.os_disk)])

    def halt(self) -> None:
        """Stops a lingering guest (its disks were synced before it reported)."""
        if self.lingering is not None:
            _kill(self.lingering)
            with _running_lock:
                _running.discard(self.lingering)
            self.lingering = None

    def boot(self, *, mode: str = "agent", expect: dict, timeout: float = 300,
             extra: dict | None = None, files: dict[str, Path] | None = None,
             linger: bool = False) -> Boot:
        """mode: `agent` (cloud-init disabled on the kernel command line), `baseline`
        (cloud-init only, the agent masked) or `split` (both: cloud-init's platform
        provisioning from a NoCloud seed, then the agent). `files` go to the guest through
        fw_cfg as opt/org.canarie/NAME (setup copies `ssh-*` to /run/canarie-vmtest, 0600).
        With `linger`, returns once the guest has reported and leaves it running (without
        holding a boot slot: it idles) until halt()."""
        n = len(self.boots) + 1
        boot = Boot(node=self.node.name, role=self.node.role, number=n, mode=mode)
        tag = f"{self.node.name}#{n}"
        extra = dict(extra or {})
        seed = extra.pop("cloud_init", None)  # a NoCloud seed: files for setup, not inputs
        inputs = {
            "node": self.node.name, "boot": n, "mode": mode, "role": self.node.role,
            "expect": expect, "token_sha256": self.token_sha256, "data_link": DATA_LINK,
            "linger": linger, **extra,
        }
        inputs_file = self.dir / f"boot{n}-inputs.json"
        inputs_file.write_text(json.dumps(inputs))
        # Setup copies these as they are (no jq in the guest: every process costs under TCG,
        # and setup is on both sides of the boot-time comparison).
        files = dict(files or {})
        vault = f"{self.node.config['join_token']['vault']}.vault.azure.net"
        files["hosts"] = self.dir / f"boot{n}-hosts"
        files["hosts"].write_text(f"{VAULT_ADDR} {vault} # canarie-vmtest\n")
        for name in ("user-data", "meta-data") if seed else ():
            files[name] = self.dir / f"boot{n}-{name}"
            files[name].write_text(seed[name.replace("-", "_")])
        results = self.dir / f"boot{n}-results.log"
        boot.console = self.dir / f"boot{n}-console.log"
        boot.qemu_log = self.dir / f"boot{n}-qemu.log"
        cmdline = [f"root={self.image.root_device}", "rw", "console=ttyS0", "loglevel=4"]
        if "platform" not in inputs:  # else the hostname is the provisioning's to set
            cmdline.append(f"systemd.hostname={self.node.name}")
        # One image for all: the canarie boots disable cloud-init, the baseline's mask the agent.
        cmdline += {"agent": ["cloud-init=disabled"], "baseline": ["systemd.mask=canarie-agent.service"],
                    "split": []}[mode]
        cmd = [
            "qemu-system-x86_64", "-name", tag, "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1", "-m", "1024",
            "-uuid", self.node.uuid, "-no-reboot", "-rtc", "base=utc",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", " ".join(cmdline),
            "-serial", f"file:{boot.console}",
            "-drive", f"file={self.os_disk},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", ",".join([
                "user,id=n0,restrict=on,net=169.254.169.0/24,host=169.254.169.2",
                f"guestfwd=tcp:{IMDS_ADDR}:80-cmd:socat - TCP:127.0.0.1:{self.sim.imds_port}",
                f"guestfwd=tcp:{VAULT_ADDR}:443-cmd:socat - TCP:127.0.0.1:{self.sim.vault_port}",
                *self.netdev_extra,
            ]),
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            # restrict=on as above: the WireServer forward is all this NIC reaches.
            "-netdev", ",".join([
                "user,id=n1,restrict=on,net=168.63.129.0/24,host=168.63.129.1",
                f"guestfwd=tcp:{WIRESERVER_ADDR}:80-cmd:socat - TCP:127.0.0.1:{self.sim.wireserver_port}",
            ]),
            "-device", f"virtio-net-pci,netdev=n1,mac={WIRESERVER_MAC},romfile=",
            "-device", "virtio-rng-pci",
            "-device", "virtio-serial-pci",
            "-chardev", f"file,id=results,path={results}",
            "-device", "virtserialport,chardev=results,name=org.canarie.results",
            "-fw_cfg", f"name=opt/org.canarie/vmtest.json,file={inputs_file}",
            "-fw_cfg", f"name=opt/org.canarie/sim-ca.pem,file={self.sim.ca_file}",
        ]
        for name, path in files.items():
            cmd += ["-fw_cfg", f"name=opt/org.canarie/{name},file={path}"]
        if self.data_disk or self.state_disk:
            cmd += ["-device", "virtio-scsi-pci,id=scsi0"]
        if self.data_disk:
            cmd += ["-drive", f"file={self.data_disk},if=none,id=data0,format=raw,cache=writeback",
                    "-device", "scsi-hd,drive=data0,bus=scsi0.0,channel=0,scsi-id=0,lun=0,serial=canarie-data0"]
        if self.state_disk:
            cmd += ["-drive", f"file={self.state_disk},if=none,id=state0,format=raw,cache=writeback",
                    "-device", f"scsi-hd,drive=state0,bus=scsi0.0,channel=0,scsi-id=0,lun={STATE_LUN},serial=canarie-state0"]
        with SLOTS:
            if STOPPING.is_set():
                raise RuntimeError(f"{tag}: not booted, the run was interrupted")
            log(f"{tag}: boot ({mode})")
            t0 = time.monotonic()
            with open(boot.qemu_log, "wb") as qlog:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                        start_new_session=True)
            with _running_lock:
                _running.add(proc)
            try:
                if linger:
                    if _wait_for_report(proc, results, timeout):
                        self.lingering = proc
                    else:
                        boot.timed_out = proc.poll() is None
                    boot.exit_status = proc.poll()
                else:
                    boot.exit_status = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                boot.timed_out = True
            finally:  # also on an interrupt: QEMU is in its own session, nothing else kills it
                if proc.poll() is None and self.lingering is not proc:
                    _kill(proc)
                if self.lingering is not proc:
                    with _running_lock:
                        _running.discard(proc)
            boot.seconds = time.monotonic() - t0
        _parse_results(results, boot)
        self.boots.append(boot)
        status = "ok" if boot.ok else "FAILED: " + "; ".join(boot.failures())
        log(f"{tag}: done in {boot.seconds:.0f} s, {status}")
        return boot


def _wait_for_report(proc: subprocess.Popen, results: Path, timeout: float) -> bool:
    """Waits until a lingering guest's report is complete (its END line); False when QEMU
    exited or the timeout passed first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None and not STOPPING.is_set():
        if results.exists() and "\nEND" in "\n" + results.read_text(errors="replace"):
            return True
        time.sleep(1)
    return False


def _parse_results(path: Path, boot: Boot) -> None:
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("PASS", "FAIL"):
            name, _, detail = rest.partition(" ")
            boot.checks.append((kind == "PASS", name, detail))
        elif kind == "DATA":
            name, _, payload = rest.partition(" ")
            try:
                boot.data[name] = json.loads(payload)
            except json.JSONDecodeError as e:
                boot.checks.append((False, f"data-{name}", f"unreadable JSON from the guest: {e}"))
        elif kind == "END":
            boot.complete = True
