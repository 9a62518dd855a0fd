output "lb_public_ip" {
  description = "The load balancer's public IPv4 address: Kubernetes API (6443), HTTP/HTTPS, SSH NAT ports."
  value       = azurerm_public_ip.lb.ip_address
}

output "registration_address" {
  description = "The fixed registration address: the internal load balancer's static frontend in front of every server, RKE2's supervisor on 9345 and the Kubernetes API on 6443, reachable inside the VNet. Every node but cp-01 joins through it; it is in the API server's certificate."
  value       = local.registration_address
}

output "server_state_disks" {
  description = "Azure resource ids of the servers' state disks, keyed by node name (attached at LUN 1, backed up by Azure Backup; docs/backup-restore.md)."
  value       = { for name, disk in azurerm_managed_disk.server_state : name => disk.id }
}

output "server_state_backup_instances" {
  description = "The Azure Backup instance of each server's state disk, keyed by node name, with the vault and the resource group its snapshots and restored disks go to: the names the restore commands take (docs/backup-restore.md)."
  value = {
    vault                   = azurerm_data_protection_backup_vault.main.name
    snapshot_resource_group = azurerm_resource_group.snapshots.name
    instances               = { for name, instance in azurerm_data_protection_backup_instance_disk.server_state : name => instance.name }
  }
}

output "api_url" {
  description = "The Kubernetes API through the load balancer (works once the zone is delegated)."
  value       = "https://${local.api_fqdn}:6443"
}

output "dns_zone_name" {
  description = "The cluster's DNS zone."
  value       = azurerm_dns_zone.main.name
}

output "dns_zone_name_servers" {
  description = "Name servers of the zone: create NS records for dns_zone_name with these at the registrar or in the parent zone."
  value       = azurerm_dns_zone.main.name_servers
}

output "key_vault_name" {
  description = "Name of the Key Vault holding the cluster's secrets."
  value       = azurerm_key_vault.main.name
}

output "key_vault_uri" {
  description = "Data-plane URI of the Key Vault."
  value       = azurerm_key_vault.main.vault_uri
}

output "join_token_secret_name" {
  description = "Key Vault secret holding the RKE2 join token."
  value       = azurerm_key_vault_secret.main["join_token"].name
}

output "vm_ids" {
  description = "Azure resource ids of the VMs, keyed by node name."
  value       = { for name, vm in azurerm_linux_virtual_machine.node : name => vm.id }
}

output "node_private_ips" {
  description = "Static private IPv4 address of each node."
  value       = { for name, node in local.nodes : name => node.private_ip }
}

output "ssh" {
  description = "SSH command for each node, through the load balancer's NAT rules (open only to ssh_allowed_cidrs)."
  value       = { for name, node in local.nodes : name => "ssh -p ${node.ssh_port} ${var.admin_username}@${azurerm_public_ip.lb.ip_address}" }
}

output "cluster_secret_names" {
  description = "Key Vault secrets the server seeds as Kubernetes Secrets, by node config entry (secret_read_commands reads one)."
  value       = local.cluster_secret_names
}

output "secret_read_commands" {
  description = "How to read each secret OpenTofu wrote, by node config entry: the values are in the Key Vault only, never in the state. Run from an address in key_vault_allowed_cidrs, signed in (az login) with Key Vault Secrets User or more on the vault."
  value = {
    for entry, secret in local.vault_secret_names :
    entry => "az keyvault secret show --vault-name ${azurerm_key_vault.main.name} --name ${secret} --query value -o tsv"
  }
}

output "public_urls" {
  description = "The cluster's public endpoints (hosts under the DNS zone, published by external-dns, certificates from Let's Encrypt). Log in with user admin and the password in Key Vault (secret_read_commands)."
  # The host labels are the agent's (agent/src/rke2/cluster_values.rs); listed here for people.
  value = {
    grafana  = "https://grafana.${var.dns_zone_name}/"
    longhorn = "https://longhorn.${var.dns_zone_name}/"
  }
}

output "kubeconfig_command" {
  description = "Fetches the cluster-admin kubeconfig from cp-01 over SSH (through the load balancer, open to ssh_allowed_cidrs) and writes it 0600, pointed at the load balancer."
  value       = "canarie-agent kubeconfig --ssh-port ${local.servers[local.first_server].ssh_port} --out ~/.kube/${var.name}.yaml ${var.admin_username}@${azurerm_public_ip.lb.ip_address}"
}
