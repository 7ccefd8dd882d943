//! The metrics endpoint under descriptor exhaustion: a process at its RLIMIT_NOFILE cannot
//! accept, and the listening socket stays readable, so an accept loop that retries at once
//! spins a core and writes a warning per try. It must back off, and serve again once
//! descriptors are free.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count() as u64).unwrap_or(0)
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields.get(11..13).map_or(0, |t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// Lowers the soft descriptor limit of running process `pid` to `soft`.
fn limit_fds(pid: u32, soft: u64) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on values owned here; a null new limit only reads.
    let read = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(read, 0, "read the descriptor limit of nodedns: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "lower the descriptor limit of nodedns: {}", std::io::Error::last_os_error());
}

#[test]
fn out_of_descriptors_the_metrics_endpoint_backs_off_and_then_serves_again() {
    // Nothing is asked over DNS, so the upstream is never used.
    let nd = Nodedns::start(&["--upstream".into(), "127.0.0.1:9".into()]);
    let pid = nd.proc.child.id();
    limit_fds(pid, open_fds(pid) + 8);

    // Held open (no request sent), each accepted one keeps a descriptor of nodedns; the
    // rest wait in the listen queue, accepted as soon as a descriptor is free.
    let held: Vec<TcpStream> = (0..40).filter_map(|_| TcpStream::connect_timeout(&nd.metrics, Duration::from_secs(1)).ok()).collect();
    assert_eq!(held.len(), 40, "the listen queue takes every connection");
    wait_until(Duration::from_secs(5), "an accept failure logged", || nd.log().contains("accept failed"));

    let (ticks, lines) = (cpu_ticks(pid), nd.log().lines().count());
    std::thread::sleep(Duration::from_secs(1));
    let (spent, logged) = (cpu_ticks(pid) - ticks, nd.log().lines().count() - lines);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    assert!(spent < hz / 5, "{spent} CPU ticks in one second of failing accepts (a spinning loop takes ~{hz})");
    assert!(logged < 20, "{logged} log lines in one second of failing accepts");

    drop(held);
    wait_until(Duration::from_secs(10), "metrics served again", || http_get(nd.metrics, "/metrics").is_some_and(|(code, _)| code == 200));
}
