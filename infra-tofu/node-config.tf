# One node config per VM, built by the pure module in modules/node-config. Only two
# arguments below refer to resources (the load balancer's IP and the vault's name); the
# node-config test substitutes placeholders for exactly those and evaluates the rest
# with the example variables, so keep any other argument to var.* and local.*.

module "node_config" {
  source = "./modules/node-config"

  server             = { node_name = local.server.node_name, private_ip = local.server.private_ip }
  workers            = { for name, w in local.workers : name => { node_name = w.node_name } }
  public_ip          = azurerm_public_ip.lb.ip_address
  tls_san            = distinct(concat([azurerm_public_ip.lb.ip_address, local.api_fqdn], var.extra_tls_san))
  vault              = azurerm_key_vault.main.name
  join_token_secret  = local.join_token_secret_name
  rbac_wait_seconds  = var.join_token_rbac_wait_seconds
  git_repo           = var.git_repo
  data_disk          = local.data_disk
  server_node_taints = var.server_node_taints
  worker_node_labels = var.worker_node_labels
}

locals {
  # What each VM's user_data carries. jsonencode of an object, never a string template.
  user_data = { for name, config in module.node_config.configs : name => base64encode(jsonencode(config)) }
}
