//! `server.pin_udp_workers` in a process restricted to some CPUs (a pod with a CPU set):
//! every worker is pinned to a CPU the process may use.

mod common;

use std::time::Duration;

use common::*;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs each thread of `pid` named `nodedns-udp-*` may run on, as the kernel lists them.
fn udp_worker_cpus(pid: u32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut workers: Vec<(String, String)> = tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?.trim().to_string();
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim().to_string();
            name.starts_with("nodedns-udp-").then_some((name, cpus))
        })
        .collect();
    workers.sort();
    workers
}

#[test]
fn pinned_workers_stay_within_the_cpus_the_process_may_use() {
    // This test's thread narrowed to its last CPU: nodedns, started from it, inherits that,
    // as a process in a cpuset does. On a machine of two CPUs that is CPU 1: counting CPUs
    // from 0 would put worker 0 outside the set.
    let mine = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let last = (0..CpuSet::count()).rev().find(|&c| mine.is_set(c).unwrap_or(false)).unwrap();
    let mut only = CpuSet::new();
    only.set(last).unwrap();
    sched_setaffinity(Pid::from_raw(0), &only).unwrap();

    let config = "server:\n  udp_workers: 2\n  pin_udp_workers: true\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), "127.0.0.1:9".into()]);
    let expected: Vec<(String, String)> = (0..2).map(|i| (format!("nodedns-udp-{i}"), last.to_string())).collect();
    // A worker pins itself as it starts, which may be just after nodedns reports ready.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut workers = udp_worker_cpus(nd.proc.child.id());
    while workers != expected && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(25));
        workers = udp_worker_cpus(nd.proc.child.id());
    }
    assert_eq!(workers, expected, "every worker on CPU {last}, the process's only one");
    assert!(!nd.log().contains("cannot pin"), "{}", nd.log());
}
