"""An existing deployment keeps its resources when the code gives them new addresses.

A resource whose address changes without a `moved` block is destroyed and created again
by the next `tofu apply`. These checks hold the moved blocks to the addresses released
before (read from git history), and replay the moves with Terraform's own engine on a
state that has the old addresses (with `terraform_data` standing in for the azurerm
resources, whose provider cannot be installed offline).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from tofu_helpers import INFRA, REPO, attr, parse, root_blocks, terraform

# The last commit with one resource per Key Vault secret (before the for_each).
BEFORE_SECRETS_FOR_EACH = "b59e5aa5258b50e45c89ed9665161364cabd8b04"

# Every released address that has changed: as released -> as now.
MOVES = {
    "azurerm_key_vault_secret.join_token": 'azurerm_key_vault_secret.main["join_token"]',
    "azurerm_key_vault_secret.grafana_admin": 'azurerm_key_vault_secret.main["grafana_admin"]',
    "azurerm_key_vault_secret.longhorn_ui": 'azurerm_key_vault_secret.main["longhorn_ui_auth"]',
    "azurerm_key_vault_secret.git_token[0]": 'azurerm_key_vault_secret.main["git_auth"]',
    "azurerm_key_vault_secret.external_dns[0]": 'azurerm_key_vault_secret.main["external_dns_azure"]',
}

# Whose loss would be data loss or a broken cluster: these keep their addresses.
KEPT = {
    "azurerm_managed_disk.data",
    "azurerm_virtual_machine_data_disk_attachment.data",
    "azurerm_linux_virtual_machine.node",
    "azurerm_key_vault.main",
    "random_string.key_vault_suffix",
}

# Released resources that are gone on purpose, with no successor address: the generated
# passwords kept their values in the state. Their values now come from an ephemeral
# random_password and live only in Key Vault; a `removed` block (destroy = false) makes the
# upgrade forget them, and `keep_secret_values` (variables.tf) keeps the secrets' values
# across that apply.
REMOVED = {
    "random_password.join_token",
    "random_password.grafana_admin",
    "random_password.longhorn_ui",
}

# The for_each of each moved-to resource, as the evaluation fixtures expose it.
FOR_EACH_OUTPUT = {"azurerm_key_vault_secret.main": "vault_secret_names"}

ADDRESS = re.compile(r"^(\w+)\.(\w+)(\[.*\])?$")


def resource_of(address: str) -> str:
    return ADDRESS.fullmatch(address).expand(r"\1.\2")


def bare(ref: str) -> str:
    """An address as written in HCL (python-hcl2 wraps references in ${...})."""
    return ref.removeprefix("${").removesuffix("}")


def moved_blocks() -> dict[str, str]:
    """from -> to of every moved block of the root module."""
    return {bare(attr(b, "from")): bare(attr(b, "to")) for b in root_blocks("moved")}


def repetition(body: dict) -> str:
    return "count" if "count" in body else "for_each" if "for_each" in body else "single"


def resource_shapes(parsed_files) -> dict[str, str]:
    """type.name -> count, for_each or single, of every resource."""
    return {
        f"{rtype}.{name}": repetition(body)
        for parsed in parsed_files
        for block in parsed.get("resource", [])
        for rtype, by_name in block.items()
        for name, body in by_name.items()
    }


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def released_config() -> list[dict]:
    if git("cat-file", "-e", f"{BEFORE_SECRETS_FOR_EACH}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {BEFORE_SECRETS_FOR_EACH[:12]} is not in this clone (shallow?): the released addresses cannot be read")
    listing = git("ls-tree", "--name-only", BEFORE_SECRETS_FOR_EACH, "infra-tofu/")
    assert listing.returncode == 0, listing.stderr
    files = [f for f in listing.stdout.split() if f.endswith(".tf")]
    assert "infra-tofu/keyvault.tf" in files
    return [hcl2.loads(git("show", f"{BEFORE_SECRETS_FOR_EACH}:{f}").stdout) for f in files]


def test_moved_blocks_are_the_released_renames():
    assert moved_blocks() == MOVES


def test_removed_resources_are_forgotten_not_destroyed():
    removed = {bare(attr(b, "from")): b for b in root_blocks("removed")}
    assert set(removed) == REMOVED
    for address, block in removed.items():
        (lifecycle,) = block["lifecycle"]
        assert attr(lifecycle, "destroy") is False, address


def test_every_released_resource_is_kept_or_moved():
    before = resource_shapes(released_config())
    now = resource_shapes(parse(p) for p in sorted(INFRA.glob("*.tf")))
    # Whatever is gone from the code is the `from` of a moved block or removed on purpose.
    assert set(before) - set(now) == {resource_of(f) for f in MOVES} | REMOVED
    for src, dst in MOVES.items():
        # The old instance key is what the old resource had: none, or [0] under count.
        assert src.endswith("[0]") == (before[resource_of(src)] == "count"), src
        assert now[resource_of(dst)] == "for_each" and re.search(r'\["\w+"\]$', dst), dst
    # What stayed keeps its shape too: turning a count into a for_each is a rename as well.
    assert {a: s for a, s in now.items() if a in before} == {a: s for a, s in before.items() if a in now}
    assert KEPT <= set(before) & set(now)
    assert REMOVED <= set(before) and not REMOVED & set(now)


def stand_in(address: str) -> str:
    """The terraform_data address that stands in for an azurerm/random one."""
    return ADDRESS.sub(r"terraform_data.\1__\2\3", address)


def old_root(dest: Path, credentials_given: bool) -> Path:
    """A root module whose state holds the released instances (count ones when given)."""
    dest.mkdir()
    blocks = []
    for src in MOVES:
        name = stand_in(resource_of(src)).split(".")[1]
        count = f"  count = {1 if credentials_given else 0}\n" if src.endswith("[0]") else ""
        blocks.append(f'resource "terraform_data" "{name}" {{\n{count}}}\n')
    (dest / "main.tf").write_text("\n".join(blocks), encoding="utf-8")
    return dest


def new_root(dest: Path, evaluated: dict, with_moved_blocks: bool) -> Path:
    """The current resources, keyed as the code keys them, and the code's moved blocks."""
    dest.mkdir()
    blocks = []
    for res in sorted({resource_of(dst) for dst in MOVES.values()}):
        keys = json.dumps(sorted(evaluated[FOR_EACH_OUTPUT[res]]))
        blocks.append(f'resource "terraform_data" "{stand_in(res).split(".")[1]}" {{\n  for_each = toset({keys})\n}}\n')
    if with_moved_blocks:
        for src, dst in moved_blocks().items():
            blocks.append(f"moved {{\n  from = {stand_in(src)}\n  to   = {stand_in(dst)}\n}}\n")
    (dest / "main.tf").write_text("\n".join(blocks), encoding="utf-8")
    return dest


