"""Structure and policy checks on the OpenTofu code (parsed with python-hcl2) and on the
tables in locals.tf (evaluated by Terraform, see tofu_helpers.evaluate)."""

import ipaddress
import re

import pytest

from tofu_helpers import (
    INFRA,
    REQUIRED_ONLY_TFVARS,
    all_resource_types,
    attr,
    blocks,
    evaluate,
    parse,
    resources,
    root_blocks,
    strip_comments,
    tf_files,
)


def walk_keys(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from walk_keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_keys(v)


def the_one(rtype: str) -> tuple[str, dict]:
    found = resources(rtype)
    assert len(found) == 1, f"expected one {rtype}, found {sorted(found)}"
    return next(iter(found.items()))


# --- nothing runs on the VMs -------------------------------------------------------------


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_custom_data_provisioners_or_scripts(path):
    keys = set(walk_keys(parse(path)))
    assert "custom_data" not in keys, "custom_data forces a new VM on every edit: use user_data"
    assert "provisioner" not in keys and "connection" not in keys
    code = strip_comments(path.read_text(encoding="utf-8"))
    assert not re.search(r"\bcustom_data\b", code)
    assert not re.search(r"cloud-?init|#cloud-config|remote-exec|local-exec", code, re.I)


def test_no_extensions_or_script_resources():
    types = all_resource_types()
    forbidden = {
        t
        for t in types
        if "extension" in t or t in {"null_resource", "terraform_data", "azurerm_virtual_machine_run_command"}
    }
    assert not forbidden, f"nothing may run scripts on the VMs: {forbidden}"
    # Only the modern VM resource (no legacy azurerm_virtual_machine with its inline
    # os_profile custom_data, no Windows).
    assert {t for t in types if "virtual_machine" in t and not t.endswith("data_disk_attachment")} == {
        "azurerm_linux_virtual_machine"
    }
    for block in root_blocks("data"):
        assert not any("cloudinit" in t or "template" in t for t in block), "no cloud-init payloads"
    for vm in resources("azurerm_linux_virtual_machine").values():
        assert attr(vm, "allow_extension_operations") is False


# --- VMs -------------------------------------------------------------------------------


def test_vms_user_data_identity_and_image():
    name, vm = the_one("azurerm_linux_virtual_machine")
    assert attr(vm, "for_each") == "${local.nodes}"
    assert attr(vm, "user_data") == "${local.user_data[each.key]}"
    assert attr(vm, "source_image_id") == "${local.node_images[each.key]}"
    assert [attr(i, "type") for i in blocks(vm, "identity")] == ["SystemAssigned"]
    assert attr(vm, "disable_password_authentication") is True
    assert not {"data_disk", "storage_data_disk"} & set(vm), "data disks are separate resources"
    # user_data is base64 of jsonencode of the module's object, not a string template.
    user_data = [attr(b, "user_data") for b in root_blocks("locals") if "user_data" in b]
    assert len(user_data) == 1
    assert "base64encode(jsonencode(config))" in user_data[0]
    assert "module.node_config.configs" in user_data[0]


def test_every_vm_reads_the_vault_with_its_own_identity():
    vm_name, vm = the_one("azurerm_linux_virtual_machine")
    users = {
        n: ra for n, ra in resources("azurerm_role_assignment").items() if attr(ra, "role_definition_name") == "Key Vault Secrets User"
    }
    assert len(users) == 1, users
    ra = next(iter(users.values()))
    assert attr(ra, "for_each") == attr(vm, "for_each"), "one role assignment per VM"
    # A server reads every secret of the vault; a worker only the join token (the ARM id
    # of the secret, which is what a role assignment scope takes).
    assert attr(ra, "scope") == (
        '${each.value.role == "server" ? azurerm_key_vault.main.id : '
        'azurerm_key_vault_secret.main["join_token"].resource_versionless_id}'
    )
    assert attr(ra, "principal_id") == f"${{azurerm_linux_virtual_machine.{vm_name}[each.key].identity[0].principal_id}}"


def test_nodes_are_the_servers_and_every_worker(example_eval, three_servers_eval):
    assert sorted(example_eval["nodes"]) == ["cp-01", "wk-01", "wk-02"]
    assert sorted(three_servers_eval["nodes"]) == ["cp-01", "cp-02", "cp-03", "wk-01", "wk-02"]
    for ev in (example_eval, three_servers_eval):
        subnets = {k: ipaddress.ip_network(v) for k, v in ev["subnets"].items()}
        assert ev["first_server"] == "cp-01" and set(ev["servers"]) <= set(ev["nodes"])
        for name, node in ev["nodes"].items():
            assert node["role"] == ("server" if name.startswith("cp-") else "agent")
            subnet = subnets["control" if node["role"] == "server" else "workers"]
            assert ipaddress.ip_address(node["private_ip"]) in subnet
        # Every node its own address and SSH port; cp-01 keeps 2200 (kubeconfig_command).
        assert len({n["private_ip"] for n in ev["nodes"].values()}) == len(ev["nodes"])
        assert len({n["ssh_port"] for n in ev["nodes"].values()}) == len(ev["nodes"])
        assert ev["nodes"]["cp-01"]["ssh_port"] == 2200
    servers = three_servers_eval["servers"]
    assert [servers[n]["private_ip"] for n in ("cp-01", "cp-02", "cp-03")] == ["10.20.0.4", "10.20.0.5", "10.20.0.6"]
    assert [servers[n]["ssh_port"] for n in ("cp-01", "cp-02", "cp-03")] == [2200, 2212, 2213]


def test_ssh_ports_stay_apart_with_nine_workers(tmp_path):
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + "server_count = 3\nworker_count = 9\n")
    ports = [n["ssh_port"] for n in ev["nodes"].values()]
    assert len(set(ports)) == len(ports) == 12


