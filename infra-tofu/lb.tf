# One Standard public IP and load balancer: the Kubernetes API (6443) to the servers,
# HTTP/HTTPS to the workers, SSH by NAT rule to each node, and the nodes' outbound
# traffic (they have no public IPs of their own). And one internal Standard load balancer:
# the fixed registration address (9345 and 6443) in front of the servers, through which
# every node but the first server joins (docs/infrastructure.md, "Registration address").

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

resource "azurerm_lb" "internal" {
  name                = "${var.name}-ilb"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "Standard"
  tags                = local.tags

  frontend_ip_configuration {
    # Static, so that the address in every node config and in the servers' certificate
    # never changes.
    name                          = "registration"
    subnet_id                     = azurerm_subnet.main["lb"].id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.registration_address
  }
}

locals {
  # Each load balancer by the name local.lb_pools uses, with its frontend.
  lbs = {
    public   = { id = azurerm_lb.main.id, frontend = "public" }
    internal = { id = azurerm_lb.internal.id, frontend = "registration" }
  }
}

resource "azurerm_lb_backend_address_pool" "main" {
  # server and workers carry the public inbound rules, all holds every node for outbound
  # SNAT, registration the servers behind the internal frontend (locals.tf).
  for_each = local.lb_pools

  name            = each.key
  loadbalancer_id = local.lbs[each.value].id
}

resource "azurerm_lb_probe" "main" {
  # TCP probes: the API and the supervisor answer TLS only and Traefik's health endpoint is
  # not exposed on the node, so an open port is the signal. A server whose rke2-server is
  # down (or not yet up, while it joins) gets no new flows.
  for_each = local.lb_rules

  name                = each.key
  loadbalancer_id     = local.lbs[local.lb_pools[each.value.pool]].id
  protocol            = "Tcp"
  port                = each.value.port
  interval_in_seconds = 5
  number_of_probes    = 2
}

resource "azurerm_lb_rule" "main" {
  for_each = local.lb_rules

  name                           = each.key
  loadbalancer_id                = local.lbs[local.lb_pools[each.value.pool]].id
  frontend_ip_configuration_name = local.lbs[local.lb_pools[each.value.pool]].frontend
  protocol                       = "Tcp"
  frontend_port                  = each.value.port
  backend_port                   = each.value.port
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.main[each.value.pool].id]
  probe_id                       = azurerm_lb_probe.main[each.key].id
  idle_timeout_in_minutes        = 15
  # Outbound SNAT comes from the outbound rule below, not from the inbound rules (an
  # internal load balancer does no SNAT at all).
  disable_outbound_snat = local.lb_pools[each.value.pool] == "public"
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
  # <lb ip>:2200 is cp-01, 2201 wk-01, 2202 wk-02, ..., 2212 cp-02, 2213 cp-03 (the NSGs
  # decide who gets in).
  for_each = local.nodes

  name                           = "ssh-${each.key}"
  resource_group_name            = azurerm_resource_group.main.name
  loadbalancer_id                = azurerm_lb.main.id
  frontend_ip_configuration_name = "public"
  protocol                       = "Tcp"
  frontend_port                  = each.value.ssh_port
  backend_port                   = 22
}
