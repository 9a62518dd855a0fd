# canarie's Azure side: only primitives. Nothing here runs on a VM: each node gets its
# node config as user_data and the canarie-agent baked into the image does the rest on
# every boot. See README.md.

resource "azurerm_resource_group" "main" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = local.tags
}
