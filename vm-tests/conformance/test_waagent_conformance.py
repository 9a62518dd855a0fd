"""WALinuxAgent's own WireServer protocol code against azure-sim's WireServer.

Nobody here wrote azurelinuxagent (Debian's `waagent` package, the agent Azure's Linux
images ship), so if it fetches the goal state from the simulator and its health reports
(the ones its provisioning handler sends: Ready, and NotReady/ProvisioningFailed) are
recorded with the fields it sent, the simulator speaks the protocol canarie-agent reports
with. The package is never installed here (its daemon would talk to 168.63.129.16):
scripts/deps/fetch-debs.sh unpacks it and this test imports it from there.

Only the endpoint and two settings are ours (FastTrack off, Lib.Dir): WALinuxAgent reads it from `<Lib.Dir>/WireServerEndpoint` (the
file its DHCP handling writes on a VM; without it, it falls back to 168.63.129.16). Lib.Dir
points at a temporary directory, so nothing is written under /var/lib/waagent. Everything
stays on 127.0.0.1: a socket guard fails the test on any other connection.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from simproc import admin, guard_loopback, running_sim

DEB_CACHE = Path(os.environ.get("CANARIE_DEB_CACHE", "/var/cache/canarie-debs"))
WAAGENT_ROOT = DEB_CACHE / "waagent" / "root"
DIST_PACKAGES = Path("usr") / "lib" / "python3" / "dist-packages"
# WALinuxAgent, and python3-distro, which it imports (a Depends of the package).
PYTHON_PATHS = [str(DEB_CACHE / pkg / "root" / DIST_PACKAGES) for pkg in ("waagent", "python3-distro")]

INCARNATION = 3
CONTAINER_ID = "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2"
ROLE_INSTANCE_ID = "b61f93d0-e1ed-40b2-b067-22c243233448.MachineRole_IN_0"
SCENARIO = {
    "wireserver": {"incarnation": INCARNATION, "container_id": CONTAINER_ID, "role_instance_id": ROLE_INSTANCE_ID},
}
FAILED = "step join-token failed: Key Vault denied reading secret rke2-join-token (403 ForbiddenByRbac); grant the VM's identity 'Key Vault Secrets User'"


@pytest.fixture(scope="module")
def waagent():
    for path in PYTHON_PATHS:
        if not Path(path).is_dir():
            pytest.fail(f"{path} is missing: run scripts/deps/fetch-debs.sh (scripts/install-deps.sh does)")
    sys.path[:0] = PYTHON_PATHS
    try:
        import azurelinuxagent  # noqa: F401

        yield (WAAGENT_ROOT / ".canarie-version").read_text().strip()
    finally:
        for path in PYTHON_PATHS:
            sys.path.remove(path)


@pytest.fixture
def sim(tmp_path):
    with running_sim(tmp_path, SCENARIO) as info:
        yield info


@pytest.fixture
def protocol(waagent, sim, tmp_path, monkeypatch):
    """WALinuxAgent's WireProtocol on the simulator, set up the way the agent does it: the
    endpoint from its WireServerEndpoint file, through its own ProtocolUtil."""
    from azurelinuxagent.common import conf
    from azurelinuxagent.common.protocol.util import ProtocolUtil
    from azurelinuxagent.common.protocol.wire import WireProtocol

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    lib = tmp_path / "waagent-lib"
    lib.mkdir()
    monkeypatch.setitem(conf.__conf__.values, "Lib.Dir", str(lib))
    # FastTrack fetches extension goal states from the HostGAPlugin (port 32526 beside the
    # WireServer), which azure-sim does not simulate; waagent.conf's own switch turns it off.
    monkeypatch.setitem(conf.__conf__.values, "Debug.EnableFastTrack", "n")
    host_port = sim["wireserver_url"].removeprefix("http://").rstrip("/")
    (lib / "WireServerEndpoint").write_text(host_port)
    refused = guard_loopback(monkeypatch)
    util = ProtocolUtil()  # one per thread: forget the endpoint an earlier test read
    util.endpoint = None
    endpoint = util.get_wireserver_endpoint()
    assert endpoint == host_port
    yield WireProtocol(endpoint)
    assert refused == [], f"WALinuxAgent tried to leave loopback: {refused}"


def records(sim) -> list[dict]:
    return [json.loads(line) for line in Path(sim["request_log"]).read_text().splitlines() if line.strip()]


def health(sim) -> list[dict]:
    return [r for r in records(sim) if r.get("health")]


def test_it_reads_the_versions_and_the_goal_state(protocol, sim):
    protocol.client.check_wire_protocol_version()
    protocol.client.update_goal_state(force_update=True)
    goal_state = protocol.client.get_goal_state()
    assert (goal_state.incarnation, goal_state.container_id, goal_state.role_instance_id) == (
        str(INCARNATION), CONTAINER_ID, ROLE_INSTANCE_ID,
    )  # fmt: skip
    paths = [(r["method"], r["path"], r["query"], r["status"]) for r in records(sim) if r["service"] == "wireserver"]
    assert ("GET", "/", "comp=versions", 200) in paths
    assert ("GET", "/machine/", "comp=goalstate", 200) in paths
    # The full goal state: hosting environment and shared config, by the URLs the goal state names.
    assert any("type=hostingEnvironmentConfig" in q and s == 200 for _, _, q, s in paths)
    assert any("type=sharedConfig" in q and s == 200 for _, _, q, s in paths)


def test_its_ready_report_is_recorded(protocol, sim):
    from azurelinuxagent.common.protocol.restapi import ProvisionStatus
    from azurelinuxagent.common.version import AGENT_NAME

    protocol.client.update_goal_state(force_update=True)
    protocol.report_provision_status(ProvisionStatus(status="Ready"))
    (report,) = health(sim)
    assert report["status"] == 200, report
    assert report["health"]["protocol"] == "xml"
    assert report["health"]["state"] == "Ready"
    assert str(report["health"]["incarnation"]) == str(INCARNATION)
    assert report["agent_name"] == AGENT_NAME


def test_its_not_ready_report_carries_substatus_and_description(protocol, sim):
    from azurelinuxagent.common.protocol.restapi import ProvisionStatus

    protocol.client.update_goal_state(force_update=True)
    protocol.report_provision_status(ProvisionStatus(status="NotReady", subStatus="ProvisioningFailed", description=FAILED))
    (report,) = health(sim)
    assert report["status"] == 200, report
    assert (report["health"]["state"], report["health"]["sub_status"], report["health"]["description"]) == (
        "NotReady", "ProvisioningFailed", FAILED,
    )  # fmt: skip


def test_a_report_for_an_old_incarnation_is_refused_until_the_goal_state_is_read_again(protocol, sim):
    from azurelinuxagent.common.exception import ProtocolError
    from azurelinuxagent.common.protocol.restapi import ProvisionStatus

    protocol.client.update_goal_state(force_update=True)
    status, body = admin(sim, "POST", "wireserver/incarnation")
    assert status == 200 and json.loads(body)["incarnation"] == INCARNATION + 1
    with pytest.raises(ProtocolError):
        protocol.report_provision_status(ProvisionStatus(status="Ready"))
    protocol.client.update_goal_state(force_update=True)
    protocol.report_provision_status(ProvisionStatus(status="Ready"))
    stale, fresh = health(sim)
    assert stale["status"] == 410 and str(stale["health"]["incarnation"]) == str(INCARNATION)
    assert fresh["status"] == 200 and str(fresh["health"]["incarnation"]) == str(INCARNATION + 1)
