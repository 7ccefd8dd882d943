//! The HTTP endpoint: `/metrics` (Prometheus text format), `/health` (the process is up),
//! `/ready` (listeners are bound and the process is not shutting down), and whatever
//! diagnostic routes the caller adds ([`Extra`]). Also the pacing of accept loops after
//! errors ([`AcceptBackoff`]), shared with the DNS TCP listener, which depends on this module.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Shared readiness, flipped on once serving and off when draining.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A response from an added route.
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
    pub content_type: &'static str,
}

/// A request to an added route: method, path, query string, and whether the client is on
/// this host (loopback), for routes that change state.
pub struct Asked<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub local_client: bool,
}

/// Routes added by the caller; `None` for paths they do not serve.
pub type Extra = Arc<dyn Fn(&Asked<'_>) -> Option<Reply> + Send + Sync>;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoints {
    /// The metrics in text format, read fresh for each scrape.
    pub encode: Arc<dyn Fn() -> String + Send + Sync>,
    pub ready: Arc<Readiness>,
    pub extra: Option<Extra>,
}

/// The first wait after a failed accept; it doubles while accepts keep failing.
const FIRST_WAIT: Duration = Duration::from_millis(10);
const LONGEST_WAIT: Duration = Duration::from_secs(1);
/// While accepts keep failing, one warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How an accept loop waits after a failed accept. Out of descriptors (EMFILE, ENFILE) or
/// kernel memory, the pending connection stays queued and the listening socket readable, so
/// retrying at once spins a core and logs a warning per try, and a fixed short wait still
/// logs a hundred a second. The wait doubles up to a second and a success starts it over;
/// warnings are at most one a minute whatever succeeds in between, since near the limit
/// accepts fail and succeed by turns.
pub struct AcceptBackoff {
    listener: &'static str,
    wait: Duration,
    /// Failures since the last warning, reported with the next one.
    unreported: u64,
    warned_at: Option<Instant>,
    /// Whether the current run of failures was warned about, so its end is worth a line.
    warned_this_run: bool,
}

impl AcceptBackoff {
    /// `listener` names the accept loop in the log.
    pub fn new(listener: &'static str) -> Self {
        AcceptBackoff { listener, wait: FIRST_WAIT, unreported: 0, warned_at: None, warned_this_run: false }
    }

    /// A connection was accepted: the next failure waits the shortest time again.
    fn accepted(&mut self) {
        if self.warned_this_run {
            tracing::info!(listener = self.listener, "accepting connections again");
            self.warned_this_run = false;
        }
        self.wait = FIRST_WAIT;
    }

    /// The next connection on `listener` while `gate` is open, waiting out the gate while it
    /// is closed and backing off after failed accepts; `None` once `stop` is cancelled.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        gate: &mut crate::gate::Gate,
        stop: &CancellationToken,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                _ = gate.opened() => {}
            }
            let error = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                _ = gate.closed() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(connection) => {
                        self.accepted();
                        return Some(connection);
                    }
                    Err(e) => e,
                },
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                _ = self.failed(&error) => {}
            }
        }
    }

    /// Logs `error` if a warning is due, then waits before the next accept.
    async fn failed(&mut self, error: &std::io::Error) {
        self.unreported += 1;
        if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(listener = self.listener, error = %error, failures = self.unreported, retry_in = ?self.wait, "accept failed (failures: since the last warning); backing off");
            (self.unreported, self.warned_at, self.warned_this_run) = (0, Some(Instant::now()), true);
        }
        let wait = self.wait;
        self.wait = (wait * 2).min(LONGEST_WAIT);
        tokio::time::sleep(wait).await;
    }
}

/// Serves the endpoint on an already bound listener until `stop` is cancelled.
pub async fn serve(listener: TcpListener, endpoints: Endpoints, stop: CancellationToken, mut gate: crate::gate::Gate) {
    let mut backoff = AcceptBackoff::new("metrics");
    while let Some((stream, peer)) = backoff.accept(&listener, &mut gate, &stop).await {
        let endpoints = endpoints.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let asked = Asked {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
                local_client: peer.ip().is_loopback(),
            };
            let response = route(&asked, &endpoints);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn route(asked: &Asked<'_>, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let reply = |status, body: &str, content_type| Reply { status, body: body.to_string(), content_type };
    let r = match asked.path {
        "/metrics" => Reply {
            status: StatusCode::OK,
            body: (endpoints.encode)(),
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        },
        "/health" => reply(StatusCode::OK, "OK\n", "text/plain"),
        "/ready" if endpoints.ready.get() => reply(StatusCode::OK, "OK\n", "text/plain"),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", "text/plain"),
        _ => match endpoints.extra.as_ref().and_then(|extra| extra(asked)) {
            Some(r) => r,
            None => reply(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        },
    };
    Response::builder().status(r.status).header("content-type", r.content_type).body(Full::new(Bytes::from(r.body))).unwrap_or_default()
}
