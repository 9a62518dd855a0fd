# The nodes: cp-01 (RKE2 server) and the workers (RKE2 agents), all from the image with
# canarie-agent baked in. No custom_data, no cloud-init payload, no VM extensions: the
# node config travels as user_data and the agent applies it on every boot.

resource "azurerm_network_interface" "node" {
  for_each = local.nodes

  name                = "${var.name}-${each.key}-nic"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.main[each.key == local.server.node_name ? "control" : "workers"].id
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
  size                  = each.key == local.server.node_name ? var.server_vm_size : var.worker_vm_size
  source_image_id       = var.image_id
  network_interface_ids = [azurerm_network_interface.node[each.key].id]
  secure_boot_enabled   = var.trusted_launch
  vtpm_enabled          = var.trusted_launch

  admin_username                  = var.admin_username
  disable_password_authentication = true

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.ssh_public_key
  }

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
# detaches the disk and attaches it to the new VM, the data stays. The agent finds it by
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
