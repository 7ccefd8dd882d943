use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_official_daemonsets_arguments_parse_with_node_caches_defaults() {
    let parsed = parse_args(&args(
        "-localip 169.254.20.10,10.96.0.10 -conf /etc/Corefile -upstreamsvc kube-dns-upstream -pidfile /tmp/node-cache.pid",
    ))
    .unwrap();
    assert_eq!(parsed.local_ips, ["169.254.20.10".parse::<IpAddr>().unwrap(), "10.96.0.10".parse().unwrap()]);
    assert_eq!(parsed.conf.as_deref(), Some(Path::new("/etc/Corefile")));
    assert_eq!(parsed.upstream_service, "kube-dns-upstream");
    assert_eq!(parsed.base_corefile, Path::new("/etc/coredns/Corefile.base"));
    assert_eq!(parsed.health_port, 8080);
    assert_eq!(parsed.interface, "nodelocaldns");
    assert!(parsed.setup_interface && parsed.setup_iptables && !parsed.skip_teardown);
    assert_eq!(parsed.metrics_listen, "0.0.0.0:9353".parse().unwrap());
    assert_eq!(parsed.sync_interval, Duration::from_secs(60));
    assert_eq!(parsed.dns_port, 53);
}

#[test]
fn flags_parse_as_gos_flag_package_does() {
    let parsed =
        parse_args(&args("--localip=fd00::10 -setupiptables=false -skipteardown -dns.port 5353 -syncinterval=30s -health-port=9090"))
            .unwrap();
    assert!(!parsed.setup_iptables && parsed.skip_teardown);
    assert_eq!((parsed.dns_port, parsed.health_port), (5353, 9090));
    assert_eq!(parsed.sync_interval, Duration::from_secs(30));
    assert_eq!(parse_args(&args("-syncinterval 60ns")).unwrap().sync_interval, Duration::from_secs(60), "node-cache's own unit quirk");
    assert_eq!(parse_args(&args("-reloadwithsignal -corefile /x")).unwrap().without_meaning, ["reloadwithsignal", "corefile"]);
    assert_eq!(parse_args(&args("-localips 1.2.3.4")), Err(FlagError::Unknown("localips".into())));
    assert_eq!(parse_args(&args("-bogus")), Err(FlagError::Unknown("bogus".into())), "unknown before missing its value");
    assert_eq!(parse_args(&args("-setupiptables false")), Err(FlagError::Extra(vec!["false".into()])), "a bool takes its value after =");
    assert_eq!(parse_args(&args("-conf")), Err(FlagError::Missing("conf".into())));
    assert!(matches!(parse_args(&args("-localip 169.254.20.10,")), Err(FlagError::Invalid { .. })));
    assert!(matches!(parse_args(&args("-localip 169.254.20.10,fd00::1")), Err(FlagError::Invalid { .. })));
    assert!(matches!(parse_args(&args("-syncinterval 0")), Err(FlagError::Invalid { .. })));
}

#[test]
fn the_upstream_service_is_found_by_the_kubelets_variable() {
    assert_eq!(service_host_variable("kube-dns-upstream"), "KUBE_DNS_UPSTREAM_SERVICE_HOST");
    assert_eq!(service_host_variable("kube-dns"), "KUBE_DNS_SERVICE_HOST");
}

fn template_dir(kube_dns: &[(&str, &str)]) -> (tempfile::TempDir, NodeCacheArgs) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("Corefile.base");
    std::fs::write(
        &base,
        "cluster.local:53 {\n    bind 169.254.20.10\n    forward . __PILLAR__CLUSTER__DNS__ {\n        force_tcp\n    }\n}\n.:53 {\n    bind 169.254.20.10\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n",
    )
    .unwrap();
    let cm = dir.path().join("kube-dns");
    std::fs::create_dir(&cm).unwrap();
    for (name, text) in kube_dns {
        std::fs::write(cm.join(name), text).unwrap();
    }
    let args = NodeCacheArgs {
        local_ips: vec!["169.254.20.10".parse().unwrap()],
        conf: Some(dir.path().join("Corefile")),
        base_corefile: base,
        upstream_service: "kube-dns-upstream".into(),
        kube_dns_config: Some(cm),
        ..NodeCacheArgs::default()
    };
    (dir, args)
}

fn env(name: &str) -> Option<String> {
    (name == "KUBE_DNS_UPSTREAM_SERVICE_HOST").then(|| "10.96.0.11".into())
}

#[test]
fn the_template_gets_the_service_ip_resolv_conf_and_stub_domains() {
    let (_dir, args) = template_dir(&[("stubDomains", r#"{"acme.local": ["192.0.2.1", "192.0.2.2:5353"]}"#)]);
    let text = args.generate(&env).unwrap();
    assert!(text.contains("forward . 10.96.0.11 {"), "{text}");
    assert!(text.contains("forward . /etc/resolv.conf\n"));
    assert!(text.contains("acme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10\n    forward . 192.0.2.1 192.0.2.2:5353\n}"));
}

#[test]
fn upstream_nameservers_replace_resolv_conf() {
    let (_dir, args) = template_dir(&[("upstreamNameservers", r#"["192.0.2.53", "192.0.2.54:53"]"#)]);
    assert!(args.generate(&env).unwrap().contains("forward . 192.0.2.53 192.0.2.54:53\n"));
    let (_dir, args) = template_dir(&[("upstreamNameservers", r#"["a", "b", "c", "d"]"#)]);
    assert!(args.generate(&env).unwrap_err().to_string().contains("at most 3"));
    let (_dir, args) = template_dir(&[("stubDomains", "{not json")]);
    assert!(args.generate(&env).unwrap_err().to_string().contains("stubDomains"));
}

#[test]
fn a_missing_service_variable_refuses_the_start_naming_it() {
    let (_dir, args) = template_dir(&[]);
    let e = args.generate(&|_| None).unwrap_err().to_string();
    assert!(e.contains("$KUBE_DNS_UPSTREAM_SERVICE_HOST") && e.contains("kube-dns-upstream"), "{e}");
}

#[test]
fn flags_become_node_settings_with_node_caches_rules() {
    let (_dir, mut args) = template_dir(&[]);
    args.skip_teardown = true;
    args.health_port = 8081;
    let mut file = FileConfig::default();
    args.apply(&mut file);
    assert!(file.node.setup && file.node.keep_on_exit && file.node.assign_addresses);
    assert_eq!(file.node.rules, crate::node::Backend::NodeCache);
    assert_eq!(file.node.interface, "nodelocaldns");
    assert_eq!(file.node.health_port, Some(8081));
    assert_eq!(file.http_listen, ["0.0.0.0:9353".parse().unwrap()]);
}

/// nodedns's own default serves loopback only; as node-cache it must answer the pods.
#[test]
fn as_node_cache_every_client_of_the_local_ips_is_served() {
    // node-cache answers every client on its addresses (its Corefile has no `acl`); a
    // DaemonSet given nodedns's image must not start refusing pods whose network nodedns
    // does not know. The local IPs are the addresses node setup owns, served to any source.
    let (_dir, mut args) = template_dir(&[]);
    args.local_ips.push("10.96.0.10".parse().unwrap());
    let mut file = FileConfig { upstreams: vec!["192.0.2.53:53".parse().unwrap()], ..FileConfig::default() };
    args.apply(&mut file);
    let settings = crate::config::Settings::build(file, crate::config::Overrides::default()).unwrap();
    assert_eq!(settings.reloadable.admission.open, args.local_ips);
    assert_eq!(settings.reloadable.admission.allow, FileConfig::default().server.allow, "other destinations: loopback only");
}
