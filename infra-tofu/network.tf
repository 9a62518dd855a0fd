# VNet with three subnets and one NSG each. Azure's default NSG rules allow everything
# inside the VNet; every NSG here ends with an explicit deny of VNet traffic so that only
# the ports listed in local.security_rules (locals.tf) are open between nodes.

resource "azurerm_virtual_network" "main" {
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "main" {
  for_each = local.subnets

  name                 = each.key
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [each.value]
  # Nodes reach the Key Vault through its service endpoint; the vault's firewall admits
  # the control and workers subnets by this.
  service_endpoints = each.key == "lb" ? [] : ["Microsoft.KeyVault"]
  # Outbound traffic leaves through the load balancer's outbound rule (lb.tf), never
  # through Azure's implicit default outbound access.
  default_outbound_access_enabled = false
}

resource "azurerm_network_security_group" "main" {
  # The lb subnet holds the internal load balancer's frontend, the registration address
  # (lb.tf), and no NIC; it gets the deny-by-default NSG all the same. (Load-balanced
  # traffic reaches a server with its destination rewritten to the server's own address, so
  # the control NSG is the one that filters it.)
  for_each = local.subnets

  name                = "${var.name}-${each.key}-nsg"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "main" {
  for_each = local.subnets

  subnet_id                 = azurerm_subnet.main[each.key].id
  network_security_group_id = azurerm_network_security_group.main[each.key].id
}

resource "azurerm_network_security_rule" "main" {
  for_each = local.security_rules

  name                        = replace(each.key, "/", "-")
  resource_group_name         = azurerm_resource_group.main.name
  network_security_group_name = azurerm_network_security_group.main[each.value.nsg].name
  priority                    = each.value.priority
  direction                   = "Inbound"
  access                      = each.value.access
  protocol                    = each.value.protocol
  source_port_range           = "*"
  # Single values and lists go to different arguments in Azure's API.
  source_address_prefix      = length(each.value.sources) == 1 ? each.value.sources[0] : null
  source_address_prefixes    = length(each.value.sources) == 1 ? null : each.value.sources
  destination_address_prefix = "*"
  destination_port_range     = length(each.value.ports) == 1 ? each.value.ports[0] : null
  destination_port_ranges    = length(each.value.ports) == 1 ? null : each.value.ports
}