# --- data disks ------------------------------------------------------------------------


def test_worker_data_disks_are_separate_and_attached_at_lun_0(example_eval):
    disk = resources("azurerm_managed_disk")["data"]
    att = resources("azurerm_virtual_machine_data_disk_attachment")["data"]
    vm_name, _ = the_one("azurerm_linux_virtual_machine")
    assert attr(disk, "for_each") == attr(att, "for_each") == "${local.workers}"
    assert attr(disk, "create_option") == "Empty"
    assert attr(disk, "disk_size_gb") == "${var.data_disk_size_gib}"
    assert attr(att, "managed_disk_id") == "${azurerm_managed_disk.data[each.key].id}"
    assert attr(att, "virtual_machine_id") == f"${{azurerm_linux_virtual_machine.{vm_name}[each.key].id}}"
    assert attr(att, "lun") == "${local.data_disk.lun}"
    assert example_eval["data_disk"]["lun"] == 0
    # The disk outlives its VM: nothing ties its lifetime to the VM, and destroying it
    # takes a deliberate edit.
    assert "azurerm_linux_virtual_machine" not in str(disk)
    assert [attr(lc, "prevent_destroy") for lc in blocks(disk, "lifecycle")] == [True]


def test_every_server_has_a_state_disk_at_lun_1(example_eval, three_servers_eval):
    disks = resources("azurerm_managed_disk")
    atts = resources("azurerm_virtual_machine_data_disk_attachment")
    assert set(disks) == set(atts) == {"data", "server_state"}
    disk, att = disks["server_state"], atts["server_state"]
    vm_name, _ = the_one("azurerm_linux_virtual_machine")
    # One per server, its own resource, sized by its own variable.
    assert attr(disk, "for_each") == attr(att, "for_each") == "${local.servers}"
    assert attr(disk, "create_option") == "Empty"
    assert attr(disk, "disk_size_gb") == "${var.server_state_disk_size_gib}"
    assert attr(disk, "network_access_policy") == "DenyAll"
    assert attr(att, "managed_disk_id") == "${azurerm_managed_disk.server_state[each.key].id}"
    assert attr(att, "virtual_machine_id") == f"${{azurerm_linux_virtual_machine.{vm_name}[each.key].id}}"
    # The LUN is the one the node config names (one local for both), and not the Longhorn
    # disk's: one node could carry both.
    assert attr(att, "lun") == "${local.server_state_disk.lun}"
    for ev in (example_eval, three_servers_eval):
        assert ev["server_state_disk"]["lun"] == 1 != ev["data_disk"]["lun"]
        for name in ev["servers"]:
            assert ev["configs"][name]["server_state_disk"] == ev["server_state_disk"]
    # It outlives any VM replacement: nothing ties its lifetime to the VM (the attachment,
    # which refers to the VM's id, is what gets replaced), and destroying it takes an edit.
    assert "azurerm_linux_virtual_machine" not in str(disk)
    assert [attr(lc, "prevent_destroy") for lc in blocks(disk, "lifecycle")] == [True]


