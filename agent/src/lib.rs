//! canarie-agent: converges an RKE2 node on Azure to the state its node config describes.
//!
//! Modules depend only downward: `main` ties `cli` (the definition) to `commands` (the face)
//! → `reconcile`/`doctor`/`kubeconfig` → `rke2`, `disk`, `systemd`, `azure` → `config`,
//! `nodefile`, `subprocess`, `fsutil`, `paths`. docs/architecture.md draws the whole shape.

pub mod azure;
pub mod cli;
pub mod commands;
pub mod config;
pub mod disk;
pub mod doctor;
pub mod fsutil;
pub mod kubeconfig;
pub mod node_password;
pub mod nodefile;
pub mod paths;
pub mod reconcile;
pub mod rke2;
pub mod subprocess;
pub mod systemd;
