//! The query log: one JSON line per answered query, for a sample of queries plus every
//! slow one. Off by default; switched by the config file (hot reload) or at runtime over
//! the metrics endpoint. Lines pass through a bounded queue to a writer task, so a slow
//! pipe or disk costs dropped lines (counted), never a slower answer. Knows nothing of how
//! answers are found; the handler tells it what happened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::wire::{Rcode, RecordType, Transport, name};

/// Lines waiting for the writer; past this, lines are dropped and counted.
const QUEUE: usize = 8192;

/// Which queries are logged. Changes apply to the next query.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selection {
    pub enabled: bool,
    /// The fraction of queries logged, 0.0 to 1.0.
    pub sample: f64,
    /// Queries at least this slow are logged whatever the sample; zero: no such rule.
    #[serde(with = "humantime_serde_compat")]
    pub slow: Duration,
}

impl Default for Selection {
    fn default() -> Self {
        Selection { enabled: false, sample: 1.0, slow: Duration::ZERO }
    }
}

impl Selection {
    fn logs(&self, latency: Duration) -> bool {
        self.enabled
            && ((!self.slow.is_zero() && latency >= self.slow)
                || self.sample >= 1.0
                || (self.sample > 0.0 && rand::random::<f64>() < self.sample))
    }
}

/// Durations written as people write them ("100ms"), here and in the config file.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Where lines go; chosen at start.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Stdout,
    Stderr,
    File(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "stdout" | "" => Output::Stdout,
            "stderr" => Output::Stderr,
            path => Output::File(path.into()),
        })
    }
}

/// What the cache had to do with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// A fresh entry answered.
    Hit,
    /// An expired entry answered, the upstream having failed or being slow (RFC 8767).
    Stale,
    /// Nothing fresh was cached: the answer came from the upstream or a local rule.
    Miss,
    /// The cache was not consulted (refused, malformed, a zone transfer).
    NotConsulted,
}

impl CacheUse {
    /// The query log's `cache` field.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Stale => "stale",
            CacheUse::Miss => "miss",
            CacheUse::NotConsulted => "none",
        }
    }
}

/// One answered query, as the handler saw it.
pub struct Record<'a> {
    pub client: SocketAddr,
    pub transport: Transport,
    /// The question's name in wire form.
    pub qname: &'a [u8],
    pub qtype: RecordType,
    pub rcode: Rcode,
    pub latency: Duration,
    pub cache: CacheUse,
    /// The upstream that answered a miss.
    pub upstream: Option<&'a str>,
    /// Why nodedns answered itself (a naming rule, a refusal, overload, an error).
    pub reason: Option<&'static str>,
}

/// The line format; `docs/OPERATIONS.md` documents each field.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Line {
    pub time: String,
    pub client: String,
    pub proto: String,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub rcode: String,
    pub latency_us: u64,
    pub cache: String,
    pub upstream: Option<String>,
    pub reason: Option<String>,
}

impl Line {
    fn of(r: &Record<'_>, now: SystemTime) -> Line {
        Line {
            time: humantime::format_rfc3339_micros(now).to_string(),
            client: r.client.to_string(),
            proto: r.transport.as_str().into(),
            name: name::to_text(r.qname),
            qtype: r.qtype.to_string(),
            rcode: r.rcode.as_str().into(),
            latency_us: r.latency.as_micros() as u64,
            cache: r.cache.as_str().into(),
            upstream: r.upstream.map(str::to_string),
            reason: r.reason.map(str::to_string),
        }
    }
}

pub struct QueryLog {
    policy: ArcSwap<Selection>,
    /// `policy.enabled`, read by every answer without an `ArcSwap` load.
    enabled: AtomicBool,
    lines: mpsc::Sender<String>,
    dropped: Counter,
}

impl QueryLog {
    /// The log and the writer task that must be spawned for lines to go anywhere. The
    /// counters are the metrics of lines written and lines dropped.
    pub fn new(
        policy: Selection,
        output: Output,
        written: Counter,
        dropped: Counter,
    ) -> (Arc<QueryLog>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(QueryLog {
            enabled: AtomicBool::new(policy.enabled),
            policy: ArcSwap::from_pointee(policy),
            lines: tx,
            dropped: dropped.clone(),
        });
        (log, write_lines(rx, output, written, dropped))
    }

    /// A log that stays off: for harnesses that drive the handler by hand.
    pub fn off() -> Arc<QueryLog> {
        QueryLog::new(Selection::default(), Output::Stderr, Counter::default(), Counter::default()).0
    }

    pub fn policy(&self) -> Selection {
        **self.policy.load()
    }

    pub fn set_policy(&self, policy: Selection) {
        if policy != self.policy() {
            tracing::info!(enabled = policy.enabled, sample = policy.sample, slow = ?policy.slow, "query log policy changed");
        }
        self.policy.store(Arc::new(policy));
        self.enabled.store(policy.enabled, Ordering::Relaxed);
    }

    /// Whether any query may be logged: callers skip building records when not.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Logs the query if the policy selects it.
    pub fn offer(&self, record: &Record<'_>) {
        if !self.policy.load().logs(record.latency) {
            return;
        }
        let Ok(mut line) = serde_json::to_string(&Line::of(record, SystemTime::now())) else { return };
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writes lines until the log is dropped, flushing whenever the queue runs empty.
async fn write_lines(mut rx: mpsc::Receiver<String>, output: Output, written: Counter, dropped: Counter) {
    let sink: Box<dyn AsyncWrite + Send + Unpin> = match &output {
        Output::Stdout => Box::new(tokio::io::stdout()),
        Output::Stderr => Box::new(tokio::io::stderr()),
        Output::File(path) => match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
            Ok(file) => Box::new(file),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the query log; query lines are dropped");
                while rx.recv().await.is_some() {
                    dropped.inc();
                }
                return;
            }
        },
    };
    let mut sink = BufWriter::new(sink);
    while let Some(line) = rx.recv().await {
        let mut batch = vec![line];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        for line in &batch {
            match sink.write_all(line.as_bytes()).await {
                Ok(()) => written.inc(),
                Err(_) => dropped.inc(),
            };
        }
        let _ = sink.flush().await;
    }
}
