//! A CoreDNS Corefile as nodedns's configuration: `import-corefile` prints YAML that
//! `check-config` accepts, `run --corefile` serves it and reloads it on change, a plugin
//! nodedns cannot honour stops the start naming file, line and plugin, and node-cache's
//! command line refuses a flag it does not know as node-cache does.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

fn nodedns(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn official(dir: &Path) -> std::path::PathBuf {
    let template = node_local_dns("ConfigMap")["data"]["Corefile"].as_str().unwrap().to_string();
    let text = operator_sed(&template, "169.254.20.10", "cluster.local", "10.96.0.10")
        .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.11")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "192.0.2.53");
    let path = dir.join("Corefile");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn import_corefile_prints_yaml_that_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let corefile = official(dir.path());
    let (code, yaml) = nodedns(&["import-corefile", corefile.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{yaml}");
    assert!(yaml.contains("- zone: \"cluster.local.\"") && yaml.contains("max_ttl: 5s"), "{yaml}");
    let imported = dir.path().join("imported.yaml");
    std::fs::write(&imported, &yaml).unwrap();
    let (code, out) = nodedns(&["check-config", imported.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{yaml}");
    let (code, out) = nodedns(&["check-config", "--corefile", corefile.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn a_plugin_nodedns_cannot_honour_stops_the_start_with_file_line_and_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let corefile = dir.path().join("Corefile");
    std::fs::write(&corefile, ".:1053 {\n    errors\n    rewrite name a.example b.example\n    forward . 192.0.2.53\n}\n").unwrap();
    for args in [vec!["run", "--corefile"], vec!["check-config", "--corefile"], vec!["import-corefile"]] {
        let mut args = args.clone();
        args.push(corefile.to_str().unwrap());
        let (code, out) = nodedns(&args);
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(out.contains(&format!("{}:3: plugin rewrite: ", corefile.display())), "{args:?}: {out}");
    }
}

#[test]
fn node_caches_command_line_refuses_an_unknown_flag_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("node-cache");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodedns"), &link).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&link).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["-localip", "169.254.20.10", "-localipp", "x"]);
    assert_eq!((code, out.trim()), (Some(2), "flag provided but not defined: -localipp"));
    let (code, out) = run(&["-version"]);
    assert!(code == Some(0) && out.contains("as node-cache"), "{out}");
    // node-local-dns's arguments given to the image's default entry point, /nodedns.
    let (code, out) = nodedns(&["-localip", "169.254.20.10", "-localipp", "x"]);
    assert_eq!((code, out.trim()), (Some(2), "flag provided but not defined: -localipp"));
    let (code, out) = nodedns(&["node-cache", "-setupiptables", "false"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("extra command line arguments"), "{out}");
}

fn answer(dns: std::net::SocketAddr, name: &str) -> String {
    let resp = query_udp(dns, name, RecordType::A, 9, Duration::from_secs(3)).unwrap_or_else(|| panic!("no answer for {name}"));
    resp.answers.first().map(|r| r.data.to_string()).unwrap_or_default()
}

#[test]
fn run_corefile_serves_hosts_and_forwards_and_reloads_when_the_corefile_changes() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let (dns, metrics) = (loopback(free_port()), loopback(free_port()));
    let dir = tempfile::tempdir().unwrap();
    let corefile = dir.path().join("Corefile");
    let write = |address: &str, extra: &str| {
        let text = format!(
            ".:{} {{\n    bind 127.0.0.1\n    hosts {{\n        {address} db.example.internal\n        fallthrough\n    }}\n    cache 30\n    forward . {} {{\n        except internal.test\n        prefer_udp\n    }}\n    prometheus {metrics}\n{extra}}}\n",
            dns.port(),
            named.addr
        );
        let tmp = dir.path().join("Corefile.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &corefile).unwrap();
    };
    write("10.0.0.5", "");
    let log = dir.path().join("nodedns.log");
    let child = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .args(["run", "--corefile"])
        .arg(&corefile)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _proc = Proc { child, name: "nodedns" };
    wait_until(Duration::from_secs(10), "nodedns ready", || http_get(metrics, "/ready").is_some_and(|(code, _)| code == 200));
    assert_eq!(answer(dns, "db.example.internal."), "10.0.0.5");
    assert_eq!(answer(dns, "www.test.example."), "192.0.2.1");
    let excepted = query_udp(dns, "x.internal.test.", RecordType::A, 10, Duration::from_secs(3)).expect("an answer");
    assert_eq!(rcode(&excepted), hickory_proto::op::ResponseCode::Refused, "`except` is not forwarded");

    write("10.0.0.6", "");
    wait_until(Duration::from_secs(6), "the changed Corefile served", || answer(dns, "db.example.internal.") == "10.0.0.6");
    write("10.0.0.7", "    rewrite name a.example b.example\n");
    let failed =
        || http_get(metrics, "/metrics").is_some_and(|(_, text)| text.contains("nodedns_config_reloads_total{result=\"failure\"} 1"));
    wait_until(Duration::from_secs(6), "the unsupported plugin rejected on reload", failed);
    assert_eq!(answer(dns, "db.example.internal."), "10.0.0.6", "the running configuration stays");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("plugin rewrite"), "{text}");
}

/// As node-cache, the Corefile is generated again when the kube-dns ConfigMap changes (a
/// stub domain added) and the new zone is served, without a restart.
#[test]
fn as_node_cache_a_changed_kube_dns_configmap_is_served_without_a_restart() {
    let cluster = Named::start(&[("cluster.local", cluster_zone())]);
    let corp = Named::start(&[("corp.example", test_zone("corp.example"))]);
    let (dns, health, metrics) = (loopback(free_port()), loopback(free_port()), loopback(free_port()));
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("Corefile.base");
    let p = dns.port();
    std::fs::write(
        &base,
        format!(
            "cluster.local:{p} {{\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__CLUSTER__DNS__:{}\n    health {health}\n}}\n.:{p} {{\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}}\n",
            cluster.addr.port()
        ),
    )
    .unwrap();
    let kube_dns = dir.path().join("kube-dns");
    std::fs::create_dir(&kube_dns).unwrap();
    std::fs::write(kube_dns.join("upstreamNameservers"), format!(r#"["{}"]"#, cluster.addr)).unwrap();
    let (base_arg, conf, cm) =
        (base.display().to_string(), dir.path().join("Corefile").display().to_string(), kube_dns.display().to_string());
    let args = [
        "node-cache",
        "-localip",
        "127.0.0.1",
        "-dns.port",
        &p.to_string(),
        "-basecorefile",
        &base_arg,
        "-conf",
        &conf,
        "-kubednscm",
        &cm,
        "-setupinterface=false",
        "-setupiptables=false",
        "-metrics-listen-address",
        &metrics.to_string(),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .args(args)
        .env("KUBE_DNS_SERVICE_HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let _proc = Proc { child, name: "nodedns" };
    wait_until(Duration::from_secs(10), "health answers", || http_get(health, "/health").is_some_and(|(code, _)| code == 200));
    assert_eq!(answer(dns, "kubernetes.default.svc.cluster.local."), "10.96.0.1");
    let before = query_udp(dns, "www.corp.example.", RecordType::A, 11, Duration::from_secs(3)).expect("an answer");
    assert_ne!(rcode(&before), hickory_proto::op::ResponseCode::NoError, "no stub domain yet: the cluster server does not know it");

    std::fs::write(kube_dns.join("stubDomains"), format!(r#"{{"corp.example": ["{}"]}}"#, corp.addr)).unwrap();
    wait_until(Duration::from_secs(6), "the stub domain served", || {
        query_udp(dns, "www.corp.example.", RecordType::A, 12, Duration::from_secs(1))
            .is_some_and(|r| r.answers.first().is_some_and(|a| a.data.to_string() == "192.0.2.1"))
    });
    assert!(std::fs::read_to_string(&conf).unwrap().contains("corp.example:"), "the generated Corefile written again to -conf");
    let text = http_get(metrics, "/metrics").expect("metrics on -metrics-listen-address").1;
    assert!(text.contains("coredns_nodecache_setup_errors_total{errortype=\"configmap\"} 0"), "{text}");
}
