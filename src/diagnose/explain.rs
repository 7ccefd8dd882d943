//! `nodedns explain NAME`: the queries a pod's libc sends for one lookup, in order, what
//! nodedns does with each, a one-line verdict and the fixes that apply.
//!
//! Each query's decision comes from a running instance's `/explain` when one is given
//! (cache state included), else from a configuration file. Each query's result is observed
//! by asking `--server` when one is given (the walk then stops where the real libc would),
//! else predicted: the cache's or a naming rule's answer when there is one, otherwise
//! "does not exist" for search-list names and an answer for the name itself, marked as
//! assumed.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::client::{self, AskError};
use super::libc::{Libc, Lookup, Sending, StepOutcome};
use crate::config::Settings;
use crate::config::resolv_conf::ResolvConf;
use crate::kubernetes::Naming;
use crate::query::explain::Decision;
use crate::wire::{Rcode, RecordType};

/// Where decisions come from.
pub enum Decider {
    /// A running instance's HTTP endpoint, e.g. `http://127.0.0.1:9253`.
    Instance(String),
    /// A configuration, evaluated here.
    Settings(Box<Settings>, Naming),
}

impl Decider {
    async fn decide(&self, name: &str, qtype: RecordType) -> anyhow::Result<Decision> {
        match self {
            Decider::Instance(base) => {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("name", name)
                    .append_pair("type", &qtype.to_string())
                    .finish();
                let body = client::instance(hyper::Method::GET, base, &format!("explain?{query}")).await?;
                Ok(serde_json::from_str(&body)?)
            }
            Decider::Settings(settings, naming) => Decision::from_configured(name, qtype, &settings.reloadable.router, naming)
                .ok_or_else(|| anyhow::anyhow!("`{name}` is not a valid domain name")),
        }
    }
}

/// One query of the walk.
#[derive(Debug, Serialize)]
pub struct Explained {
    pub step: usize,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    /// The rcode, or `TIMEOUT`.
    pub rcode: String,
    pub answers: u16,
    /// Seen from `--server`, rather than predicted.
    pub observed: bool,
    pub decision: Decision,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub libc: String,
    pub name: String,
    pub queries: Vec<Explained>,
    pub nxdomain: usize,
    pub answered_on_node: usize,
    /// Queries the same lookup costs with a trailing dot.
    pub with_trailing_dot: usize,
    /// How the walk ended.
    pub ended: String,
    pub verdict: String,
    pub fixes: Vec<String>,
}

/// What `explain` was asked.
pub struct ExplainRequest {
    pub name: String,
    pub libc: Libc,
    pub conf: ResolvConf,
    pub types: Vec<RecordType>,
    pub decider: Decider,
    pub server: Option<SocketAddr>,
}

pub async fn explain(req: &ExplainRequest) -> anyhow::Result<(Lookup, Explanation)> {
    let lookup = Lookup::plan(req.libc, &req.conf, &req.name, &req.types);
    let mut queries = Vec::new();
    let mut ended = String::from("every name was tried");
    for (i, candidate) in lookup.candidates.iter().enumerate() {
        let last = i + 1 == lookup.candidates.len();
        let mut results = Vec::new();
        for &qtype in &lookup.types {
            let decision = req.decider.decide(candidate, qtype).await?;
            let (result, observed) = match req.server {
                Some(server) => (observe(server, candidate, qtype, &lookup, &req.conf).await?, true),
                None => (Some(predict(&decision, last)), false),
            };
            results.push(result);
            let (rcode, answers) = result.map_or(("TIMEOUT".to_string(), 0), |(r, n)| (r.as_str().to_string(), n));
            queries.push(Explained { step: i + 1, name: candidate.clone(), qtype: qtype.to_string(), rcode, answers, observed, decision });
        }
        let outcome = StepOutcome::of(&results);
        if !lookup.continues_after(outcome) {
            ended = match outcome {
                StepOutcome::Answer => format!("answered at {candidate}"),
                other => format!("{} at {candidate} ends the lookup with an error, without trying the rest", other.as_str()),
            };
            break;
        }
    }
    let explanation = summarise(req, &lookup, queries, ended);
    Ok((lookup, explanation))
}

