# One Standard public IP and load balancer: the Kubernetes API (6443) to the server,
# HTTP/HTTPS to the workers, SSH by NAT rule to each node, and the nodes' outbound
# traffic (they have no public IPs of their own).

resource "azurerm_public_ip" "lb" {
  name                = "${var.name}-lb-pip"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_lb" "main" {
  name                = "${var.name}-lb"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "Standard"
  tags                = local.tags

  frontend_ip_configuration {
    name                 = "public"
    public_ip_address_id = azurerm_public_ip.lb.id
  }
}

resource "azurerm_lb_backend_address_pool" "main" {
  # server and workers carry the inbound rules; all holds every node for outbound SNAT.
  for_each = toset(["server", "workers", "all"])

  name            = each.key
  loadbalancer_id = azurerm_lb.main.id
}

resource "azurerm_lb_probe" "main" {
  # TCP probes: the API answers TLS only and Traefik's health endpoint is not exposed on
  # the node, so an open port is the signal.
  for_each = local.lb_rules

  name                = each.key
  loadbalancer_id     = azurerm_lb.main.id
  protocol            = "Tcp"
  port                = each.value.port
  interval_in_seconds = 5
  number_of_probes    = 2
}

resource "azurerm_lb_rule" "main" {
  for_each = local.lb_rules

  name                           = each.key
  loadbalancer_id                = azurerm_lb.main.id
  frontend_ip_configuration_name = "public"
  protocol                       = "Tcp"
  frontend_port                  = each.value.port
  backend_port                   = each.value.port
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.main[each.value.pool].id]
  probe_id                       = azurerm_lb_probe.main[each.key].id
  idle_timeout_in_minutes        = 15
  # Outbound SNAT comes from the outbound rule below, not from the inbound rules.
  disable_outbound_snat = true
}

resource "azurerm_lb_outbound_rule" "main" {
  name                     = "outbound"
  loadbalancer_id          = azurerm_lb.main.id
  protocol                 = "All"
  backend_address_pool_id  = azurerm_lb_backend_address_pool.main["all"].id
  allocated_outbound_ports = 1024
  idle_timeout_in_minutes  = 15

  frontend_ip_configuration {
    name = "public"
  }
}

resource "azurerm_lb_nat_rule" "ssh" {
  # <lb ip>:2200 is cp-01, 2201 wk-01, 2202 wk-02, ... (the NSGs decide who gets in).
  for_each = local.nodes

  name                           = "ssh-${each.key}"
  resource_group_name            = azurerm_resource_group.main.name
  loadbalancer_id                = azurerm_lb.main.id
  frontend_ip_configuration_name = "public"
  protocol                       = "Tcp"
  frontend_port                  = each.value.ssh_port
  backend_port                   = 22
}