def plan_over_released_state(tmp_path: Path, evaluated: dict, credentials_given: bool, with_moved_blocks: bool) -> list[dict]:
    """Applies the released shape, then plans the current one on its state: the changes."""
    before = old_root(tmp_path / "before", credentials_given)
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        result = terraform(args, before)
        assert result.returncode == 0, result.stdout + result.stderr
    after = new_root(tmp_path / "after", evaluated, with_moved_blocks)
    shutil.copy(before / "terraform.tfstate", after / "terraform.tfstate")
    for args in (["init", "-input=false"], ["plan", "-input=false", "-out=tfplan"]):
        result = terraform(args, after)
        assert result.returncode == 0, result.stdout + result.stderr
    show = terraform(["show", "-json", "tfplan"], after)
    assert show.returncode == 0, show.stderr
    return json.loads(show.stdout).get("resource_changes", [])


@pytest.mark.parametrize("credentials_given", [False, True], ids=["defaults", "credentials"])
def test_an_existing_deployment_keeps_its_secrets(credentials_given, request, tmp_path):
    evaluated = request.getfixturevalue("credentials_eval" if credentials_given else "defaults_eval")
    changes = plan_over_released_state(tmp_path, evaluated, credentials_given, with_moved_blocks=True)
    assert changes, "the plan lists no resource at all"
    assert {c["address"]: c["change"]["actions"] for c in changes} == {c["address"]: ["no-op"] for c in changes}
    released = {src for src in MOVES if credentials_given or not src.endswith("[0]")}
    assert {c["previous_address"]: c["address"] for c in changes if "previous_address" in c} == {
        stand_in(src): stand_in(MOVES[src]) for src in released
    }
    # Every secret the code now manages was there before, under its old address.
    assert {c["address"] for c in changes} == {stand_in(MOVES[src]) for src in released}


def test_without_the_moved_blocks_the_secrets_would_be_recreated(credentials_eval, tmp_path):
    # The check above must be able to fail: the same plan without moved blocks destroys
    # every released secret and creates it anew.
    changes = plan_over_released_state(tmp_path, credentials_eval, credentials_given=True, with_moved_blocks=False)
    actions = {c["address"]: c["change"]["actions"] for c in changes}
    assert {a for a, act in actions.items() if act == ["delete"]} == {stand_in(src) for src in MOVES}
    assert {a for a, act in actions.items() if act == ["create"]} == {stand_in(dst) for dst in MOVES.values()}
