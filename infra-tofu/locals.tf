# Everything derived from variables alone: names, addresses, and the network policy as
# tables. This file must not refer to any resource, data source or module: the tests
# evaluate it, with the example variables and without Azure, to check the node configs
# and the NSG rules (see tests/README.md).

locals {
  subnets = {
    control = cidrsubnet(var.vnet_cidr, 2, 0)
    lb      = cidrsubnet(var.vnet_cidr, 2, 1)
    workers = cidrsubnet(var.vnet_cidr, 2, 2)
  }

  # Static private addresses: they must stay put across VM replacement. Azure reserves
  # .0-.3 of every subnet, so hosts start at .4. SSH through the load balancer: cp-01 on
  # 2200 and wk-NN on 2200+NN as always; cp-02 and cp-03 on 2212 and 2213, after the nine
  # workers' ports.
  first_server = "cp-01"
  servers = {
    for i in range(var.server_count) : format("cp-%02d", i + 1) => {
      node_name  = format("cp-%02d", i + 1)
      role       = "server"
      private_ip = cidrhost(local.subnets.control, 4 + i)
      ssh_port   = i == 0 ? 2200 : 2211 + i
    }
  }

  workers = {
    for i in range(var.worker_count) : format("wk-%02d", i + 1) => {
      node_name  = format("wk-%02d", i + 1)
      role       = "agent"
      private_ip = cidrhost(local.subnets.workers, 4 + i)
      ssh_port   = 2201 + i
    }
  }

  nodes = merge(local.servers, local.workers)

  # The fixed registration address: the internal load balancer's static frontend in the lb
  # subnet, in front of every server on 9345 (supervisor) and 6443 (API). Every node but
  # the first server joins through it, with one server as with three, so growing the
  # control plane changes no node's config (docs/infrastructure.md, "Registration address").
  registration_address = cidrhost(local.subnets.lb, 4)
  registration_url     = "https://${local.registration_address}:9345"

  # The image of each node: its node_image_ids entry, else image_id. Nodes move to a new
  # image one at a time by adding entries (docs/upgrades.md).
  node_images = { for name in keys(local.nodes) : name => lookup(var.node_image_ids, name, var.image_id) }

  # The API's DNS name in the cluster zone; it points at the load balancer (dns.tf).
  api_fqdn = "api.${var.dns_zone_name}"

  join_token_secret_name = "rke2-join-token"

  # The Key Vault secrets the server seeds as Kubernetes Secrets, by node config entry
  # (cluster_secrets.<entry>.secret). keyvault.tf stores them.
  cluster_secret_names = {
    git_auth           = "git-token"
    grafana_admin      = "grafana-admin-password"
    longhorn_ui_auth   = "longhorn-ui-password"
    external_dns_azure = "external-dns-client-secret"
  }

  # Whether the credentials issued elsewhere are in use. Their values are ephemeral (they
  # may only reach write-only arguments), so what decides is a plain variable: the git
  # token's version, and external-dns's service principal (ids, no secret).
  git_token_set    = var.secret_versions.git_auth != null
  external_dns_set = var.external_dns_service_principal != null

  # Every secret keyvault.tf stores, by node config entry (the join token as join_token):
  # its name in the vault. The credentials issued elsewhere only when they were given.
  vault_secret_names = merge(
    { join_token = local.join_token_secret_name },
    {
      for entry, name in local.cluster_secret_names : entry => name
      if lookup({ git_auth = local.git_token_set, external_dns_azure = local.external_dns_set }, entry, true)
    },
  )

  # Fleet's GitRepo uses the Secret the server seeds from git_token: its name is
  # git_repo.auth_secret, canarie-kube-auth unless the variable names another.
  git_repo = var.git_repo == null ? null : merge(var.git_repo, {
    auth_secret = var.git_repo.auth_secret != null ? var.git_repo.auth_secret : (local.git_token_set ? "canarie-kube-auth" : null)
  })

  # The agent's defaults for the Longhorn disk, spelled out so the config is explicit.
  data_disk = {
    lun          = 0
    mount_point  = "/var/lib/longhorn"
    label        = "longhorn"
    min_size_gib = var.data_disk_size_gib
    wait_seconds = var.data_disk_wait_seconds
  }

  # Each server's state disk (everything under /var/lib/rancher/rke2/server: etcd, its
  # snapshots, the cluster CA and token). LUN 1, so a node could carry the Longhorn disk at
  # LUN 0 as well; the agent's defaults apply to its label. Like the Longhorn disk it is
  # attached only after the VM exists, hence the same wait.
  server_state_disk = {
    lun          = 1
    min_size_gib = var.server_state_disk_size_gib
    wait_seconds = var.data_disk_wait_seconds
  }

  # Azure Backup of the state disks: the policy's repeating interval (ISO 8601) and how many
  # snapshots of each disk that keeps.
  server_state_backup_interval    = var.server_state_backup_interval_hours == 24 ? "P1D" : "PT${var.server_state_backup_interval_hours}H"
  server_state_snapshots_per_disk = ceil(24 / var.server_state_backup_interval_hours * var.server_state_backup_retention_days)

  tags = merge({ cluster = var.name, managed-by = "opentofu" }, var.tags)
}

