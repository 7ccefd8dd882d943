//! Kubernetes naming: names a pod's search walk produces that cannot exist, answered here
//! instead of upstream.
//!
//! A pod with `ndots:5` looks up `api.example.com` as seven names (its namespace, `svc` and
//! cluster suffixes, the node's search suffixes, then the name itself), times A and AAAA.
//! Six of each seven can be proven not to exist from the naming rules alone:
//! - [`rules`]: which names under a cluster domain the Kubernetes DNS specification allows,
//!   which namespaces exist, which host search suffixes the name cannot belong to (it ends
//!   in a public top-level domain), and the optional AAAA filter;
//! - [`namespaces`]: which namespaces exist (a fixed list, or a watch on the API);
//! - [`soa`]: the SOA each such answer carries, learned from the upstream that would
//!   otherwise have answered, so the denial looks exactly like the upstream's;
//! - [`search`]: the later steps of a walk, resolved as soon as its first step is seen.
//!
//! Owns those decisions only. Answers are built as upstream-shaped messages and go through
//! the ordinary cache; nothing here touches sockets, the cache's internals or upstreams
//! except through the forwarder.

pub mod namespaces;
pub mod rules;
pub mod search;
pub mod soa;

pub use rules::{LocalAnswer, NamespaceSource, Naming, NamingSettings, Reason};
pub use soa::SoaBook;
