//! azure-sim against real sockets on 127.0.0.1: real behaviour, presets, rule mechanics,
//! TLS with the generated CA, the admin API and the binary. One test binary (fast to link).

mod admin;
mod binary;
mod faults;
mod imds;
mod support;
mod vault;
mod wireserver;
