# One node config per VM, built by the pure module in modules/node-config. Only a few
# values below come from resources and data sources (the load balancer's IP, the vault's
# name, the tenant, subscription and resource group of the DNS zone); the node-config test
# substitutes placeholders for exactly those (tests/tofu_helpers.py PLACEHOLDERS) and
# evaluates the rest with the example variables, so keep anything else to var.* and local.*.

module "node_config" {
  source = "./modules/node-config"

  servers            = { for name, s in local.servers : name => { node_name = s.node_name } }
  first_server       = local.first_server
  registration_url   = local.registration_url
  server_state_disk  = local.server_state_disk
  workers            = { for name, w in local.workers : name => { node_name = w.node_name } }
  public_ip          = azurerm_public_ip.lb.ip_address
  tls_san            = distinct(concat([azurerm_public_ip.lb.ip_address, local.api_fqdn, local.registration_address], var.extra_tls_san))
  vault              = azurerm_key_vault.main.name
  join_token_secret  = local.join_token_secret_name
  rbac_wait_seconds  = var.join_token_rbac_wait_seconds
  git_repo           = local.git_repo
  data_disk          = local.data_disk
  server_node_taints = var.server_node_taints
  worker_node_labels = var.worker_node_labels
  cluster_name       = var.name
  dns_zone           = var.dns_zone_name

  # Which Key Vault secrets the server seeds (names only; keyvault.tf stores the values).
  cluster_secrets = {
    grafana_admin    = { secret = local.cluster_secret_names.grafana_admin }
    longhorn_ui_auth = { secret = local.cluster_secret_names.longhorn_ui_auth }
    git_auth = local.git_token_set ? {
      secret   = local.cluster_secret_names.git_auth
      username = var.git_username
    } : null
    external_dns_azure = local.external_dns_set ? {
      secret          = local.cluster_secret_names.external_dns_azure
      tenant_id       = data.azurerm_client_config.current.tenant_id
      subscription_id = data.azurerm_client_config.current.subscription_id
      resource_group  = azurerm_resource_group.main.name
      # An application id is an identifier, not a credential.
      client_id = var.external_dns_service_principal.client_id
    } : null
  }
}

locals {
  # What each VM's user_data carries. jsonencode of an object, never a string template.
  user_data = { for name, config in module.node_config.configs : name => base64encode(jsonencode(config)) }
}
