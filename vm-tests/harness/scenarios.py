"""The scenarios of `vm-tests/run test`, and the cluster bring-up `vm-tests/run demo` shows.

Each boot carries the guest's own PASS/FAIL checks (see guest/.../check); the host adds
what needs more than one boot or the outside view: files against `canarie-agent render`,
nothing rewritten on a reboot, the data disk's identity and checksum, azure-sim's log."""

from __future__ import annotations

import json
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import baseline
from .cluster import Run
from .util import log, run, sha256_file
from .vm import STOPPING, VM, Boot

CLUSTER = ["cp-01", "wk-01", "wk-02"]
SECRET = "rke2-join-token"
# Guest deadline for the bootstrap, host timeout for the whole boot (TCG on a busy machine).
GUEST_DEADLINE = 300
BOOT_TIMEOUT = 480
RBAC_DELAY_S = 60
# In the timing table: who bootstraps (vm.VM.boot's modes).
MODE_LABELS = {"agent": "", "baseline": " (cloud-init)", "split": " (cloud-init + agent)"}
NODE_PASSWORD = "/etc/rancher/node/password"


@dataclass
class Scenario:
    name: str
    description: str
    boots: list[tuple[str, Boot]] = field(default_factory=list)
    checks: list[tuple[bool, str]] = field(default_factory=list)
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(ok for ok, _ in self.checks)

    def check(self, ok: bool, what: str) -> bool:
        with self._lock:
            self.checks.append((bool(ok), what))
        return bool(ok)

    def boot(self, vm: VM, *, expect: dict, mode: str = "agent", extra: dict | None = None,
             deadline: int = GUEST_DEADLINE, timeout: int = BOOT_TIMEOUT, files: dict | None = None,
             linger: bool = False) -> Boot:
        b = vm.boot(mode=mode, expect=expect, timeout=timeout, linger=linger,
                    extra={"guest_deadline": deadline, **(extra or {})}, files=files)
        label = f"{vm.node.name} boot {b.number}" + MODE_LABELS[mode]
        with self._lock:
            self.boots.append((label, b))
        self.check(b.ok, f"{label}: guest checks ({len(b.checks)}): "
                   + ("all passed" if b.ok else "; ".join(b.failures())))
        return b


def expect_converged(vm: VM) -> dict:
    return {"agent": "success", "rke2": True, "mount": vm.node.has_data_disk}


def parallel(fn, items) -> list:
    with ThreadPoolExecutor(max(1, len(items))) as pool:
        return list(pool.map(fn, items))


# --- host-side checks -------------------------------------------------------------------------

def agent_entries(boot: Boot) -> list[str]:
    """The agent's journal entries of this boot, each flattened to one searchable line."""
    return [f"{e['message']} {' '.join(f'{k}={v}' for k, v in e['fields'].items())}"
            for e in boot.data.get("agent_log", [])]


def managed_files(boot: Boot) -> dict[str, dict]:
    """Files the bootstrap manages, without the agent's own state (rewritten every run)."""
    return {f["path"]: f for f in boot.data.get("files", [])
            if not f["path"].startswith("/var/lib/canarie-agent/")}


def check_files(sc: Scenario, r: Run, vm: VM, boot: Boot, label: str) -> None:
    expected = r.expected_files(vm)
    # Not rendered: mount units (they name the disk's UUID), RKE2's node password (random).
    got = {p: f for p, f in managed_files(boot).items()
           if not p.endswith(".mount") and p != NODE_PASSWORD}
    problems = [f"missing {p}" for p in sorted(set(expected) - set(got))]
    problems += [f"unexpected {p}" for p in sorted(set(got) - set(expected))]
    for p in sorted(set(expected) & set(got)):
        if got[p]["mode"] != expected[p]["mode"] or got[p]["uid"] != 0:
            problems.append(f"{p} mode {got[p]['mode']} uid {got[p]['uid']}, want {expected[p]['mode']} root")
        if p != baseline.TOKEN_DROPIN and got[p]["sha256"] != expected[p]["sha256"]:
            problems.append(f"{p} differs from render")
    sc.check(not problems, f"{label}: {len(expected)} files as `canarie-agent render` gives them"
             + (f": {'; '.join(problems)}" if problems else ""))


