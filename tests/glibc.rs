//! glibc's own resolver (`getent`, through NSS and resolv.conf) resolving through nodedns.
//! Everything runs inside a network namespace the test creates, with only `lo`, so
//! nodedns can own port 53 there and `ip netns exec` can give it its own resolv.conf.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn glibc_getent_resolves_names_through_nodedns() {
    require("getent");
    require("dig");
    let ns = Netns::create("glibc", "search test.example\nnameserver 127.0.0.1\noptions timeout:2 attempts:2\n");
    let dir = tempfile::tempdir().unwrap();
    let _named = Named::spawn(dir.path(), 5300, &[("test.example", test_zone("test.example"))], Some(&ns.name));
    let nd_log = std::fs::File::create(dir.path().join("nodedns.log")).unwrap();
    let _nodedns = Proc {
        child: in_netns(Some(&ns.name), env!("CARGO_BIN_EXE_nodedns"))
            .args(["run", "--listen", "127.0.0.1:53", "--upstream", "127.0.0.1:5300", "--metrics", "127.0.0.1:9253"])
            .stdout(Stdio::null())
            .stderr(nd_log)
            .spawn()
            .unwrap(),
        name: "nodedns",
    };
    wait_until(Duration::from_secs(15), "nodedns answers in the namespace", || {
        ns.run("dig", &["@127.0.0.1", "+short", "+time=1", "+tries=1", "www.test.example"]).1.contains("192.0.2.1")
    });

    let (ok, out) = ns.run("getent", &["ahosts", "www.test.example"]);
    assert!(ok, "getent ahosts failed");
    assert!(out.contains("192.0.2.1") && out.contains("2001:db8::1"), "A and AAAA through glibc:\n{out}");

    let (ok, out) = ns.run("getent", &["ahostsv4", "chain1.test.example"]);
    assert!(ok && out.contains("192.0.2.1"), "CNAME chain through glibc:\n{out}");

    // The search list: glibc expands `alias` to alias.test.example itself.
    let (ok, out) = ns.run("getent", &["ahosts", "alias"]);
    assert!(ok && out.contains("192.0.2.1") && out.contains("2001:db8::1"), "search-list expansion:\n{out}");

    let (ok, _) = ns.run("getent", &["hosts", "missing.test.example"]);
    assert!(!ok, "a name that does not exist is not found");

    assert!(named_queries_for(dir.path(), "www.test.example", "A") >= 1, "named was asked by nodedns");
}
