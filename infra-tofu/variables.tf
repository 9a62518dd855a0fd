# Inputs of the cluster. Everything a node's config is made of comes from here (see
# node-config.tf), so editing a variable and running `tofu apply` is how a node's config
# changes: user_data is updated in place, the VM is not replaced.

variable "subscription_id" {
  description = "Azure subscription to deploy into; null uses ARM_SUBSCRIPTION_ID."
  type        = string
  default     = null

  validation {
    condition     = var.subscription_id == null || can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID (or null to use ARM_SUBSCRIPTION_ID)."
  }
}

variable "name" {
  description = "Cluster name: prefix of every Azure resource name and of the Key Vault name (which gets a random suffix)."
  type        = string
  default     = "canarie"

  validation {
    # The Key Vault name is "<name>-<6 random chars>" and must stay within Azure's 24.
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.name)) && length(var.name) >= 3 && length(var.name) <= 16
    error_message = "name must be 3-16 lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure region name such as westeurope (lowercase, no spaces)."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

variable "vnet_cidr" {
  description = "Address space of the VNet; split into four equal subnets: control, lb, workers and one spare."
  type        = string
  default     = "10.20.0.0/24"

  validation {
    condition     = can(cidrhost(var.vnet_cidr, 0)) && tonumber(split("/", var.vnet_cidr)[1]) <= 24
    error_message = "vnet_cidr must be an IPv4 CIDR of /24 or larger, e.g. 10.20.0.0/24."
  }
}

variable "image_id" {
  description = "Resource id of the VM image with canarie-agent baked in (a managed image or a Compute Gallery image version)."
  type        = string

  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.Compute/(images|galleries)/.+$", var.image_id))
    error_message = "image_id must be an Azure image resource id: /subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/images/… or …/galleries/…/images/…/versions/…."
  }
}

variable "node_image_ids" {
  description = "Per-node image overrides, node name => image resource id (same forms as image_id), e.g. { \"cp-01\" = \"/subscriptions/…/versions/1.1.0\" }. A node without an entry uses image_id. Changing a node's image replaces that VM only (its data and state disks stay): this is how nodes move to a new image one at a time (docs/upgrades.md)."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = alltrue([for id in values(var.node_image_ids) : can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.Compute/(images|galleries)/.+$", id))])
    error_message = "node_image_ids values must be Azure image resource ids like image_id: /subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/images/… or …/galleries/…/images/…/versions/…."
  }

  validation {
    # Whether the node exists (server_count, worker_count) is checked in checks.tf.
    condition     = alltrue([for name in keys(var.node_image_ids) : can(regex("^(cp|wk)-[0-9]{2}$", name))])
    error_message = "node_image_ids keys must be node names such as cp-01 or wk-02."
  }
}

variable "trusted_launch" {
  description = "Boot the VMs with Secure Boot and a vTPM (Trusted Launch); the image definition must support it (security type TrustedLaunchSupported or TrustedLaunch)."
  type        = bool
  default     = false
  nullable    = false
}

variable "server_vm_size" {
  description = "VM size of the servers (cp-01..); any size that runs Ubuntu 24.04 Gen2 images and supports premium storage (the state disks are Premium_LRS)."
  type        = string
  default     = "Standard_D2s_v5"

  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.server_vm_size))
    error_message = "server_vm_size must be an Azure VM size such as Standard_D2s_v5."
  }
}

variable "worker_vm_size" {
  description = "VM size of the workers; it must support premium storage when data_disk_storage_account_type is Premium_LRS."
  type        = string
  default     = "Standard_D4s_v5"

  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.worker_vm_size))
    error_message = "worker_vm_size must be an Azure VM size such as Standard_D4s_v5."
  }
}

variable "server_count" {
  description = "Number of servers (cp-01, cp-02, cp-03): 1, or 3 for a control plane that survives the loss of one server (etcd needs a majority). Nodes join through the registration address either way, so going from 1 to 3 changes no node's config (docs/upgrades.md). Going down is not supported."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = contains([1, 3], var.server_count)
    error_message = "server_count must be 1 or 3 (etcd needs an odd number of members; 3 survives the loss of one)."
  }
}

variable "worker_count" {
  description = "Number of worker nodes (wk-01, wk-02, ...); each gets its own Longhorn data disk."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_count >= 1 && var.worker_count <= 9 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number from 1 to 9."
  }
}