def check_unchanged(sc: Scenario, before: Boot, after: Boot, label: str) -> None:
    """Nothing rewritten: same files, same bytes, same ctime (a rename or chmod changes it)."""
    a, b = managed_files(before), managed_files(after)
    changed = sorted(p for p in set(a) | set(b) if (a.get(p) or {}) != (b.get(p) or {}))
    sc.check(not changed, f"{label}: no file rewritten since the previous boot"
             + (f": changed {', '.join(changed)}" if changed else f" ({len(b)} files)"))


def check_steps_unchanged(sc: Scenario, boot: Boot, label: str) -> None:
    steps = ((boot.data.get("agent_state") or {}).get("last_run") or {}).get("steps", [])
    got = {s["name"]: (s["outcome"], s["changes"]) for s in steps}
    bad = {n: o for n, o in got.items()
           if (n == "start-rke2" and o != ("changed", 1)) or (n != "start-rke2" and o[0] not in ("unchanged", "skipped"))}
    sc.check(steps and not bad, f"{label}: every step unchanged, only the RKE2 start made"
             + (f": {bad}" if bad else f" ({len(steps)} steps)"))


def disk_uuid(boot: Boot) -> str | None:
    return (boot.data.get("disk") or {}).get("probe", {}).get("UUID")


def check_disk_kept(sc: Scenario, first: Boot, boot: Boot, label: str) -> None:
    before, now = disk_uuid(first), disk_uuid(boot)
    sc.check(before and before == now, f"{label}: data disk not reformatted (ext4 UUID {before} -> {now})")
    formatted = [e for e in agent_entries(boot) if "formatting" in e]
    sc.check(not formatted, f"{label}: the agent did not format" + (f": {formatted}" if formatted else ""))


def check_once_per_boot(sc: Scenario, vm: VM, label: str) -> None:
    """The stand-in's persistent record: exactly one good start per agent boot so far."""
    last = vm.boots[-1]
    records = last.data.get("rke2_starts", [])
    per_boot: dict[str, int] = {}
    for rec in records:
        per_boot[rec["boot_id"]] = per_boot.get(rec["boot_id"], 0) + 1
    booted = [b.data["boot"]["boot_id"] for b in vm.boots if b.data.get("boot") and b.mode == "agent"]
    ok = all(per_boot.get(b) == 1 for b in booted) and set(per_boot) <= set(booted) and all(r["ok"] for r in records)
    sc.check(ok, f"{label}: RKE2 started exactly once in each of {len(booted)} boots (starts per boot: {list(per_boot.values())})")


def check_sim_served(sc: Scenario, vm: VM, label: str) -> None:
    reqs = vm.sim.requests()
    served = {(r["service"], r["path"].rstrip("/"), r["status"]) for r in reqs}
    wanted = [("imds", "/metadata/instance/compute/userData", 200),
              ("imds", "/metadata/identity/oauth2/token", 200),
              ("vault", f"/secrets/{SECRET}", 200)]
    missing = [w for w in wanted if w not in served]
    sc.check(not missing, f"{label}: azure-sim served userData, the token and the secret"
             + (f"; missing {missing}" if missing else f" ({len(reqs)} requests)"))
    sc.check(all(r["has_metadata_header"] for r in reqs if r["service"] == "imds")
             and not any(r["has_forwarded_for"] for r in reqs),
             f"{label}: every IMDS request had Metadata: true and none came through a proxy")


# --- scenarios ----------------------------------------------------------------------------

class Cluster:
    """The three VMs, shared by the scenarios that follow the fresh boot."""

    def __init__(self, r: Run):
        self.run = r
        self.vms: dict[str, VM] = {}


