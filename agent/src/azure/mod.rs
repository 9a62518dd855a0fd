//! Azure IMDS and Key Vault clients, with one retry policy for both.

/// Where IMDS answers on every Azure VM.
pub const IMDS_DEFAULT_URL: &str = "http://169.254.169.254";