# Network policy as data: network.tf turns each entry into one NSG rule, lb.tf each
# load-balancer entry into a rule and a probe. Tests evaluate these tables and check the
# policy (what is open to the Internet, what only inside the VNet).
locals {
  # Ports every node opens to the other nodes (RKE2's inbound rules with Cilium in VXLAN
  # mode): kubelet, Cilium health and Hubble, NodePorts, and the VXLAN overlay.
  node_tcp_ports = ["10250", "4240", "4244", "30000-32767"]
  node_udp_ports = ["8472"]

  # Who reaches the API and SSH from outside: the operator's addresses, or the whole
  # Internet (Azure's service tag) only when the variable says so in as many words.
  api_sources = var.api_open_to_internet ? ["Internet"] : var.api_allowed_cidrs
  ssh_sources = var.ssh_open_to_internet ? ["Internet"] : var.ssh_allowed_cidrs

  intra_vnet_rules = {
    nodes-tcp = { priority = 200, protocol = "Tcp", ports = local.node_tcp_ports }
    nodes-udp = { priority = 210, protocol = "Udp", ports = local.node_udp_ports }
    # Cilium's health checks ping between nodes.
    nodes-icmp = { priority = 220, protocol = "Icmp", ports = ["*"] }
  }

  security_rules = merge(
    {
      for pair in setproduct(["control", "workers"], keys(local.intra_vnet_rules)) :
      "${pair[0]}/${pair[1]}" => merge(local.intra_vnet_rules[pair[1]], {
        nsg     = pair[0]
        access  = "Allow"
        sources = ["VirtualNetwork"]
      })
    },
    {
      # RKE2's supervisor (agents register) and the API for agents, inside the VNet.
      "control/supervisor" = { nsg = "control", priority = 100, access = "Allow", protocol = "Tcp", ports = ["9345", "6443"], sources = ["VirtualNetwork"] }
      # etcd peers and metrics; only servers talk to it (server_count of them).
      "control/etcd" = { nsg = "control", priority = 110, access = "Allow", protocol = "Tcp", ports = ["2379-2381"], sources = [local.subnets.control] }
      # HTTP and HTTPS to RKE2's Traefik on the workers (hostPort 80/443), through the load balancer.
      "workers/http" = { nsg = "workers", priority = 300, access = "Allow", protocol = "Tcp", ports = ["80", "443"], sources = ["Internet"] }
    },
    {
      # The Kubernetes API from outside, through the load balancer (which keeps the
      # client's address, so the NSG filters on it). No rule at all (rather than an empty
      # source list) when the API stays inside the VNet.
      for nsg in length(local.api_sources) == 0 ? [] : ["control"] : "${nsg}/api" => {
        nsg = nsg, priority = 300, access = "Allow", protocol = "Tcp", ports = ["6443"], sources = local.api_sources
      }
    },
    {
      # No rule at all when SSH is closed.
      for nsg in length(local.ssh_sources) == 0 ? [] : ["control", "workers"] : "${nsg}/ssh" => {
        nsg = nsg, priority = 310, access = "Allow", protocol = "Tcp", ports = ["22"], sources = local.ssh_sources
      }
    },
    {
      # Health probes come from 168.63.129.16, which the VirtualNetwork tag covers: let
      # them through before the deny below.
      for nsg in keys(local.subnets) : "${nsg}/lb-probes" => {
        nsg = nsg, priority = 4000, access = "Allow", protocol = "*", ports = ["*"], sources = ["AzureLoadBalancer"]
      }
    },
    {
      # Overrides Azure's default AllowVnetInBound (priority 65000).
      for nsg in keys(local.subnets) : "${nsg}/deny-vnet" => {
        nsg = nsg, priority = 4096, access = "Deny", protocol = "*", ports = ["*"], sources = ["VirtualNetwork"]
      }
    },
  )

  # One entry per load-balancing rule and its probe, by backend pool (whose load balancer
  # lb_pools names): on the public one the API for the operator and HTTP/HTTPS to the
  # workers; on the internal one the registration address's supervisor and API ports.
  lb_rules = {
    api                     = { pool = "server", port = 6443 }
    http                    = { pool = "workers", port = 80 }
    https                   = { pool = "workers", port = 443 }
    registration-supervisor = { pool = "registration", port = 9345 }
    registration-api        = { pool = "registration", port = 6443 }
  }

  # The backend pools and their load balancer: server and workers carry the public inbound
  # rules, all every node for outbound SNAT, registration the servers behind the internal
  # frontend. A NIC may sit in one public and one internal load balancer's pools.
  lb_pools = {
    server       = "public"
    workers      = "public"
    all          = "public"
    registration = "internal"
  }

  # Which pools each node's NIC joins: by role, plus all.
  role_pools = { server = ["server", "registration", "all"], agent = ["workers", "all"] }
  node_pools = merge([
    for name, node in local.nodes : {
      for pool in local.role_pools[node.role] : "${name}/${pool}" => { node = name, pool = pool }
    }
  ]...)
}
