terraform {
  # OpenTofu 1.12 or later (1.x): 1.12 is the oldest line still supported upstream
  # (docs/lifecycle.md). Since 1.11 it has ephemeral resources and variables, and write-only
  # arguments, which keep every secret value out of the plan and the state (keyvault.tf).
  required_version = "~> 1.12"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.42 introduced rbac_authorization_enabled on azurerm_key_vault; value_wo on
      # azurerm_key_vault_secret and the ephemeral azurerm_key_vault_secret are older.
      version = "~> 4.42"
    }
    random = {
      source = "hashicorp/random"
      # 3.7.1 is the first with an ephemeral random_password (a value kept out of the state).
      version = "~> 3.7, >= 3.7.1"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }
}

provider "azurerm" {
  # null falls back to ARM_SUBSCRIPTION_ID, as azurerm 4.x requires one or the other.
  subscription_id = var.subscription_id

  features {
    key_vault {
      # A destroyed vault stays soft-deleted (recoverable for 90 days) instead of being
      # purged: the join token of a running cluster must not vanish by accident.
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
    }
    virtual_machine {
      # Only the OS disk goes with a VM; the Longhorn data disks are separate resources.
      delete_os_disk_on_deletion = true
    }
  }
}
