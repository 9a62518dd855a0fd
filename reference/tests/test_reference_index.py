"""reference/INDEX.yaml and the folder agree: every data file has one well-formed entry
(upstream, version, path, date taken), every entry has its file, and the lines stay sorted
so that branches adding files at the same time merge cleanly."""

import datetime
import re
from pathlib import Path

import pytest
import yaml

REFERENCE = Path(__file__).resolve().parents[1]
INDEX = REFERENCE / "INDEX.yaml"

# Files that are not reference data: the index itself, its README and tests, and the
# per-folder long-form notes.
NOT_DATA = {"INDEX.yaml", "README.md"}
NOTES = "SOURCE.txt"

REQUIRED = ("upstream", "version", "path", "taken")
OPTIONAL = ("commit", "upstream_date", "kind", "note")
KINDS = {"verbatim", "converted", "extract", "abridged", "derived", "notes"}

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# A GitHub repository (owner/name), a documentation site (host[/path]), or "several".
UPSTREAM = re.compile(r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+|[a-z0-9-]+(\.[a-z0-9-]+)+(/\S*)?|several)$")


class _Loader(yaml.SafeLoader):
    """Safe loading that keeps dates as text (the test checks their form) and refuses a
    key written twice (plain YAML loading keeps the last one silently)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader, node):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is listed twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_index(text):
    doc = yaml.load(text, Loader=_Loader)
    assert isinstance(doc, dict) and set(doc) == {"files"}, "INDEX.yaml holds one key, files:"
    assert isinstance(doc["files"], dict), "files: maps a path to its entry"
    return doc["files"]


def data_files(root):
    """Paths (relative to reference/, with /) of the files the index must list."""
    found = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] == "tests" or "__pycache__" in rel.parts:
            continue
        if rel.as_posix() in NOT_DATA or rel.name == NOTES:
            continue
        found.add(rel.as_posix())
    return found


def entry_problems(name, entry, today):
    """What is wrong with one entry (empty when nothing is)."""
    if not isinstance(entry, dict):
        return [f"{name}: the entry is not a mapping"]
    problems = []
    for key in entry:
        if key not in REQUIRED + OPTIONAL:
            problems.append(f"{name}: unknown field {key!r} (fields: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in entry:
            problems.append(f"{name}: {key} is missing")
    for key, value in entry.items():
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name}: {key} must be non-empty text (quote numbers), got {value!r}")
    if problems:
        return problems

    if not UPSTREAM.match(entry["upstream"]):
        problems.append(f"{name}: upstream {entry['upstream']!r} is neither owner/name nor a site")
    if entry["upstream"] == "several" and (entry.get("kind") != "notes" or "note" not in entry):
        problems.append(f"{name}: upstream 'several' is for kind notes with a note naming the sources")
    if "commit" in entry and not COMMIT.match(entry["commit"]):
        problems.append(f"{name}: commit {entry['commit']!r} is not a full 40-hex commit")
    if "kind" in entry and entry["kind"] not in KINDS:
        problems.append(f"{name}: kind {entry['kind']!r} is not one of {sorted(KINDS)}")
    dates = {}
    for key in ("taken", "upstream_date"):
        if key not in entry:
            continue
        value = entry[key]
        try:
            if not DATE.match(value):
                raise ValueError(value)
            dates[key] = datetime.date.fromisoformat(value)
        except ValueError:
            problems.append(f"{name}: {key} {value!r} is not a date YYYY-MM-DD")
            continue
        if dates[key] > today:
            problems.append(f"{name}: {key} {value} is in the future")
    if len(dates) == 2 and dates["upstream_date"] > dates["taken"]:
        problems.append(f"{name}: upstream_date {entry['upstream_date']} is after taken {entry['taken']}")
    return problems


def index_problems(root, text, today):
    files = load_index(text)
    names = list(files)
    problems = []
    if names != sorted(names):
        first = next(a for a, b in zip(names, sorted(names)) if a != b)
        problems.append(f"entries are not sorted by path (first out of place: {first})")
    on_disk = data_files(root)
    problems += [f"{f}: no entry in INDEX.yaml" for f in sorted(on_disk - set(files))]
    problems += [f"{f}: listed in INDEX.yaml but there is no such file" for f in sorted(set(files) - on_disk)]
    for name, entry in files.items():
        problems += entry_problems(name, entry, today)
    return problems


def test_the_index_and_the_folder_agree():
    problems = index_problems(REFERENCE, INDEX.read_text(), datetime.date.today())
    assert not problems, "reference/INDEX.yaml:\n" + "\n".join(problems)


def test_each_entry_is_one_line():
    """One line per entry: two branches adding files at once touch different lines."""
    lines = [l for l in INDEX.read_text().splitlines() if l.startswith("  ") and not l.lstrip().startswith("#")]
    assert lines and all(re.match(r"^  \S+: \{.*\}$", l) for l in lines), [
        l for l in lines if not re.match(r"^  \S+: \{.*\}$", l)
    ]


# The checks themselves, on a small made-up folder: each must catch what it is for.

GOOD = "{upstream: rancher/rke2, version: v1.31.14+rke2r2, path: charts/x.yaml, taken: 2026-08-22}"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "rke2").mkdir()
    (tmp_path / "rke2" / "a.yaml").write_text("a: 1\n")
    (tmp_path / "rke2" / "SOURCE.txt").write_text("notes\n")
    (tmp_path / "INDEX.yaml").write_text("")
    (tmp_path / "README.md").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    return tmp_path


def check(folder, *entries, today=datetime.date(2026, 12, 1)):
    text = "files:\n" + "".join(f"  {e}\n" for e in entries)
    return index_problems(folder, text, today)


def test_a_good_index_passes(folder):
    assert check(folder, f"rke2/a.yaml: {GOOD}") == []


def test_a_file_without_an_entry_fails(folder):
    (folder / "rke2" / "b.json").write_text("{}")
    assert check(folder, f"rke2/a.yaml: {GOOD}") == ["rke2/b.json: no entry in INDEX.yaml"]


def test_an_entry_without_a_file_fails(folder):
    problems = check(folder, f"rke2/a.yaml: {GOOD}", f"rke2/gone.yaml: {GOOD}")
    assert problems == ["rke2/gone.yaml: listed in INDEX.yaml but there is no such file"]


def test_unsorted_or_repeated_entries_fail(folder):
    (folder / "rke2" / "0.yaml").write_text("")
    assert any("not sorted" in p for p in check(folder, f"rke2/a.yaml: {GOOD}", f"rke2/0.yaml: {GOOD}"))
    with pytest.raises(yaml.constructor.ConstructorError, match="listed twice"):
        check(folder, f"rke2/a.yaml: {GOOD}", f"rke2/a.yaml: {GOOD}")


@pytest.mark.parametrize(
    "entry, expect",
    [
        ("{upstream: rancher/rke2, version: v1, path: x}", "taken is missing"),
        ("{upstream: rancher/rke2, version: '', path: x, taken: 2026-08-22}", "version must be non-empty"),
        ("{upstream: rancher/rke2, version: 1.5, path: x, taken: 2026-08-22}", "quote numbers"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-8-22}", "not a date YYYY-MM-DD"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-02-30}", "not a date YYYY-MM-DD"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2027-01-01}", "in the future"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-08-22, upstream_date: 2026-09-01}", "after taken"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-08-22, commit: b0c8f25}", "40-hex"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-08-22, kind: copied}", "kind 'copied'"),
        ("{upstream: rancher/rke2, version: v1, path: x, taken: 2026-08-22, date: 2026-08-22}", "unknown field 'date'"),
        ("{upstream: 'rancher rke2', version: v1, path: x, taken: 2026-08-22}", "neither owner/name nor a site"),
        ("{upstream: several, version: v1, path: x, taken: 2026-08-22}", "'several' is for kind notes"),
    ],
)
def test_a_malformed_entry_fails(folder, entry, expect):
    problems = check(folder, f"rke2/a.yaml: {entry}")
    assert len(problems) == 1 and expect in problems[0], problems
