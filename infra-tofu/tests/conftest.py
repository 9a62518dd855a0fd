"""Fixtures of the infra-tofu checks; the helpers live in tofu_helpers.py."""

import re

import pytest

from tofu_helpers import CREDENTIALS_TFVARS, EXAMPLE_TFVARS, REQUIRED_ONLY_TFVARS, attr, evaluate, parse


@pytest.fixture(scope="session")
def example_eval(tmp_path_factory) -> dict:
    return evaluate(tmp_path_factory.mktemp("eval-example"), EXAMPLE_TFVARS.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def defaults_eval(tmp_path_factory) -> dict:
    return evaluate(tmp_path_factory.mktemp("eval-defaults"), REQUIRED_ONLY_TFVARS)


@pytest.fixture(scope="session")
def three_servers_eval(tmp_path_factory) -> dict:
    """The example variables with three servers."""
    text, n = re.subn(r"(?m)^server_count(\s*)= 1$", r"server_count\1= 3", EXAMPLE_TFVARS.read_text(encoding="utf-8"))
    assert n == 1, "terraform.tfvars.example sets server_count = 1 once"
    return evaluate(tmp_path_factory.mktemp("eval-three-servers"), text)


@pytest.fixture(scope="session")
def credentials_eval(tmp_path_factory) -> dict:
    """The defaults plus every credential issued outside the cluster (git, external-dns)."""
    return evaluate(tmp_path_factory.mktemp("eval-credentials"), REQUIRED_ONLY_TFVARS + CREDENTIALS_TFVARS)


@pytest.fixture(scope="session")
def example_vars() -> dict:
    return {k: attr({k: v}, k) for k, v in parse(EXAMPLE_TFVARS).items()}
