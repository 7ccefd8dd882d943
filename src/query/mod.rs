//! The query policy, transport-independent: what to answer and who is served. Listeners
//! hand it octets and a client address; it answers from the cache or a local rule, or
//! finishes a miss through the forwarder. Owns no socket and no process state.
//!
//! - [`handler`]: the hot path (parse, cache lookup, patched answer) and the miss path.
//! - [`admission`]: which clients are served, and their rate limits.
//! - [`querylog`]: the sampled, bounded JSON query log.
//! - [`explain`]: what the query path would do with a question, without doing it.

pub mod admission;
pub mod explain;
pub mod handler;
pub mod querylog;