def test_os_disks_go_with_their_vm():
    # The OS disk is disposable: the state a node needs back is on its data/state disk.
    (provider,) = [b["azurerm"] for b in parse(INFRA / "versions.tf")["provider"] if "azurerm" in b]
    (features,) = provider["features"]
    (vm_features,) = features["virtual_machine"]
    assert attr(vm_features, "delete_os_disk_on_deletion") is True


def test_per_node_images(tmp_path, three_servers_eval, example_vars):
    assert three_servers_eval["node_images"] == {n: example_vars["image_id"] for n in three_servers_eval["nodes"]}
    new = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/img/providers/Microsoft.Compute/galleries/g/images/node/versions/1.1.0"
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + f'server_count = 3\nnode_image_ids = {{ "cp-02" = "{new}" }}\n')
    images = ev["node_images"]
    assert images.pop("cp-02") == new
    assert set(images.values()) == {attr_of_tfvars("image_id", REQUIRED_ONLY_TFVARS)}, "only cp-02 moves"


def attr_of_tfvars(name: str, text: str) -> str:
    (m,) = re.findall(rf'(?m)^{name}\s*=\s*"([^"]*)"', text)
    return m


def test_data_disk_default_size_is_64_gib():
    variables = {k: v for b in root_blocks("variable") for k, v in b.items()}
    assert attr(variables["data_disk_size_gib"], "default") == 64
    assert attr(variables["worker_count"], "default") == 2


# --- backup of the server state disks ------------------------------------------------------


def test_every_server_state_disk_is_backed_up_off_node(three_servers_eval):
    _, vault = the_one("azurerm_data_protection_backup_vault")
    assert [attr(i, "type") for i in blocks(vault, "identity")] == ["SystemAssigned"]
    policy_name, policy = the_one("azurerm_data_protection_backup_policy_disk")
    assert attr(policy, "vault_id") == "${azurerm_data_protection_backup_vault.main.id}"
    assert attr(policy, "backup_repeating_time_intervals") == ["R/2025-01-01T00:00:00+00:00/${local.server_state_backup_interval}"]
    assert attr(policy, "default_retention_duration") == "P${var.server_state_backup_retention_days}D"
    assert three_servers_eval["server_state_backup_interval"] == "PT4H"
    assert three_servers_eval["server_state_backup"] == {"interval_hours": 4, "retention_days": 7, "snapshots_per_disk": 42}

    # One backup instance per state disk, into a snapshot group of its own.
    _, instance = the_one("azurerm_data_protection_backup_instance_disk")
    assert attr(instance, "for_each") == attr(resources("azurerm_managed_disk")["server_state"], "for_each") == "${local.servers}"
    assert attr(instance, "disk_id") == "${azurerm_managed_disk.server_state[each.key].id}"
    assert attr(instance, "backup_policy_id") == f"${{azurerm_data_protection_backup_policy_disk.{policy_name}.id}}"
    assert attr(instance, "vault_id") == "${azurerm_data_protection_backup_vault.main.id}"
    assert attr(instance, "snapshot_resource_group_name") == "${azurerm_resource_group.snapshots.name}"
    assert set(resources("azurerm_resource_group")) == {"main", "snapshots"}

    # The vault's identity gets Azure Backup's documented grants before protection starts:
    # Disk Backup Reader on each disk, Disk Snapshot Contributor on the snapshot group; and
    # Disk Restore Operator there, where a restore creates the new disk.
    grants = {
        attr(ra, "role_definition_name"): (name, ra)
        for name, ra in resources("azurerm_role_assignment").items()
        if attr(ra, "principal_id") == "${azurerm_data_protection_backup_vault.main.identity[0].principal_id}"
    }
    assert set(grants) == {"Disk Backup Reader", "Disk Snapshot Contributor", "Disk Restore Operator"}
    assert attr(grants["Disk Restore Operator"][1], "scope") == "${azurerm_resource_group.snapshots.id}"
    reader_name, reader = grants["Disk Backup Reader"]
    assert attr(reader, "for_each") == "${local.servers}"
    assert attr(reader, "scope") == "${azurerm_managed_disk.server_state[each.key].id}"
    contributor_name, contributor = grants["Disk Snapshot Contributor"]
    assert attr(contributor, "scope") == "${azurerm_resource_group.snapshots.id}"
    (sleep,) = [s for s in resources("time_sleep").values() if f"azurerm_role_assignment.{reader_name}" in str(attr(s, "depends_on"))]
    assert f"azurerm_role_assignment.{contributor_name}" in str(attr(sleep, "depends_on"))
    assert attr(instance, "depends_on") == ["${time_sleep.backup_rbac_propagation}"]


