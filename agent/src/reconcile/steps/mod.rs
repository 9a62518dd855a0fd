//! The steps, in order: config → (join token ∥ data disk) → RKE2 config → server manifests
//! → cluster secrets → start RKE2.

pub mod cluster_secrets;
pub mod config;
pub mod data_disk;
pub mod files;
pub mod join_token;
pub mod start;
