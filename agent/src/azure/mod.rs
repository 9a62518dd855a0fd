//! Azure IMDS, Key Vault and WireServer clients (and the Hyper-V KVP pool), with one retry
//! loop for all. Knows nothing of disks, RKE2 or the reconciler.

pub mod error;
mod http;
pub mod imds;
pub mod keyvault;
pub mod kvp;
pub mod retry;
pub mod route;
mod token;
pub mod wireserver;

pub use error::{StatusError, VaultCause, VaultRefusal};
pub use imds::{ImdsClient, InstanceMetadata, VAULT_RESOURCE};
pub use keyvault::KeyVaultClient;
pub use retry::RetryPolicy;
pub use token::{AccessToken, SecretValue};
pub use wireserver::{Health, HealthState, WireServerClient, WIRESERVER_DEFAULT_URL};

/// Where IMDS answers on every Azure VM.
pub const IMDS_DEFAULT_URL: &str = "http://169.254.169.254";
