use super::*;
use crate::wire::RecordType;
use crate::wire::name::from_text;

const A: RecordType = RecordType::A;
const SRV: RecordType = RecordType::SRV;
const TXT: RecordType = RecordType(16);
const PTR: RecordType = RecordType(12);

fn gke() -> Naming {
    Naming::new(NamingSettings {
        enabled: true,
        cluster_domains: vec!["cluster.local".parse().unwrap()],
        namespaces: NamespaceSource::Fixed(vec!["default".into(), "kube-system".into(), "prod".into()]),
        search_suffixes: ["us-central1-a.c.proj.internal", "c.proj.internal", "google.internal"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        filter_aaaa: vec![],
        search_prefetch: true,
    })
}

fn verdict(naming: &Naming, name: &str, qtype: RecordType) -> Option<(Rcode, Reason)> {
    naming.classify(from_text(name).unwrap().as_name(), qtype, 1).map(|a| (a.rcode, a.reason))
}

/// Every record form of the Kubernetes DNS specification (and the names above them) goes
/// upstream, with both A and the form's own type.
#[test]
fn every_specified_name_is_left_to_the_upstream() {
    let n = gke();
    let specified = [
        ("cluster.local.", A),
        ("svc.cluster.local.", A),
        ("pod.cluster.local.", A),
        ("dns-version.cluster.local.", TXT),
        ("prod.svc.cluster.local.", A),
        ("kube-system.pod.cluster.local.", A),
        // ClusterIP, headless and ExternalName services.
        ("api.prod.svc.cluster.local.", A),
        ("kube-dns.kube-system.svc.cluster.local.", A),
        // Headless endpoints by hostname, StatefulSet pods, endpoints named by address.
        ("web-0.nginx.prod.svc.cluster.local.", A),
        ("10-244-1-7.nginx.prod.svc.cluster.local.", A),
        ("fd00-10-244--7.nginx.prod.svc.cluster.local.", A),
        // SRV for named ports, ClusterIP and headless.
        ("_https._tcp.api.prod.svc.cluster.local.", SRV),
        ("_dns._udp.kube-dns.kube-system.svc.cluster.local.", SRV),
        // Pod A records.
        ("10-244-1-7.prod.pod.cluster.local.", A),
        // Upper case reaches the rules lower-cased, never as a different name.
        ("API.PROD.SVC.CLUSTER.LOCAL.", A),
        // Reverse lookups are not under the cluster domain.
        ("7.1.244.10.in-addr.arpa.", PTR),
        // Real names under host search suffixes.
        ("vm1.us-central1-a.c.proj.internal.", A),
        ("metadata.google.internal.", A),
        ("vm1.c.proj.internal.", A),
        // Outside every rule.
        ("api.example.com.", A),
        ("google.internal.", A),
    ];
    for (name, qtype) in specified {
        assert_eq!(verdict(&n, &name.to_ascii_lowercase(), qtype), None, "{name} must go upstream");
        assert_eq!(verdict(&n, &name.to_ascii_lowercase(), RecordType::AAAA), None, "{name} AAAA must go upstream");
    }
}

/// The fourteen queries of `getent ahosts api.example.com` in a GKE pod of `default`: all
/// but the last name (A and AAAA) are denied here.
#[test]
fn a_gke_search_walk_for_an_external_name_leaves_one_name_for_the_upstream() {
    let n = gke();
    let walk = [
        ("api.example.com.default.svc.cluster.local.", Some(Reason::NotInSpecification)),
        ("api.example.com.svc.cluster.local.", Some(Reason::UnknownNamespace)),
        ("api.example.com.cluster.local.", Some(Reason::NotInSpecification)),
        ("api.example.com.us-central1-a.c.proj.internal.", Some(Reason::SearchSuffix)),
        ("api.example.com.c.proj.internal.", Some(Reason::SearchSuffix)),
        ("api.example.com.google.internal.", Some(Reason::SearchSuffix)),
        ("api.example.com.", None),
    ];
    for (name, reason) in walk {
        for qtype in [A, RecordType::AAAA] {
            assert_eq!(verdict(&n, name, qtype), reason.map(|r| (Rcode::NXDOMAIN, r)), "{name}");
        }
    }
}

#[test]
fn names_no_specified_form_allows_are_denied() {
    let n = gke();
    for name in [
        "a.b.c.prod.svc.cluster.local.",
        "x._https.api.prod.svc.cluster.local.",
        "_https.tcp.api.prod.svc.cluster.local.",
        "a.b.prod.pod.cluster.local.",
        "www.cluster.local.",
        "x.dns-version.cluster.local.",
    ] {
        assert_eq!(verdict(&n, name, A), Some((Rcode::NXDOMAIN, Reason::NotInSpecification)), "{name}");
    }
    assert_eq!(verdict(&n, "api.staging.svc.cluster.local.", A), Some((Rcode::NXDOMAIN, Reason::UnknownNamespace)));
    assert_eq!(verdict(&n, "1-2-3-4.staging.pod.cluster.local.", A), Some((Rcode::NXDOMAIN, Reason::UnknownNamespace)));
}

#[test]
fn without_a_namespace_list_any_namespace_may_exist() {
    let mut settings = gke().settings().clone();
    settings.namespaces = NamespaceSource::Unknown;
    let n = Naming::new(settings);
    assert_eq!(verdict(&n, "api.example.com.svc.cluster.local.", A), None);
    assert_eq!(verdict(&n, "api.example.com.default.svc.cluster.local.", A), Some((Rcode::NXDOMAIN, Reason::NotInSpecification)));
}

#[test]
fn only_public_top_level_domains_mark_a_search_suffix_step() {
    let n = gke();
    // `internal`, `local`, `lan`, `corp` are no public TLDs; `co.uk`'s last label `uk` is.
    for name in ["db.corp.c.proj.internal.", "x.local.google.internal.", "printer.lan.c.proj.internal."] {
        assert_eq!(verdict(&n, name, A), None, "{name}");
    }
    assert_eq!(verdict(&n, "bbc.co.uk.google.internal.", A), Some((Rcode::NXDOMAIN, Reason::SearchSuffix)));
    assert_eq!(verdict(&n, "example.dev.c.proj.internal.", A), Some((Rcode::NXDOMAIN, Reason::SearchSuffix)));
}

#[test]
fn the_aaaa_filter_gives_nodata_for_aaaa_only() {
    let mut settings = gke().settings().clone();
    settings.filter_aaaa = vec!["cluster.local".parse().unwrap()];
    let n = Naming::new(settings);
    assert_eq!(verdict(&n, "api.prod.svc.cluster.local.", RecordType::AAAA), Some((Rcode::NOERROR, Reason::AaaaFilter)));
    assert_eq!(verdict(&n, "api.prod.svc.cluster.local.", A), None);
    // A name that cannot exist is NXDOMAIN whatever the type.
    assert_eq!(verdict(&n, "www.cluster.local.", RecordType::AAAA), Some((Rcode::NXDOMAIN, Reason::NotInSpecification)));
    assert_eq!(verdict(&n, "api.example.com.", RecordType::AAAA), None);
}

#[test]
fn switched_off_nothing_is_denied_and_other_classes_never_are() {
    let mut settings = gke().settings().clone();
    settings.enabled = false;
    assert_eq!(verdict(&Naming::new(settings), "www.cluster.local.", A), None);
    let n = gke();
    assert_eq!(n.classify(from_text("www.cluster.local.").unwrap().as_name(), A, 3), None, "CHAOS class");
}

#[test]
fn the_later_steps_of_a_walk_follow_the_pod_search_list() {
    let n = gke();
    let steps = super::super::search::later_steps(&n, from_text("api.example.com.default.svc.cluster.local.").unwrap().as_name()).unwrap();
    let text: Vec<String> = steps.iter().map(|s| crate::wire::name::to_text(s)).collect();
    assert_eq!(
        text,
        [
            "api.example.com.svc.cluster.local.",
            "api.example.com.cluster.local.",
            "api.example.com.us-central1-a.c.proj.internal.",
            "api.example.com.c.proj.internal.",
            "api.example.com.google.internal.",
            "api.example.com."
        ]
    );
    assert_eq!(super::super::search::later_steps(&n, from_text("default.svc.cluster.local.").unwrap().as_name()), None);
    assert_eq!(super::super::search::later_steps(&n, from_text("api.example.com.").unwrap().as_name()), None);
}
