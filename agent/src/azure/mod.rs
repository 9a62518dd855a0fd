//! Azure IMDS and Key Vault clients, with one retry policy for both. Knows nothing of
//! disks, RKE2 or the reconciler.

pub mod error;
mod http;
pub mod imds;
pub mod keyvault;
pub mod retry;
mod token;

pub use error::{StatusError, VaultCause, VaultRefusal};
pub use imds::{ImdsClient, InstanceMetadata, VAULT_RESOURCE};
pub use keyvault::KeyVaultClient;
pub use retry::RetryPolicy;
pub use token::{AccessToken, SecretValue};

/// Where IMDS answers on every Azure VM.
pub const IMDS_DEFAULT_URL: &str = "http://169.254.169.254";
