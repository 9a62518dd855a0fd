# The Key Vault holding the RKE2 join token and the cluster secrets the server seeds as
# Kubernetes Secrets (Grafana's admin password, the Longhorn UI login, Fleet's git token,
# external-dns's service principal secret). OpenTofu writes them and never reads them back. Access is by Azure RBAC only: each server's
# system-assigned identity is a "Key Vault Secrets User" on the vault, each worker's only on
# the join token, the identity running OpenTofu a "Key Vault Secrets Officer".

data "azurerm_client_config" "current" {}

resource "random_string" "key_vault_suffix" {
  # Vault names are global across Azure; the suffix keeps "<name>-xxxxxx" free.
  length  = 6
  lower   = true
  upper   = false
  numeric = true
  special = false
}

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_110:Purge protection is off on purpose (see purge_protection_enabled below).
  #checkov:skip=CKV_AZURE_42:Recoverable through soft delete (90 days); this check also demands purge protection, off on purpose.
  #checkov:skip=CKV2_AZURE_32:Nodes reach the vault through a service endpoint and the firewall denies all else; a private endpoint would also lock out the operator's `tofu apply`.
  name                       = "${var.name}-${random_string.key_vault_suffix.result}"
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  soft_delete_retention_days = 90
  # Purge protection stays off: once on it can never be turned off, and a vault (with its
  # name) could then not be purged for 90 days after `tofu destroy`, so tearing down and
  # rebuilding a cluster would strand vaults. Soft delete (90 days) still makes an
  # accidental deletion recoverable; the features block keeps destroy from purging.
  purge_protection_enabled = false
  tags                     = local.tags

  network_acls {
    # Only the nodes' subnets (service endpoint) and the operators' addresses reach the
    # data plane. No trusted-service bypass: no Azure service needs these secrets.
    default_action             = "Deny"
    bypass                     = "None"
    ip_rules                   = var.key_vault_allowed_cidrs
    virtual_network_subnet_ids = [azurerm_subnet.main["control"].id, azurerm_subnet.main["workers"].id]
  }
}

