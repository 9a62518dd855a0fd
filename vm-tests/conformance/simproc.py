"""azure-sim as a process for the conformance tests, and the guard that keeps a client
under test on loopback. Shared by the Azure SDK and the WALinuxAgent checks."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "azure-sim"

# urllib without any proxy, for the simulator's admin API.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def running_sim(work: Path, scenario: dict):
    """Starts azure-sim with `scenario`; yields its ready-file info plus `request_log`."""
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `cargo build --workspace --bins` first")
    scenario_file = work / "scenario.json"
    scenario_file.write_text(json.dumps(scenario))
    ready = work / "ready.json"
    stderr = open(work / "stderr.log", "w")
    proc = subprocess.Popen(
        [
            str(BINARY),
            "--scenario", str(scenario_file),
            "--ca-out", str(work / "ca.pem"),
            "--request-log", str(work / "requests.jsonl"),
            "--ready-file", str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"azure-sim exited with {proc.returncode}: {(work / 'stderr.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail("azure-sim did not write its ready file within 30 s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        info["request_log"] = work / "requests.jsonl"
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            stderr.close()


def _is_loopback(address):
    host = address[0] if isinstance(address, tuple) else address
    return host in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127.")


def guard_loopback(monkeypatch) -> list:
    """Makes every non-loopback connect() fail; returns the list of refused addresses, for
    the test to assert empty at its end."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    refused = []

    def guard(address):
        if not _is_loopback(address):
            refused.append(address)
            raise OSError(f"test guard: connection to non-loopback {address!r} refused")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


def admin(sim, method, path, body=None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"{sim['imds_url']}/_sim/{path}", data=data, method=method)
    with _direct.open(request, timeout=10) as response:
        return response.status, response.read().decode()
