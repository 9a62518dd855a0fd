//! canarie-agent: converges an RKE2 node on Azure to the state its node config describes.
//!
//! Modules depend only downward:
//! `reconcile`/`doctor` → `rke2`, `disk`, `systemd`, `azure` → `config`, `fsutil`, `paths`.

pub mod azure;
pub mod cli;
pub mod commands;
pub mod config;
pub mod disk;
pub mod doctor;
pub mod fsutil;
pub mod nodefile;
pub mod paths;
pub mod reconcile;
pub mod rke2;
pub mod subprocess;
pub mod systemd;