variable "os_disk_size_gib" {
  description = "OS disk size of every node, in GiB (container images live there)."
  type        = number
  default     = 64

  validation {
    condition     = var.os_disk_size_gib >= 30 && var.os_disk_size_gib <= 1024
    error_message = "os_disk_size_gib must be between 30 and 1024."
  }
}

variable "data_disk_size_gib" {
  description = "Size of each worker's Longhorn data disk, in GiB."
  type        = number
  default     = 64

  validation {
    condition     = var.data_disk_size_gib >= 8 && var.data_disk_size_gib <= 4095 && floor(var.data_disk_size_gib) == var.data_disk_size_gib
    error_message = "data_disk_size_gib must be a whole number from 8 to 4095."
  }
}

variable "server_state_disk_size_gib" {
  description = "Size of each server's state disk (etcd, its snapshots, the cluster's certificates and token), in GiB. Premium_LRS, so the size also sets its IOPS."
  type        = number
  default     = 32

  validation {
    condition     = var.server_state_disk_size_gib >= 8 && var.server_state_disk_size_gib <= 1024 && floor(var.server_state_disk_size_gib) == var.server_state_disk_size_gib
    error_message = "server_state_disk_size_gib must be a whole number from 8 to 1024."
  }
}

variable "server_state_backup_interval_hours" {
  description = "How often Azure Backup snapshots each server's state disk, in hours (the values Azure Disk Backup offers)."
  type        = number
  default     = 4

  validation {
    condition     = contains([1, 2, 4, 6, 8, 12, 24], var.server_state_backup_interval_hours)
    error_message = "server_state_backup_interval_hours must be one of 1, 2, 4, 6, 8, 12 or 24."
  }
}

variable "server_state_backup_retention_days" {
  description = "How long Azure Backup keeps each snapshot of a server's state disk, in days (Azure keeps at most 450 snapshots per disk: interval and retention together must stay under that)."
  type        = number
  default     = 7

  validation {
    condition     = var.server_state_backup_retention_days >= 1 && var.server_state_backup_retention_days <= 360 && floor(var.server_state_backup_retention_days) == var.server_state_backup_retention_days
    error_message = "server_state_backup_retention_days must be a whole number from 1 to 360."
  }
}

variable "data_disk_storage_account_type" {
  description = "Storage type of the Longhorn data disks."
  type        = string
  default     = "Premium_LRS"

  validation {
    condition     = contains(["Standard_LRS", "StandardSSD_LRS", "Premium_LRS", "StandardSSD_ZRS", "Premium_ZRS"], var.data_disk_storage_account_type)
    error_message = "data_disk_storage_account_type must be one of Standard_LRS, StandardSSD_LRS, Premium_LRS, StandardSSD_ZRS, Premium_ZRS."
  }
}

variable "data_disk_wait_seconds" {
  description = "How long the agent waits for a node's disk to appear: a worker's Longhorn disk, a server's state disk. A disk is attached only after its VM has been created (and booted), so this must cover the attachment."
  type        = number
  default     = 600

  validation {
    condition     = var.data_disk_wait_seconds >= 60 && var.data_disk_wait_seconds <= 3600
    error_message = "data_disk_wait_seconds must be between 60 and 3600."
  }
}

variable "admin_username" {
  description = "Login user created on every node (SSH key only)."
  type        = string
  default     = "canarie"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.admin_username)) && !contains(["root", "admin", "administrator"], var.admin_username)
    error_message = "admin_username must be a lowercase Linux user name (not root, admin or administrator)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed for admin_username on every node."
  type        = string

  validation {
    # Azure accepts RSA (2048 bits or more) and, on Linux, ed25519 keys.
    condition     = can(regex("^(ssh-rsa|ssh-ed25519) [A-Za-z0-9+/=]+( .*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line starting with ssh-ed25519 or ssh-rsa."
  }
}

# Who may reach the nodes from outside. Two lists of the operator's own addresses; a range
# wide enough to reach much of the Internet (a prefix shorter than /8, 0.0.0.0/0 above all)
# is refused in them, and only the *_open_to_internet switches below open a port to
# everyone. The IPv4 and width rules are spelled out in each validation, because a
# validation may only read its own variable on every OpenTofu this code supports.

variable "ssh_allowed_cidrs" {
  description = "Source IPv4 CIDRs allowed to SSH to the nodes through the load balancer's NAT rules, e.g. [\"203.0.113.7/32\"]; empty closes SSH. To open SSH to the whole Internet, set ssh_open_to_internet instead."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_allowed_cidrs : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0))])
    error_message = "ssh_allowed_cidrs must be IPv4 CIDRs such as 203.0.113.7/32."
  }

  validation {
    condition     = alltrue([for c in var.ssh_allowed_cidrs : !can(cidrhost(c, 0)) || tonumber(split("/", c)[1]) >= 8])
    error_message = "ssh_allowed_cidrs holds a range that opens SSH to (much of) the Internet, such as 0.0.0.0/0: list your own addresses, or set ssh_open_to_internet = true to open it to everyone on purpose."
  }
}

