//! `nodedns stats`: a human summary of a running instance from its `/metrics`: answers and
//! latency, cache hit ratio, what was answered on the node and why, upstream health and
//! speed (slowest first), pool use and queues, overload, and search-path waste.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus or OpenMetrics text exposition; lines it cannot read are
/// skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '}' => {
                    let end = chars.peek().map_or(inner.len(), |(i, _)| *i);
                    rest = &inner[end..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

struct Metrics(Vec<Sample>);

impl Metrics {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    fn sum(&self, name: &str) -> f64 {
        // + 0.0: an empty float sum is -0.0.
        self.all(name).map(|s| s.value).sum::<f64>() + 0.0
    }

    /// Sums of `name` by the value of `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.all(name) {
            *out.entry(s.label(label).to_string()).or_insert(0.0) += s.value;
        }
        out
    }

    /// The `q` quantile of histogram `name` over the samples `keep` selects, from the
    /// cumulative buckets: the upper bound of the bucket it falls in.
    fn quantile(&self, name: &str, q: f64, keep: impl Fn(&Sample) -> bool) -> Option<f64> {
        let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
        for s in self.all(&format!("{name}_bucket")).filter(|s| keep(s)) {
            let le: f64 = s.label("le").parse().unwrap_or(f64::INFINITY);
            *buckets.entry(le.to_bits()).or_insert(0.0) += s.value;
        }
        let mut sorted: Vec<(f64, f64)> = buckets.into_iter().map(|(le, n)| (f64::from_bits(le), n)).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = sorted.last()?.1;
        if total == 0.0 {
            return None;
        }
        sorted.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| *le)
    }
}

fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_infinite() => "> largest bucket".into(),
        Some(s) => format!("<= {:.1} ms", s * 1e3),
        None => "-".into(),
    }
}

fn percent(part: f64, whole: f64) -> String {
    if whole == 0.0 { "-".into() } else { format!("{:.1}%", 100.0 * part / whole) }
}

fn list(map: &BTreeMap<String, f64>) -> String {
    let mut items: Vec<(&String, &f64)> = map.iter().filter(|(_, v)| **v > 0.0).collect();
    items.sort_by(|a, b| b.1.total_cmp(a.1));
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", ")
}

