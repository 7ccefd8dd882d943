//! Diagnostics for the person debugging a slow pod: `nodedns explain`, `probe` and
//! `stats`. Client-side only: they talk to a running nodedns over DNS and its HTTP
//! endpoint (or read a configuration file), never reach into a running process otherwise.
//!
//! - [`libc`]: what a pod's C library sends for one lookup.
//! - [`client`]: a DNS stub and an HTTP getter, the two ways these commands ask.
//! - [`explain`]: a lookup's queries, and what nodedns does with each.
//! - [`probe`]: repeated lookups, with latency histograms exported as metrics.
//! - [`stats`]: a human summary of a running instance's metrics.

pub mod client;
pub mod explain;
pub mod libc;
pub mod probe;
pub mod stats;

/// "1 query", "8 queries".
fn queries(n: usize) -> String {
    if n == 1 { "1 query".to_string() } else { format!("{n} queries") }
}
