"""Every resource, data source and provider block against the providers' real schemas.

The closest this machine gets to `tofu validate`: argument and block names, required
arguments and blocks, nested blocks, all checked against azurerm/random/time schemas
(tofu_schema.py says where they come from). Expressions are not type-checked.
"""

import re

import pytest

import tofu_schema
from tofu_helpers import INFRA, parse

META = {"count", "for_each", "depends_on", "lifecycle", "provider", "__start_line__", "__end_line__"}


def provider_of(type_name: str) -> str:
    return type_name.split("_", 1)[0]


def check_block(body: dict, schema: tofu_schema.Block, where: str) -> list[str]:
    problems = []
    for key, value in body.items():
        if key in META:
            continue
        if key in schema.blocks:
            nested, _ = schema.blocks[key]
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(item, dict):
                    problems += check_block(item, nested, f"{where}.{key}[{i}]")
        elif key not in schema.attributes:
            problems.append(f"{where}: unknown argument or block {key!r}")
    for name, required in schema.attributes.items():
        if required and name not in body:
            problems.append(f"{where}: required argument {name!r} missing")
    for name, (_, required) in schema.blocks.items():
        if required and name not in body:
            problems.append(f"{where}: required block {name!r} missing")
    return problems


def root_files():
    return sorted(INFRA.glob("*.tf"))


@pytest.mark.parametrize("path", root_files(), ids=lambda p: p.name)
def test_resources_match_provider_schemas(path):
    problems = []
    tree = parse(path)
    for kind, table in (("resource", "resources"), ("data", "data_sources")):
        for block in tree.get(kind, []):
            for rtype, by_name in block.items():
                schema = getattr(tofu_schema.load(provider_of(rtype)), table)
                if rtype not in schema:
                    problems.append(f"{kind} type {rtype} does not exist")
                    continue
                for name, body in by_name.items():
                    problems += check_block(body, schema[rtype], f"{rtype}.{name}")
    for block in tree.get("provider", []):
        for pname, body in block.items():
            problems += check_block(body, tofu_schema.load(pname).provider, f"provider {pname}")
    assert not problems, "\n".join(problems)


def test_schema_versions_satisfy_the_pins():
    # The schemas checked against must be versions the constraints in versions.tf allow.
    (terraform,) = parse(INFRA / "versions.tf")["terraform"]
    (providers,) = terraform["required_providers"]
    for name, spec in providers.items():
        constraint = spec[0]["version"] if isinstance(spec, list) else spec["version"]
        m = re.fullmatch(r"~> (\d+)\.(\d+)(?:, >= (\d+)\.(\d+)\.(\d+))?", constraint)
        assert m, f"{name}: expected a ~> MAJOR.MINOR[, >= MAJOR.MINOR.PATCH] constraint, got {constraint}"
        have = tuple(int(x) for x in tofu_schema.load(name).version.split("."))
        assert have[0] == int(m.group(1)) and have[1] >= int(m.group(2)), f"{name} {have} vs {constraint}"
        if m.group(3):
            assert have >= tuple(int(m.group(i)) for i in (3, 4, 5)), f"{name} {have} vs {constraint}"


def test_schema_check_catches_mistakes():
    azurerm = tofu_schema.load("azurerm")
    kv = azurerm.resources["azurerm_key_vault"]
    assert check_block({"name": ["x"]}, kv, "kv"), "missing required arguments must be reported"
    vm = azurerm.resources["azurerm_linux_virtual_machine"]
    body = {k: ["x"] for k, required in vm.attributes.items() if required}
    body["os_disk"] = [{"caching": ["ReadWrite"], "storage_account_type": ["Premium_LRS"]}]
    assert check_block(body, vm, "vm") == []
    body["custom_datum"] = ["x"]
    body["os_disk"][0]["disk_size"] = [64]
    assert check_block(body, vm, "vm") == [
        "vm.os_disk[0]: unknown argument or block 'disk_size'",
        "vm: unknown argument or block 'custom_datum'",
    ]
