//! Waiting for the network that one endpoint needs, rather than for all of it.
//!
//! The agent's unit is not ordered after `network-online.target`: systemd-networkd's
//! wait-online waits for every managed link (a second NIC, a slow link that IMDS does not
//! use), up to two minutes. Before its first IMDS request the agent waits only until the
//! kernel has a route to IMDS. The probe is `connect()` on a UDP socket: the kernel looks
//! the route up and picks a source address, and no packet leaves the node.

use anyhow::{bail, Result};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use tokio::time::Instant;

/// How often the route is looked up again while there is none.
pub const POLL: Duration = Duration::from_millis(50);

/// Whether the kernel has a route (and a source address) to `addr` right now. `Err` for
/// anything but "no route yet", which the caller leaves to its HTTP request to report.
pub fn probe(addr: SocketAddr) -> std::io::Result<bool> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    match socket.connect(addr) {
        Ok(()) => Ok(true),
        Err(e) if no_route_yet(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `connect()` says while DHCP has not configured the link yet.
fn no_route_yet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable | ErrorKind::AddrNotAvailable
    )
}

/// Waits until `probe` finds a route, at most `limit`; returns how long it waited. A probe
/// that fails otherwise ends the wait (the request that follows reports the real error).
pub async fn wait_with<P>(what: &str, limit: Duration, mut probe: P) -> Result<Duration>
where
    P: FnMut() -> std::io::Result<bool>,
{
    let start = Instant::now();
    let mut logged = false;
    loop {
        match probe() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(endpoint = what, error = %e, "route lookup failed; trying the request anyway");
                break;
            }
        }
        if start.elapsed() >= limit {
            bail!(
                "no route to {what} within {}s: the network is not configured \
                 (see `networkctl status` and the journal of systemd-networkd)",
                limit.as_secs()
            );
        }
        if !logged {
            tracing::info!(endpoint = what, "waiting for a route to it");
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
    let waited = start.elapsed();
    if logged {
        tracing::info!(
            endpoint = what,
            waited_ms = waited.as_millis() as u64,
            "route to it is up"
        );
    }
    Ok(waited)
}

/// [`wait_with`] the kernel's routing table for `addr`.
pub async fn wait(what: &str, addr: SocketAddr, limit: Duration) -> Result<Duration> {
    wait_with(what, limit, || probe(addr)).await
}

#[cfg(test)]
mod tests {
    //! The waits run on tokio's paused clock. Where the kernel has no route is in the
    //! integration tests (a network namespace with only loopback) and the VM tests.
    use super::*;

    #[test]
    fn loopback_always_has_a_route() {
        assert!(probe("127.0.0.1:80".parse().unwrap()).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_when_the_route_appears() {
        let mut lookups = 0;
        let waited = wait_with("IMDS", Duration::from_secs(120), || {
            lookups += 1;
            Ok(lookups > 3)
        })
        .await
        .unwrap();
        assert_eq!(lookups, 4);
        assert_eq!(waited, POLL * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_route_within_the_limit_is_an_error_that_says_where_to_look() {
        let err = wait_with("IMDS (169.254.169.254:80)", Duration::from_secs(2), || {
            Ok(false)
        })
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("no route to IMDS (169.254.169.254:80) within 2s"),
            "{text}"
        );
        assert!(text.contains("networkctl status"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn any_other_lookup_error_leaves_it_to_the_request() {
        let waited = wait_with("IMDS", Duration::from_secs(120), || {
            Err(std::io::Error::from(ErrorKind::PermissionDenied))
        })
        .await
        .unwrap();
        assert_eq!(waited, Duration::ZERO);
    }
}