def fresh_cluster(sc: Scenario, cl: Cluster, names: list[str] = CLUSTER) -> None:
    r = cl.run
    cl.vms = {name: r.vm(name) for name in names}

    def one(vm: VM) -> None:
        boot = sc.boot(vm, expect=expect_converged(vm))
        label = vm.node.name
        check_files(sc, r, vm, boot, label)
        check_sim_served(sc, vm, label)
        state = boot.data.get("agent_state") or {}
        sc.check(state.get("last_run", {}).get("result") == "converged",
                 f"{label}: the node state says converged")
        if vm.node.has_data_disk:
            probe = (boot.data.get("disk") or {}).get("probe", {})
            sc.check(probe.get("TYPE") == "ext4" and probe.get("LABEL") == "longhorn",
                     f"{label}: data disk formatted ext4 label longhorn ({probe.get('TYPE')}, {probe.get('LABEL')})")
            sc.check(any("formatting the blank data disk" in e for e in agent_entries(boot)),
                     f"{label}: the agent logged the format of the blank disk")
            sc.check("/etc/systemd/system/var-lib-longhorn.mount" in managed_files(boot),
                     f"{label}: the mount persists as var-lib-longhorn.mount")

    parallel(one, list(cl.vms.values()))


def reboot(sc: Scenario, cl: Cluster) -> None:
    def one(vm: VM) -> None:
        first = vm.boots[-1]
        # A marker on wk-01's data disk, looked for again after the rebuild.
        extra = {"write_marker": f"written on {vm.node.name} boot {len(vm.boots) + 1}"} if vm.node.name == "wk-01" else None
        boot = sc.boot(vm, expect=expect_converged(vm), extra=extra)
        label = f"{vm.node.name} reboot"
        check_steps_unchanged(sc, boot, label)
        check_unchanged(sc, first, boot, label)
        if vm.node.has_data_disk:
            check_disk_kept(sc, first, boot, label)
        check_once_per_boot(sc, vm, label)

    parallel(one, list(cl.vms.values()))


def rebuild(sc: Scenario, cl: Cluster) -> None:
    vm = cl.vms["wk-01"]
    before = vm.boots[-1]
    marker = (before.data.get("disk") or {}).get("marker")
    vm.new_os_disk()
    vm.node.uuid = str(uuid.uuid4())  # a replaced VM is a new machine; only the data disk stays
    boot = sc.boot(vm, expect=expect_converged(vm))
    label = "wk-01 rebuilt"
    reused = [e for e in agent_entries(boot) if "F_DECISION=reuse" in e]
    sc.check(reused, f"{label}: the agent reused the data disk (decision reuse)")
    check_disk_kept(sc, before, boot, label)
    got = (boot.data.get("disk") or {}).get("marker")
    sc.check(marker and got == marker, f"{label}: the file written before the rebuild survived ({got!r})")
    check_files(sc, cl.run, vm, boot, label)


def imds_down(sc: Scenario, cl: Cluster) -> None:
    vm = cl.vms["wk-02"]
    before = vm.boots[-1]
    seen = len(vm.sim.requests())
    vm.sim.set_rules([{"name": "imds-down", "preset": "hang", "endpoint": "imds"}])
    try:
        boot = sc.boot(vm, expect=expect_converged(vm))
    finally:
        vm.sim.set_rules([])
    label = "wk-02 reboot, IMDS down"
    hung = [r for r in vm.sim.requests()[seen:] if r["service"] == "imds" and r["status"] == 0]
    sc.check(hung, f"{label}: IMDS did not answer ({len(hung)} requests hung)")
    warnings = [e["message"] + " " + str(e["fields"]) for e in boot.data.get("agent_log", [])
                if e["priority"] <= 4 and "IMDS unreachable" in str(e["fields"]) + str(e["message"])]
    sc.check(warnings, f"{label}: a warning says the last converged config was used"
             + (f": {warnings[0][:160]}" if warnings else ""))
    check_unchanged(sc, before, boot, label)
    check_once_per_boot(sc, vm, label)


