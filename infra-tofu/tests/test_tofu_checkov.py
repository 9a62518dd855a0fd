"""checkov over infra-tofu/: no failed check, and every skipped one says why in the code."""

import json
import re
import sys
from pathlib import Path

import pytest

from tofu_helpers import INFRA, run_offline, tf_files

CHECKOV = Path(sys.executable).parent / "checkov"
SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


@pytest.fixture(scope="module")
def report():
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: install scripts/deps/pip.txt into the venv")
    # --skip-download: no policy metadata from Prisma Cloud; the run happens with no
    # network at all anyway (run_offline).
    result = run_offline(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "terraform", "--skip-download", "--output", "json"],
        cwd=INFRA,
        env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.stdout.strip(), f"checkov printed nothing:\n{result.stderr}"
    data = json.loads(result.stdout)
    if isinstance(data, list):
        (data,) = [d for d in data if d.get("check_type") == "terraform"]
    return data


def test_checkov_finds_no_failed_check(report):
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "fix these or skip them in the code with a reason:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 20, "checkov scanned next to nothing"


def test_every_skip_is_explained(report):
    skips = []
    for path in tf_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if m := SKIP.search(line):
                skips.append(m.group(1))
                assert m.group(2) and len(m.group(2).strip()) >= 20, f"{path.name}: {line.strip()} needs a reason"
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == set(skips), "every skip comment is used by checkov and every skip is commented"
