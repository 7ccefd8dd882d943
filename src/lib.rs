//! nodedns: a node-local DNS cache for Kubernetes.
//!
//! The modules in layers, bottom first. Each imports only from layers below it (a test,
//! `layering_points_down`, reads every `use crate::` and fails on one that points up):
//!
//! 1. [`wire`]: reading and writing DNS messages in place; [`ratelimit`]: the token bucket;
//!    [`gate`]: the listeners' pause switch.
//! 2. [`metrics`]: Prometheus metrics (CoreDNS names) and the health/readiness endpoint.
//! 3. [`cache`]: the bounded response cache and its TTL policy.
//! 4. [`upstream`]: one upstream server: UDP, the pipelined TCP/TLS pool, RTT and health.
//! 5. [`zones`]: longest-suffix routing of names to upstream groups.
//! 6. [`forward`]: the miss path: request coalescing, then the zone's upstream group.
//! 7. [`kubernetes`]: names a pod's search walk produces that cannot exist, denied locally;
//!    [`node`]: the node's addresses and NOTRACK rules for them; [`hosts`]: names answered
//!    from hosts(5) lines, inline and from a file; [`loops`]: forwarding-loop detection,
//!    probing each zone through the forwarder.
//! 8. [`query`]: the query policy: the hot path, admission, the query log, explain.
//! 9. [`listen`]: the UDP and TCP transports.
//! 10. [`config`]: the YAML file, a CoreDNS Corefile, node-cache's command line, resolv.conf,
//!     and the validated settings.
//! 11. [`process`]: the running process: build, bind, serve, reload, hand over, drain.
//! 12. [`diagnose`]: `explain`, `probe` and `stats`, the diagnostics run beside a node.
//! 13. [`cli`]: the command line.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cache;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod forward;
pub mod gate;
pub mod hosts;
pub mod kubernetes;
pub mod listen;
pub mod loops;
pub mod metrics;
pub mod node;
pub mod process;
pub mod query;
pub mod ratelimit;
pub mod upstream;
pub mod wire;
pub mod zones;

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod harness;
#[cfg(test)]
mod testutil;
