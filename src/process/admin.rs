//! The diagnostic routes of the metrics endpoint: `/explain` (what this instance would do
//! with a question, [`super::explain`]) and `/querylog` (read or switch the query log at
//! runtime). Explaining and switching are allowed from loopback only: on a node that means
//! someone on the node itself, or `kubectl port-forward` to the pod. An explanation shows
//! what is cached, and the metrics port is reachable by every pod of the node (and by
//! Prometheus): from there it would tell one pod which names the others resolve.

use std::sync::Arc;

use hyper::{Method, StatusCode};

use crate::metrics::http::{Asked, Extra, Reply};
use crate::query::handler::Handler;
use crate::query::querylog::Selection;
use crate::wire::RecordType;

pub fn routes(handler: Arc<Handler>) -> Extra {
    Arc::new(move |asked: &Asked<'_>| match asked.path {
        "/explain" if !asked.local_client => {
            Some(error(StatusCode::FORBIDDEN, "explain answers this host only: it shows what is cached".into()))
        }
        "/explain" => Some(explain(&handler, asked.query)),
        "/querylog" => Some(query_log(&handler, asked)),
        _ => None,
    })
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_string(value).unwrap_or_default() + "\n";
    Reply { status, body, content_type: "application/json" }
}

fn error(status: StatusCode, message: String) -> Reply {
    Reply { status, body: message + "\n", content_type: "text/plain" }
}

/// `?name=NAME&type=TYPE` (type defaults to A).
fn explain(handler: &Handler, query: &str) -> Reply {
    let params = parse_query(query);
    let Some(name) = params.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()) else {
        return error(StatusCode::BAD_REQUEST, "explain needs ?name=NAME[&type=TYPE]".into());
    };
    let qtype = match params.iter().find(|(k, _)| k == "type").map(|(_, v)| v.parse::<RecordType>()) {
        None => RecordType::A,
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    match handler.explain(name, qtype) {
        Some(decision) => json(StatusCode::OK, &decision),
        None => error(StatusCode::BAD_REQUEST, format!("`{name}` is not a valid domain name")),
    }
}

/// GET: the policy. POST `?enabled=true&sample=0.01&slow=100ms` (any subset): changes it.
fn query_log(handler: &Handler, asked: &Asked<'_>) -> Reply {
    let log = handler.query_log();
    if *asked.method != Method::POST {
        return json(StatusCode::OK, &log.policy());
    }
    if !asked.local_client {
        return error(StatusCode::FORBIDDEN, "the query log can be switched from this host only".into());
    }
    match updated(log.policy(), asked.query) {
        Ok(policy) => {
            log.set_policy(policy);
            json(StatusCode::OK, &policy)
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

fn updated(mut policy: Selection, query: &str) -> Result<Selection, String> {
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "enabled" => policy.enabled = value.parse().map_err(|_| format!("enabled: `{value}` is not true or false"))?,
            "sample" => {
                policy.sample = value
                    .parse()
                    .ok()
                    .filter(|s| (0.0..=1.0).contains(s))
                    .ok_or_else(|| format!("sample: `{value}` is not a fraction between 0 and 1"))?;
            }
            "slow" => policy.slow = humantime::parse_duration(&value).map_err(|e| format!("slow: `{value}`: {e}"))?,
            other => return Err(format!("unknown parameter `{other}` (enabled, sample, slow)")),
        }
    }
    Ok(policy)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn ask(routes: &Extra, local_client: bool) -> StatusCode {
        let asked = Asked { method: &Method::GET, path: "/explain", query: "name=h1.bench.example", local_client };
        routes(&asked).expect("explain is routed").status
    }

    #[test]
    fn explain_answers_loopback_clients_only() {
        let metrics = Arc::new(Metrics::new());
        let handler = crate::harness::handler(crate::harness::cache_for(10), &metrics, 10);
        let routes = routes(Arc::new(handler));
        assert_eq!(ask(&routes, true), StatusCode::OK);
        assert_eq!(ask(&routes, false), StatusCode::FORBIDDEN, "another pod of the node must not learn what is cached");
    }
}
