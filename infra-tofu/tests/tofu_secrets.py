"""Where a secret value could reach OpenTofu's state, found by reading the configuration.

OpenTofu stores in its state every argument of every resource and data source, every root
output, and the attributes a provider computes (a `random_password` resource's `result`).
Its ephemeral values (ephemeral resources, `ephemeral = true` variables, and locals made
from them) are stored nowhere, and OpenTofu refuses them anywhere but in write-only
arguments (`*_wo`, the providers' naming), provider blocks and other ephemeral values. A
real `tofu plan` would enforce that, but it needs the providers, which cannot be installed
here; so this module follows each secret from its source through the locals, the way the
plan would, and reports every stored place it reaches:

- a `random_password` *resource* (its result is in the state; the ephemeral one is not);
- a variable marked `sensitive` but not `ephemeral` (sensitive only hides a value in the
  output; it is stored wherever it is used);
- a secret (a sensitive or ephemeral variable, an `ephemeral.*` value, a `random_password`
  result, or a local made from one) in a resource argument other than a write-only one, in
  a data source, a module call or an output, or in a `for_each`/`count`. Pre- and
  postconditions are evaluated and never stored: they may look at a secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hcl2

# Generators whose result the provider stores in the state.
STORED_GENERATORS = {"random_password"}

VAR_OR_LOCAL = re.compile(r"(?<![\w.])(var|local)\.(\w+)")
EPHEMERAL = re.compile(r"(?<![\w.])ephemeral\.(\w+)\.(\w+)")
GENERATOR = re.compile(r"(?<![\w.])(" + "|".join(STORED_GENERATORS) + r")\.(\w+)")

# Text that is prose, not an expression.
PROSE = {"description", "error_message"}
# Conditions are evaluated, never stored (a precondition may check that a secret is given).
CONDITIONS = {"precondition", "postcondition"}


def _load(root: Path) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(root.glob("*.tf")):
        with open(path, encoding="utf-8") as f:
            out.append((path.name, hcl2.load(f)))
    return out


def _blocks(parsed, kind):
    """(file, block) pairs of one top-level kind."""
    for name, tree in parsed:
        for block in tree.get(kind, []):
            yield name, block


def _text(value) -> str:
    return json.dumps(value, sort_keys=True)


def secret_sources(parsed) -> tuple[set[str], list[str]]:
    """The secret variables (by name), and findings about how variables are declared."""
    secret_vars, findings = set(), []
    for file, block in _blocks(parsed, "variable"):
        for name, body in block.items():
            sensitive = _flag(body, "sensitive")
            ephemeral = _flag(body, "ephemeral")
            if sensitive or ephemeral:
                secret_vars.add(name)
            if sensitive and not ephemeral:
                findings.append(
                    f"{file}: variable {name} is sensitive but not ephemeral: its value is stored "
                    "wherever it is used (make it ephemeral and pass it to a write-only argument)"
                )
    return secret_vars, findings


def _flag(body: dict, key: str) -> bool:
    value = body.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value is True


def tainted_locals(parsed, secret_vars: set[str]) -> set[str]:
    """Locals whose value is (made from) a secret, to a fixpoint."""
    exprs = {}
    for _, block in _blocks(parsed, "locals"):
        for name, value in block.items():
            if not name.startswith("__"):
                exprs[name] = _text(value)
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, text in exprs.items():
            if name not in tainted and _secret_refs(text, secret_vars, tainted):
                tainted.add(name)
                changed = True
    return tainted


def _secret_refs(text: str, secret_vars: set[str], tainted: set[str]) -> list[str]:
    refs = []
    for kind, name in VAR_OR_LOCAL.findall(text):
        if (kind == "var" and name in secret_vars) or (kind == "local" and name in tainted):
            refs.append(f"{kind}.{name}")
    refs += [f"ephemeral.{t}.{n}" for t, n in EPHEMERAL.findall(text)]
    refs += [f"{t}.{n}" for t, n in GENERATOR.findall(text)]
    return sorted(set(refs))


def _walk(body, path=""):
    """(argument path, value) of every attribute, nested blocks and objects included."""
    if isinstance(body, list):
        for item in body:
            if isinstance(item, (dict, list)):
                yield from _walk(item, path)
            else:
                yield path, item
        return
    if not isinstance(body, dict):
        yield path, body
        return
    for key, value in body.items():
        if key in PROSE or key in CONDITIONS or key.startswith("__"):
            continue
        sub = f"{path}.{key}" if path else key
        if isinstance(value, (dict, list)) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            yield from _walk(value, sub)
        else:
            yield sub, value


def findings(root: Path) -> list[str]:
    """Every way the configuration in `root` (its *.tf files) would store a secret value."""
    parsed = _load(root)
    secret_vars, found = secret_sources(parsed)
    tainted = tainted_locals(parsed, secret_vars)

    for file, block in _blocks(parsed, "resource"):
        for rtype, by_name in block.items():
            for name, body in by_name.items():
                if rtype in STORED_GENERATORS:
                    found.append(
                        f"{file}: resource {rtype}.{name} keeps its result in the state "
                        f"(use an ephemeral \"{rtype}\" and a write-only argument)"
                    )
                for arg, value in _walk(body):
                    refs = _secret_refs(_text(value), secret_vars, tainted)
                    top = arg.split(".")[0]
                    if refs and not (arg == top and top.endswith("_wo")):
                        found.append(f"{file}: {rtype}.{name}: {arg} takes {', '.join(refs)}, and it is stored (only write-only *_wo arguments are not)")
    for kind in ("data", "module"):
        for file, block in _blocks(parsed, kind):
            items = block.items() if kind == "module" else ((f"{t}.{n}", b) for t, names in block.items() for n, b in names.items())
            for name, body in items:
                for arg, value in _walk(body):
                    refs = _secret_refs(_text(value), secret_vars, tainted)
                    if refs:
                        found.append(f"{file}: {kind} {name}: {arg} takes {', '.join(refs)}, and it is stored")
    for file, block in _blocks(parsed, "output"):
        for name, body in block.items():
            stored = {k: v for k, v in body.items() if k not in PROSE and k not in CONDITIONS}
            refs = _secret_refs(_text(stored), secret_vars, tainted)
            if refs:
                found.append(f"{file}: output {name} takes {', '.join(refs)}; outputs are stored (say how to read it instead)")
    return found
