//! `nodedns probe`: looks names up again and again the way a pod's libc does (search walk
//! included), records latency and failures per name and per query of the walk, prints slow
//! or failed lookups as they happen, and exports everything as Prometheus metrics. Meant to
//! run as a small Deployment next to the workloads it speaks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::client::{self, AskError};
use super::libc::{Libc, Lookup, Sending, StepOutcome};
use crate::config::resolv_conf::ResolvConf;
use crate::metrics::http::{self, Endpoints, Readiness};
use crate::wire::{Rcode, RecordType};

pub struct ProbeSettings {
    pub names: Vec<String>,
    pub interval: Duration,
    pub server: SocketAddr,
    pub libc: Libc,
    pub conf: ResolvConf,
    pub types: Vec<RecordType>,
    /// Lookups at least this slow are printed.
    pub slow: Duration,
    /// Rounds before exiting; `None`: until stopped.
    pub rounds: Option<u64>,
    pub metrics: Option<SocketAddr>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    name: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    name: String,
    /// The name actually queried: one step of the walk.
    query: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepResultLabels {
    name: String,
    query: String,
    r#type: String,
    rcode: String,
}

fn buckets() -> Histogram {
    // 250 us to ~16 s: cache hits, upstream round trips, and libc's 5 s retries.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 17))
}

struct ProbeMetrics {
    lookups: Family<ResultLabels, Counter>,
    lookup_seconds: Family<LookupLabels, Histogram, fn() -> Histogram>,
    queries: Family<StepResultLabels, Counter>,
    query_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
}

impl ProbeMetrics {
    fn new() -> (Arc<ProbeMetrics>, Registry) {
        let m = ProbeMetrics {
            lookups: Family::default(),
            lookup_seconds: Family::new_with_constructor(buckets),
            queries: Family::default(),
            query_seconds: Family::new_with_constructor(buckets),
        };
        let mut r = Registry::default();
        r.register("nodedns_probe_lookups", "Lookups (whole search walks), by name and result.", m.lookups.clone());
        r.register("nodedns_probe_lookup_duration_seconds", "Time of a whole lookup, search walk included.", m.lookup_seconds.clone());
        r.register(
            "nodedns_probe_queries",
            "Queries of the walks, by the name queried, type and rcode (TIMEOUT: no answer).",
            m.queries.clone(),
        );
        r.register("nodedns_probe_query_duration_seconds", "Time of each query of the walks.", m.query_seconds.clone());
        (Arc::new(m), r)
    }
}

/// One query of a lookup.
pub struct QueryResult {
    pub query: String,
    pub qtype: RecordType,
    pub result: Result<client::Answered, String>,
    pub took: Duration,
}

/// One whole lookup.
pub struct LookupResult {
    pub outcome: StepOutcome,
    pub took: Duration,
    pub queries: Vec<QueryResult>,
}

/// Looks `name` up once, as `libc` would with `conf`, against `server`.
pub async fn look_up(server: SocketAddr, libc: Libc, conf: &ResolvConf, name: &str, types: &[RecordType]) -> LookupResult {
    let lookup = Lookup::plan(libc, conf, name, types);
    let started = Instant::now();
    let mut queries = Vec::new();
    let mut outcome = StepOutcome::NxDomain;
    for candidate in &lookup.candidates {
        let ask = |qtype: RecordType| {
            let candidate = candidate.clone();
            let timeout = Duration::from_secs(conf.timeout.into());
            let (tcp, attempts) = (lookup.tcp, conf.attempts);
            async move {
                let asked = Instant::now();
                let result = client::ask(server, &candidate, qtype, tcp, timeout, attempts).await.map_err(|e| match e {
                    AskError::Timeout(_) => "TIMEOUT".to_string(),
                    other => other.to_string(),
                });
                QueryResult { query: candidate, qtype, result, took: asked.elapsed() }
            }
        };
        let step: Vec<QueryResult> = match lookup.sending {
            Sending::Parallel => futures::future::join_all(lookup.types.iter().map(|&t| ask(t))).await,
            Sending::Sequential | Sending::SequentialReopen => {
                let mut step = Vec::new();
                for &t in &lookup.types {
                    step.push(ask(t).await);
                }
                step
            }
        };
        let answers: Vec<Option<(Rcode, u16)>> = step.iter().map(|q| q.result.as_ref().ok().map(|a| (a.rcode, a.answers))).collect();
        outcome = StepOutcome::of(&answers);
        queries.extend(step);
        if !lookup.continues_after(outcome) {
            break;
        }
    }
    LookupResult { outcome, took: started.elapsed(), queries }
}

/// Runs the probe until `rounds` are done (or forever), printing slow and failed lookups
/// and, at the end, a summary per name.
pub async fn run(settings: ProbeSettings) -> anyhow::Result<()> {
    let (metrics, registry) = ProbeMetrics::new();
    let _gate_switch = match settings.metrics {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot serve probe metrics on {addr}: {e}"))?;
            let ready = Arc::new(Readiness::default());
            ready.set(true);
            let registry = Arc::new(registry);
            let encode = Arc::new(move || {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                out
            });
            let (switch, gate) = crate::gate::Gate::new();
            tokio::spawn(http::serve(listener, Endpoints { encode, ready, extra: None }, tokio_util::sync::CancellationToken::new(), gate));
            Some(switch)
        }
        None => None,
    };
    let mut tally: Vec<Vec<(Duration, bool)>> = vec![Vec::new(); settings.names.len()];
    let mut every = tokio::time::interval(settings.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    while settings.rounds.is_none_or(|n| round < n) {
        every.tick().await;
        round += 1;
        let lookups = settings.names.iter().map(|name| look_up(settings.server, settings.libc, &settings.conf, name, &settings.types));
        for (i, result) in futures::future::join_all(lookups).await.into_iter().enumerate() {
            let name = &settings.names[i];
            record(&metrics, name, &result);
            let failed = result.outcome != StepOutcome::Answer;
            if failed || result.took >= settings.slow {
                println!("{}", describe(name, &result));
            }
            tally[i].push((result.took, failed));
        }
    }
    for (name, results) in settings.names.iter().zip(&tally) {
        println!("{}", summary(name, results));
    }
    Ok(())
}

fn record(m: &ProbeMetrics, name: &str, result: &LookupResult) {
    m.lookups.get_or_create(&ResultLabels { name: name.into(), result: result.outcome.as_str().into() }).inc();
    m.lookup_seconds.get_or_create(&LookupLabels { name: name.into() }).observe(result.took.as_secs_f64());
    for q in &result.queries {
        let qtype = q.qtype.to_string();
        let rcode = match &q.result {
            Ok(a) => a.rcode.as_str().to_string(),
            Err(e) if e == "TIMEOUT" => "TIMEOUT".into(),
            Err(_) => "ERROR".into(),
        };
        m.queries.get_or_create(&StepResultLabels { name: name.into(), query: q.query.clone(), r#type: qtype.clone(), rcode }).inc();
        m.query_seconds
            .get_or_create(&StepLabels { name: name.into(), query: q.query.clone(), r#type: qtype })
            .observe(q.took.as_secs_f64());
    }
}

/// One line for a slow or failed lookup, naming its slowest query.
fn describe(name: &str, r: &LookupResult) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let slowest = r.queries.iter().max_by_key(|q| q.took).map(|q| {
        let result = match &q.result {
            Ok(a) => a.rcode.as_str().to_string(),
            Err(e) => e.clone(),
        };
        format!("; slowest: {} {} {:.1} ms ({result})", q.query, q.qtype, q.took.as_secs_f64() * 1e3)
    });
    let verdict = if r.outcome == StepOutcome::Answer { "slow" } else { "failed" };
    let queries = super::queries(r.queries.len());
    format!(
        "{time} {verdict} lookup {name}: {:.1} ms, {queries}, ended in {}{}",
        r.took.as_secs_f64() * 1e3,
        r.outcome.as_str(),
        slowest.unwrap_or_default()
    )
}

fn summary(name: &str, results: &[(Duration, bool)]) -> String {
    let mut times: Vec<Duration> = results.iter().map(|(t, _)| *t).collect();
    times.sort();
    let failed = results.iter().filter(|(_, f)| *f).count();
    let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |t| t.as_secs_f64() * 1e3);
    format!("{name}: {} lookups, {failed} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", times.len(), at(0.5), at(0.99), at(1.0))
}
