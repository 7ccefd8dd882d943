//! nodedns: a node-local DNS cache for Kubernetes.
//!
//! The modules, in the order a query meets them:
//!
//! - [`server`]: UDP and TCP listeners and the hot path that answers from the cache.
//! - [`wire`]: reading and writing DNS messages in place.
//! - [`cache`]: the bounded response cache and its TTL policy.
//! - [`kubernetes`]: names a pod's search walk produces that cannot exist, denied locally.
//! - [`forward`]: the miss path: request coalescing, then the zone's upstream group.
//! - [`zones`]: longest-suffix routing of names to upstream groups.
//! - [`upstream`]: one upstream server: UDP, the pipelined TCP/TLS pool, RTT and health.
//! - [`ratelimit`]: the token bucket behind per-client and per-upstream rate caps.
//! - [`node`]: the node's addresses and NOTRACK rules for them.
//! - [`metrics`]: Prometheus metrics (CoreDNS names) and the health/readiness endpoint.
//! - [`config`]: the YAML file, resolv.conf, and the validated settings.
//! - [`diagnose`]: `explain`, `probe` and `stats`, the diagnostics run beside a node.
//! - [`cli`]: the command line.

pub mod cache;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod forward;
pub mod kubernetes;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod server;
pub mod upstream;
pub mod wire;
pub mod zones;

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod harness;
#[cfg(test)]
mod testutil;
