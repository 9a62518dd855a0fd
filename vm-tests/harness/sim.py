"""One azure-sim process per VM (the simulator holds one VM's IMDS identity and userData),
listening on the host's loopback only; QEMU forwards the guest's 169.254.169.254:80 and the
vault address and the WireServer's 168.63.129.16:80 to it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from .util import REPO

SIM_BINARY = REPO / "target/debug/azure-sim"


class AzureSim:
    def __init__(self, workdir: Path, scenario: dict):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scenario_file = self.dir / "scenario.json"
        self.scenario_file.write_text(json.dumps(scenario, indent=1))
        self.ca_file = self.dir / "ca.pem"
        self.request_log = self.dir / "requests.jsonl"
        self.proc: subprocess.Popen | None = None
        self.imds_port = self.vault_port = self.wireserver_port = 0

    def start(self) -> "AzureSim":
        ready = self.dir / "ready.json"
        ready.unlink(missing_ok=True)
        stderr = open(self.dir / "sim.log", "ab")
        self.proc = subprocess.Popen(
            [str(SIM_BINARY), "--scenario", str(self.scenario_file), "--ca-out", str(self.ca_file),
             "--request-log", str(self.request_log), "--ready-file", str(ready),
             "--imds-listen", "127.0.0.1:0", "--vault-listen", "127.0.0.1:0",
             "--wireserver-listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        stderr.close()
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"azure-sim did not start; see {self.dir / 'sim.log'}:\n"
                                   + (self.dir / "sim.log").read_text()[-2000:])
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.imds_port = _loopback_port(info["imds_url"])
        self.vault_port = _loopback_port(info["vault_url"])
        self.wireserver_port = _loopback_port(info["wireserver_url"])
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- admin API (docs/azure-sim.md) ---
    def _admin(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{self.imds_port}/_sim/{path}",
                                     data=body, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def set_rules(self, rules: list[dict]) -> None:
        """Replaces the fault rules; their clock (from_s/until_s) starts now."""
        self._admin("PUT", "rules", json.dumps(rules).encode())

    def requests(self) -> list[dict]:
        return json.loads(self._admin("GET", "requests"))


def _loopback_port(url: str) -> int:
    parsed = urlparse(url)
    # The host side only ever talks to 127.0.0.1 (docs/vm-tests.md, network safety).
    if parsed.hostname != "127.0.0.1":
        raise RuntimeError(f"azure-sim is not on 127.0.0.1: {url}")
    return parsed.port


def stop_all(sims: list[AzureSim]) -> None:
    for sim in sims:
        try:
            sim.stop()
        except Exception as e:  # cleanup goes on for the others
            print(f"vm-tests: stopping azure-sim in {sim.dir}: {e}", flush=True)
