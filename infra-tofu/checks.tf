# What a variable's own validation cannot see: on the OpenTofu versions this code supports,
# a validation reads only its own variable. The credentials' values are ephemeral, so whether
# they are in use is decided by plain variables (locals.tf); these conditions keep the two in
# step and stop the plan with a message that names the variable, never the value. Likewise
# per-node images must name nodes that exist, and the backup schedule must fit Azure's limit.
# The tests evaluate this file with the variables (tests/tofu_helpers.py).

output "credentials_in_use" {
  description = "Which credentials issued outside the cluster OpenTofu writes to the Key Vault (whether, never what)."
  value = {
    git_token                  = local.git_token_set
    external_dns_client_secret = local.external_dns_set
  }

  precondition {
    condition     = local.git_token_set || var.git_token == null
    error_message = "git_token is given but secret_versions.git_auth is not set: set secret_versions = { git_auth = 1 } to store it (raise the number whenever the token changes)."
  }

  precondition {
    condition     = !local.git_token_set || var.git_token != null
    error_message = "secret_versions.git_auth is set but git_token is not given: it is ephemeral, so export TF_VAR_git_token for every plan and apply (or set git_auth to null to drop the token)."
  }

  precondition {
    condition     = !local.external_dns_set || var.external_dns_client_secret != null
    error_message = "external_dns_service_principal is set but external_dns_client_secret is not given: it is ephemeral (no longer part of external_dns_service_principal), so export TF_VAR_external_dns_client_secret for every plan and apply."
  }

  precondition {
    condition     = local.external_dns_set || var.external_dns_client_secret == null
    error_message = "external_dns_client_secret is given but external_dns_service_principal is not set."
  }
}

output "node_images" {
  description = "The image each node runs: its node_image_ids entry, else image_id."
  value       = local.node_images

  precondition {
    condition     = length(setsubtract(keys(var.node_image_ids), keys(local.nodes))) == 0
    error_message = "node_image_ids names nodes that do not exist (with server_count and worker_count as set): ${join(", ", sort(setsubtract(keys(var.node_image_ids), keys(local.nodes))))}. Remove those entries."
  }
}

output "server_state_backup" {
  description = "How Azure Backup copies each server's state disk: snapshot interval, retention, and the snapshots each disk keeps."
  value = {
    interval_hours     = var.server_state_backup_interval_hours
    retention_days     = var.server_state_backup_retention_days
    snapshots_per_disk = local.server_state_snapshots_per_disk
  }

  precondition {
    # Azure Disk Backup policies may keep at most 420 scheduled snapshots per disk.
    condition     = local.server_state_snapshots_per_disk <= 420
    error_message = "server_state_backup_interval_hours and server_state_backup_retention_days keep ${local.server_state_snapshots_per_disk} snapshots per disk; Azure Disk Backup allows 420: take snapshots less often or keep them fewer days."
  }
}
