"""The three nodes (cp-01 server, wk-01/wk-02 agents with a data disk), made from the
example node configs, each with its own azure-sim holding its userData and the join token."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .image import Image
from .sim import AzureSim
from .util import REPO, run
from .vm import VM, Node

EXAMPLES = REPO / "examples"


def node_config(name: str) -> tuple[str, dict]:
    """(role, node config) for cp-01, or any wk-NN (workers have a data disk at LUN 0)."""
    config = json.loads((EXAMPLES / ("server.json" if name.startswith("cp-") else "agent.json")).read_text())
    if "data_disk" in config and config["data_disk"].get("lun") != 0:
        raise RuntimeError("examples/agent.json: the VMs attach the data disk at LUN 0")
    config["node_name"] = name
    return config["role"], config


@dataclass
class Run:
    """What every VM of one run shares."""

    work: Path
    image: Image
    agent_binary: Path  # runs `render` on the host: the expected files
    join_token: str
    sims: list[AzureSim] = field(default_factory=list)  # every simulator, stopped at the end

    @property
    def token_sha256(self) -> str:
        return hashlib.sha256(self.join_token.encode()).hexdigest()

    @staticmethod
    def new_token() -> str:
        # The shape of an RKE2 token; random per run, never printed.
        return f"K10{secrets.token_hex(32)}::server:{secrets.token_hex(16)}"

    def vm(self, name: str, *, label: str | None = None, config: dict | None = None,
           config_changes: dict | None = None, sim_scenario: dict | None = None) -> VM:
        """A new VM (fresh OS and data disk) with its own azure-sim. `label` names its
        directory when one run has two VMs for the same node (the baseline's); `config`
        replaces the example's node config (the HA servers'); `config_changes` go into the
        node config (a dict merges into its section); `sim_scenario` adds to the simulator's
        scenario (docs/azure-sim.md)."""
        role, config = (config["role"], config) if config else node_config(name)
        for key, value in (config_changes or {}).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        machine = str(uuid.uuid4())
        node = Node(name=name, role=role, config=config, uuid=machine,
                    has_data_disk="data_disk" in config,
                    has_state_disk="server_state_disk" in config, sim_scenario=sim_scenario)
        d = self.work / (label or name)
        return VM(node, self.image, d, self.sim(d / "sim", node), self.token_sha256)

    def sim(self, d: Path, node: Node) -> AzureSim:
        """A started azure-sim for `node` (its vmId is the node's machine UUID)."""
        sim = AzureSim(d, {
            "vm_id": node.uuid, "name": node.name, "tags": {"role": node.role},
            "user_data_json": node.config,
            "secrets": {node.config["join_token"]["secret"]: {"value": self.join_token}},
            **(node.sim_scenario or {}),
        })
        self.sims.append(sim)
        sim.start()
        return sim

    def replace(self, vm: VM) -> None:
        """The VM is replaced: a new OS disk and a new machine (SMBIOS UUID and IMDS vmId,
        a new azure-sim), the same name, node config and managed data disks."""
        vm.halt()
        vm.new_os_disk()
        vm.node.uuid = str(uuid.uuid4())
        vm.sim.stop()
        vm.sim = self.sim(vm.dir / f"sim-{len(vm.boots) + 1}", vm.node)

    def expected_files(self, vm: VM) -> dict[str, dict]:
        """What `canarie-agent render` says the node gets: path -> {mode, sha256}."""
        out = vm.dir / "render"
        if not out.exists():
            cfg = vm.dir / "node-config.json"
            cfg.write_text(json.dumps(vm.node.config))
            run([str(self.agent_binary), "render", "--config", str(cfg), "--out", str(out)])
        files = {}
        for p in sorted(out.rglob("*")):
            if p.is_file():
                files["/" + str(p.relative_to(out))] = {
                    "mode": f"{p.stat().st_mode & 0o7777:o}",
                    "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                }
        return files


def extract_binary(deb: Path, work: Path) -> Path:
    """The agent binary from the .deb, to run `render` on the host with the same build."""
    dest = work / "deb-contents"
    shutil.rmtree(dest, ignore_errors=True)
    run(["dpkg-deb", "-x", str(deb), str(dest)])
    binary = dest / "usr/bin/canarie-agent"
    if not binary.exists():
        raise RuntimeError(f"{deb} has no usr/bin/canarie-agent")
    return binary