def keyvault_403(sc: Scenario, r: Run) -> None:
    """The identity's role assignment has not propagated yet: Key Vault answers 403
    ForbiddenByRbac until RBAC_DELAY_S after the agent's first read, then 200."""
    vm = r.vm("wk-03")
    vm.sim.set_rules([{"name": "rbac-not-yet", "preset": "kv_403_rbac", "secret": SECRET}])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sc.boot, vm, expect=expect_converged(vm),
                              deadline=GUEST_DEADLINE + RBAC_DELAY_S, timeout=BOOT_TIMEOUT + RBAC_DELAY_S)
        while not pending.done():
            if any(q["service"] == "vault" and q["status"] == 403 for q in vm.sim.requests()):
                log(f"wk-03: first Key Vault 403; the role assignment 'propagates' in {RBAC_DELAY_S} s")
                STOPPING.wait(RBAC_DELAY_S)  # a sleep an interrupt cuts short
                break
            time.sleep(0.5)
        vm.sim.set_rules([])
        boot = pending.result()
    label = "wk-03"
    vault = [q for q in vm.sim.requests() if q["service"] == "vault" and q["path"].rstrip("/").endswith(SECRET)]
    denied = [q for q in vault if q["status"] == 403 and q["error"] == "ForbiddenByRbac"]
    granted = [q for q in vault if q["status"] == 200]
    waited = (granted[0]["elapsed_ms"] - denied[0]["elapsed_ms"]) / 1000 if denied and granted else 0
    sc.check(len(denied) >= 2 and granted and waited >= RBAC_DELAY_S,
             f"{label}: the agent kept reading through {len(denied)} 403 ForbiddenByRbac for {waited:.0f} s, then got the secret")
    check_files(sc, r, vm, boot, label)
    check_once_per_boot(sc, vm, label)


def foreign_filesystem(sc: Scenario, r: Run) -> None:
    vm = r.vm("wk-04")
    run(["mkfs.xfs", "-q", "-f", "-L", "scratch", str(vm.data_disk)])
    before = sha256_file(vm.data_disk)
    boot = sc.boot(vm, expect={"agent": "failed", "rke2": False, "mount": False}, extra={"doctor": True})
    label = "wk-04 (xfs on the data disk)"
    sc.check(sha256_file(vm.data_disk) == before, f"{label}: the data disk is byte for byte unchanged (sha256)")
    failure = [e for e in agent_entries(boot) if "bootstrap failed in step data-disk" in e]
    sc.check(failure and "xfs" in failure[0], f"{label}: the agent's one-line failure names the step and the xfs"
             + (f": {failure[0][:200]}" if failure else ""))
    inspect = boot.data.get("disk_inspect") or {}
    sc.check(inspect.get("status") == 1 and "xfs" in inspect.get("output", ""),
             f"{label}: `canarie-agent disk inspect` refuses it and names xfs (exit {inspect.get('status')})")
    doctor = boot.data.get("doctor") or {}
    try:
        checks = {c["id"]: c for c in json.loads(doctor.get("output", ""))["checks"]}
    except (ValueError, KeyError, TypeError):
        checks = {}
    disk = checks.get("data-disk", {})
    sc.check(doctor.get("status") == 1 and disk.get("status") == "fail" and "xfs" in disk.get("finding", ""),
             f"{label}: `canarie-agent doctor` fails its data-disk check and names the xfs: {disk.get('finding', doctor)!s:.200}")
    sc.check(not boot.data.get("rke2_starts"), f"{label}: RKE2 was never started")


def cloud_init_baseline(sc: Scenario, r: Run) -> None:
    def one(name: str) -> None:
        vm = r.vm(name, label=f"{name}-cloud-init")
        r.expected_files(vm)  # renders into vm.dir/render, which the heredocs are made from
        seed = {"user_data": baseline.cloud_config(vm.node.config, vm.dir / "render"),
                "meta_data": baseline.meta_data(vm.node.uuid, name)}
        boot = sc.boot(vm, mode="baseline", expect={"agent": None, "rke2": True, "mount": vm.node.has_data_disk},
                       extra={"cloud_init": seed})
        check_files(sc, r, vm, boot, f"{name} (cloud-init)")

    parallel(one, CLUSTER)