/// The summary for people.
pub fn summarise(instance: &str, text: &str) -> String {
    let m = Metrics(parse(text));
    let mut out = String::new();
    let _ = writeln!(out, "nodedns at {instance}");

    let answered = m.sum("coredns_dns_responses_total");
    let rcodes = m.by("coredns_dns_responses_total", "rcode");
    let rcode_share: Vec<String> = {
        let mut v: Vec<(&String, &f64)> = rcodes.iter().filter(|(_, n)| **n > 0.0).collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        v.iter().map(|(r, n)| format!("{r} {}", percent(**n, answered))).collect()
    };
    let latency = |q| m.quantile("coredns_dns_request_duration_seconds", q, |_| true);
    let _ = writeln!(out, "answers     {answered:.0}: {}", if rcode_share.is_empty() { "none yet".into() } else { rcode_share.join(", ") });
    let _ = writeln!(out, "latency     p50 {}, p99 {}", ms(latency(0.5)), ms(latency(0.99)));

    let (hits, misses) = (m.sum("coredns_cache_hits_total"), m.sum("coredns_cache_misses_total"));
    let entries = m.by("coredns_cache_entries", "type");
    let _ = writeln!(
        out,
        "cache       hit ratio {} ({hits:.0} hits, {misses:.0} misses); entries: {}; prefetched {:.0}; served stale {:.0}",
        percent(hits, hits + misses),
        list(&entries),
        m.sum("coredns_cache_prefetch_total"),
        m.sum("coredns_cache_served_stale_total"),
    );

    let local = m.by("nodedns_local_answers_total", "reason");
    let local_total: f64 = local.values().sum();
    let nxdomain = rcodes.get("NXDOMAIN").copied().unwrap_or(0.0);
    let _ = writeln!(out, "on the node answered by naming rules {local_total:.0} ({}): {}", percent(local_total, answered), list(&local));
    let _ = writeln!(
        out,
        "search path NXDOMAIN {} of answers; {:.0} search walks recognised, {:.0} later steps resolved ahead",
        percent(nxdomain, answered),
        m.sum("nodedns_search_walks_total"),
        m.sum("nodedns_speculative_queries_total"),
    );

    let mut upstreams: Vec<(String, Option<f64>)> = m
        .by("coredns_forward_requests_total", "to")
        .into_keys()
        .map(|to| {
            let p99 = m.quantile("coredns_forward_request_duration_seconds", 0.99, |s| s.label("to") == to);
            (to, p99)
        })
        .collect();
    upstreams.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)));
    let _ = writeln!(out, "upstreams   (slowest first)");
    for (to, p99) in &upstreams {
        let of = |name: &str| m.all(name).filter(|s| s.label("to") == to).map(|s| s.value).sum::<f64>() + 0.0;
        let healthy = if of("nodedns_upstream_healthy") > 0.0 { "up" } else { "DOWN" };
        let rtt_count = of("nodedns_upstream_rtt_seconds_count");
        let mean_rtt = (rtt_count > 0.0).then(|| of("nodedns_upstream_rtt_seconds_sum") / rtt_count);
        let errors = of("nodedns_upstream_errors_total");
        let _ = writeln!(
            out,
            "  {to}: {healthy}, {:.0} queries, p99 {}, mean RTT {}, errors {errors:.0}, retransmits {:.0}",
            of("coredns_forward_requests_total"),
            ms(*p99),
            mean_rtt.map_or("-".into(), |s| format!("{:.2} ms", s * 1e3)),
            of("nodedns_upstream_retransmits_total"),
        );
        let connections = of("nodedns_upstream_connections");
        if connections > 0.0 || of("nodedns_upstream_connects_total") > 0.0 {
            let _ = writeln!(
                out,
                "    pool: {connections:.0} connections ({:.0} in use), {:.0} in flight, queue {:.0} now, {:.0} turned away",
                of("nodedns_upstream_connections_in_use"),
                of("nodedns_upstream_inflight_queries"),
                of("nodedns_upstream_queue_depth"),
                of("nodedns_upstream_queue_rejected_total"),
            );
        }
    }

    let _ = writeln!(
        out,
        "pressure    misses in flight {:.0}, coalesced {:.0}, overloaded {:.0}, deadline exceeded {:.0}, denied {:.0}, dropped {}",
        m.sum("nodedns_inflight_misses"),
        m.sum("nodedns_coalesced_queries_total"),
        m.sum("nodedns_overloaded_queries_total"),
        m.sum("nodedns_deadline_exceeded_total"),
        m.sum("nodedns_denied_queries_total"),
        list(&m.by("nodedns_dropped_queries_total", "reason")),
    );
    let reload_ok = m.sum("nodedns_config_last_reload_successful") > 0.0;
    let _ = writeln!(
        out,
        "config      last reload {}; node setup repairs {:.0}, errors {:.0}; query log lines {:.0}, dropped {:.0}",
        if reload_ok { "ok" } else { "REJECTED (the previous configuration runs)" },
        m.sum("nodedns_node_repairs_total"),
        m.sum("nodedns_node_setup_errors_total"),
        m.sum("nodedns_query_log_lines_total"),
        m.sum("nodedns_query_log_dropped_total"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n\
        coredns_dns_responses_total{server=\"dns://127.0.0.1:53\",rcode=\"NOERROR\"} 90\n\
        coredns_dns_responses_total{server=\"dns://127.0.0.1:53\",rcode=\"NXDOMAIN\"} 10\n\
        coredns_cache_hits_total{server=\"s\",type=\"success\"} 75\n\
        coredns_cache_misses_total{server=\"s\"} 25\n\
        coredns_dns_request_duration_seconds_bucket{le=\"0.001\",type=\"A\"} 80\n\
        coredns_dns_request_duration_seconds_bucket{le=\"0.01\",type=\"A\"} 99\n\
        coredns_dns_request_duration_seconds_bucket{le=\"+Inf\",type=\"A\"} 100\n\
        nodedns_local_answers_total{reason=\"search_suffix\"} 4\n\
        weird{a=\"quote \\\" and \\\\ and } inside\"} 1.5\n\
        # EOF\n";

    #[test]
    fn parses_labels_with_escapes_and_skips_comments() {
        let samples = parse(TEXT);
        assert_eq!(samples.len(), 9);
        assert_eq!(samples[8].labels, [("a".to_string(), "quote \" and \\ and } inside".to_string())]);
        assert_eq!(samples[8].value, 1.5);
    }

    #[test]
    fn summary_shows_hit_ratio_rcodes_and_quantiles() {
        let text = summarise("http://x", TEXT);
        assert!(text.contains("hit ratio 75.0% (75 hits, 25 misses)"), "{text}");
        assert!(text.contains("NOERROR 90.0%, NXDOMAIN 10.0%"), "{text}");
        assert!(text.contains("p50 <= 1.0 ms, p99 <= 10.0 ms"), "{text}");
        assert!(text.contains("search_suffix 4"), "{text}");
    }
}