async fn observe(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    lookup: &Lookup,
    conf: &ResolvConf,
) -> anyhow::Result<Option<(Rcode, u16)>> {
    match client::ask(server, name, qtype, lookup.tcp, Duration::from_secs(conf.timeout.into()), conf.attempts).await {
        Ok(a) => Ok(Some((a.rcode, a.answers))),
        Err(AskError::Timeout(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("asking {server} for {name}: {e}")),
    }
}

/// The result nodedns's own knowledge gives, else the usual case: search-list names do not
/// exist, the name itself does.
fn predict(d: &Decision, last: bool) -> (Rcode, u16) {
    let parse = |text: &str| {
        [Rcode::NOERROR, Rcode::NXDOMAIN, Rcode::SERVFAIL, Rcode::REFUSED]
            .into_iter()
            .find(|r| r.as_str() == text)
            .unwrap_or(Rcode::SERVFAIL)
    };
    if let (Some(rcode), "hit" | "stale") = (&d.cached_rcode, d.cache.as_str()) {
        return (parse(rcode), d.cached_answers.unwrap_or(1));
    }
    if let Some(rcode) = &d.local_rcode {
        return (parse(rcode), 0);
    }
    match last {
        true => (Rcode::NOERROR, 1),
        false => (Rcode::NXDOMAIN, 0),
    }
}

fn on_node(d: &Decision) -> bool {
    d.cache == "hit" || d.local.is_some()
}

fn summarise(req: &ExplainRequest, lookup: &Lookup, queries: Vec<Explained>, ended: String) -> Explanation {
    let nxdomain = queries.iter().filter(|q| q.rcode == "NXDOMAIN").count();
    let answered_on_node = queries.iter().filter(|q| on_node(&q.decision)).count();
    let with_trailing_dot = lookup.types.len();
    let bare = req.name.trim_end_matches('.');
    let verdict = format!(
        "{}, {nxdomain} of them NXDOMAIN; with a trailing dot: {}",
        super::queries(queries.len()),
        super::queries(with_trailing_dot)
    );
    let mut fixes = Vec::new();
    if queries.len() > with_trailing_dot {
        fixes.push(format!("write the name fully qualified, with a trailing dot (\"{bare}.\"), in the application's configuration: {with_trailing_dot} queries"));
        let dots = bare.matches('.').count();
        if dots < req.conf.ndots && dots >= 1 {
            fixes.push(format!(
                "lower ndots for this pod (spec.dnsConfig.options: [{{name: ndots, value: \"{dots}\"}}]): names with {dots} or more dots are tried as they are first; in-cluster short names like `svc.ns` keep working through the search list"
            ));
        }
        if answered_on_node > 0 {
            fixes.push(format!("{answered_on_node} of these {} queries are answered on the node by nodedns (cache or naming rules) without an upstream round trip", queries.len()));
        } else {
            fixes.push("turn on kubernetes.local_answers so nodedns answers search-list names that cannot exist on the node (docs/KUBERNETES-NAMES.md)".into());
        }
    }
    if lookup.types.len() > 1 && lookup.sending != Sending::Parallel {
        fixes.push("single-request makes A and AAAA wait for each other; drop it unless a conntrack race forced it (nodedns's NOTRACK rules remove that race)".into());
    }
    if lookup.types.len() > 1 {
        fixes.push(
            "an IPv4-only application can ask for A only (AF_INET), or the zone can be listed in kubernetes.filter_aaaa: half the queries"
                .into(),
        );
    }
    let libc = match req.libc {
        Libc::Glibc => "glibc",
        Libc::Musl => "musl",
    };
    Explanation { libc: libc.into(), name: req.name.clone(), queries, nxdomain, answered_on_node, with_trailing_dot, ended, verdict, fixes }
}

/// The explanation for people.
pub fn render(req: &ExplainRequest, lookup: &Lookup, e: &Explanation) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let conf = &req.conf;
    let types: Vec<String> = lookup.types.iter().map(|t| t.to_string()).collect();
    let _ = writeln!(out, "{} looking up \"{}\" ({})", e.libc, req.name, types.join(" and "));
    let _ = writeln!(
        out,
        "resolv.conf: search {}; ndots:{} timeout:{} attempts:{}",
        conf.search.join(" "),
        conf.ndots,
        conf.timeout,
        conf.attempts
    );
    let dots = req.name.trim_end_matches('.').matches('.').count();
    let order = if req.name.ends_with('.') {
        "it ends with a dot: only the name itself is asked".to_string()
    } else if dots >= conf.ndots {
        match req.libc {
            Libc::Glibc => format!("{dots} dots >= ndots:{}: the name itself first, then the search list", conf.ndots),
            Libc::Musl => format!("{dots} dots >= ndots:{}: only the name itself (musl does not search then)", conf.ndots),
        }
    } else {
        format!("{dots} dots < ndots:{}: the search list first, the name itself last", conf.ndots)
    };
    let _ = writeln!(out, "order: {order}");
    let sending = match (lookup.sending, lookup.types.len()) {
        (_, 1) => "one query per name",
        (Sending::Parallel, _) => "the types are sent at once on one socket",
        (Sending::Sequential, _) => "one type after the other (single-request)",
        (Sending::SequentialReopen, _) => "one type after the other on a new socket each (single-request-reopen)",
    };
    let transport = if lookup.tcp { "TCP (use-vc)" } else { "UDP, TCP on truncation" };
    let stop = match req.libc {
        Libc::Glibc => "the walk goes on past NXDOMAIN, NODATA and SERVFAIL",
        Libc::Musl => "the walk stops at anything but NXDOMAIN",
    };
    let _ = writeln!(out, "sending: {sending}; {transport}; {}s timeout x {} attempts; {stop}\n", conf.timeout, conf.attempts);
    let width = e.queries.iter().map(|q| q.name.len()).max().unwrap_or(10);
    let _ = writeln!(out, "  #  {:width$}  {:5}  {:13}  nodedns", "query", "type", "result");
    for (i, q) in e.queries.iter().enumerate() {
        let result = format!(
            "{}{}{}",
            q.rcode,
            if q.rcode == "NOERROR" { format!("/{}", q.answers) } else { String::new() },
            if q.observed { "" } else { "?" }
        );
        let _ = writeln!(out, "{:3}  {:width$}  {:5}  {:13}  {}", i + 1, q.name, q.qtype, result, describe(&q.decision));
    }
    if e.queries.iter().any(|q| !q.observed) {
        let _ = writeln!(out, "  (? = predicted, not observed: pass --server to ask for real)");
    }
    for note in e.queries.iter().filter_map(|q| q.decision.note.as_ref()).collect::<std::collections::BTreeSet<_>>() {
        let _ = writeln!(out, "  note: {note}");
    }
    let _ = writeln!(out, "  {}", e.ended);
    let _ = writeln!(out, "\nverdict: {}", e.verdict);
    if !e.fixes.is_empty() {
        let _ = writeln!(out, "fixes:");
        for fix in &e.fixes {
            let _ = writeln!(out, "  - {fix}");
        }
    }
    out
}

fn describe(d: &Decision) -> String {
    match (d.cache.as_str(), &d.local, &d.zone) {
        ("hit", _, _) => format!("cache hit ({}, {} s left)", d.cached_rcode.as_deref().unwrap_or("?"), d.ttl_left.unwrap_or(0)),
        (_, Some(rule), _) => format!("answered locally: {rule}"),
        (cache, None, Some(zone)) => {
            let stale = if cache == "stale" { " (a stale answer is kept if it fails)" } else { "" };
            format!("upstream: zone {zone} -> {}{stale}", d.upstreams.join(", "))
        }
        (_, None, None) => "REFUSED: no zone covers it".into(),
    }
}
