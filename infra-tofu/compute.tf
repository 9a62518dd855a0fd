# The nodes: the servers cp-01.. (RKE2 servers) and the workers (RKE2 agents), each from its
# image (node_image_ids, else image_id) with canarie-agent baked in. No custom_data, no cloud-init payload, no VM extensions: the
# node config travels as user_data and the agent applies it on every boot.

resource "azurerm_network_interface" "node" {
  for_each = local.nodes

  name                = "${var.name}-${each.key}-nic"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.main[each.value.role == "server" ? "control" : "workers"].id
    private_ip_address_allocation = "Static"
    private_ip_address            = each.value.private_ip
  }
}

resource "azurerm_network_interface_backend_address_pool_association" "node" {
  for_each = local.node_pools

  network_interface_id    = azurerm_network_interface.node[each.value.node].id
  ip_configuration_name   = "primary"
  backend_address_pool_id = azurerm_lb_backend_address_pool.main[each.value.pool].id
}

resource "azurerm_network_interface_nat_rule_association" "ssh" {
  for_each = local.nodes

  network_interface_id  = azurerm_network_interface.node[each.key].id
  ip_configuration_name = "primary"
  nat_rule_id           = azurerm_lb_nat_rule.ssh[each.key].id
}

resource "azurerm_linux_virtual_machine" "node" {
  for_each = local.nodes

  name                  = "${var.name}-${each.key}"
  computer_name         = each.key
  location              = azurerm_resource_group.main.location
  resource_group_name   = azurerm_resource_group.main.name
  size                  = each.value.role == "server" ? var.server_vm_size : var.worker_vm_size
  source_image_id       = local.node_images[each.key]
  network_interface_ids = [azurerm_network_interface.node[each.key].id]
  secure_boot_enabled   = var.trusted_launch
  vtpm_enabled          = var.trusted_launch

  admin_username                  = var.admin_username
  disable_password_authentication = true

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.ssh_public_key
  }

  # Disposable: the node's state lives on its data disk (servers: state disk), which a new
  # VM gets back; the agent rebuilds the rest on every boot.
  os_disk {
    name                 = "${var.name}-${each.key}-os"
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = var.os_disk_size_gib
  }

  # The agent fetches its IMDS token with this identity to read the join token.
  identity {
    type = "SystemAssigned"
  }

  # The node config (base64 JSON), read by the agent from IMDS on every boot.
  # user_data, unlike custom_data, is updated in place: editing a variable and applying
  # changes the config without replacing the VM (custom_data forces a new VM and is
  # consumed once by cloud-init on the first boot).
  user_data = local.user_data[each.key]

  # The cluster needs no VM extensions; refuse them so none sneak in.
  allow_extension_operations = false

  # Serial console and screenshots, stored in a platform-managed account.
  boot_diagnostics {}

  tags = merge(local.tags, { node = each.key })

  # The join token and the cluster secrets exist before any node boots (the agent fails on
  # a missing secret, it does not wait for one); the node's own role assignment can only
  # follow the VM (it needs its principal id), which the agent waits out. The pool
  # associations come first too: the outbound rule is the nodes' only way out (the
  # subnets have no default outbound access), and RKE2 pulls images on first boot.
  depends_on = [
    azurerm_key_vault_secret.main,
    azurerm_network_interface_backend_address_pool_association.node,
  ]
}

# Each worker's Longhorn disk is its own resource, attached at LUN 0: replacing a VM
# replaces only the attachment (it refers to the VM's id), so the disk is detached from the
# old VM and attached to the new one, the data stays. The agent finds it by
# LUN and never formats a disk that already carries its filesystem.
resource "azurerm_managed_disk" "data" {
  #checkov:skip=CKV_AZURE_93:Encrypted at rest with platform-managed keys; customer-managed keys need a disk encryption set and a purge-protected vault, not in scope here.
  for_each = local.workers

  name                 = "${var.name}-${each.key}-data"
  location             = azurerm_resource_group.main.location
  resource_group_name  = azurerm_resource_group.main.name
  storage_account_type = var.data_disk_storage_account_type
  create_option        = "Empty"
  disk_size_gb         = var.data_disk_size_gib
  # No SAS export or import: the disk is only ever used attached.
  public_network_access_enabled = false
  network_access_policy         = "DenyAll"
  tags                          = merge(local.tags, { node = each.key, role = "longhorn-data" })

  lifecycle {
    # Longhorn's replicas live here. Lowering worker_count or `tofu destroy` stops at this
    # disk; see README.md ("Tearing down") for deleting the data on purpose.
    prevent_destroy = true
  }
}

resource "azurerm_virtual_machine_data_disk_attachment" "data" {
  for_each = local.workers

  managed_disk_id    = azurerm_managed_disk.data[each.key].id
  virtual_machine_id = azurerm_linux_virtual_machine.node[each.key].id
  lun                = local.data_disk.lun
  # Longhorn writes synchronously and replicates itself; host caching adds nothing.
  caching = "None"
}

# Each server's state disk: everything under /var/lib/rancher/rke2/server (etcd and its
# snapshots, the cluster CA, the token), so that a replaced server comes back as the same
# etcd member. Its own resource like the Longhorn disks, at LUN 1 (local.server_state_disk,
# which the node config carries too), so one node could carry both.
resource "azurerm_managed_disk" "server_state" {
  #checkov:skip=CKV_AZURE_93:Encrypted at rest with platform-managed keys; customer-managed keys need a disk encryption set and a purge-protected vault, not in scope here.
  for_each = local.servers

  name                 = "${var.name}-${each.key}-state"
  location             = azurerm_resource_group.main.location
  resource_group_name  = azurerm_resource_group.main.name
  storage_account_type = "Premium_LRS"
  create_option        = "Empty"
  disk_size_gb         = var.server_state_disk_size_gib
  # No SAS export or import: used attached, and copied off by Azure Backup's snapshots (backup.tf).
  public_network_access_enabled = false
  network_access_policy         = "DenyAll"
  tags                          = merge(local.tags, { node = each.key, role = "server-state" })

  lifecycle {
    # The cluster's etcd member lives here. Lowering server_count or `tofu destroy` stops
    # at this disk; see README.md ("Tearing down").
    prevent_destroy = true
  }
}

resource "azurerm_virtual_machine_data_disk_attachment" "server_state" {
  for_each = local.servers

  managed_disk_id    = azurerm_managed_disk.server_state[each.key].id
  virtual_machine_id = azurerm_linux_virtual_machine.node[each.key].id
  lun                = local.server_state_disk.lun
  # etcd fsyncs every write; a host cache would only sit in its way.
  caching = "None"
}
