# The node config of every cluster node, as the agent reads it from IMDS userData (its
# schema: `canarie-agent config schema`; its rules: agent/src/config/validate.rs).
#
# A pure module: no providers, no resources, values in and objects out. The root module
# turns each object into user_data with base64encode(jsonencode(...)); JSON is never
# assembled from strings. Keys whose value is null are left out, so the JSON carries only
# what is set and the agent's defaults apply to the rest.

terraform {
  required_version = "~> 1.8"
}

variable "servers" {
  description = "The servers (RKE2 servers), keyed by node name."
  type = map(object({
    node_name = string
  }))
}

variable "first_server" {
  description = "The server that initialises the cluster (and, rebuilt, restarts it from its state disk): the only node without a server_url."
  type        = string
}

variable "registration_url" {
  description = "The fixed registration address's supervisor URL, https://<address>:9345: every node but the first server joins through it."
  type        = string
}

variable "server_state_disk" {
  description = "Every server's state disk: its LUN, the size the agent checks it against and how long it waits for it (the agent's defaults apply to the rest)."
  type = object({
    lun          = number
    min_size_gib = number
    wait_seconds = number
  })
}

variable "workers" {
  description = "The workers (RKE2 agents), keyed by node name."
  type = map(object({
    node_name = string
  }))
}

variable "public_ip" {
  description = "The load balancer's public IPv4 address."
  type        = string
}

variable "tls_san" {
  description = "Names and addresses for the API server certificate."
  type        = list(string)
}

variable "vault" {
  description = "Key Vault name holding the join token."
  type        = string
}

variable "join_token_secret" {
  description = "Name of the Key Vault secret with the RKE2 join token."
  type        = string
}

variable "rbac_wait_seconds" {
  description = "How long the agent retries Key Vault's 403 while a role assignment propagates."
  type        = number
}

variable "git_repo" {
  description = "Fleet's git repository for the server, or null."
  type = object({
    url         = string
    branch      = string
    auth_secret = optional(string)
  })
  default = null
}

variable "data_disk" {
  description = "The Longhorn data disk every worker has."
  type = object({
    lun          = number
    mount_point  = string
    label        = string
    min_size_gib = number
    wait_seconds = number
  })
}

variable "server_node_taints" {
  description = "Taints of the server node."
  type        = list(string)
  default     = []
}

variable "cluster_name" {
  description = "The cluster's name (external-dns's TXT owner id)."
  type        = string
}

variable "dns_zone" {
  description = "The cluster's DNS zone: external-dns's domain filter and the parent of the public hosts."
  type        = string
  default     = null
}

variable "cluster_secrets" {
  description = "The Key Vault secrets the server seeds as Kubernetes Secrets (names and non-secret settings only), or null."
  type = object({
    git_auth = optional(object({
      secret   = string
      username = string
    }))
    grafana_admin = optional(object({
      secret   = string
      username = optional(string)
    }))
    longhorn_ui_auth = optional(object({
      secret   = string
      username = optional(string)
    }))
    external_dns_azure = optional(object({
      secret          = string
      tenant_id       = string
      subscription_id = string
      resource_group  = string
      client_id       = string
    }))
  })
  default = null
}

variable "worker_node_labels" {
  description = "Extra labels of every worker."
  type        = list(string)
  default     = []
}

locals {
  join_token = {
    vault             = var.vault
    secret            = var.join_token_secret
    rbac_wait_seconds = var.rbac_wait_seconds
  }

  git_repo = var.git_repo == null ? null : {
    for k, v in var.git_repo : k => v if v != null
  }

  server_cluster = {
    for k, v in {
      tls_san       = var.tls_san
      public_ip     = var.public_ip
      storage_nodes = length(var.workers)
      git_repo      = local.git_repo
      name          = var.cluster_name
      dns_zone      = var.dns_zone
    } : k => v if v != null
  }

  # Entries and their fields that are null are left out, like everywhere else.
  cluster_secrets = var.cluster_secrets == null ? null : {
    for entry, fields in var.cluster_secrets : entry => {
      for k, v in fields : k => v if v != null
    } if fields != null
  }

  # Every server gets the same settings, so each renders the same manifests and any one of
  # them can be rebuilt; only the first has no server_url.
  server_configs = {
    for name, s in var.servers : name => {
      for k, v in {
        version   = 1
        role      = "server"
        node_name = s.node_name
        cluster = merge(
          local.server_cluster,
          name == var.first_server ? {} : { server_url = var.registration_url },
        )
        join_token        = local.join_token
        server_state_disk = var.server_state_disk
        node_taints       = length(var.server_node_taints) > 0 ? var.server_node_taints : null
        cluster_secrets   = local.cluster_secrets
      } : k => v if v != null
    }
  }

  worker_configs = {
    for name, w in var.workers : name => {
      for k, v in {
        version     = 1
        role        = "agent"
        node_name   = w.node_name
        cluster     = { server_url = var.registration_url }
        join_token  = local.join_token
        data_disk   = var.data_disk
        node_labels = length(var.worker_node_labels) > 0 ? var.worker_node_labels : null
      } : k => v if v != null
    }
  }
}

output "configs" {
  description = "Node config objects keyed by node name; jsonencode one to get its userData JSON."
  value       = merge(local.server_configs, local.worker_configs)

  precondition {
    condition     = contains(keys(var.servers), var.first_server)
    error_message = "first_server must be one of the servers."
  }

  precondition {
    # The agent would refuse the config at boot; say so at plan time.
    condition = try(var.cluster_secrets.git_auth, null) == null || (
      try(var.git_repo.auth_secret, null) != null && startswith(try(var.git_repo.url, ""), "https://")
    )
    error_message = "A git token (cluster_secrets.git_auth) needs git_repo with an https:// URL and auth_secret (the Secret it is seeded as)."
  }
}
