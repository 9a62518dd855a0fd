"""Paths, logging and subprocess helpers shared by the harness modules."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VM_TESTS = REPO / "vm-tests"
# Outside the repository so it survives CI's fresh clones on the same machine.
CACHE_DIR = Path(os.environ.get("CANARIE_VM_CACHE", "/var/cache/canarie-vm-tests"))

_T0 = time.monotonic()
_print_lock = threading.Lock()


def log(msg: str) -> None:
    with _print_lock:  # VMs boot in threads: one whole line at a time
        print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs a command; on failure raises with its output, so the cause is in the message."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("text", True)
    proc = subprocess.run(cmd, **kw)
    if proc.returncode != 0:
        out = (proc.stdout or "").strip().splitlines()[-20:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n" + "\n".join(out))
    return proc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
