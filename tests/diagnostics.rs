//! The diagnostics against real parts: `explain` checked against what glibc's resolver
//! actually sends (getent in a network namespace with the pod's resolv.conf, observed in
//! nodedns's query log), the query log's format and runtime switch, and `probe` and
//! `stats` against a running nodedns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const T: Duration = Duration::from_secs(5);
const POD_RESOLV_CONF: &str =
    "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5 timeout:2 attempts:2\n";

/// Query log lines of `path` as (name, type) pairs, from line `from` on, once the writer
/// has stopped adding lines.
fn logged_queries(path: &Path, from: usize) -> Vec<(String, String)> {
    let mut seen = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let lines = read_lines(path);
        if lines.len() == seen {
            return lines[from.min(lines.len())..]
                .iter()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("query log line is not JSON ({e}): {l}"));
                    (v["name"].as_str().unwrap().to_string(), v["type"].as_str().unwrap().to_string())
                })
                .collect();
        }
        seen = lines.len();
    }
}

/// Queries grouped by name in order, the types of each name sorted: A and AAAA go out at
/// once, so their order on the wire is not fixed.
fn steps(queries: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (name, qtype) in queries {
        match out.last_mut() {
            Some((last, types)) if last == name => types.push(qtype.clone()),
            _ => out.push((name.clone(), vec![qtype.clone()])),
        }
    }
    for (_, types) in &mut out {
        types.sort();
    }
    out
}

struct Pod {
    ns: Netns,
    dir: tempfile::TempDir,
    query_log: PathBuf,
    _servers: Vec<Proc>,
}

impl Pod {
    /// A namespace with the pod's resolv.conf, a `named` serving cluster.local and
    /// test.example, and nodedns on 127.0.0.1:53 logging every query to a file.
    fn start(purpose: &str) -> Pod {
        require("getent");
        require("dig");
        let ns = Netns::create(purpose, POD_RESOLV_CONF);
        let dir = tempfile::tempdir().unwrap();
        let query_log = dir.path().join("queries.log");
        let named = Named::spawn(
            dir.path(),
            5301,
            &[("cluster.local", cluster_zone()), ("test.example", test_zone("test.example"))],
            Some(&ns.name),
        );
        // nodedns learns cluster.local's SOA at start: named must answer first.
        wait_until(Duration::from_secs(15), "named answers in the namespace", || {
            ns.run("dig", &["@127.0.0.1", "-p", "5301", "+short", "+time=1", "+tries=1", "cluster.local", "SOA"]).1.contains("hostmaster")
        });
        let config = dir.path().join("nodedns.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: [127.0.0.1:53]\nupstreams: [127.0.0.1:5301]\nkubernetes:\n  namespaces: [default, kube-system, prod]\nlog:\n  queries: {{enabled: true, output: {}}}\n",
                query_log.display()
            ),
        )
        .unwrap();
        let nodedns = Proc {
            child: in_netns(Some(&ns.name), env!("CARGO_BIN_EXE_nodedns"))
                .args(["run", "-c"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            name: "nodedns",
        };
        let pod = Pod { ns, dir, query_log, _servers: vec![named, nodedns] };
        wait_until(Duration::from_secs(15), "nodedns answers in the namespace", || {
            pod.ns.run("dig", &["@127.0.0.1", "+short", "+time=1", "+tries=1", "www.test.example"]).1.contains("192.0.2.1")
        });
        // The log is written behind the answers: the readiness queries must be in it before
        // a test counts the lines a client adds.
        wait_until(Duration::from_secs(5), "the readiness query is logged", || {
            read_lines(&pod.query_log).iter().any(|l| l.contains("\"www.test.example.\"") && l.contains("NOERROR"))
        });
        pod
    }

    fn set_resolv_conf(&self, text: &str) {
        std::fs::write(format!("/etc/netns/{}/resolv.conf", self.ns.name), text).unwrap();
    }

    /// What a client sends when `program args` runs in the namespace, seen in the query log.
    fn client_queries(&self, program: &str, args: &[&str]) -> Vec<(String, String)> {
        let before = read_lines(&self.query_log).len();
        self.ns.run(program, args);
        logged_queries(&self.query_log, before)
    }

    /// `nodedns explain NAME --json` in the namespace, asking the running instance and
    /// sending the queries to it.
    fn explain(&self, name: &str, resolver: &str) -> Value {
        let (ok, out) = self.ns.run(
            env!("CARGO_BIN_EXE_nodedns"),
            &[
                "explain",
                name,
                "--resolver",
                resolver,
                "--resolv-conf",
                "/etc/resolv.conf",
                "--instance",
                "http://127.0.0.1:9253",
                "--server",
                "127.0.0.1:53",
                "--json",
            ],
        );
        assert!(ok, "explain failed: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain --json is not JSON ({e}): {out}"))
    }
}

