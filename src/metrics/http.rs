//! The HTTP endpoint: `/metrics` (Prometheus text format), `/health` (the process is up),
//! `/ready` (listeners are bound and the process is not shutting down), and whatever
//! diagnostic routes the caller adds ([`Extra`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Serves the endpoint on an already bound listener until `stop` is cancelled.
pub async fn serve(listener: TcpListener, endpoints: Endpoints, stop: CancellationToken, mut gate: crate::server::handover::Gate) {
    loop {
        tokio::select! {
            _ = gate.opened() => {}
            _ = stop.cancelled() => return,
        }
        let (stream, peer) = tokio::select! {
            _ = gate.closed() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let endpoints = endpoints.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let asked = Asked { method: req.method(), path: req.uri().path(), query: req.uri().query().unwrap_or(""), local_client: peer.ip().is_loopback() };
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
        "/metrics" => Reply { status: StatusCode::OK, body: (endpoints.encode)(), content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8" },
        "/health" => reply(StatusCode::OK, "OK\n", "text/plain"),
        "/ready" if endpoints.ready.get() => reply(StatusCode::OK, "OK\n", "text/plain"),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", "text/plain"),
        _ => match endpoints.extra.as_ref().and_then(|extra| extra(asked)) {
            Some(r) => r,
            None => reply(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        },
    };
    Response::builder()
        .status(r.status)
        .header("content-type", r.content_type)
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_default()
}
