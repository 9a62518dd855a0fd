# The off-node copy of each server's state disk: Azure Backup for managed disks takes
# incremental snapshots of it on a schedule, kept apart from the disk and the VM (deleting
# either leaves them). RKE2 writes its own etcd snapshots onto the same disk
# (/var/lib/rancher/rke2/server/db/snapshots, on the schedule in the server's config), so
# each disk snapshot carries the member's live data and its recent etcd snapshot files.
# Restoring is a new disk from a recovery point, swapped in for the server's disk:
# docs/backup-restore.md.

resource "azurerm_resource_group" "snapshots" {
  # Where Azure Backup keeps the snapshots (and where a restore creates the new disk): its
  # own group, so that nothing OpenTofu manages lives among them. azurerm refuses to delete
  # a resource group that still holds resources, so `tofu destroy` stops here while
  # snapshots exist.
  name     = "${var.name}-snapshots-rg"
  location = var.location
  tags     = local.tags
}

resource "azurerm_data_protection_backup_vault" "main" {
  name                = "${var.name}-backup"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  # Disk backups are operational-tier snapshots in the snapshot group above; the vault keeps
  # only their catalogue, so its own store and redundancy matter little.
  datastore_type = "VaultStore"
  redundancy     = "LocallyRedundant"
  tags           = local.tags

  # Azure Backup reads the disks and writes the snapshots with this identity.
  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_data_protection_backup_policy_disk" "server_state" {
  name     = "server-state"
  vault_id = azurerm_data_protection_backup_vault.main.id
  # From a fixed start, every server_state_backup_interval_hours.
  backup_repeating_time_intervals = ["R/2025-01-01T00:00:00+00:00/${local.server_state_backup_interval}"]
  default_retention_duration      = "P${var.server_state_backup_retention_days}D"
}

resource "azurerm_role_assignment" "backup_disk_reader" {
  # Azure Backup's documented grants: Disk Backup Reader on each disk it backs up...
  for_each = local.servers

  scope                = azurerm_managed_disk.server_state[each.key].id
  role_definition_name = "Disk Backup Reader"
  principal_id         = azurerm_data_protection_backup_vault.main.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "backup_snapshot_contributor" {
  # ...and Disk Snapshot Contributor on the group it writes the snapshots to.
  scope                = azurerm_resource_group.snapshots.id
  role_definition_name = "Disk Snapshot Contributor"
  principal_id         = azurerm_data_protection_backup_vault.main.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "backup_restore_operator" {
  # A restore creates the new disk in the snapshot group too (docs/backup-restore.md), which
  # takes Disk Restore Operator there.
  scope                = azurerm_resource_group.snapshots.id
  role_definition_name = "Disk Restore Operator"
  principal_id         = azurerm_data_protection_backup_vault.main.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_data_protection_backup_instance_disk" "server_state" {
  for_each = local.servers

  name                         = "${var.name}-${each.key}-state"
  location                     = azurerm_resource_group.main.location
  vault_id                     = azurerm_data_protection_backup_vault.main.id
  disk_id                      = azurerm_managed_disk.server_state[each.key].id
  snapshot_resource_group_name = azurerm_resource_group.snapshots.name
  backup_policy_id             = azurerm_data_protection_backup_policy_disk.server_state.id

  # Configuring protection checks the vault's grants: they must exist, and have propagated.
  depends_on = [time_sleep.backup_rbac_propagation]
}

resource "time_sleep" "backup_rbac_propagation" {
  # A new role assignment takes a while to take effect; without this pause the first apply
  # can fail to configure protection for lack of the grants just made.
  create_duration = "60s"

  depends_on = [
    azurerm_role_assignment.backup_disk_reader,
    azurerm_role_assignment.backup_snapshot_contributor,
  ]
}
