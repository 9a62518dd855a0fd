"""The Vagrantfile, checked as far as this machine allows: there is no Vagrant, hypervisor or
internet here, so it is loaded with a recorder of Vagrant's configuration API
(vagrant_stub.rb) in a copy of the repository's relevant files, and what it configures is
checked: the three nodes, the data disks, the uploads and provisioning, and the node configs
it gives azure-sim, which the real agent and the real azure-sim must accept.
provision.sh is checked by bash -n and shellcheck."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
STUB = Path(__file__).with_name("vagrant_stub.rb")
AGENT = REPO / "target" / "debug" / "canarie-agent"
SIM = REPO / "target" / "debug" / "azure-sim"
PROVISION = REPO / "vm-tests" / "vagrant" / "provision.sh"
NODES = {"cp-01": "server", "wk-01": "agent", "wk-02": "agent"}


def tree(tmp_path: Path, *, built: bool) -> Path:
    """The files the Vagrantfile reads, in a scratch copy (it writes .vagrant/ beside itself)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "Vagrantfile", root)
    shutil.copytree(REPO / "examples", root / "examples")
    (root / "vm-tests" / "vagrant").mkdir(parents=True)
    shutil.copy(REPO / "vm-tests" / "vagrant" / "test-libvirt.rb", root / "vm-tests" / "vagrant")
    if built:
        (root / "target" / "debian").mkdir(parents=True)
        (root / "target" / "debian" / "canarie-agent_0.1.0_amd64.deb").write_bytes(b"deb")
        (root / "target" / "release").mkdir()
        (root / "target" / "release" / "azure-sim").write_bytes(b"sim")
    return root


