//! The static hostname through systemd-hostnamed (`org.freedesktop.hostname1`): hostnamed
//! writes /etc/hostname and sets the kernel's hostname, so the agent needs no write access
//! to /etc/hostname and no `sethostname(2)` (its unit has `ProtectHostname=yes`).

use anyhow::{Context, Result};

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
pub trait Hostname1 {
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn static_hostname(&self) -> zbus::Result<String>;
}

/// hostnamed on the system bus, or on the bus at `address` (tests).
pub struct Hostnamed {
    proxy: Hostname1Proxy<'static>,
}

impl Hostnamed {
    pub async fn connect(address: Option<&str>) -> Result<Self> {
        let conn = super::connect_bus(address).await?;
        // Read fresh each time: a cached value would hide a change made by someone else.
        let proxy = Hostname1Proxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .context("creating the systemd-hostnamed proxy")?;
        Ok(Hostnamed { proxy })
    }

    /// The static hostname (empty when none is set).
    pub async fn static_hostname(&self) -> Result<String> {
        self.proxy
            .static_hostname()
            .await
            .context("reading StaticHostname from systemd-hostnamed")
    }

    /// Sets the static hostname (never asks for interactive authorization).
    pub async fn set_static_hostname(&self, name: &str) -> Result<()> {
        self.proxy
            .set_static_hostname(name, false)
            .await
            .with_context(|| format!("asking systemd-hostnamed to set the hostname {name:?}"))
    }
}
