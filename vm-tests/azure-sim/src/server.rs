//! Sockets and HTTP plumbing: accept loops for both listeners, TLS for the vault, turning a
//! `Plan` into a response (delayed, trickled, or never), and recording every request.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::reply::Reply;
use crate::rules::{Plan, Service};
use crate::state::{RequestRecord, State};
use crate::{admin, imds, vault, wireserver};

pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// The parts of a request the handlers look at. The bearer token is kept only to check it
/// and is never copied into a record or a log line.
pub(crate) struct RequestInfo {
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: String,
    pub has_metadata_header: bool,
    pub has_authorization: bool,
    pub has_forwarded_for: bool,
    pub user_agent: Option<String>,
    pub bearer: Option<String>,
    /// WireServer: `x-ms-version`.
    pub ms_version: Option<String>,
    /// WireServer: `x-ms-agent-name` (XML protocol).
    pub agent_name: Option<String>,
    /// WireServer: `x-ms-guest-agent-name` (JSON protocol).
    pub guest_agent_name: Option<String>,
    pub content_type: Option<String>,
    /// The request body (read only for the WireServer, whose reports are POSTs).
    pub body: Bytes,
}

impl RequestInfo {
    fn new(req: &Request<Incoming>, local: SocketAddr) -> RequestInfo {
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
        });
        RequestInfo {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            host: header("host")
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_else(|| local.to_string()),
            has_metadata_header: header("metadata").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            has_authorization: headers.contains_key("authorization"),
            has_forwarded_for: headers.contains_key("x-forwarded-for"),
            user_agent: header("user-agent").map(str::to_string),
            bearer,
            ms_version: header("x-ms-version").map(str::to_string),
            agent_name: header("x-ms-agent-name").map(str::to_string),
            guest_agent_name: header("x-ms-guest-agent-name").map(str::to_string),
            content_type: header("content-type").map(str::to_string),
            body: Bytes::new(),
        }
    }
}

pub(crate) fn full(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
) -> Response<ResponseBody> {
    build(status, headers, Full::new(body).boxed_unsync())
}

fn build(status: u16, headers: &[(String, String)], body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        // Rule headers were validated when the rules were loaded; skip defensively anyway.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The connection is closed without an answer (a `close` rule).
#[derive(Debug)]
pub(crate) struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed by a rule")
    }
}

impl std::error::Error for Closed {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    service: Service,
    local: SocketAddr,
) -> Result<Response<ResponseBody>, Closed> {
    if service == Service::Imds && req.uri().path().starts_with("/_sim/") {
        return Ok(admin::handle(req, &state).await);
    }
    let mut info = RequestInfo::new(&req, local);
    let elapsed_ms = state.elapsed_ms();
    let seq = state.next_seq();
    if service == Service::WireServer {
        match Limited::new(req.into_body(), wireserver::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => info.body = body.to_bytes(),
            Err(e) => {
                tracing::warn!("wireserver: cannot read a request body: {e}");
                return Ok(full(
                    413,
                    &[],
                    Bytes::from_static(b"request body too large or broken\n"),
                ));
            }
        }
    }
    let mut health = None;
    let plan: Plan = match service {
        Service::Imds => imds::handle(&state, &info),
        Service::Vault => vault::handle(&state, &info),
        Service::WireServer => {
            let outcome = wireserver::handle(&state, &info);
            health = outcome.health;
            outcome.plan
        }
    };
    // Recorded before the answer leaves, so a client that got its answer always finds the
    // request in `requests()`.
    state.record(RequestRecord {
        seq,
        service: service.record_name(),
        method: info.method,
        path: info.path,
        query: info.query,
        status: plan.reply.as_ref().map_or(0, |r| r.status),
        elapsed_ms,
        rule: plan.rule,
        error: plan.reply.as_ref().and_then(Reply::error_code),
        has_metadata_header: info.has_metadata_header,
        has_authorization: info.has_authorization,
        has_forwarded_for: info.has_forwarded_for,
        user_agent: info.user_agent,
        agent_name: info.agent_name.or(info.guest_agent_name),
        health,
    });
    if plan.close {
        return Err(Closed);
    }
    let Some(reply) = plan.reply else {
        // `hang`: keep the connection open and never answer; shutdown drops the task.
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes");
    };
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    Ok(match plan.trickle {
        Some(interval) => build(
            reply.status,
            &reply.headers,
            Trickle::new(reply.body, interval).boxed_unsync(),
        ),
        None => full(reply.status, &reply.headers, reply.body),
    })
}

/// A body sent one byte per `interval`, with its full length announced up front, like a
/// server stuck behind a very slow link.
struct Trickle {
    data: Bytes,
    pos: usize,
    interval: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Trickle {
    fn new(data: Bytes, interval: Duration) -> Trickle {
        Trickle {
            data,
            pos: 0,
            interval,
            sleep: Box::pin(tokio::time::sleep(interval)),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.pos >= this.data.len() {
            return Poll::Ready(None);
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let chunk = this.data.slice(this.pos..this.pos + 1);
        this.pos += 1;
        let next = tokio::time::Instant::now() + this.interval;
        this.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.pos) as u64)
    }
}

/// Accepts connections until shutdown; each connection runs in its own task that also
/// stops at shutdown (which is what ends hung and trickling answers).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    service: Service,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!("{} listener has no local address: {e}", service.as_str());
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let conn = connection(stream, tls.clone(), state.clone(), service, local);
                    let mut stop = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = conn => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    // Usually EMFILE under load; back off briefly instead of spinning.
                    tracing::warn!("{} listener: accept failed: {e}", service.as_str());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    service: Service,
    local: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { handle(req, state, service, local).await }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    let result = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => builder.serve_connection(TokioIo::new(stream), svc).await,
            Err(e) => {
                tracing::debug!("vault TLS handshake failed: {e}");
                return;
            }
        },
        None => builder.serve_connection(TokioIo::new(stream), svc).await,
    };
    if let Err(e) = result {
        tracing::debug!("{} connection ended with an error: {e}", service.as_str());
    }
}
