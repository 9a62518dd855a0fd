"""Every file parses, is formatted canonically, and loads as a configuration."""

import re
import shutil

import pytest

from tofu_helpers import EXAMPLE_TFVARS, INFRA, parse, strip_comments, terraform, tf_files


def test_there_is_something_to_check():
    names = {p.relative_to(INFRA).as_posix() for p in tf_files()}
    for required in ("versions.tf", "variables.tf", "outputs.tf", "locals.tf", "modules/node-config/main.tf"):
        assert required in names


@pytest.mark.parametrize("path", [*tf_files(), EXAMPLE_TFVARS], ids=lambda p: p.relative_to(INFRA).as_posix())
def test_parses_with_python_hcl2(path):
    parsed = parse(path)
    assert parsed, f"{path} parsed to nothing"


def test_fmt_clean(tmp_path):
    # `terraform fmt` is OpenTofu's `tofu fmt` (same hclwrite formatter). fmt only looks at
    # *.tf and *.tfvars, so the example is checked under a .tfvars name.
    tree = tmp_path / "infra"
    shutil.copytree(INFRA, tree, ignore=shutil.ignore_patterns("tests", ".terraform", "__pycache__"))
    shutil.copy(EXAMPLE_TFVARS, tree / "example.tfvars")
    result = terraform(["fmt", "-check", "-diff", "-recursive", "."], tree)
    assert result.returncode == 0, f"not fmt-clean (run `tofu fmt -recursive`):\n{result.stdout}{result.stderr}"


def test_fmt_check_catches_misformatting(tmp_path):
    # The checker above must be able to fail: misalign one attribute and expect a diff.
    tree = tmp_path / "infra"
    tree.mkdir()
    (tree / "bad.tf").write_text('locals {\n  a = 1\n  bbb = 2\n}\n', encoding="utf-8")
    result = terraform(["fmt", "-check", "-diff", "."], tree)
    assert result.returncode != 0 and "bad.tf" in result.stdout


def test_configuration_loads(tmp_path):
    # `init` loads and decodes the whole configuration (blocks, meta-arguments, lifecycle,
    # the module call) before it installs providers. Offline the provider download must
    # be the only failure.
    tree = tmp_path / "infra"
    shutil.copytree(INFRA, tree, ignore=shutil.ignore_patterns("tests", ".terraform", "__pycache__"))
    result = terraform(["init", "-backend=false", "-input=false"], tree)
    output = result.stdout + result.stderr
    assert "- node_config in modules/node-config" in output
    errors = re.findall(r"^Error: (.*)$", output, flags=re.M)
    assert errors, f"init cannot succeed offline, yet reported no error:\n{output}"
    assert set(errors) == {"Failed to query available provider packages"}, output
    for provider in ("hashicorp/azurerm", "hashicorp/random", "hashicorp/time"):
        assert provider in output


def test_node_config_module_validates(tmp_path):
    # The child module needs no provider, so Terraform's full `validate` runs on it.
    tree = tmp_path / "node-config"
    shutil.copytree(INFRA / "modules" / "node-config", tree)
    init = terraform(["init", "-backend=false", "-input=false"], tree)
    assert init.returncode == 0, init.stdout + init.stderr
    result = terraform(["validate"], tree)
    assert result.returncode == 0, result.stdout + result.stderr


REF = re.compile(
    r"(?<![\w.])(?:(var|local|module)\.(\w+)|data\.(\w+)\.(\w+)|((?:azurerm|random|time)_\w+)\.(\w+))"
)

MOVED_BLOCK = re.compile(r"(?ms)^(?:moved|removed) \{$.*?^\}$")
FROM_LINE = re.compile(r"(?m)^\s*from\s*=.*$")


def without_moved_from(text: str) -> str:
    return MOVED_BLOCK.sub(lambda m: FROM_LINE.sub("", m.group(0)), text)


def declarations(files):
    decl = {"var": set(), "local": set(), "module": set(), "data": set(), "resource": set()}
    for path in files:
        tree = parse(path)
        for block in tree.get("variable", []):
            decl["var"].update(block)
        for block in tree.get("locals", []):
            decl["local"].update(k for k in block if not k.startswith("__"))
        for block in tree.get("module", []):
            decl["module"].update(block)
        for block in tree.get("data", []):
            decl["data"].update(f"{t}.{n}" for t, names in block.items() for n in names)
        for block in tree.get("resource", []):
            decl["resource"].update(f"{t}.{n}" for t, names in block.items() for n in names)
    return decl


@pytest.mark.parametrize("module_dir", [INFRA, INFRA / "modules" / "node-config"], ids=["root", "node-config"])
def test_every_reference_is_declared(module_dir):
    # What `tofu validate` would catch first, short of provider schemas: a reference to a
    # variable, local, module, data source or resource that does not exist.
    files = sorted(module_dir.glob("*.tf"))
    decl = declarations(files)
    missing = []
    for path in files:
        # A moved or removed block's `from` names an address that is gone on purpose
        # (test_tofu_moved.py).
        text = without_moved_from(strip_comments(path.read_text(encoding="utf-8")))
        for m in REF.finditer(text):
            kind, name, dtype, dname, rtype, rname = m.groups()
            if kind and name not in decl[kind]:
                missing.append(f"{path.name}: {kind}.{name}")
            elif dtype and f"{dtype}.{dname}" not in decl["data"]:
                missing.append(f"{path.name}: data.{dtype}.{dname}")
            elif rtype and f"{rtype}.{rname}" not in decl["resource"]:
                missing.append(f"{path.name}: {rtype}.{rname}")
    assert not missing, f"undeclared references: {missing}"


def test_reference_check_sees_references():
    # Guard against a regex that matches nothing.
    text = (INFRA / "compute.tf").read_text(encoding="utf-8")
    refs = {m.group(0) for m in REF.finditer(text)}
    assert "azurerm_network_interface.node" in refs and "local.nodes" in refs and "local.node_images" in refs
