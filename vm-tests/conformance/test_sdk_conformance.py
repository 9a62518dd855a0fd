"""The official Azure SDK for Python against azure-sim.

Nobody here wrote azure-identity or azure-keyvault-secrets, so if they read a secret from
the simulator (managed-identity token from the simulated IMDS, then the Key Vault challenge
flow over TLS with the simulator's CA), the simulator speaks the real protocol.

Needs the built binary: `cargo build --workspace --bins` (scripts/test.sh does that first).
Everything stays on 127.0.0.1: proxies are cleared and a socket guard fails the test on any
connection elsewhere (the SDK's default IMDS address 169.254.169.254 included).
"""

import json
import re
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from simproc import admin, guard_loopback, running_sim

SECRET_NAME = "rke2-join-token"
SECRET_VALUE = "K10-conformance-join-token-5d2e"
USER_ASSIGNED = "6f5c0a3e-1b2d-4c8e-9a7f-0e1d2c3b4a59"

SCENARIO = {
    "tenant_id": "12345678-1234-1234-1234-123456789012",
    "identities": {"system": True, "client_ids": [USER_ASSIGNED]},
    "secrets": {
        SECRET_NAME: {"value": SECRET_VALUE},
        "switched-off": {"value": "never-served", "enabled": False},
    },
}

PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
# Variables that would make ManagedIdentityCredential pick another source than IMDS.
OTHER_IDENTITY_VARS = [
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST",
]



@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp("azure-sim"), SCENARIO) as info:
        yield info


@pytest.fixture(autouse=True)
def only_loopback(sim, monkeypatch):
    """Point the SDK at the simulator and make any other destination a test failure."""
    for var in PROXY_VARS + OTHER_IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim["imds_url"])
    refused = guard_loopback(monkeypatch)
    yield
    assert refused == [], f"something tried to leave loopback: {refused}"


def requests_since(sim, count):
    _, text = admin(sim, "GET", "requests")
    return json.loads(text)[count:]


def request_count(sim):
    _, text = admin(sim, "GET", "requests")
    return len(json.loads(text))


def secret_client(sim, credential):
    return SecretClient(
        sim["vault_url"],
        credential,
        connection_verify=sim["ca_file"],
        verify_challenge_resource=False,
    )


def test_sdk_reads_a_secret_through_imds_and_the_challenge_flow(sim):
    before = request_count(sim)
    with ManagedIdentityCredential() as credential:
        secret = secret_client(sim, credential).get_secret(SECRET_NAME)
    assert secret.value == SECRET_VALUE
    assert re.fullmatch(r"[0-9a-f]{32}", secret.properties.version)
    assert secret.properties.enabled is True
    assert secret.id == f"{sim['vault_url']}/secrets/{SECRET_NAME}/{secret.properties.version}"

    seen = requests_since(sim, before)
    tokens = [r for r in seen if r["service"] == "imds"]
    vault = [r for r in seen if r["service"] == "vault"]
    assert len(tokens) == 1
    assert tokens[0]["path"] == "/metadata/identity/oauth2/token"
    assert tokens[0]["has_metadata_header"] is True
    assert "api-version=2018-02-01" in tokens[0]["query"]
    assert tokens[0]["status"] == 200
    # Challenge first (no token), then the authorised read; the SDK's own URL form.
    assert [(r["status"], r["has_authorization"]) for r in vault] == [(401, False), (200, True)]
    assert all(r["path"] == f"/secrets/{SECRET_NAME}/" for r in vault)
    assert all(r["query"] == "api-version=2026-04-01" for r in vault)

    # Neither the token nor the secret value reaches the request log.
    log = Path(sim["request_log"]).read_text()
    assert SECRET_VALUE not in log
    assert "eyJ" not in log


def test_missing_secret_raises_resource_not_found(sim):
    with ManagedIdentityCredential() as credential:
        with pytest.raises(ResourceNotFoundError) as err:
            secret_client(sim, credential).get_secret("no-such-secret")
    assert err.value.status_code == 404
    assert err.value.error.code == "SecretNotFound"
    assert "no-such-secret" in err.value.message


def test_disabled_secret_is_forbidden(sim):
    with ManagedIdentityCredential() as credential:
        with pytest.raises(HttpResponseError) as err:
            secret_client(sim, credential).get_secret("switched-off")
    assert err.value.status_code == 403
    assert "disabled secret" in err.value.message


def test_user_assigned_identity_known_and_unknown(sim):
    with ManagedIdentityCredential(client_id=USER_ASSIGNED) as credential:
        assert secret_client(sim, credential).get_secret(SECRET_NAME).value == SECRET_VALUE
    before = request_count(sim)
    with ManagedIdentityCredential(client_id="00000000-0000-0000-0000-00000000dead") as credential:
        with pytest.raises(CredentialUnavailableError, match="invalid_request"):
            credential.get_token("https://vault.azure.net/.default")
    [record] = requests_since(sim, before)
    assert record["status"] == 400
    assert "client_id=00000000-0000-0000-0000-00000000dead" in record["query"]


def test_sdk_retries_a_token_500_and_sees_secret_updates(sim):
    admin(sim, "PUT", "rules", json.dumps([{"preset": "token_500", "times": 1}]))
    status, body = admin(sim, "PUT", f"secrets/{SECRET_NAME}", "K10-rotated-value")
    assert status == 200
    new_version = json.loads(body)["version"]
    before = request_count(sim)
    try:
        with ManagedIdentityCredential() as credential:
            secret = secret_client(sim, credential).get_secret(SECRET_NAME)
        assert secret.value == "K10-rotated-value"
        assert secret.properties.version == new_version
        tokens = [r for r in requests_since(sim, before) if r["service"] == "imds"]
        assert [(r["status"], r["rule"]) for r in tokens] == [(500, "token_500"), (200, None)]
    finally:
        admin(sim, "PUT", "rules", "[]")
        admin(sim, "PUT", f"secrets/{SECRET_NAME}", SECRET_VALUE)
