//! Shared helpers of the integration tests (each test file uses a part of them).
#![allow(dead_code)]

pub mod dbus;
pub mod doctor;
pub mod examples;
pub mod journal;
pub mod sandbox;
pub mod sim;