resource "azurerm_role_assignment" "operator_secrets_officer" {
  # Lets `tofu apply` write the secrets below (RBAC vaults grant nothing by ownership).
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "time_sleep" "operator_rbac_propagation" {
  # A new role assignment takes a while to reach Key Vault's data plane; without this
  # pause the first apply fails writing the secret with 403 ForbiddenByRbac.
  create_duration = "90s"

  depends_on = [azurerm_role_assignment.operator_secrets_officer]
}

# The secrets' values never enter the plan or the state. The cluster's own secrets are
# generated ephemerally (a new random value exists only while tofu runs), the credentials
# issued elsewhere come from ephemeral variables, and both reach Key Vault only through the
# write-only value_wo. Key Vault is where they live: the outputs say how to read one
# (docs/day2.md), and tests/test_tofu_secrets.py fails on any secret that would be stored.

locals {
  # The secrets the cluster owns, by node config entry: their length. No special
  # characters: for the join token, "::" would make RKE2 read it as a full (CA-pinned)
  # token; Grafana's and the Longhorn UI's passwords (user "admin") go into an environment
  # variable and a bcrypt htpasswd entry.
  generated_secret_lengths = { join_token = 48, grafana_admin = 32, longhorn_ui_auth = 32 }
}

ephemeral "random_password" "generated" {
  # A new value at every plan and apply; azurerm writes one only when the secret is new or
  # its secret_versions entry rises. Never raise join_token on a running cluster: the
  # server keeps the old one and new nodes could not join.
  for_each = local.generated_secret_lengths

  length  = each.value
  special = false
}

ephemeral "azurerm_key_vault_secret" "kept" {
  # keep_secret_values: the generated secrets' current values, read back for the one apply
  # that turns a deployment made before into write-only secrets (its secrets get their
  # value_wo_version then, so azurerm writes them once; with their own values, not new ones).
  for_each = var.keep_secret_values ? local.generated_secret_lengths : {}

  name         = local.vault_secret_names[each.key]
  key_vault_id = azurerm_key_vault.main.id
}

locals {
  # The value of each secret in local.vault_secret_names (locals.tf). Ephemeral, so it may
  # only reach a write-only argument; for_each takes the names, never these.
  vault_secret_values = merge(
    {
      for entry, password in ephemeral.random_password.generated : entry =>
      var.keep_secret_values ? ephemeral.azurerm_key_vault_secret.kept[entry].value : password.result
    },
    {
      git_auth           = var.git_token
      external_dns_azure = var.external_dns_client_secret
    },
  )
}

resource "azurerm_key_vault_secret" "main" {
  #checkov:skip=CKV_AZURE_41:No expiry: nodes read these on every boot for the cluster's whole life and an expired secret cannot be read; the cluster secrets are rotated by changing them (docs/day2.md), and the git token's and client secret's own expiry is the issuer's.
  for_each = local.vault_secret_names

  name = each.value
  # Write-only: sent to Key Vault when the secret is created or its version rises, stored
  # nowhere by OpenTofu.
  value_wo         = local.vault_secret_values[each.key]
  value_wo_version = var.secret_versions[each.key]
  key_vault_id     = azurerm_key_vault.main.id
  content_type     = "text/plain"
  tags             = local.tags

  depends_on = [time_sleep.operator_rbac_propagation]
}

# Each secret was its own resource until the for_each above. These blocks carry an existing
# deployment's secrets over to the new addresses untouched. Without them OpenTofu would plan
# to destroy each secret at its old address and create it at the new one: two unrelated
# operations on one vault name, where the create fails while the old secret exists or the
# delete takes away what the nodes read at boot. Keep them for every deployment created
# before the change (tests/test_tofu_moved.py replays them).
moved {
  from = azurerm_key_vault_secret.join_token
  to   = azurerm_key_vault_secret.main["join_token"]
}

moved {
  from = azurerm_key_vault_secret.grafana_admin
  to   = azurerm_key_vault_secret.main["grafana_admin"]
}

moved {
  from = azurerm_key_vault_secret.longhorn_ui
  to   = azurerm_key_vault_secret.main["longhorn_ui_auth"]
}

moved {
  from = azurerm_key_vault_secret.git_token[0]
  to   = azurerm_key_vault_secret.main["git_auth"]
}

moved {
  from = azurerm_key_vault_secret.external_dns[0]
  to   = azurerm_key_vault_secret.main["external_dns_azure"]
}

# The generated passwords were random_password resources, which kept their values in the
# state. A deployment made before forgets them without a "destroy" in its plan (there is
# nothing to destroy outside the state); keep_secret_values (variables.tf) keeps the secrets'
# values across that apply. Keep these blocks for every deployment made before.
removed {
  from = random_password.join_token

  lifecycle {
    destroy = false
  }
}

removed {
  from = random_password.grafana_admin

  lifecycle {
    destroy = false
  }
}

removed {
  from = random_password.longhorn_ui

  lifecycle {
    destroy = false
  }
}

resource "azurerm_role_assignment" "external_dns_zone" {
  # external-dns writes the cluster's records, in this zone only.
  count = local.external_dns_set ? 1 : 0

  scope                = azurerm_dns_zone.main.id
  role_definition_name = "DNS Zone Contributor"
  principal_id         = var.external_dns_service_principal.object_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "node_secrets_user" {
  # Each node reads with its own identity: a server every secret of the vault (the join
  # token and the cluster secrets), a worker only the join token.
  for_each = local.nodes

  scope                = each.value.role == "server" ? azurerm_key_vault.main.id : azurerm_key_vault_secret.main["join_token"].resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_linux_virtual_machine.node[each.key].identity[0].principal_id
  # Saves Azure a directory lookup of the brand-new identity (which can fail on replication lag).
  principal_type = "ServicePrincipal"
}