def test_daily_backups_use_a_daily_interval(tmp_path):
    ev = evaluate(tmp_path / "eval", REQUIRED_ONLY_TFVARS + "server_state_backup_interval_hours = 24\nserver_state_backup_retention_days = 30\n")
    assert ev["server_state_backup_interval"] == "P1D"
    assert ev["server_state_backup"]["snapshots_per_disk"] == 30


# --- Key Vault -------------------------------------------------------------------------


def test_key_vault_settings():
    _, kv = the_one("azurerm_key_vault")
    assert attr(kv, "rbac_authorization_enabled") is True
    assert attr(kv, "soft_delete_retention_days") == 90
    assert attr(kv, "purge_protection_enabled") is False
    assert "access_policy" not in kv, "RBAC only, no access policies"
    acls = blocks(kv, "network_acls")
    assert [attr(a, "default_action") for a in acls] == ["Deny"]
    text = (INFRA / "keyvault.tf").read_text(encoding="utf-8")
    before = text[: text.index("purge_protection_enabled = false")]
    assert re.search(r"#[^\n]*[Pp]urge protection stays off", before), "say why purge protection is off"


# Key Vault secret (by node config entry) -> where its value comes from. The generated
# ones come from ephemeral.random_password.generated (keyvault.tf); the others from
# ephemeral variables.
CREDENTIAL_VARIABLES = {"git_auth": "git_token", "external_dns_azure": "external_dns_client_secret"}
GENERATED = {"join_token", "grafana_admin", "longhorn_ui_auth"}
VAULT_SECRET_VALUES = GENERATED | set(CREDENTIAL_VARIABLES)


def test_every_secret_is_generated_or_taken_from_an_ephemeral_variable():
    _, secret = the_one("azurerm_key_vault_secret")
    assert attr(secret, "for_each") == "${local.vault_secret_names}"
    assert attr(secret, "name") == "${each.value}"
    assert attr(secret, "value_wo") == "${local.vault_secret_values[each.key]}"
    assert attr(secret, "key_vault_id") == "${azurerm_key_vault.main.id}"
    assert attr(secret, "content_type") == "text/plain"
    (lengths,) = [attr(b, "generated_secret_lengths") for b in root_blocks("locals") if "generated_secret_lengths" in b]
    assert set(lengths) == GENERATED and all(n >= 32 for n in lengths.values())
    ephemerals = {t: names for b in root_blocks("ephemeral") for t, names in b.items()}
    generated = ephemerals["random_password"]["generated"]
    assert attr(generated, "for_each") == "${local.generated_secret_lengths}"
    assert attr(generated, "special") is False
    (values,) = [attr(b, "vault_secret_values") for b in root_blocks("locals") if "vault_secret_values" in b]
    text = str(values)
    assert "ephemeral.random_password.generated" in text
    variables = {k: v for b in root_blocks("variable") for k, v in b.items()}
    for entry, var_name in CREDENTIAL_VARIABLES.items():
        assert f"var.{var_name}" in text, entry
        assert attr(variables[var_name], "sensitive") is True, var_name
        assert attr(variables[var_name], "ephemeral") is True, var_name
        assert attr(variables[var_name], "default") is None, f"{var_name} is optional"


