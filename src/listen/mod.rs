//! The transports: sockets, batching and framing for UDP and TCP. They hand each query's
//! octets to `query::handler` and send what it writes; they never decide an answer.
//!
//! - [`udp`]: one thread per worker, `recvmmsg`/`sendmmsg` batches, misses handed to the runtime.
//! - [`tcp`]: accepted connections, RFC 7766 framing, connection and in-flight caps.

pub mod tcp;
pub mod udp;