def load(root: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("CANARIE_", "VAGRANT_"))}
    return subprocess.run(["ruby", str(STUB), str(root / "Vagrantfile"), *argv],
                          capture_output=True, text=True, timeout=60, cwd=root, env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    root = tree(tmp_path_factory.mktemp("vagrant"), built=True)
    p = load(root, "up")
    assert p.returncode == 0, p.stderr
    return root, json.loads(p.stdout)


def calls(log, suffix: str) -> list[dict]:
    return [c for c in log if c["call"].endswith(suffix)]


def node_calls(log, name: str) -> list[dict]:
    return [c for c in log if c["call"].startswith(f"config.vm.define[{name}].")]


def test_ruby_syntax():
    p = subprocess.run(["ruby", "-c", str(REPO / "Vagrantfile")], capture_output=True, text=True)
    assert p.returncode == 0 and "Syntax OK" in p.stdout, p.stderr


def test_up_without_a_build_says_what_to_build(tmp_path):
    p = load(tree(tmp_path, built=False), "up")
    assert p.returncode != 0
    assert "build on the host first: packaging/build.sh" in p.stderr


def test_status_without_a_build_still_loads(tmp_path):
    # `vagrant status` / `destroy` must work before (or without) a build.
    assert load(tree(tmp_path, built=False), "status").returncode == 0


def test_three_nodes_with_hostnames_and_private_addresses(up):
    _, log = up
    defined = [c["args"][0] for c in calls(log, "config.vm.define")]
    assert defined == list(NODES)
    ips = []
    for name in NODES:
        nc = node_calls(log, name)
        assert [c["args"] for c in nc if c["call"].endswith(".vm.hostname=")] == [[name]]
        net = [c for c in nc if c["call"].endswith(".vm.network")]
        assert len(net) == 1 and net[0]["args"] == ["private_network"], net
        ips.append(net[0]["kw"]["ip"])
    assert len(set(ips)) == 3


def test_only_workers_get_a_data_disk(up):
    _, log = up
    for name, role in NODES.items():
        nc = node_calls(log, name)
        libvirt = [c for c in nc if c["call"].endswith(".storage")]
        vbox = [c for c in nc if c["call"].endswith(".vm.disk")]
        if role == "agent":
            assert len(libvirt) == 1 and libvirt[0]["kw"]["size"] == "10G", libvirt
            # SCSI, as on Azure (the agent's unit allows block-sd devices only).
            assert libvirt[0]["kw"]["bus"] == "scsi", libvirt
            assert len(vbox) == 1 and vbox[0]["kw"]["size"] == "10GB", vbox
        else:
            assert libvirt == [] and vbox == [], (libvirt, vbox)


def test_uploads_and_provisioning(up):
    _, log = up
    for name, role in NODES.items():
        nc = node_calls(log, name)
        files = {c["kw"]["destination"]: c["kw"]["source"] for c in nc
                 if c["call"].endswith(".vm.provision") and c["args"] == ["file"]}
        assert sorted(files) == ["/tmp/canarie/azure-sim", "/tmp/canarie/canarie-agent.deb",
                                 "/tmp/canarie/scenario.json"]
        assert files["/tmp/canarie/canarie-agent.deb"].endswith("target/debian/canarie-agent_0.1.0_amd64.deb")
        shell = [c for c in nc if c["call"].endswith(".vm.provision") and c["args"] == ["shell"]
                 and "path" in c["kw"]]
        assert len(shell) == 1 and shell[0]["kw"]["path"] == "vm-tests/vagrant/provision.sh"
        env = shell[0]["kw"]["env"]
        assert env["ROLE"] == role and env["RKE2_VERSION"].startswith("v1.")
        # The uploads run as the SSH user: their directory must be that user's (a root-owned
        # one made the first real `vagrant up` fail in scp).
        mkdir = [c for c in nc if c["call"].endswith(".vm.provision") and "inline" in c["kw"]
                 and "/tmp/canarie" in c["kw"]["inline"]]
        assert len(mkdir) == 1 and mkdir[0]["kw"]["privileged"] == "false", mkdir
    # The repository is not shared into the VMs: only the three files go in.
    synced = calls(log, "config.vm.synced_folder")
    assert len(synced) == 1 and synced[0]["kw"]["disabled"] == "true"


def scenarios(root: Path) -> dict[str, dict]:
    return {n: json.loads((root / ".vagrant" / f"canarie-{n}-scenario.json").read_text()) for n in NODES}


def test_one_private_join_token_for_the_cluster(up):
    root, _ = up
    token_file = root / ".vagrant" / "canarie-join-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("K10") and "::server:" in token
    for name, sc in scenarios(root).items():
        assert sc["secrets"]["rke2-join-token"]["value"] == token, name
        assert stat.S_IMODE((root / ".vagrant" / f"canarie-{name}-scenario.json").stat().st_mode) == 0o600
    # A second `vagrant up` keeps the cluster's token.
    assert load(root, "up").returncode == 0
    assert token_file.read_text().strip() == token


def test_node_configs_are_valid_for_the_agent(up):
    root, log = up
    server_ip = next(c["kw"]["ip"] for c in node_calls(log, "cp-01") if c["call"].endswith(".vm.network"))
    for name, sc in scenarios(root).items():
        config = sc["user_data_json"]
        p = subprocess.run([str(AGENT), "config", "validate", "-"], input=json.dumps(config),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"{name}: {p.stdout}{p.stderr}"
        assert config["role"] == NODES[name] and config["node_name"] == name
        assert sc["tags"]["role"] == NODES[name]
        if NODES[name] == "agent":
            assert config["cluster"]["server_url"] == f"https://{server_ip}:9345"
            assert config["data_disk"]["lun"] == 0  # provision.sh links the 10 GiB disk as LUN 0
        else:
            assert server_ip in config["cluster"]["tls_san"] and "public_ip" not in config["cluster"]


def test_the_server_plans_against_its_azure_sim(up, tmp_path):
    """cp-01's scenario, served by the real azure-sim: the real agent reads its config from
    userData, gets a token and the join token over TLS, and plans the node (nothing written)."""
    root, _ = up
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([str(SIM), "--scenario", str(root / ".vagrant" / "canarie-cp-01-scenario.json"),
                             "--ca-out", str(tmp_path / "ca.pem"), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if ready.exists() and ready.stat().st_size or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"azure-sim refused the scenario: {proc.stderr.read()}"
        urls = json.loads(ready.read_text())
        node = tmp_path / "root"
        (node / "etc").mkdir(parents=True)
        (node / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        p = subprocess.run([str(AGENT), "plan", "--json", "--root", str(node), "--imds-url", urls["imds_url"],
                            "--vault-url", urls["vault_url"], "--ca-file", str(tmp_path / "ca.pem")],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        plan = json.loads(p.stdout)
        token = scenarios(root)["cp-01"]["secrets"]["rke2-join-token"]["value"]
        assert token not in p.stdout + p.stderr
        steps = {s["name"]: s for s in plan["steps"]}
        assert steps["join-token"]["outcome"] != "failed", steps["join-token"]
        targets = [c["target"] for s in plan["steps"] for c in s["changes"]]
        assert "/etc/rancher/rke2/config.yaml" in targets, targets
        assert list(node.rglob("*")) == [node / "etc", node / "etc" / "machine-id"], "plan wrote files"
    finally:
        proc.terminate()
        proc.wait(10)


def test_provision_script_is_clean_shell():
    assert subprocess.run(["bash", "-n", str(PROVISION)]).returncode == 0
    p = subprocess.run(["shellcheck", "--severity=info", str(PROVISION)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def artifacts_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rke2-artifacts"
    d.mkdir()
    (d / "install.sh").write_text("#!/bin/sh\n")
    return d


def test_offline_rke2_from_an_artifact_directory(tmp_path):
    root = tree(tmp_path, built=True)
    art = artifacts_dir(tmp_path)
    p = load(root, "up", env={"CANARIE_RKE2_ARTIFACTS": str(art)})
    assert p.returncode == 0, p.stderr
    log = json.loads(p.stdout)
    for name in NODES:
        nc = node_calls(log, name)
        files = {c["kw"]["destination"]: c["kw"]["source"] for c in nc
                 if c["call"].endswith(".vm.provision") and c["args"] == ["file"]}
        assert files["/tmp/canarie/rke2-artifacts"] == str(art)
        shell = [c for c in nc if c["call"].endswith(".vm.provision") and "path" in c["kw"]]
        assert shell[0]["kw"]["env"]["RKE2_ARTIFACTS"] == "/tmp/canarie/rke2-artifacts"
    # Online (the default) uploads no artifacts and passes none.
    assert not [c for c in json.loads(load(root, "up").stdout)
                if c["kw"].get("destination") == "/tmp/canarie/rke2-artifacts"]


def test_an_artifact_directory_without_install_sh_is_refused(tmp_path):
    root = tree(tmp_path, built=True)
    (tmp_path / "empty").mkdir()
    p = load(root, "up", env={"CANARIE_RKE2_ARTIFACTS": str(tmp_path / "empty")})
    assert p.returncode != 0 and "has no install.sh" in p.stderr, p.stderr


def test_state_directory_and_node_subset(tmp_path):
    root = tree(tmp_path, built=True)
    state = tmp_path / "state"
    p = load(root, "up", env={"VAGRANT_DOTFILE_PATH": str(state), "CANARIE_NODES": "cp-01,wk-01"})
    assert p.returncode == 0, p.stderr
    assert [c["args"][0] for c in calls(json.loads(p.stdout), "config.vm.define")] == ["cp-01", "wk-01"]
    assert (state / "canarie-join-token").exists() and not (root / ".vagrant").exists()


def test_the_test_settings_keep_the_guests_offline(tmp_path):
    """vm-tests/run vagrant's settings: user-mode networking with restrict=on and only an ssh
    hostfwd on 127.0.0.1, no libvirt network, TCG."""
    root = tree(tmp_path, built=True)
    nodes = {n: {"ssh_port": 2201 + i, "boot_timeout": 900, "libvirt_uri": "qemu:///system",
                 "console": f"/w/{n}/console.log", "inputs": f"/w/{n}/vmtest.json",
                 "ca": f"/w/{n}/ca.pem", "results": f"/w/{n}/results.log"}
             for i, n in enumerate(NODES)}
    (tmp_path / "nodes.json").write_text(json.dumps(nodes))
    p = load(root, "up", env={"CANARIE_VAGRANT_TEST": str(tmp_path / "nodes.json")})
    assert p.returncode == 0, p.stderr
    log = json.loads(p.stdout)
    for name, node in nodes.items():
        nc = node_calls(log, name)
        assert not [c for c in nc if c["call"].endswith(".vm.network")], "no libvirt network in the test"
        args = [c["kw"]["value"] for c in nc if c["call"].endswith(".qemuargs")]
        netdev = args[args.index("-netdev") + 1]
        assert "restrict=on" in netdev.split(",")
        assert f"hostfwd=tcp:127.0.0.1:{node['ssh_port']}-169.254.169.10:22" in netdev.split(",")
        assert "guestfwd" not in netdev
        assert [c["args"] for c in nc if c["call"].endswith(".ssh.host=")] == [["127.0.0.1"]]
        assert [c["args"] for c in nc if c["call"].endswith(".driver=")] == [["qemu"]]
        assert [c["args"] for c in nc if c["call"].endswith(".mgmt_attach=")] == [["false"]]
