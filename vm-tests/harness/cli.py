"""`python3 -m harness demo|test` (called by vm-tests/run, which builds what it needs first)."""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import ha, image, scenarios, sim, timing, vm
from .cluster import Run, extract_binary
from .scenarios import Cluster, Scenario, run_guarded
from .util import log


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vm-tests/run")
    p.add_argument("command", choices=["demo", "test", "rootfs"],
                   help="rootfs: only make sure the cached root filesystem exists (downloads)")
    p.add_argument("--deb", type=Path, help="the canarie-agent .deb to install in the image")
    p.add_argument("--keep", action="store_true", help="keep the work directory (disks, logs)")
    p.add_argument("--only", nargs="*", default=None, metavar="SCENARIO",
                   help="test: run only these scenarios (their prerequisites run too)")
    return p.parse_args(argv)


def _terminate(signum, _frame):
    # Boots run in worker threads the main thread waits for: end them first, or the
    # exit would wait for every boot to time out.
    vm.stop_all()
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "rootfs":
        image.rootfs_tarball()
        return 0
    if not args.deb:
        raise SystemExit("vm-tests: demo and test need --deb (packaging/build.sh makes it)")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    work = Path(tempfile.mkdtemp(prefix="canarie-vm-tests.", dir="/var/tmp"))
    r: Run | None = None
    started = time.monotonic()
    try:
        log(f"work directory {work}")
        deb = args.deb.resolve()
        r = Run(work=work, image=image.build(work, deb), agent_binary=extract_binary(deb, work),
                join_token=Run.new_token())
        if args.command == "demo":
            return demo(r)
        return test(r, args.only)
    finally:
        # Always: no QEMU and no azure-sim outlives the run, no disk image stays behind.
        vm.kill_all()
        if r is not None:
            sim.stop_all(r.sims)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        log(f"total {time.monotonic() - started:.0f} s")


def demo(r: Run) -> int:
    cl = Cluster(r)
    sc = run_guarded(Scenario("cluster", "three nodes boot and converge"), scenarios.fresh_cluster, cl)
    print()
    print("== canarie cluster: cp-01 (server), wk-01 and wk-02 (agents), each a QEMU VM against its own azure-sim")
    for name, v in cl.vms.items():
        print(node_summary(v))
    print()
    print_checks([sc], passed_too=False)
    return 0 if sc.ok else 1


def node_summary(v: vm.VM) -> str:
    if not v.boots:
        return f"{v.node.name}  not booted"
    b = v.boots[-1]
    t = timing.boot_timing(b)
    units = b.data.get("units", {})
    rke2 = f"rke2-{v.node.role}.service"
    state = (b.data.get("agent_state") or {})
    steps = (state.get("last_run") or {}).get("steps", [])
    files = scenarios.managed_files(b)
    disk = b.data.get("disk") or {}
    probe = disk.get("probe", {})
    lines = [f"{v.node.name}  role {v.node.role}, boot {'ok' if b.ok else 'FAILED'} in {b.seconds:.0f} s (QEMU, TCG)"]
    if t:
        lines.append(f"    canarie-agent started RKE2 {t['bootstrap']:.1f} s after its own start, "
                     f"{t['kernel_to_rke2']:.1f} s after the kernel's")
    lines.append(f"    canarie-agent.service: {units.get('canarie-agent.service', {}).get('Result', '?')}; "
                 f"{rke2}: {units.get(rke2, {}).get('ActiveState', '?')} (unit {units.get(rke2, {}).get('UnitFileState', '?')}, "
                 f"started by the agent, {sum(1 for s in b.data.get('rke2_starts', []) if s['boot_id'] == b.data.get('boot', {}).get('boot_id'))}x this boot)")
    lines.append("    steps: " + ", ".join(f"{s['name']} {s['outcome']}" for s in steps))
    lines.append(f"    files ({len(files)}): " + ", ".join(
        f"{Path(p).name} {f['mode']}" for p, f in files.items()))
    if disk:
        lines.append(f"    data disk: {disk['link']} -> {disk['device']}: {probe.get('TYPE')} label {probe.get('LABEL')} "
                     f"UUID {probe.get('UUID')}, mounted at {disk.get('mounted_at') or 'nowhere'}")
    else:
        lines.append("    data disk: none (server)")
    reqs = v.sim.requests()
    lines.append(f"    azure-sim: {sum(q['service'] == 'imds' for q in reqs)} IMDS and "
                 f"{sum(q['service'] == 'vault' for q in reqs)} Key Vault requests, statuses "
                 + ", ".join(sorted({str(q['status']) for q in reqs})))
    return "\n".join(lines)


def print_checks(results: list[Scenario], passed_too: bool) -> None:
    for sc in results:
        print(f"{'PASS' if sc.ok else 'FAIL'} {sc.name}: {sc.description}")
        for ok, what in sc.checks:
            if passed_too or not ok:
                print(f"    {'ok  ' if ok else 'FAIL'} {what}")
        if sc.error:
            print(f"    FAIL {sc.error}")


