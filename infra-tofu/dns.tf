# The cluster's DNS zone. Azure DNS answers for it only once the parent zone delegates
# to it: copy the dns_zone_name_servers output into NS records at the registrar (or in
# the parent zone); see README.md. external-dns adds the application records later.

resource "azurerm_dns_zone" "main" {
  name                = var.dns_zone_name
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_dns_a_record" "api" {
  # api.<zone> follows the load balancer's public IP (an alias record, no copied address).
  name                = "api"
  zone_name           = azurerm_dns_zone.main.name
  resource_group_name = azurerm_resource_group.main.name
  ttl                 = 300
  target_resource_id  = azurerm_public_ip.lb.id
  tags                = local.tags
}
