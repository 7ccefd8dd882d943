//! The `process_*` metrics every Prometheus client library exports (CPU time, memory,
//! descriptors, start time), under the names and types of the Go client's process collector,
//! which CoreDNS and so node-local-dns export: read from `/proc/self` at each scrape, nothing
//! kept in between. No maintained crate does this for prometheus-client, and what is needed
//! is a few fields of two files.
//!
//! Linux only, as nodedns is. A file that cannot be read or parsed leaves its metrics out of
//! that scrape rather than exporting a made-up value.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The fields of `/proc/self/stat` used here, in their own units.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, clock ticks.
    utime: u64,
    stime: u64,
    /// When the process started, clock ticks after boot.
    starttime: u64,
    /// Virtual memory size, octets.
    vsize: u64,
    /// Resident set size, pages.
    rss: u64,
}

/// Parses a `/proc/PID/stat` line (proc(5)). The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field N of the line is rest's N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { utime: field(14)?, stime: field(15)?, starttime: field(22)?, vsize: field(23)?, rss: field(24)? })
}

/// The boot time in seconds since the epoch: the `btime` line of `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// What one scrape reports, read now.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

fn read() -> Reading {
    // SAFETY: sysconf only reads constants of the system.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let (ticks, page) = (ticks.max(1) as f64, page.max(1));
    let stat = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(parse_stat);
    let btime = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_btime);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given, owned here.
    let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then(|| limit.rlim_cur.min(i64::MAX as u64) as i64);
    Reading {
        cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
        resident_bytes: stat.as_ref().map(|s| s.rss as i64 * page),
        virtual_bytes: stat.as_ref().map(|s| s.vsize as i64),
        start_time_seconds: stat.as_ref().zip(btime).map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as i64),
        max_fds,
    }
}

/// Registered once; encodes a fresh [`Reading`] at every scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = read();
        if let Some(v) = r.cpu_seconds {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<f64>); 5] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", r.resident_bytes.map(|v| v as f64)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", r.virtual_bytes.map(|v| v as f64)),
            ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", r.start_time_seconds),
            ("process_open_fds", "Number of open file descriptors.", r.open_fds.map(|v| v as f64)),
            ("process_max_fds", "Maximum number of open file descriptors.", r.max_fds.map(|v| v as f64)),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis_of_the_command_name() {
        // A command name with a space and a parenthesis, as a process may give itself.
        let line = "4242 (node dns) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 12345 987654321 2048 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(Stat { utime: 250, stime: 75, starttime: 12345, vsize: 987654321, rss: 2048 }));
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_btime("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
    }

    #[test]
    fn this_process_reads_as_running_now_with_memory_and_descriptors() {
        let r = read();
        assert!(r.resident_bytes.is_some_and(|v| v > 0), "{r:?}");
        assert!(r.virtual_bytes.unwrap_or(0) >= r.resident_bytes.unwrap_or(0), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n >= 3) && r.max_fds.unwrap_or(0) >= r.open_fds.unwrap_or(0), "{r:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = r.start_time_seconds.expect("a start time");
        assert!(started <= now + 1.0 && started > now - 3600.0, "started {started}, now {now}");
        assert!(r.cpu_seconds.is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn encodes_under_the_go_clients_names_and_types() {
        let text = crate::metrics::exposition(|r| r.register_collector(Box::new(ProcessCollector)));
        for (name, kind) in [
            ("process_cpu_seconds", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_start_time_seconds", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} in {text}");
        }
        assert!(text.lines().any(|l| l.starts_with("process_cpu_seconds_total ")), "{text}");
    }
}
