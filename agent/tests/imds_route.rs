//! The agent starts before the network is configured (its unit is not ordered after
//! `network-online.target`): its IMDS client waits for a route to IMDS, then asks at once.
//! Each test runs on a thread moved into a network namespace of its own (`unshare`, root),
//! where IMDS's address is a listener on the namespace's loopback: no packet leaves it.

use canarie_agent::azure::{route, ImdsClient, RetryPolicy};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMDS: &str = "169.254.169.254:80";

/// No second attempt: the first backoff delay is past the deadline, so a request sent
/// before the route existed would fail; only the wait for the route lets it succeed.
const POLICY: RetryPolicy = RetryPolicy {
    deadline: Duration::from_secs(30),
    attempt_timeout: Duration::from_secs(10),
    min_delay: Duration::from_secs(60),
    max_delay: Duration::from_secs(60),
};

/// Runs `test` on a current-thread runtime in a thread that is alone in a new network
/// namespace (only `lo`, down); `test` gets a command prefix that runs in it.
fn in_own_netns<F, Fut>(test: F)
where
    F: FnOnce(Vec<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) needs root: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: gettid(2) has no preconditions.
        let tid = unsafe { libc::gettid() };
        // nsenter runs as a child process: it names this thread by the test process's pid.
        let enter = vec![
            "nsenter".to_string(),
            format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id()),
        ];
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test(enter));
    })
    .join()
    .expect("the namespaced test panicked");
}

fn run(enter: &[String], args: &[&str]) {
    let out = Command::new(&enter[0])
        .args(&enter[1..])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves one IMDS userData answer on `addr` (which must already be local).
async fn serve_once(addr: SocketAddr, body: &'static str) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    let request = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        request.starts_with("GET /metadata/instance/compute/userData?")
            && request.to_ascii_lowercase().contains("metadata: true"),
        "{request}"
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes()).await.unwrap();
}

#[test]
fn imds_is_asked_as_soon_as_its_route_appears() {
    in_own_netns(|enter| async move {
        let addr: SocketAddr = IMDS.parse().unwrap();
        assert!(!route::probe(addr).unwrap(), "a new namespace has no route");
        let client = ImdsClient::new("http://169.254.169.254", POLICY).unwrap();
        let request = tokio::spawn(async move { client.user_data().await });
        // The link comes up late, as under DHCP: IMDS's address appears on the namespace's lo.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !request.is_finished(),
            "the request did not wait for the route"
        );
        run(&enter, &["ip", "link", "set", "lo", "up"]);
        run(
            &enter,
            &["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"],
        );
        serve_once(addr, "eyJyb2xlIjoic2VydmVyIn0=").await;
        let body = request.await.unwrap().unwrap();
        assert_eq!(body, b"eyJyb2xlIjoic2VydmVyIn0=");
    });
}

#[test]
fn no_route_within_the_deadline_says_so() {
    in_own_netns(|_| async move {
        let policy = RetryPolicy {
            deadline: Duration::from_secs(1),
            ..POLICY
        };
        let client = ImdsClient::new("http://169.254.169.254", policy).unwrap();
        let err = client.user_data().await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("no route to IMDS (169.254.169.254:80) within 1s")
                && text.contains("networkctl status"),
            "{text}"
        );
    });
}