def test_vault_holds_what_the_server_is_told_to_read(defaults_eval, credentials_eval):
    # Generated secrets always exist; the ones issued elsewhere exactly when given. Each is
    # stored under the name the server's node config reads it by.
    for ev, optional in ((defaults_eval, set()), (credentials_eval, {"git_auth", "external_dns_azure"})):
        names = ev["vault_secret_names"]
        assert set(names) == {"join_token", "grafana_admin", "longhorn_ui_auth"} | optional
        assert names["join_token"] == "rke2-join-token"
        server = ev["configs"]["cp-01"]
        assert server["join_token"]["secret"] == names["join_token"]
        told = {entry: s["secret"] for entry, s in server["cluster_secrets"].items() if s is not None}
        assert told == {entry: n for entry, n in names.items() if entry != "join_token"}
        # Only whether a credential was given decides; its value is no for_each key.
        assert set(names) <= set(VAULT_SECRET_VALUES)


def test_operator_can_write_secrets_before_they_are_written():
    officer = [ra for ra in resources("azurerm_role_assignment").values() if attr(ra, "role_definition_name") == "Key Vault Secrets Officer"]
    assert len(officer) == 1
    assert attr(officer[0], "principal_id") == "${data.azurerm_client_config.current.object_id}"
    for name, secret in resources("azurerm_key_vault_secret").items():
        assert "time_sleep" in str(attr(secret, "depends_on")), name


def test_every_secret_exists_before_the_nodes_boot():
    # The agent fails on a missing secret instead of waiting for it.
    _, vm = the_one("azurerm_linux_virtual_machine")
    depends = str(attr(vm, "depends_on"))
    (name,) = resources("azurerm_key_vault_secret")
    assert f"azurerm_key_vault_secret.{name}" in depends, "the VMs must wait for every secret"


def test_external_dns_may_write_only_the_cluster_zone():
    (ra,) = [ra for ra in resources("azurerm_role_assignment").values() if attr(ra, "role_definition_name") == "DNS Zone Contributor"]
    zone_name, _ = the_one("azurerm_dns_zone")
    assert attr(ra, "scope") == f"${{azurerm_dns_zone.{zone_name}.id}}"
    assert attr(ra, "principal_id") == "${var.external_dns_service_principal.object_id}"
    assert attr(ra, "count") == "${local.external_dns_set ? 1 : 0}"


# --- network ---------------------------------------------------------------------------


def rules_by_nsg(ev):
    out = {}
    for key, rule in ev["security_rules"].items():
        out.setdefault(rule["nsg"], []).append({**rule, "key": key})
    return out


def ports_of(rule) -> set[str]:
    return set(rule["ports"])


def test_nsg_rules_are_the_table():
    _, rule = the_one("azurerm_network_security_rule")
    assert attr(rule, "for_each") == "${local.security_rules}"
    for nsg in resources("azurerm_network_security_group").values():
        assert "security_rule" not in nsg, "inline rules would fight the standalone ones"
    _, assoc = the_one("azurerm_subnet_network_security_group_association")
    assert attr(assoc, "for_each") == "${local.subnets}", "every subnet has its NSG"