variable "ssh_open_to_internet" {
  description = "Opens SSH (the NAT rules) to every address on the Internet, whatever ssh_allowed_cidrs says. Off by default; only for a throwaway cluster."
  type        = bool
  default     = false
  nullable    = false
}

variable "api_allowed_cidrs" {
  description = "Source IPv4 CIDRs allowed to reach the Kubernetes API (6443) through the load balancer, e.g. [\"203.0.113.7/32\"]. No default: say who may reach it. Empty keeps the API inside the VNet (reach it through SSH). To open it to the whole Internet, set api_open_to_internet instead."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.api_allowed_cidrs : can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must be IPv4 CIDRs such as 203.0.113.7/32."
  }

  validation {
    condition     = alltrue([for c in var.api_allowed_cidrs : !can(cidrhost(c, 0)) || tonumber(split("/", c)[1]) >= 8])
    error_message = "api_allowed_cidrs holds a range that opens the Kubernetes API to (much of) the Internet, such as 0.0.0.0/0: list your own addresses, or set api_open_to_internet = true to open it to everyone on purpose."
  }
}

variable "api_open_to_internet" {
  description = "Opens the Kubernetes API (6443) to every address on the Internet, whatever api_allowed_cidrs says. Off by default: the API server's authentication is then all that stands between it and everyone."
  type        = bool
  default     = false
  nullable    = false
}

variable "key_vault_allowed_cidrs" {
  description = "Public IPv4 addresses or CIDRs allowed to reach the Key Vault's data plane besides the cluster subnets: the machine running `tofu apply` must be among them, since it writes the join token."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.key_vault_allowed_cidrs : can(cidrhost(strcontains(c, "/") ? c : "${c}/32", 0))])
    error_message = "key_vault_allowed_cidrs must be IPv4 addresses or CIDRs."
  }
}

variable "dns_zone_name" {
  description = "The cluster's DNS zone (a subdomain you delegate to Azure DNS), e.g. k8s.example.com."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone_name))
    error_message = "dns_zone_name must be a lowercase DNS name such as k8s.example.com (no trailing dot)."
  }
}

variable "git_repo" {
  description = "Repository Fleet pulls the Phase 5-7 bundles from; auth_secret names the Kubernetes Secret (in fleet-local) with its credentials when the repo is private. null: no GitRepo."
  type = object({
    url         = string
    branch      = string
    auth_secret = optional(string)
  })
  default = null

  validation {
    condition     = var.git_repo == null || can(regex("^(https://|ssh://|git@)", var.git_repo.url))
    error_message = "git_repo.url must start with https://, ssh:// or git@."
  }

  validation {
    condition     = var.git_repo == null || can(regex("^[^\\s]+$", var.git_repo.branch))
    error_message = "git_repo.branch must be a non-empty branch name without white space."
  }
}

variable "git_token" {
  description = "Token (or password) Fleet pulls git_repo with over HTTPS. Ephemeral: OpenTofu writes it to the Key Vault (secret git-token) through a write-only argument and keeps it in neither plan nor state. Give it as TF_VAR_git_token at every plan and apply while secret_versions.git_auth is set. The server seeds it as the Secret named git_repo.auth_secret (default canarie-kube-auth) in fleet-local. null: the repository is public."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.git_token == null || (can(regex("^[!-~]+$", var.git_token)) && length(var.git_token) <= 4096)
    error_message = "git_token must be 1-4096 printable ASCII characters without spaces (or null for a public repository)."
  }
}

variable "git_username" {
  description = "User name sent with git_token (GitHub and Azure DevOps accept any non-empty name with a token)."
  type        = string
  default     = "git"

  validation {
    condition     = can(regex("^[!-9;-~]{1,64}$", var.git_username))
    error_message = "git_username must be 1-64 printable ASCII characters without spaces or ':'."
  }
}

