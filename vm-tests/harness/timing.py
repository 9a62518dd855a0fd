"""Per-boot timings from the guest journal's monotonic timestamps (systemd's own
"Starting"/"Started" job messages), and the canarie vs cloud-init comparison."""

from __future__ import annotations

import statistics

from .vm import Boot

# Where each side's bootstrap machinery begins: the agent's unit, or cloud-init's first stage.
MACHINERY = {"agent": "canarie-agent.service", "baseline": "cloud-init-local.service",
             "split": "canarie-agent.service"}


def _first(boot: Boot, unit: str, result: str) -> float | None:
    for job in boot.data.get("timeline", []):
        if job["unit"] == unit and job["result"] == result:
            return job["mono_us"] / 1e6
    return None


def boot_timing(boot: Boot) -> dict | None:
    """Seconds: bootstrap (its unit's start to RKE2's start job), RKE2's start from the
    kernel's start, and RKE2 ready (the stand-in's READY=1) from the kernel's start."""
    rke2 = f"rke2-{boot.role}.service"
    start = _first(boot, MACHINERY[boot.mode], "begin")
    rke2_start = _first(boot, rke2, "begin")
    rke2_ready = _first(boot, rke2, "done")
    if start is None or rke2_start is None:
        return None
    return {"bootstrap": rke2_start - start, "kernel_to_rke2": rke2_start,
            "kernel_to_ready": rke2_ready}


def table(boots: list[tuple[str, Boot]]) -> list[str]:
    lines = [f"  {'boot':50} {'bootstrap -> RKE2 start':>24} {'kernel -> RKE2 start':>21}"]
    for label, boot in boots:
        t = boot_timing(boot)
        if t is None:
            lines.append(f"  {label:50} {'(RKE2 not started)':>24}")
        else:
            lines.append(f"  {label:50} {t['bootstrap']:>22.1f} s {t['kernel_to_rke2']:>19.1f} s")
    return lines


def comparison(agent_first_boots: list[Boot], baseline_boots: list[Boot]) -> list[str]:
    """Medians over the first boots of the same three nodes, and their ratio."""
    def median(boots, key):
        values = [t[key] for b in boots if (t := boot_timing(b))]
        return statistics.median(values) if values else None

    out = []
    for key, what in (("bootstrap", "bootstrap start -> RKE2 start"), ("kernel_to_rke2", "kernel start -> RKE2 start")):
        a, b = median(agent_first_boots, key), median(baseline_boots, key)
        if a is None or b is None:
            out.append(f"  {what}: not measured")
            continue
        out.append(f"  {what}: canarie-agent {a:.1f} s, cloud-init {b:.1f} s (median of first boots); "
                   f"cloud-init / canarie = {b / a:.1f}x")
    return out


def cloud_init_pair(boots: list[Boot]) -> list[str]:
    """The same node on the same image, with cloud-init (`split`: its platform provisioning,
    then the agent) and without (`agent`, cloud-init=disabled), booted side by side: kernel
    start to RKE2's start job (the issue-22 benchmark, docs/benchmarks.md; reported, never
    asserted)."""
    got = {b.mode: t for b in boots if (t := boot_timing(b))}
    if not {"agent", "split"} <= set(got):
        return ["  kernel start -> RKE2 start, with vs without cloud-init: not measured"]
    a, b = got["agent"]["kernel_to_rke2"], got["split"]["kernel_to_rke2"]
    lines = [f"  kernel start -> RKE2 start, same image: with cloud-init {b:.1f} s, without {a:.1f} s; "
             f"with / without = {b / a:.1f}x (one boot each, side by side)"]
    for boot in boots:
        if (m := milestones(boot)) is not None:
            lines.append(f"    {'with' if boot.mode == 'split' else 'without'} cloud-init: "
                         + ", ".join(f"{name} {t:.1f} s" for name, t in m.items()))
    return lines


# Where a boot's seconds went, from its `activations` (systemd's own timestamps of each
# unit's activation; the guest check's DATA line).
# Each milestone: its name, the unit, and which of its two timestamps (activating, active).
MILESTONES = [("userspace", "(Userspace)", "activating"), ("basic.target", "basic.target", "active"),
              ("network configured", "systemd-networkd-wait-online.service", "active"),
              ("agent started", "canarie-agent.service", "activating")]


def milestones(boot: Boot) -> dict[str, float] | None:
    rows = {row[0]: {"activating": row[1], "active": row[2]} for row in boot.data.get("activations", [])}
    if not rows:
        return None
    out = {name: rows[unit][when] / 1e6 for name, unit, when in MILESTONES if rows.get(unit, {}).get(when)}
    if (t := boot_timing(boot)) is not None:
        out["RKE2 start"] = t["kernel_to_rke2"]
    return out