@pytest.mark.parametrize("which", ["example_eval", "defaults_eval"])
def test_nsg_policy(which, request, example_vars):
    ev = request.getfixturevalue(which)
    by_nsg = rules_by_nsg(ev)
    assert set(by_nsg) == {"control", "lb", "workers"}

    for nsg, rules in by_nsg.items():
        priorities = [r["priority"] for r in rules]
        assert len(priorities) == len(set(priorities)), f"{nsg}: duplicate priorities"
        # Last word: deny the rest of the VNet (Azure's default would allow it).
        last = max(rules, key=lambda r: r["priority"])
        assert (last["access"], last["sources"], last["ports"]) == ("Deny", ["VirtualNetwork"], ["*"])

    # Only HTTP/HTTPS is open to everyone, with the example values and with the defaults.
    public = {r["key"]: r for rules in by_nsg.values() for r in rules if any(opens_internet(c) for c in r["sources"])}
    assert set(public) == {"workers/http"}
    assert ports_of(public["workers/http"]) == {"80", "443"}
    api = ev["security_rules"].get("control/api")
    if which == "defaults_eval":
        assert api is None, "api_allowed_cidrs = [] keeps the API inside the VNet"
    else:
        assert api["sources"] == example_vars["api_allowed_cidrs"] and ports_of(api) == {"6443"}

    def open_from_vnet(nsg):
        return set().union(*(ports_of(r) for r in by_nsg[nsg] if r["access"] == "Allow" and r["sources"] == ["VirtualNetwork"]))

    assert {"9345", "6443", "10250", "8472", "4240"} <= open_from_vnet("control")
    assert {"10250", "8472", "4240"} <= open_from_vnet("workers")
    assert "9345" not in open_from_vnet("workers"), "only the server runs the supervisor"
    assert not any(r["access"] == "Allow" and r["sources"] != ["AzureLoadBalancer"] for r in by_nsg["lb"])

    ssh = [r for rules in by_nsg.values() for r in rules if "22" in r["ports"]]
    if which == "defaults_eval":
        assert ssh == [], "SSH is closed unless ssh_allowed_cidrs says otherwise"
    else:
        assert {r["nsg"] for r in ssh} == {"control", "workers"}
        assert all(r["sources"] == example_vars["ssh_allowed_cidrs"] for r in ssh)


def opens_internet(source: str) -> bool:
    """A source that reaches much of the Internet: the service tag, or a prefix under /8."""
    if source in ("Internet", "*", "Any"):
        return True
    try:
        return ipaddress.ip_network(source, strict=False).prefixlen < 8
    except ValueError:
        return False  # another service tag (VirtualNetwork, AzureLoadBalancer)


def test_only_the_switches_open_the_api_and_ssh_to_the_internet(tmp_path):
    ev = evaluate(
        tmp_path / "eval",
        REQUIRED_ONLY_TFVARS + 'api_open_to_internet = true\nssh_open_to_internet = true\nssh_allowed_cidrs = ["203.0.113.7/32"]\n',
    )
    rules = ev["security_rules"]
    assert rules["control/api"]["sources"] == ["Internet"] and ports_of(rules["control/api"]) == {"6443"}
    assert rules["control/ssh"]["sources"] == rules["workers/ssh"]["sources"] == ["Internet"]


def test_subnets_split_the_vnet(example_eval):
    vnet = ipaddress.ip_network("10.20.0.0/24")
    nets = {k: ipaddress.ip_network(v) for k, v in example_eval["subnets"].items()}
    assert set(nets) == {"control", "lb", "workers"}
    assert all(n.subnet_of(vnet) for n in nets.values())
    values = list(nets.values())
    assert not any(a.overlaps(b) for i, a in enumerate(values) for b in values[i + 1 :])


# --- load balancer ---------------------------------------------------------------------


