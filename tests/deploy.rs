//! The Kubernetes manifests in `deploy/kubernetes/`: valid against the Kubernetes OpenAPI
//! schemas (kubernetes-validate, from PyPI), and consistent with each other and with
//! nodedns's own configuration rules.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::require;
use serde_yaml_ng::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn load(file: &str) -> Value {
    let text = std::fs::read_to_string(manifests().join(file)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[*key],
    })
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    require("kubernetes-validate");
    let files: Vec<PathBuf> = std::fs::read_dir(manifests()).unwrap().map(|e| e.unwrap().path()).collect();
    let out = Command::new("kubernetes-validate").arg("--strict").args(&files).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !report.contains("ERROR"), "{report}");
    // The ServiceMonitor is a Prometheus Operator CRD, outside the Kubernetes schemas; every
    // other kind must have been checked.
    for kind in [
        "daemonset",
        "configmap",
        "serviceaccount",
        "clusterrole/",
        "clusterrolebinding",
        "service/kube-dns-upstream",
        "service/nodedns-metrics",
    ] {
        assert!(report.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{report}");
    }
}

#[test]
fn the_shipped_configuration_is_accepted_by_nodedns() {
    let config = load("configmap.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodedns.yaml");
    std::fs::write(&file, text(at(&config, &["data", "nodedns.yaml"]))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns")).arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_daemonset_mounts_probes_and_monitors_what_the_configuration_uses() {
    let ds = load("daemonset.yaml");
    let config: Value = serde_yaml_ng::from_str(text(at(&load("configmap.yaml"), &["data", "nodedns.yaml"]))).unwrap();
    let pod = at(&ds, &["spec", "template", "spec"]);
    let container = at(pod, &["containers", "0"]);
    let mounts: Vec<&str> = container["volumeMounts"].as_sequence().unwrap().iter().map(|m| text(&m["mountPath"])).collect();
    for path in [text(at(&config, &["cache", "snapshot"])), text(at(&config, &["server", "handover_socket"]))] {
        assert!(mounts.iter().any(|m| path.starts_with(&format!("{m}/"))), "{path} is not on a mounted volume: {mounts:?}");
    }
    // Probes and Prometheus reach a host-network pod at its pod IP, the node's address: the
    // metrics endpoint must listen on every address of the node, and the probes (no `host`,
    // so the kubelet uses the pod IP) on its port.
    let metrics: std::net::SocketAddr = text(&config["metrics"]).parse().unwrap();
    assert!(metrics.ip().is_unspecified(), "metrics on {metrics}: not reachable at the pod IP");
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = at(container, &[probe, "httpGet"]);
        assert!(get["host"].is_null(), "{probe} names a host; the kubelet's default, the pod IP, is the one that works");
        assert_eq!(get["port"].as_u64(), Some(u64::from(metrics.port())), "{probe}");
    }
    // Rolling updates surge, so the handover has a successor to hand to.
    let update = at(&ds, &["spec", "updateStrategy", "rollingUpdate"]);
    assert_eq!((update["maxSurge"].as_u64(), update["maxUnavailable"].as_u64()), (Some(1), Some(0)));
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let caps: Vec<&str> = at(container, &["securityContext", "capabilities", "add"]).as_sequence().unwrap().iter().map(text).collect();
    assert_eq!(caps, ["NET_ADMIN", "NET_BIND_SERVICE"]);
    // Kubernetes API defaulting (pkg/apis/core/v1 defaults, SetDefaults_Pod): in a
    // host-network pod every container port gets hostPort = containerPort, and the
    // scheduler's NodePorts filter then keeps a second pod with that host port off the node.
    // With maxSurge the new pod must run beside the old one, so the container declares none.
    assert!(container["ports"].is_null(), "a host-network DaemonSet with maxSurge declares ports: {:?}", container["ports"]);
    // The metrics Service selects these pods and names the metrics port by number; the
    // ServiceMonitor scrapes that Service's port, and selects that Service alone.
    let service = load("metrics-service.yaml");
    assert_eq!(at(&service, &["spec", "clusterIP"]).as_str(), Some("None"), "headless: one endpoint per node");
    assert_eq!(at(&service, &["spec", "selector"]), at(&ds, &["spec", "template", "metadata", "labels"]));
    let service_port = at(&service, &["spec", "ports", "0"]);
    assert_eq!(service_port["targetPort"].as_u64(), Some(u64::from(metrics.port())));
    assert_eq!(at(&service, &["metadata", "annotations", "prometheus.io/port"]).as_str(), Some(metrics.port().to_string().as_str()));
    let monitor = load("servicemonitor.yaml");
    assert_eq!(text(at(&monitor, &["spec", "endpoints", "0", "port"])), text(&service_port["name"]));
    let wanted = at(&monitor, &["spec", "selector", "matchLabels"]).as_mapping().unwrap();
    for file in ["metrics-service.yaml", "service-upstream.yaml"] {
        let manifest = load(file);
        let labels = at(&manifest, &["metadata", "labels"]).as_mapping().unwrap();
        let selected = wanted.iter().all(|(k, v)| labels.get(k) == Some(v));
        assert_eq!(selected, file == "metrics-service.yaml", "the ServiceMonitor's selection of {file}");
    }
}

/// Every metric the Grafana dashboard queries is one nodedns (or its probe) registers, so
/// no panel is silently empty after a rename; and every one registered has a panel.
#[test]
fn the_dashboard_shows_exactly_the_metrics_nodedns_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard_text = std::fs::read_to_string(root.join("deploy/grafana/nodedns.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let sources: String =
        ["src/metrics/mod.rs", "src/diagnose/probe.rs"].iter().map(|f| std::fs::read_to_string(root.join(f)).unwrap()).collect();
    // `r.register("NAME", ...)`, the name on the same line or, as rustfmt may put it, the next.
    let registered: Vec<&str> = sources
        .split("r.register(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(registered.len() > 20, "found only {registered:?} registered");
    for family in &registered {
        assert!(dashboard_text.contains(family), "{family} is exported but on no dashboard panel");
    }
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| t.starts_with("coredns_") || t.starts_with("nodedns_"))
            {
                let family = ["_total", "_bucket"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
                assert!(registered.contains(&family), "panel {:?} queries {name}, which nodedns does not export", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
}
