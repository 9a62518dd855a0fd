"""The providers' schemas, read from the CDKTF prebuilt provider packages (PyPI).

`tofu validate` needs the provider binaries, which cannot be downloaded here. The CDKTF
packages are generated from those binaries' schemas (`cdktf-cdktf-provider-azurerm`
14.23.1 = azurerm 4.55.0) and ship them as a jsii assembly: one config interface per
resource, data source and provider, one struct per nested block, each property with its
Terraform name in its docs link and an `optional` flag. This module turns that into
{kind: {type name: Block}}. Nothing of the packages is imported (that would need node).
"""

import functools
import importlib.util
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = {
    "azurerm": "cdktf_cdktf_provider_azurerm",
    "random": "cdktf_cdktf_provider_random",
    "time": "cdktf_cdktf_provider_time",
}

# "Represents a {@link https://registry.terraform.io/providers/hashicorp/azurerm/4.55.0/docs/resources/linux_virtual_machine azurerm_linux_virtual_machine}."
_LINK = re.compile(r"\{@link https://registry\.terraform\.io/providers/hashicorp/(\w+)/([\d.]+)/docs(?:/(resources|data-sources)/\w+)? (\w+)\}")
_ANCHOR = re.compile(r"#(\w+) \w+#\w+\}")


@dataclass
class Block:
    attributes: dict[str, bool] = field(default_factory=dict)  # name -> required
    blocks: dict[str, tuple["Block", bool]] = field(default_factory=dict)  # name -> (schema, required)


@dataclass
class ProviderSchema:
    version: str
    provider: Block
    resources: dict[str, Block]
    data_sources: dict[str, Block]


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


def _assembly(package: str) -> dict:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"Python package {package} is not installed (scripts/deps/pip.txt)")
    root = Path(next(iter(spec.submodule_search_locations)))
    (tgz,) = (root / "_jsii").glob("*.jsii.tgz")
    with tarfile.open(tgz) as tar:
        return json.load(tar.extractfile("package/.jsii"))


def _struct_fqn(type_ref: dict, types: dict) -> str | None:
    """The fqn of the nested-block struct a property type refers to, if any."""
    if "fqn" in type_ref:
        t = types.get(type_ref["fqn"])
        return type_ref["fqn"] if t and t.get("datatype") else None
    if "collection" in type_ref:
        return _struct_fqn(type_ref["collection"]["elementtype"], types)
    if "union" in type_ref:
        for member in type_ref["union"]["types"]:
            if fqn := _struct_fqn(member, types):
                return fqn
    return None


def _block(fqn: str, types: dict, cache: dict) -> Block:
    if fqn in cache:
        return cache[fqn]
    block = cache[fqn] = Block()
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        m = _ANCHOR.search(docs.get("summary", "") + " " + docs.get("remarks", ""))
        name = m.group(1) if m else _snake(prop["name"])
        required = not prop.get("optional", False)
        if nested := _struct_fqn(prop["type"], types):
            block.blocks[name] = (_block(nested, types, cache), required)
        else:
            block.attributes[name] = required
    return block


@functools.cache
def load(provider: str) -> ProviderSchema:
    assembly = _assembly(PACKAGES[provider])
    types = assembly["types"]
    cache: dict = {}
    resources, data_sources, provider_block, version = {}, {}, None, None
    for t in types.values():
        if t.get("kind") != "class" or "initializer" not in t:
            continue
        m = _LINK.search(t.get("docs", {}).get("summary", ""))
        if not m or m.group(1) != provider:
            continue
        config = [p for p in t["initializer"].get("parameters", []) if p["name"] == "config"]
        if not config:
            continue
        block = _block(config[0]["type"]["fqn"], types, cache)
        version = m.group(2)
        kind, name = m.group(3), m.group(4)
        if kind is None:
            provider_block = block
        elif kind == "resources":
            resources[name] = block
        else:
            data_sources[name] = block
    if provider_block is None or not resources:
        raise LookupError(f"no provider schema found in {PACKAGES[provider]}")
    return ProviderSchema(version, provider_block, resources, data_sources)
