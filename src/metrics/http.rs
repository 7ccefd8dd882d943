//! The HTTP endpoint: `/metrics` (Prometheus text format), `/health` (the process is up)
//! and `/ready` (listeners are bound and the process is not shutting down).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
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

/// Called before each scrape, to refresh gauges that are read rather than counted.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// Serves the endpoint on an already bound listener until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<super::Metrics>,
    ready: Arc<Readiness>,
    before_scrape: BeforeScrape,
    stop: CancellationToken,
    mut gate: crate::server::handover::Gate,
) {
    loop {
        tokio::select! {
            _ = gate.opened() => {}
            _ = stop.cancelled() => return,
        }
        let (stream, _) = tokio::select! {
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
        let (metrics, ready, before_scrape) = (metrics.clone(), ready.clone(), before_scrape.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let response = route(req.uri().path(), &metrics, &ready, &before_scrape);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn route(path: &str, metrics: &super::Metrics, ready: &Readiness, before_scrape: &BeforeScrape) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match path {
        "/metrics" => {
            before_scrape();
            (StatusCode::OK, metrics.encode(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        "/health" => (StatusCode::OK, "OK\n".to_string(), "text/plain"),
        "/ready" if ready.get() => (StatusCode::OK, "OK\n".to_string(), "text/plain"),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string(), "text/plain"),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), "text/plain"),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

