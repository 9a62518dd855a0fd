//! `server-reachable`: a node that joins a cluster must reach the server's RKE2 supervisor
//! (the port of `cluster.server_url`, 9345) and its Kubernetes API server (6443 on the same
//! host). A TCP connect is enough to tell a closed NSG or a stopped server from a working one.

use super::Outcome;
use crate::config::NodeConfig;
use std::time::{Duration, Instant};

/// The Kubernetes API server's port on an RKE2 server (agents reach it through RKE2's
/// client-side load balancer, which connects here).
pub const API_SERVER_PORT: u16 = 6443;
/// One connection attempt's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn server_reachable(config: &NodeConfig) -> (Outcome, ()) {
    let Some(server_url) = config.cluster.server_url.as_deref() else {
        return (
            Outcome::skipped("first server: no cluster.server_url to join"),
            (),
        );
    };
    let url = match url::Url::parse(server_url) {
        Ok(u) => u,
        Err(e) => {
            return (
                Outcome::fail(
                    format!("cluster.server_url {server_url:?} is not a URL: {e}"),
                    "fix cluster.server_url in the node config, e.g. https://10.20.0.4:9345",
                ),
                (),
            )
        }
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return (
            Outcome::fail(
                format!("cluster.server_url {server_url:?} names no host"),
                "fix cluster.server_url in the node config, e.g. https://10.20.0.4:9345",
            ),
            (),
        );
    };
    // An IPv6 literal comes back bracketed from host_str; connect wants it bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (supervisor, api) = tokio::join!(connect(host, port), connect(host, API_SERVER_PORT));
    let describe = |what: &str, port: u16, r: &Result<Duration, String>| match r {
        Ok(t) => format!(
            "{what} {host}:{port} accepts connections ({} ms)",
            t.as_millis()
        ),
        Err(e) => format!("{what} {host}:{port}: {e}"),
    };
    let finding = format!(
        "{}; {}",
        describe("supervisor", port, &supervisor),
        describe("API server", API_SERVER_PORT, &api)
    );
    if supervisor.is_ok() && api.is_ok() {
        return (Outcome::ok(finding), ());
    }
    (
        Outcome::fail(
            finding,
            format!(
                "check that rke2-server runs on {host} (`canarie-agent doctor` there), that the NSG allows TCP {port} and {API_SERVER_PORT} from this node's subnet to it, and cluster.server_url"
            ),
        ),
        (),
    )
}

async fn connect(host: &str, port: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .collect();
        let mut last = String::from("the name has no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(started.elapsed()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s (dropped by a firewall?)",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}