fn explained_queries(explanation: &Value) -> Vec<(String, String)> {
    explanation["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["name"].as_str().unwrap().to_string(), q["type"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn explain_predicts_the_queries_glibc_sends() {
    let pod = Pod::start("glibc-walk");
    let ndots2 = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:2\n";
    let cases: [(&str, Option<&str>, usize); 7] = [
        // Two dots, ndots:5: three search names, then the name itself, A and AAAA each.
        ("www.test.example", None, 8),
        // Found at the second search name: the walk stops there.
        ("kubernetes.default", None, 4),
        ("www.test.example.", None, 2),
        // Nothing anywhere: every step, and glibc goes on past NXDOMAIN.
        ("nothing.test.example", None, 8),
        // Enough dots for ndots:2: the name itself first, and found.
        ("www.test.example", Some(ndots2), 2),
        // Enough dots, not found: glibc still walks the search list afterwards.
        ("nothing.test.example", Some(ndots2), 8),
        // single-request: A, then AAAA, in that order.
        (
            "nothing.test.example",
            Some(
                "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5 single-request\n",
            ),
            8,
        ),
    ];
    for (name, resolv_conf, expected) in cases {
        pod.set_resolv_conf(resolv_conf.unwrap_or(POD_RESOLV_CONF));
        let glibc = pod.client_queries("getent", &["ahosts", name]);
        let explanation = pod.explain(name, "glibc");
        let explained = explained_queries(&explanation);
        assert_eq!(steps(&explained), steps(&glibc), "{name} with {resolv_conf:?}: explain vs glibc");
        assert_eq!(glibc.len(), expected, "{name}: glibc sent {glibc:?}");
        if resolv_conf.is_some_and(|c| c.contains("single-request")) {
            assert_eq!(explained, glibc, "single-request: the exact order");
        }
        let verdict = explanation["verdict"].as_str().unwrap();
        assert!(verdict.starts_with(&format!("{expected} queries")), "{name}: {verdict}");
        eprintln!("glibc, {name}: {verdict}");
    }
    // The human form names the search steps nodedns answers itself.
    pod.set_resolv_conf(POD_RESOLV_CONF);
    let (_, text) = pod.ns.run(
        env!("CARGO_BIN_EXE_nodedns"),
        &["explain", "api.example.com", "--resolv-conf", "/etc/resolv.conf", "--instance", "http://127.0.0.1:9253"],
    );
    eprintln!("{text}");
    assert!(
        text.contains("answered locally: not_in_specification")
            && text.contains("verdict: 8 queries, 6 of them NXDOMAIN; with a trailing dot: 2"),
        "{text}"
    );
    drop(pod.dir);
}

/// musl (Alpine images) walks differently: no search after the name itself when it has
/// enough dots, and the walk stops at a NODATA answer.
#[test]
fn explain_predicts_the_queries_musl_sends() {
    require("musl-gcc");
    let pod = Pod::start("musl-walk");
    let client = pod.dir.path().join("musl_lookup");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musl_lookup.c");
    let built = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&client).arg(&source).status().unwrap();
    assert!(built.success(), "musl-gcc could not build {}", source.display());
    let client = client.to_str().unwrap();
    let ndots2 = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:2\n";
    let ent = "search svc.cluster.local cluster.local test.example\nnameserver 127.0.0.1\noptions ndots:5\n";
    let cases: [(&str, &str, usize); 4] = [
        ("www.test.example", POD_RESOLV_CONF, 8),
        ("kubernetes.default", POD_RESOLV_CONF, 4),
        // Enough dots and not found: only the name itself (glibc would walk on: 8).
        ("nothing.test.example", ndots2, 2),
        // prod.svc.cluster.local exists without records: NODATA ends musl's walk at once.
        ("prod", ent, 2),
    ];
    for (name, resolv_conf, expected) in cases {
        pod.set_resolv_conf(resolv_conf);
        let musl = pod.client_queries(client, &[name]);
        let explanation = pod.explain(name, "musl");
        assert_eq!(steps(&explained_queries(&explanation)), steps(&musl), "{name} with {resolv_conf:?}: explain vs musl");
        assert_eq!(musl.len(), expected, "{name}: musl sent {musl:?}");
        eprintln!("musl, {name}: {}", explanation["verdict"]);
    }
}

