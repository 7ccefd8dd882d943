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
    let check = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
            .arg("check-config")
            .arg(&file)
            .env_remove("KUBE_DNS_UPSTREAM_SERVICE_HOST")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The kube-dns-upstream Service's IP comes from the variable the kubelet sets for it.
    let (ok, err) = check(&[("KUBE_DNS_UPSTREAM_SERVICE_HOST", "10.96.0.11")]);
    assert!(ok, "{err}");
    let (ok, err) = check(&[]);
    assert!(!ok && err.contains("${KUBE_DNS_UPSTREAM_SERVICE_HOST}: environment variable not set"), "{err}");
    // The Service the variable is named after: the API server picks its IP.
    let upstream = load("service-upstream.yaml");
    assert_eq!(text(at(&upstream, &["metadata", "name"])), "kube-dns-upstream");
    assert!(at(&upstream, &["spec", "clusterIP"]).is_null(), "pinned: {:?}", at(&upstream, &["spec", "clusterIP"]));
}

/// With the shipped configuration, pods are served whatever their address: kops'
/// 100.96.0.0/11, a CGNAT (100.64.0.0/10) pod network, IPv6 pods, because what decides is
/// the address the query is sent to, which only the node's own pods and host can reach.
/// Any other destination serves loopback only: never an open resolver.
#[test]
fn the_shipped_configuration_serves_pods_of_any_network_and_nothing_else() {
    let config = load("configmap.yaml");
    let yaml = text(at(&config, &["data", "nodedns.yaml"]));
    let yaml = nodedns::config::expand_env("configmap.yaml", yaml, &|_| Some("10.96.0.11".into())).unwrap();
    let mut file = nodedns::config::parse_file("configmap.yaml", &yaml).unwrap();
    file.resolv_conf = "/dev/null".into();
    file.upstreams = vec!["192.0.2.53:53".parse().unwrap()];
    let settings = nodedns::config::Settings::build(file, Default::default()).unwrap();
    let admission = nodedns::process::reload::admission_for(&settings.reloadable.admission);
    let now = std::time::Instant::now();
    let served =
        |client: &str, to: std::net::IpAddr| admission.check(client.parse().unwrap(), to, now) == nodedns::query::admission::Verdict::Serve;
    let listen = &settings.restart_only.listen;
    assert!(!listen.is_empty());
    for to in listen.iter().map(|a| a.ip()) {
        for pod in ["100.96.12.7", "100.64.3.9", "10.244.1.5", "172.16.0.4", "192.0.2.77"] {
            assert!(served(pod, to), "pod {pod} refused on {to}");
        }
    }
    // An IPv6 node's addresses are served the same way (the rule is the destination's).
    let v6 = nodedns::query::admission::Admission::new(
        vec![],
        vec!["fd00::a".parse().unwrap()],
        nodedns::query::admission::Action::Refuse,
        None,
    );
    assert_eq!(v6.check("fd00:10:244::5".parse().unwrap(), "fd00::a".parse().unwrap(), now), nodedns::query::admission::Verdict::Serve);
    let elsewhere: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    assert!(!served("100.64.3.9", elsewhere) && !served("203.0.113.5", elsewhere), "a destination node setup does not own serves pods");
}

/// The node-local-dns manifest we ship is the addon's with only the image changed: the
/// objects, names, labels and container name that NetworkPolicies, Cilium
/// LocalRedirectPolicies and ServiceMonitors select stay as they are.
#[test]
fn the_drop_in_manifest_keeps_node_local_dns_names_labels_and_passes_the_schemas() {
    require("kubernetes-validate");
    let path = manifests().join("../node-local-dns/nodelocaldns.yaml");
    let text_of = std::fs::read_to_string(&path).unwrap();
    let sedded = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sedded.path(), common::operator_sed(&text_of, "169.254.20.10", "cluster.local", "10.96.0.10")).unwrap();
    for file in [path.as_path(), sedded.path()] {
        let out = Command::new("kubernetes-validate").arg("--strict").arg(file).output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !report.contains("ERROR"), "{report}");
        for kind in ["daemonset/node-local-dns", "configmap/node-local-dns", "service/kube-dns-upstream", "service/node-local-dns"] {
            assert!(report.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{report}");
        }
    }
    let ds = common::node_local_dns("DaemonSet");
    assert_eq!(at(&ds, &["spec", "template", "metadata", "labels", "k8s-app"]).as_str(), Some("node-local-dns"));
    let container = at(&ds, &["spec", "template", "spec", "containers", "0"]);
    assert_eq!(text(&container["name"]), "node-cache");
    assert!(text(&container["image"]).contains("nodedns"));
    assert!(container["command"].is_null(), "only the image changes: the image's entry point takes node-cache's arguments");
    assert_eq!(text(at(container, &["livenessProbe", "httpGet", "path"])), "/health");
    assert_eq!(at(container, &["livenessProbe", "httpGet", "port"]).as_u64(), Some(8080));
    let service = common::node_local_dns_manifest()
        .into_iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "node-local-dns")
        .unwrap();
    assert_eq!(at(&service, &["metadata", "annotations", "prometheus.io/port"]).as_str(), Some("9253"));
    // Its Corefile is one nodedns accepts once the pods fill in the rest, as node-cache does.
    let corefile = common::operator_sed(
        text(at(&common::node_local_dns("ConfigMap"), &["data", "Corefile"])),
        "169.254.20.10",
        "cluster.local",
        "10.96.0.10",
    )
    .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.11")
    .replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), corefile).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns")).args(["check-config", "--corefile"]).arg(file.path()).output().unwrap();
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

/// The two-instance mode: both DaemonSets and their configuration pass the schemas and
/// nodedns, and nothing one instance owns on the node is the other's.
#[test]
fn the_two_instance_manifests_share_the_addresses_and_nothing_else() {
    require("kubernetes-validate");
    let dir = manifests().join("../two-instances");
    let files = [dir.join("configmap.yaml"), dir.join("daemonsets.yaml")];
    let out = Command::new("kubernetes-validate").arg("--strict").args(&files).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !report.contains("ERROR"), "{report}");
    let configmap: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let shipped: Value = serde_yaml_ng::from_str(text(at(&load("configmap.yaml"), &["data", "nodedns.yaml"]))).unwrap();
    let mut seen: Vec<Vec<String>> = Vec::new();
    for key in ["a.yaml", "b.yaml"] {
        let yaml = text(at(&configmap, &["data", key]));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
            .arg("check-config")
            .arg(file.path())
            .env("KUBE_DNS_UPSTREAM_SERVICE_HOST", "10.96.0.11")
            .output()
            .unwrap();
        assert!(out.status.success(), "{key}: {}", String::from_utf8_lossy(&out.stderr));
        let config: Value = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(at(&config, &["node", "shared"]).as_bool(), Some(true), "{key}");
        assert_eq!(text(at(&config, &["node", "rules"])), "nftables", "{key}: only owned tables are each instance's own");
        let own = [&config["metrics"], at(&config, &["server", "handover_socket"]), at(&config, &["cache", "snapshot"])];
        seen.push(own.iter().map(|v| text(v).to_string()).collect());
        assert_eq!(config["listen"], shipped["listen"], "{key}: the same addresses as the single instance");
    }
    for (a, b) in seen[0].iter().zip(&seen[1]) {
        assert_ne!(a, b, "both instances would use {a}");
    }
}