variable "external_dns_service_principal" {
  description = "The Entra ID service principal external-dns manages the DNS zone with: its application (client) id and its object id (of the enterprise application, for the DNS Zone Contributor grant on the zone). Its client secret is external_dns_client_secret (an older client_secret attribute here is ignored, and the plan stops until that variable is given). Pods cannot use the nodes' managed identities. null: external-dns gets no credentials and stays in error."
  type = object({
    client_id = string
    object_id = string
  })
  default = null

  validation {
    condition = var.external_dns_service_principal == null || (
      can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.external_dns_service_principal.client_id)) &&
      can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.external_dns_service_principal.object_id))
    )
    error_message = "external_dns_service_principal needs client_id and object_id as GUIDs."
  }
}

variable "external_dns_client_secret" {
  description = "The client secret of external_dns_service_principal. Ephemeral: OpenTofu writes it to the Key Vault (secret external-dns-client-secret) through a write-only argument and keeps it in neither plan nor state. Give it as TF_VAR_external_dns_client_secret at every plan and apply while external_dns_service_principal is set."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.external_dns_client_secret == null || try(length(var.external_dns_client_secret) > 0, false)
    error_message = "external_dns_client_secret must not be empty (or null without external-dns)."
  }
}

variable "secret_versions" {
  description = "The version of each Key Vault secret's value that OpenTofu has written (the secrets' value_wo_version). OpenTofu never reads a secret back, so it writes a value only when the secret is new or its number here rises: raise one to write a new random value (grafana_admin, longhorn_ui_auth) or the variable's new credential (git_auth, external_dns_azure). git_auth is null unless git_token is given: set it to 1 then; it decides whether the git-token secret exists. Never raise join_token on a running cluster (keyvault.tf)."
  type = object({
    join_token         = optional(number, 1)
    grafana_admin      = optional(number, 1)
    longhorn_ui_auth   = optional(number, 1)
    git_auth           = optional(number)
    external_dns_azure = optional(number, 1)
  })
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for v in values(var.secret_versions) : v == null || try(v >= 1 && floor(v) == v, false)])
    error_message = "secret_versions entries must be whole numbers from 1 (git_auth may be null: no git token)."
  }
}

variable "keep_secret_values" {
  description = "Set to true for the one apply that upgrades a deployment made before the secrets became write-only: that apply rewrites each generated secret (join token, Grafana, Longhorn UI) with its current value, read from the Key Vault, instead of a new random one; without it the join token would change under a running cluster. Back to false afterwards, or a raised secret_versions entry writes the old value again."
  type        = bool
  default     = false
  nullable    = false
}

variable "extra_tls_san" {
  description = "Extra names or addresses for the API server certificate; the load balancer's IP and api.<dns_zone_name> are always included."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.extra_tls_san : can(regex("^[^\\s,]+$", s))])
    error_message = "extra_tls_san entries must be host names or IP addresses (no spaces or commas)."
  }
}

variable "server_node_taints" {
  description = "Taints of the servers, each key=value:Effect or key:Effect (e.g. CriticalAddonsOnly=true:NoExecute), unique by key and effect. The full rules are the agent's (canarie-agent config validate): what kubelet and the API server accept when the node registers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for t in var.server_node_taints : can(regex(":(NoSchedule|PreferNoSchedule|NoExecute)$", t))])
    error_message = "server_node_taints entries must end in :NoSchedule, :PreferNoSchedule or :NoExecute."
  }
}

variable "worker_node_labels" {
  description = "Extra labels of every worker, each key=value (applied when the node first registers). Not in the kubernetes.io or k8s.io namespaces (kubelet refuses to start with them, node-role.kubernetes.io/* included), and not node.longhorn.io/create-default-disk, which canarie-agent sets itself; the full rules are the agent's (canarie-agent config validate)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for l in var.worker_node_labels : can(regex("^[^=\\s]+=[^=\\s]*$", l))])
    error_message = "worker_node_labels entries must be key=value."
  }
}

variable "join_token_rbac_wait_seconds" {
  description = "How long a node's agent retries Key Vault's 403 while its fresh role assignment propagates (Azure: up to 10 minutes)."
  type        = number
  default     = 900

  validation {
    condition     = var.join_token_rbac_wait_seconds >= 60 && var.join_token_rbac_wait_seconds <= 3600
    error_message = "join_token_rbac_wait_seconds must be between 60 and 3600."
  }
}
