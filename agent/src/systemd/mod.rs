//! The few systemd D-Bus calls the agent needs.
