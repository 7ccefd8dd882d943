//! The binary's command line and lifecycle: config checking, refusing a forwarding loop,
//! and a SIGTERM drain that answers in-flight queries before exiting 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

fn nodedns(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn check_config_accepts_a_good_file_and_names_file_line_and_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "listen: [127.0.0.1:1053]\nupstreams: [192.0.2.53:53]\n").unwrap();
    let (ok, out) = nodedns(&["check-config", good.to_str().unwrap()]);
    assert!(ok, "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: [127.0.0.1:1053]\nupstreams: [192.0.2.53:53]\nserver:\n  tcp_idle_timout: 5s\n").unwrap();
    let (ok, out) = nodedns(&["check-config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains(&format!("{}:4: server", bad.display())), "{out}");
    assert!(out.contains("tcp_idle_timout"), "{out}");

    // `run` refuses the same file and does not start.
    let (ok, out) = nodedns(&["run", "--config", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("tcp_idle_timout"), "{out}");
}

#[test]
fn refuses_to_forward_to_its_own_listen_address() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (ok, out) = nodedns(&["run", "--listen", &addr, "--upstream", &addr, "--metrics", &format!("127.0.0.1:{}", free_port())]);
    assert!(!ok);
    assert!(out.contains("would loop"), "{out}");
}

#[test]
fn sigterm_answers_in_flight_queries_then_exits_zero() {
    let slow = FakeUpstream::start(Behaviour::AnswerAfter(Duration::from_millis(600)));
    let mut nd = Nodedns::start(&["--upstream".into(), slow.addr.to_string()]);
    let dns = nd.dns;
    let client = std::thread::spawn(move || query_udp(dns, "drain.example.", RecordType::A, 77, Duration::from_secs(3)));
    wait_until(Duration::from_secs(2), "query reached upstream", || slow.count() == 1);
    let signalled = Instant::now();
    let status = nd.proc.terminate(Duration::from_secs(5)).expect("exits after draining");
    assert!(status.success(), "exit status {status}");
    let answer = client.join().unwrap().expect("in-flight query answered during drain");
    assert_eq!(answer.answers.len(), 1, "{answer:?}\n{}", nd.log());
    assert!(signalled.elapsed() < Duration::from_secs(2));
    // After exit nothing answers.
    assert!(query_udp(dns, "drain.example.", RecordType::A, 78, Duration::from_millis(300)).is_none());
}

#[test]
fn unparseable_flag_values_are_rejected() {
    let (ok, out) = nodedns(&["run", "--forward", "cluster.local"]);
    assert!(!ok && out.contains("ZONE=ADDR:PORT"), "{out}");
    let (ok, out) = nodedns(&["run", "--upstream", "nonsense"]);
    assert!(!ok && out.contains("not an upstream"), "{out}");
}

#[test]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    // `kubectl logs` reads the container's stderr from a pipe: escape codes there are noise.
    let upstream = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let nd = Nodedns::start(&["--upstream".into(), upstream.addr.to_string()]);
    let log = nd.log();
    assert!(log.contains("serving DNS over UDP"), "{log}");
    assert!(!log.contains('\u{1b}'), "an escape code in a log written to a file:\n{log:?}");
}