def test_load_balancer_rules_and_probes(example_eval, three_servers_eval):
    assert example_eval["lb_rules"] == {
        "api": {"pool": "server", "port": 6443},
        "http": {"pool": "workers", "port": 80},
        "https": {"pool": "workers", "port": 443},
        "registration-supervisor": {"pool": "registration", "port": 9345},
        "registration-api": {"pool": "registration", "port": 6443},
    }
    assert example_eval["lb_pools"] == {"server": "public", "workers": "public", "all": "public", "registration": "internal"}
    _, rule = the_one("azurerm_lb_rule")
    probe_name, probe = the_one("azurerm_lb_probe")
    pool_name, pool = the_one("azurerm_lb_backend_address_pool")
    assert attr(rule, "for_each") == attr(probe, "for_each") == "${local.lb_rules}"
    assert attr(pool, "for_each") == "${local.lb_pools}"
    assert attr(rule, "probe_id") == f"${{azurerm_lb_probe.{probe_name}[each.key].id}}"
    assert attr(rule, "backend_address_pool_ids") == [f"${{azurerm_lb_backend_address_pool.{pool_name}[each.value.pool].id}}"]
    assert attr(rule, "backend_port") == attr(rule, "frontend_port") == attr(probe, "port") == "${each.value.port}"
    assert attr(probe, "protocol") == attr(rule, "protocol") == "Tcp"
    # Rule, probe and pool on the load balancer the pool belongs to, with its frontend.
    lb_of_pool = "local.lbs[local.lb_pools[each.value.pool]]"
    assert attr(rule, "loadbalancer_id") == attr(probe, "loadbalancer_id") == f"${{{lb_of_pool}.id}}"
    assert attr(rule, "frontend_ip_configuration_name") == f"${{{lb_of_pool}.frontend}}"
    assert attr(pool, "loadbalancer_id") == "${local.lbs[each.value].id}"
    (lbs,) = [attr(b, "lbs") for b in root_blocks("locals") if "lbs" in b]
    lbs_by_name = resources("azurerm_lb")
    assert set(lbs_by_name) == {"main", "internal"}
    assert lbs == {
        "public": {"id": "${azurerm_lb.main.id}", "frontend": attr(lbs_by_name["main"]["frontend_ip_configuration"][0], "name")},
        "internal": {"id": "${azurerm_lb.internal.id}", "frontend": attr(lbs_by_name["internal"]["frontend_ip_configuration"][0], "name")},
    }
    # SNAT comes from the outbound rule on the public load balancer; an internal one has none.
    assert attr(rule, "disable_outbound_snat") == '${local.lb_pools[each.value.pool] == "public"}'
    the_one("azurerm_lb_outbound_rule")
    _, pip = the_one("azurerm_public_ip")
    assert attr(pip, "sku") == "Standard" and attr(pip, "allocation_method") == "Static"
    assert all(attr(lb, "sku") == "Standard" for lb in lbs_by_name.values())
    # Every node is in the outbound pool and in the pools of its role; the servers also
    # behind the registration address.
    for ev in (example_eval, three_servers_eval):
        pools = {(p["node"], p["pool"]) for p in ev["node_pools"].values()}
        expected = {(n, "server") for n in ev["servers"]} | {(n, "registration") for n in ev["servers"]}
        expected |= {(n, "workers") for n in ev["nodes"] if n not in ev["servers"]}
        expected |= {(n, "all") for n in ev["nodes"]}
        assert pools == expected
    servers = {p["node"] for p in three_servers_eval["node_pools"].values() if p["pool"] == "registration"}
    assert servers == {"cp-01", "cp-02", "cp-03"}


def test_registration_address_is_a_static_internal_frontend(example_eval, three_servers_eval):
    internal = resources("azurerm_lb")["internal"]
    (frontend,) = internal["frontend_ip_configuration"]
    assert attr(frontend, "subnet_id") == '${azurerm_subnet.main["lb"].id}'
    assert attr(frontend, "private_ip_address_allocation") == "Static"
    assert attr(frontend, "private_ip_address") == "${local.registration_address}"
    assert "public_ip_address_id" not in frontend
    for ev in (example_eval, three_servers_eval):
        # In the lb subnet, where no node lives: the same address with 1 or 3 servers.
        address = ipaddress.ip_address(ev["registration_address"])
        assert address in ipaddress.ip_network(ev["subnets"]["lb"])
        assert str(address) not in {n["private_ip"] for n in ev["nodes"].values()}
        assert ev["registration_url"] == f"https://{address}:9345"
        # The supervisor and the API on the same frontend, both behind every server.
        ports = {r["port"] for r in ev["lb_rules"].values() if ev["lb_pools"][r["pool"]] == "internal"}
        assert ports == {9345, 6443}
    assert example_eval["registration_address"] == three_servers_eval["registration_address"] == "10.20.0.68"