#[test]
fn query_log_lines_carry_every_field_and_switch_at_runtime() {
    let upstream = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("queries.log");
    let config = format!("log:\n  queries: {{enabled: false, sample: 0, slow: 100ms, output: {}}}\n", log.display());
    let nd = Nodedns::start_with_config(Some(&config), &["--upstream".into(), upstream.addr.to_string()]);
    let querylog = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
            .arg("querylog")
            .args(args)
            .args(["--instance", &format!("http://{}", nd.metrics)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    query_udp(nd.dns, "first.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(querylog(&[]).trim(), r#"{"enabled":false,"sample":0.0,"slow":"100ms"}"#);
    querylog(&["on"]);
    // On, sample 0: a fast query is not logged, a slow one is.
    query_udp(nd.dns, "fast.example.", RecordType::A, 2, T).unwrap();
    upstream.set(Behaviour::AnswerAfter(Duration::from_millis(200)));
    query_udp(nd.dns, "slow.example.", RecordType::AAAA, 3, T).unwrap();
    let lines = || read_lines(&log);
    wait_until(T, "the slow query logged", || !lines().is_empty());
    let line: Value = serde_json::from_str(&lines()[0]).unwrap();
    assert_eq!(line["name"], "slow.example.");
    assert_eq!(line["type"], "AAAA");
    assert_eq!(line["rcode"], "NOERROR");
    assert_eq!(line["cache"], "miss");
    assert_eq!(line["proto"], "udp");
    assert_eq!(line["upstream"], upstream.addr.to_string());
    assert_eq!(line["reason"], Value::Null);
    assert!(line["latency_us"].as_u64().unwrap() >= 100_000, "{line}");
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
    assert!(humantime::parse_rfc3339(line["time"].as_str().unwrap()).is_ok(), "{line}");

    // Everything: a cache hit, and a malformed query answered FORMERR.
    querylog(&["--sample", "1"]);
    query_udp(nd.dns, "fast.example.", RecordType::A, 4, T).unwrap();
    let mut garbled = build_query("x.example.", RecordType::A, 5, false);
    garbled[5] = 2; // two questions
    exchange_udp(nd.dns, &garbled, T).unwrap();
    wait_until(T, "two more lines", || lines().len() == 3);
    let hit: Value = serde_json::from_str(&lines()[1]).unwrap();
    assert_eq!(
        (hit["name"].as_str(), hit["cache"].as_str(), &hit["upstream"]),
        (Some("fast.example."), Some("hit"), &Value::Null),
        "{hit}"
    );
    let bad: Value = serde_json::from_str(&lines()[2]).unwrap();
    assert_eq!((bad["rcode"].as_str(), bad["reason"].as_str()), (Some("FORMERR"), Some("malformed")), "{bad}");
    assert_eq!(nd.metric("nodedns_query_log_lines_total"), 3.0);

    querylog(&["off"]);
    query_udp(nd.dns, "after.example.", RecordType::A, 6, T).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines().len(), 3, "off again");
}

#[test]
fn stats_summarises_a_running_instance() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    for round in 0..2 {
        for name in ["www", "alias", "chain1", "missing"] {
            query_udp(nd.dns, &format!("{name}.test.example."), RecordType::A, round, T).unwrap();
        }
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_nodedns")).args(["stats", "--instance", &format!("http://{}", nd.metrics)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(text.contains("answers     8: NOERROR 75.0%, NXDOMAIN 25.0%"), "{text}");
    assert!(text.contains("hit ratio 50.0% (4 hits, 4 misses)"), "{text}");
    assert!(text.contains(&format!("  {}: up, 4 queries", named.addr)), "{text}");
    assert!(text.contains("last reload ok"), "{text}");
}

#[test]
fn probe_walks_the_search_list_and_exports_per_step_metrics() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "search sub.test.example test.example\nnameserver 127.0.0.1\noptions ndots:2 timeout:1 attempts:1\n")
        .unwrap();
    let metrics = loopback(free_port());
    let mut probe = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .args(["probe", "--name", "www", "--name", "missing.test.example.", "--interval", "100ms", "--count", "20", "--slow", "1s"])
        .args(["--server", &nd.dns.to_string(), "--metrics", &metrics.to_string()])
        .arg("--resolv-conf")
        .arg(&resolv_conf)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Each step of www's walk has its own series: www.sub.test.example does not exist,
    // www.test.example answers.
    wait_until(T, "probe metrics", || {
        http_get(metrics, "/metrics").is_some_and(|(_, body)| {
            body.contains(r#"nodedns_probe_queries_total{name="www",query="www.sub.test.example.",type="A",rcode="NXDOMAIN"}"#)
                && body.contains(r#"nodedns_probe_queries_total{name="www",query="www.test.example.",type="AAAA",rcode="NOERROR"}"#)
                && body.contains(r#"nodedns_probe_lookup_duration_seconds_count{name="www"}"#)
        })
    });
    let out = probe.wait_with_output_within(Duration::from_secs(10));
    eprintln!("{out}");
    assert!(out.contains("failed lookup missing.test.example.: ") && out.contains("ended in NXDOMAIN"), "{out}");
    assert!(out.contains("www: 20 lookups, 0 failed"), "{out}");
    assert!(out.contains("missing.test.example.: 20 lookups, 20 failed"), "{out}");
}

trait WaitWithin {
    fn wait_with_output_within(&mut self, limit: Duration) -> String;
}

impl WaitWithin for std::process::Child {
    fn wait_with_output_within(&mut self, limit: Duration) -> String {
        wait_until(limit, "the probe finishes its rounds", || self.try_wait().unwrap().is_some());
        let mut out = String::new();
        std::io::Read::read_to_string(self.stdout.as_mut().unwrap(), &mut out).unwrap();
        out
    }
}
