"""No secret value in OpenTofu's state: every secret is ephemeral and reaches Key Vault only
through a write-only argument; outputs say how to read a secret, never its value.
The analysis is tofu_secrets.py; the planted cases show it fails where it must."""

import shutil

import pytest

from tofu_helpers import INFRA, REQUIRED_ONLY_TFVARS, EvalError, attr, evaluate, resources, root_blocks
from tofu_secrets import findings


def test_no_secret_value_reaches_the_state():
    assert findings(INFRA) == []


def test_every_vault_secret_is_written_write_only():
    (secret,) = resources("azurerm_key_vault_secret").values()
    assert "value" not in secret, "value is stored in the state; value_wo is not"
    assert attr(secret, "value_wo") == "${local.vault_secret_values[each.key]}"
    assert attr(secret, "value_wo_version") == "${var.secret_versions[each.key]}"
    ephemerals = {t: names for b in root_blocks("ephemeral") for t, names in b.items()}
    assert set(ephemerals["random_password"]) == {"generated"}
    assert not resources("random_password"), "a random_password resource keeps its result in the state"


def test_outputs_say_how_to_read_a_secret_never_its_value():
    outputs = {k: v for b in root_blocks("output") for k, v in b.items()}
    command = attr(outputs["secret_read_commands"], "value")
    assert "az keyvault secret show --vault-name ${azurerm_key_vault.main.name} --name ${secret}" in command
    assert "local.vault_secret_names" in command
    for name, body in outputs.items():
        assert "sensitive" not in body, f"output {name} is sensitive: outputs carry no secret here"


PLANTS = {
    "a random_password result in a stored argument": (
        """
resource "random_password" "planted" {
  length = 16
}

resource "azurerm_key_vault_secret" "planted" {
  name         = "planted"
  value        = random_password.planted.result
  key_vault_id = azurerm_key_vault.main.id
}
""",
        ["resource random_password.planted keeps its result in the state", "azurerm_key_vault_secret.planted: value takes random_password.planted"],
    ),
    "an ephemeral value, through a local, in a stored argument": (
        """
locals {
  planted = { copy = local.vault_secret_values["grafana_admin"] }
}

resource "azurerm_resource_group" "planted" {
  name     = "planted"
  location = "westeurope"
  tags     = local.planted
}
""",
        ["azurerm_resource_group.planted: tags takes local.planted"],
    ),
    "a sensitive variable that is not ephemeral": (
        """
variable "planted_password" {
  description = "planted"
  type        = string
  sensitive   = true
}
""",
        ["variable planted_password is sensitive but not ephemeral"],
    ),
    "a secret in an output": (
        """
output "planted" {
  description = "planted"
  value       = ephemeral.random_password.generated["join_token"].result
}
""",
        ["output planted takes ephemeral.random_password.generated"],
    ),
    "a secret as a for_each key": (
        """
resource "azurerm_resource_group" "planted" {
  for_each = toset([var.git_token])
  name     = each.value
  location = "westeurope"
}
""",
        ["azurerm_resource_group.planted: for_each takes var.git_token"],
    ),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_a_planted_secret_in_the_state_is_caught(plant, tmp_path):
    code, expected = PLANTS[plant]
    tree = tmp_path / "infra"
    shutil.copytree(INFRA, tree, ignore=shutil.ignore_patterns("tests", "modules", ".terraform", "__pycache__"))
    (tree / "planted.tf").write_text(code, encoding="utf-8")
    found = "\n".join(findings(tree))
    for message in expected:
        assert message in found, found


@pytest.mark.parametrize(
    "extra, message",
    [
        # An external-dns principal written the old way: its client_secret is dropped (the
        # object type no longer has it), so the plan stops and says where it goes now.
        (
            'external_dns_service_principal = {\n  client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"\n'
            '  object_id = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff"\n  client_secret = "s3cret-canary"\n}\n',
            "export TF_VAR_external_dns_client_secret",
        ),
        ('git_token = "s3cret-canary"\n', "set secret_versions = { git_auth = 1 }"),
        ("secret_versions = { git_auth = 1 }\n", "export TF_VAR_git_token"),
        ('external_dns_client_secret = "s3cret-canary"\n', "external_dns_service_principal is not set"),
    ],
)
def test_credentials_and_their_switches_go_together(extra, message, tmp_path):
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + extra)
    text = " ".join(str(err.value).split())
    assert message in text, text
    assert "s3cret-canary" not in str(err.value), "an error must name the variable, never the value"