def test_registration_traffic_passes_the_nsgs(three_servers_eval):
    """What reaches a server through the registration address (every node of the VNet, on
    9345 and 6443, and the probes) is allowed by the control NSG, before its deny."""
    by_nsg = rules_by_nsg(three_servers_eval)
    control = sorted(by_nsg["control"], key=lambda r: r["priority"])
    deny = next(r for r in control if r["access"] == "Deny")

    def allowed(port: str, source: str) -> bool:
        return any(
            r["access"] == "Allow" and r["priority"] < deny["priority"] and source in r["sources"] and (port in r["ports"] or "*" in r["ports"])
            for r in control
        )

    for port in ("9345", "6443"):
        assert allowed(port, "VirtualNetwork"), port
        assert allowed(port, "AzureLoadBalancer"), f"the {port} probe"
    # etcd between the servers: the control subnet holds all three.
    subnet = ipaddress.ip_network(three_servers_eval["subnets"]["control"])
    assert all(ipaddress.ip_address(s["private_ip"]) in subnet for s in three_servers_eval["servers"].values())
    assert allowed("2379-2381", three_servers_eval["subnets"]["control"])


# --- DNS, outputs, versions, variables -------------------------------------------------


def test_dns_zone_and_outputs():
    zone_name, _ = the_one("azurerm_dns_zone")
    outputs = {k: v for b in root_blocks("output") for k, v in b.items()}
    for required in (
        "lb_public_ip",
        "dns_zone_name_servers",
        "key_vault_name",
        "vm_ids",
        "registration_address",
        "server_state_disks",
        "server_state_backup_instances",
    ):
        assert required in outputs, f"missing output {required}"
        assert attr(outputs[required], "description")
    assert attr(outputs["dns_zone_name_servers"], "value") == f"${{azurerm_dns_zone.{zone_name}.name_servers}}"
    assert attr(outputs["registration_address"], "value") == "${local.registration_address}"


def test_versions_are_pinned():
    (terraform,) = parse(INFRA / "versions.tf")["terraform"]
    assert re.fullmatch(r"~> 1\.\d+", attr(terraform, "required_version"))
    (providers,) = terraform["required_providers"]
    versions = {name: attr(p, "version") if isinstance(p, dict) else p[0]["version"] for name, p in providers.items()}
    assert re.fullmatch(r"~> 4\.\d+", versions["azurerm"])
    assert set(versions) == {"azurerm", "random", "time"}
    assert all(v.startswith("~> ") for v in versions.values())
    # Floors that offer a write-only Key Vault secret value and an ephemeral random_password.
    assert versions["random"] == "~> 3.7, >= 3.7.1"
    assert int(versions["azurerm"].split(".")[1]) >= 23


def test_variables_have_descriptions_types_and_validations():
    variables = {k: v for b in root_blocks("variable") for k, v in b.items()}
    unvalidated = {"tags"}  # free-form by nature
    for name, body in variables.items():
        assert attr(body, "description"), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"
        if name in unvalidated:
            continue
        # A non-nullable bool needs no rule; everything else has one.
        is_plain_bool = attr(body, "type") == "${bool}" and attr(body, "nullable") is False if "nullable" in body else False
        assert blocks(body, "validation") or is_plain_bool, f"variable {name} has no validation"


def test_locals_tf_is_evaluable_without_azure():
    text = strip_comments((INFRA / "locals.tf").read_text(encoding="utf-8"))
    assert not re.search(r"\b(?:azurerm|random|time)_\w+\.\w+|\bdata\.|\bmodule\.", text)
