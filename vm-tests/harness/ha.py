"""Issue 21's scenarios: three servers behind a registration address (`ha-servers`), a
server replaced with its state disk kept (`server-rebuild`), a worker replaced with its
data disk kept (`node-rejoin`).

The registration address is real at the TCP level: in cp-02 and cp-03 the guest's
REGISTRATION_ADDR:9345 is a guestfwd to a small load balancer on the host's loopback
(`Balancer`), which connects to cp-01's port 9345 through a hostfwd. cp-01's stand-in RKE2
answers there; a joining stand-in fails its start unless a server answers it. Guests keep
restrict=on: the forwards are the only ways out, and everything on the host is 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from .cluster import EXAMPLES, Run
from .scenarios import Scenario, agent_entries, check_disk_kept, check_files, managed_files, parallel
from .util import log
from .vm import VM, Boot

SERVERS = ["cp-01", "cp-02", "cp-03"]
# The fixed registration address the servers' node configs name (cluster.server_url,
# cluster.tls_san): inside the guests' user network, answered by the host's forwarder.
REGISTRATION_ADDR = "169.254.169.100"
SUPERVISOR_PORT = 9345
# The guests' static address (guest/etc/systemd/network/10-vmtest.network): hostfwd's target.
GUEST_ADDR = "169.254.169.10"
STATE_MOUNT = "/var/lib/rancher/rke2/server"
STATE_UNIT = "/etc/systemd/system/var-lib-rancher-rke2-server.mount"


def server_config(name: str) -> dict:
    """examples/server.json as infra-tofu renders an HA server: the state disk at LUN 1,
    the registration address in tls_san, and (all but cp-01) the registration URL."""
    config = json.loads((EXAMPLES / "server.json").read_text())
    config["node_name"] = name
    config["server_state_disk"] = {"lun": 1}
    config["cluster"]["tls_san"] = [*config["cluster"].get("tls_san", []), REGISTRATION_ADDR]
    if name != SERVERS[0]:
        config["cluster"]["server_url"] = f"https://{REGISTRATION_ADDR}:{SUPERVISOR_PORT}"
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Balancer:
    """The load balancer in front of the servers' port 9345: a TCP forwarder on 127.0.0.1
    to the first backend that accepts, recording each connection and who served it."""

    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = backends
        self.served: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        for name, port in self.backends:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
            with self._lock:
                self.served.append(name)
            pipes = [threading.Thread(target=_pipe, args=(a, b), daemon=True)
                     for a, b in ((client, upstream), (upstream, client))]
            for p in pipes:
                p.start()
            for p in pipes:
                p.join(60)
            upstream.close()
            break
        client.close()

    def close(self) -> None:
        self._sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HA:
    """The three HA servers, shared by ha-servers and server-rebuild."""

    def __init__(self, r: Run):
        self.run = r
        self.vms: dict[str, VM] = {}
        self.balancer: Balancer | None = None


def expect_server(vm: VM, extra: dict | None = None) -> dict:
    return {"agent": "success", "rke2": True, "mount": False, "state_mount": True, **(extra or {})}


def state_probe(boot: Boot) -> dict:
    return (boot.data.get("state_disk") or {}).get("probe", {})


def this_boots_start(boot: Boot) -> dict:
    bid = (boot.data.get("boot") or {}).get("boot_id")
    starts = [s for s in boot.data.get("rke2_starts", []) if s.get("boot_id") == bid and s.get("ok")]
    return starts[-1] if starts else {}


def check_state_disk_fresh(sc: Scenario, r: Run, vm: VM, boot: Boot, label: str) -> None:
    probe = state_probe(boot)
    sc.check(probe.get("TYPE") == "ext4" and probe.get("LABEL") == "rke2-server",
             f"{label}: state disk (LUN 1) formatted ext4 label rke2-server ({probe.get('TYPE')}, {probe.get('LABEL')})")
    formats = [e for e in agent_entries(boot) if "formatting the blank" in e]
    sc.check(len(formats) == 1 and "server state disk" in formats[0],
             f"{label}: the agent formatted exactly one disk, the blank state disk ({len(formats)} formats)")
    sc.check(STATE_UNIT in managed_files(boot), f"{label}: the mount persists as {Path(STATE_UNIT).name}")
    start = this_boots_start(boot)
    sc.check(start.get("state_mounted") is True,
             f"{label}: {STATE_MOUNT} was mounted when RKE2 started (stand-in: {start.get('state_mounted')})")
    check_files(sc, r, vm, boot, label)


def ha_servers(sc: Scenario, ha: HA) -> None:
    r = ha.run
    ha.vms = {name: r.vm(name, label=f"{name}-ha", config=server_config(name)) for name in SERVERS}
    first = ha.vms[SERVERS[0]]
    supervisor = free_port()
    first.netdev_extra = [f"hostfwd=tcp:127.0.0.1:{supervisor}-{GUEST_ADDR}:{SUPERVISOR_PORT}"]
    ha.balancer = Balancer([(SERVERS[0], supervisor)])
    for name in SERVERS[1:]:
        ha.vms[name].netdev_extra = [
            f"guestfwd=tcp:{REGISTRATION_ADDR}:{SUPERVISOR_PORT}-cmd:socat - TCP:127.0.0.1:{ha.balancer.port}"]
    log(f"ha-servers: registration address {REGISTRATION_ADDR}:{SUPERVISOR_PORT} -> "
        f"load balancer 127.0.0.1:{ha.balancer.port} -> cp-01 127.0.0.1:{supervisor}")

    # cp-01 initialises and stays up; cp-02 and cp-03 join through the registration address.
    boot = sc.boot(first, expect=expect_server(first), linger=True)
    check_state_disk_fresh(sc, r, first, boot, "cp-01")
    if first.lingering is None:
        sc.check(False, "cp-01 stayed up for the others to join")
        return
    try:
        def join(name: str) -> None:
            vm = ha.vms[name]
            b = sc.boot(vm, expect=expect_server(vm))
            check_state_disk_fresh(sc, r, vm, b, name)
            start = this_boots_start(b)
            sc.check(start.get("joined_via") == f"https://{REGISTRATION_ADDR}:{SUPERVISOR_PORT}"
                     and start.get("answered_by") == SERVERS[0],
                     f"{name}: joined through the registration address, answered by "
                     f"{start.get('answered_by') or 'nobody'} (via {start.get('joined_via') or '-'})")
        parallel(join, SERVERS[1:])
    finally:
        first.halt()
        ha.balancer.close()
    served = ha.balancer.served
    sc.check(len(served) >= 2 and set(served) == {SERVERS[0]},
             f"the host's load balancer forwarded {len(served)} connections, all to cp-01")


def server_rebuild(sc: Scenario, ha: HA) -> None:
    vm = ha.vms[SERVERS[0]]
    before = vm.boots[-1]
    first_start = this_boots_start(before)
    ha.run.replace(vm)
    vm.netdev_extra = []
    boot = sc.boot(vm, expect=expect_server(vm))
    label = "cp-01 rebuilt"
    reused = [e for e in agent_entries(boot) if "F_DECISION=reuse" in e and "server_state_disk" in e]
    sc.check(reused, f"{label}: the agent reused the state disk (decision reuse)")
    old, new = state_probe(before).get("UUID"), state_probe(boot).get("UUID")
    sc.check(old and old == new, f"{label}: state disk not reformatted (ext4 UUID {old} -> {new})")
    formatted = [e for e in agent_entries(boot) if "formatting" in e]
    sc.check(not formatted, f"{label}: the agent did not format" + (f": {formatted}" if formatted else ""))
    start = this_boots_start(boot)
    first_boot_id = (before.data.get("boot") or {}).get("boot_id")
    sc.check(start.get("found_state") == first_boot_id and first_boot_id,
             f"{label}: RKE2 started on the previous run's state (etcd marker from boot {start.get('found_state') or 'none'})")
    sc.check(start.get("password_sha256") and start.get("password_sha256") == first_start.get("password_sha256"),
             f"{label}: the same node password as before the rebuild (restored from the state disk)")
    check_files(sc, ha.run, vm, boot, label)


def node_rejoin(sc: Scenario, cl) -> None:
    """wk-02, after imds-down: a new VM under the same name with the same data disk."""
    vm = cl.vms["wk-02"]
    first = vm.boots[0]
    first_start = next((s for s in first.data.get("rke2_starts", []) if s.get("ok")), {})
    password = first_start.get("password_sha256")
    cl.run.replace(vm)
    # The stand-in, like RKE2's server, refuses the name unless the same password comes back.
    boot = sc.boot(vm, expect={"agent": "success", "rke2": True, "mount": True,
                               "node_password_sha256": password})
    label = "wk-02 replaced"
    restored = [e for e in agent_entries(boot) if "node-password" in e and "Restore" in e]
    sc.check(restored, f"{label}: the agent restored the node password from the data disk")
    start = this_boots_start(boot)
    sc.check(password and start.get("password_sha256") == password,
             f"{label}: RKE2 (stand-in) accepted the node under its name: the same node password as its first boot")
    check_disk_kept(sc, first, boot, label)
    check_files(sc, cl.run, vm, boot, label)