def run_guarded(sc: Scenario, fn, *args) -> Scenario:
    try:
        fn(sc, *args)
    except Exception as e:  # one scenario's crash is its failure; the others go on
        sc.error = f"{type(e).__name__}: {e}"
        log(f"{sc.name}: error: {sc.error}\n{traceback.format_exc()}")
    return sc


# --- issue 22: the image without cloud-init; provisioning reports to the WireServer -------------

# Not the simulator's default (azureuser): the user must come from what IMDS serves.
ADMIN_USER = "canarieops"
# The agent's RBAC wait in the provisioning-failed node config (default 600 s), so the test
# sees the failure report within minutes.
FAILED_RBAC_WAIT_S = 30


def ssh_keys(r: Run) -> dict[str, Path]:
    """This run's two test key pairs (made on the host with ssh-keygen): `ssh-admin`, which the
    simulator gives the VM as its admin key, and `ssh-other`, which it does not. Both private
    keys go into the guest (fw_cfg), where its ssh client logs in to its own sshd."""
    d = r.work / "ssh-keys"
    keys = {name: d / name for name in ("ssh-admin", "ssh-other")}
    if not d.exists():
        d.mkdir(mode=0o700)
        for name, path in keys.items():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"canarie-vmtest-{name}", "-f", str(path)])
    return keys


def platform_vm(r: Run, name: str, label: str, keys: dict[str, Path]) -> tuple[VM, dict]:
    """A VM whose simulator serves an admin user, computer name and public key in IMDS
    (compute.osProfile, compute.publicKeys), and the guest's expectations of them."""
    public = Path(f"{keys['ssh-admin']}.pub").read_text().strip()
    vm = r.vm(name, label=label, sim_scenario={
        "admin_username": ADMIN_USER, "computer_name": name,
        "public_keys": [{"key_data": public, "path": f"/home/{ADMIN_USER}/.ssh/authorized_keys"}]})
    return vm, {"admin_username": ADMIN_USER, "computer_name": name, "public_key": public}


def health_reports(vm: VM) -> list[dict]:
    """The provisioning reports the simulator's WireServer accepted, in arrival order."""
    return [q for q in vm.sim.requests() if q.get("health") and q["status"] == 200]


def reported(reports: list[dict]) -> list[str]:
    return [f"{q['health']['state']}" + (f"/{q['health']['sub_status']}" if q["health"].get("sub_status") else "")
            for q in reports]


def check_ready_after_start(sc: Scenario, vm: VM, boot: Boot, label: str) -> None:
    """Ready reached Azure after RKE2's start, never before. Two clocks, so an order of events
    each side records: the simulator's log holds the reports in arrival order; the guest's
    journal holds the agent's "reported to Azure" for each, and systemd's RKE2 start job,
    on one monotonic clock with the stand-in's own record of its start."""
    accepted = reported(health_reports(vm))
    sc.check(accepted == ["NotReady/Provisioning", "Ready"],
             f"{label}: the simulator's WireServer accepted NotReady/Provisioning, then Ready, nothing else: {accepted}")
    jobs = boot.data.get("timeline", [])
    unit = f"rke2-{vm.node.role}.service"
    start = next((j["mono_us"] for j in jobs if j["unit"] == unit and j["result"] == "begin"), None)
    done = next((j["mono_us"] for j in jobs if j["unit"] == unit and j["result"] == "done"), None)
    journal = [(e["mono_us"], e["fields"].get("F_STATE", "") + (f"/{e['fields']['F_SUB_STATUS']}"
                if e["fields"].get("F_SUB_STATUS", "-") != "-" else ""))
               for e in boot.data.get("agent_log", []) if "reported to Azure" in (e["message"] or "")]
    boot_id = (boot.data.get("boot") or {}).get("boot_id")
    standin = [s["uptime"] * 1e6 for s in boot.data.get("rke2_starts", []) if s["boot_id"] == boot_id and s["ok"]]
    states = [s for _, s in journal]
    ready = [t for t, s in journal if s == "Ready"]
    provisioning = [t for t, s in journal if s == "NotReady/Provisioning"]
    ok = (states == accepted and start is not None and done is not None and len(ready) == 1 and standin
          and provisioning and provisioning[0] < start < done < ready[0] and standin[0] < ready[0])
    sc.check(ok, f"{label}: in the guest's journal the agent's reports match the simulator's ({states}); "
             f"Provisioning sent before RKE2's start job and Ready after its success and after the stand-in "
             f"ran (µs since boot: Provisioning {provisioning[:1]}, start {start}, done {done}, "
             f"stand-in {[int(t) for t in standin[:1]]}, Ready {ready})")