SCENARIOS = {
    "fresh-cluster": "three fresh nodes: disks formatted and mounted on the workers, files as rendered, RKE2 started once by the agent",
    "reboot": "all three rebooted: nothing reformatted or rewritten, RKE2 started once per boot",
    "rebuild": "wk-01 gets a new OS disk, keeps its data disk: reused, its files survive",
    "imds-down": "wk-02 reboots with IMDS hanging: RKE2 still starts, with a warning",
    "keyvault-403": f"a new node whose Key Vault role takes {scenarios.RBAC_DELAY_S} s to propagate: the bootstrap waits, then succeeds",
    "foreign-filesystem": "xfs on the data disk: refused, disk unchanged, RKE2 not started, the cause named",
    "cloud-init-baseline": "the same nodes bootstrapped the old way by cloud-init (for the timing comparison)",
    "ha-servers": "three servers, each with a state disk formatted once and mounted before RKE2; cp-02 and cp-03 join through the registration address",
    "server-rebuild": "cp-01 replaced (new OS disk, new identity), state disk kept: reused, RKE2 starts on the previous state, nothing formatted",
    "node-rejoin": "wk-02 replaced (new OS disk, new identity, same name and data disk): rejoins with its node password, no manual step",
    "no-cloud-init": "cloud-init disabled: the agent provisions user, key, hostname and host keys, sshd takes the key, "
                     "Ready reaches the WireServer only after RKE2's start (beside it, the same node with cloud-init)",
    "provisioning-failed": "Key Vault denies for good: NotReady/ProvisioningFailed naming the join-token step reaches the WireServer",
}
PREREQS = {"reboot": ["fresh-cluster"], "rebuild": ["reboot"], "imds-down": ["reboot"],
           "server-rebuild": ["ha-servers"], "node-rejoin": ["imds-down"]}


def test(r: Run, only: list[str] | None) -> int:
    wanted = set(only or SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"vm-tests: unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    for name in list(wanted):
        stack = [name]
        while stack:
            for pre in PREREQS.get(stack.pop(), []):
                wanted.add(pre)
                stack.append(pre)
    results = {name: Scenario(name, SCENARIOS[name]) for name in SCENARIOS if name in wanted}
    cl = Cluster(r)

    def step(name, fn, *a):
        if name not in results:
            return
        missing = [p for p in PREREQS.get(name, []) if not results[p].ok]
        if missing:
            results[name].error = f"not run: {', '.join(missing)} failed"
            return
        run_guarded(results[name], fn, *a)

    def cluster_line():
        step("fresh-cluster", scenarios.fresh_cluster, cl)
        step("reboot", scenarios.reboot, cl)

        def wk02():
            step("imds-down", scenarios.imds_down, cl)
            step("node-rejoin", ha.node_rejoin, cl)
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(step, "rebuild", scenarios.rebuild, cl), pool.submit(wk02)]:
                f.result()

    servers = ha.HA(r)

    def ha_line():
        step("ha-servers", ha.ha_servers, servers)
        step("server-rebuild", ha.server_rebuild, servers)

    def faults_line():
        step("keyvault-403", scenarios.keyvault_403, r)
        step("foreign-filesystem", scenarios.foreign_filesystem, r)

    def provisioning_line():
        step("no-cloud-init", scenarios.no_cloud_init, r)
        step("provisioning-failed", scenarios.provisioning_failed, r)

    # Independent lines; vm.SLOTS keeps two guests booting at a time (a lingering server
    # others join idles beside them).
    with ThreadPoolExecutor(5) as pool:
        for f in [pool.submit(cluster_line), pool.submit(faults_line), pool.submit(ha_line),
                  pool.submit(step, "cloud-init-baseline", scenarios.cloud_init_baseline, r),
                  pool.submit(provisioning_line)]:
            f.result()

    ordered = list(results.values())
    print()
    print("== timings (from each guest's journal; TCG, one vCPU, two guests at a time)")
    all_boots = [(f"{sc.name}: {label}", b) for sc in ordered for label, b in sc.boots]
    print("\n".join(timing.table(all_boots)))
    if "fresh-cluster" in results and "cloud-init-baseline" in results:
        print("\n".join(timing.comparison([b for _, b in results["fresh-cluster"].boots],
                                          [b for _, b in results["cloud-init-baseline"].boots])))
    if "no-cloud-init" in results:
        print("\n".join(timing.cloud_init_pair([b for _, b in results["no-cloud-init"].boots])))
    print()
    print_checks(ordered, passed_too=True)
    passed = sum(sc.ok for sc in ordered)
    print(f"vm-tests: {passed} passed, {len(ordered) - passed} failed")
    return 0 if passed == len(ordered) else 1