def no_cloud_init(sc: Scenario, r: Run) -> None:
    """The image without cloud-init: the agent provisions the VM (user, key, hostname, host
    keys) and reports Ready only once RKE2 started. Beside it, the same node on the same image
    with cloud-init enabled (a NoCloud seed with the same user, key and computer name: today's
    split) gives the timing comparison of the same run."""
    keys = ssh_keys(r)
    node = "cp-01"

    def without() -> None:
        vm, platform = platform_vm(r, node, "no-cloud-init", keys)
        boot = sc.boot(vm, expect=expect_converged(vm), extra={"platform": platform}, files=keys)
        label = f"{node} (no cloud-init)"
        check_files(sc, r, vm, boot, label)
        check_sim_served(sc, vm, label)
        check_ready_after_start(sc, vm, boot, label)

    def with_cloud_init() -> None:
        vm, platform = platform_vm(r, node, "no-cloud-init-split", keys)
        seed = {"user_data": baseline.platform_cloud_config(ADMIN_USER, platform["public_key"]),
                "meta_data": baseline.meta_data(vm.node.uuid, platform["computer_name"])}
        boot = sc.boot(vm, mode="split", expect=expect_converged(vm),
                       extra={"platform": platform, "cloud_init": seed}, files=keys)
        check_files(sc, r, vm, boot, f"{node} (cloud-init + agent)")

    parallel(lambda fn: fn(), [without, with_cloud_init])


def provisioning_failed(sc: Scenario, r: Run) -> None:
    """Key Vault denies the join token for good: the agent gives up after its RBAC wait and
    tells Azure NotReady/ProvisioningFailed, naming the step, while the platform still waits."""
    vm = r.vm("cp-01", label="provisioning-failed",
              config_changes={"join_token": {"rbac_wait_seconds": FAILED_RBAC_WAIT_S}})
    vm.sim.set_rules([{"name": "rbac-never", "preset": "kv_403_rbac", "secret": SECRET}])
    boot = sc.boot(vm, expect={"agent": "failed", "rke2": False, "mount": False})
    label = "cp-01 (Key Vault denies)"
    failure = [e for e in agent_entries(boot) if "bootstrap failed in step" in e]
    sc.check(failure and "step join-token" in failure[0],
             f"{label}: the agent's failure names the join-token step" + (f": {failure[0][:200]}" if failure else ""))
    reqs = vm.sim.requests()
    denied = [q for q in reqs if q["service"] == "vault" and q["status"] == 403 and q["error"] == "ForbiddenByRbac"]
    reports = health_reports(vm)
    sc.check(reported(reports) == ["NotReady/ProvisioningFailed"],
             f"{label}: the simulator's WireServer accepted one report, NotReady/ProvisioningFailed, and no Ready: "
             f"{reported(reports)}")
    description = (reports[0]["health"].get("description") or "") if reports else ""
    sc.check("join-token" in description and r.join_token not in description,
             f"{label}: its description names the join-token step: {description[:300]!r}")
    waited = (reports[0]["elapsed_ms"] - denied[0]["elapsed_ms"]) / 1000 if reports and denied else None
    sc.check(waited is not None and waited >= FAILED_RBAC_WAIT_S and boot.complete,
             f"{label}: reported {waited if waited is None else round(waited)} s after the first of {len(denied)} "
             f"403 ForbiddenByRbac (the node's RBAC wait: {FAILED_RBAC_WAIT_S} s), before the boot ended")
