//! Upstream servers: how nodedns talks to them and what it knows about them.
//!
//! Owns sockets and connections toward upstreams and the checks that make a response
//! believable: a UDP answer must come from the address and port queried (the socket is
//! connected, so the kernel drops anything else), carry the random ID sent, and answer the
//! question asked; anything else is ignored and counted. Knows nothing of caching, zones or
//! clients; choosing which upstream to ask belongs to `forward`.
//!
//! - [`spec`]: how an upstream is written (`udp://`, `tcp://`, `tls://...#name`, bare).
//! - [`endpoint`]: one upstream at run time: transports, RTT, health, rate cap, probes.
//! - `udp`: one query from a fresh random-port socket.
//! - [`pool`]: bounded, pipelined TCP/TLS connections with a bounded wait queue.
//! - [`tls`]: DNS-over-TLS client configuration.
//! - `quickack`: pooled TCP streams that acknowledge every read at once.
//! - [`health`]: RTT and health, the state behind selection.

pub mod endpoint;
pub mod health;
pub mod pool;
mod quickack;
pub mod spec;
pub mod tls;
mod udp;

pub use endpoint::{Upstream, UpstreamSettings};
pub use pool::PoolSettings;
pub use spec::{Protocol, UpstreamSpec};

use crate::cache::CacheKey;
use crate::wire::compose::{self, MAX_COMPOSED};
use crate::wire::header::HEADER_LEN;
use crate::wire::{ResponseError, UpstreamResponse};

/// Fresh flows (UDP sockets, TCP connects) one exchange may use when the previous ones were
/// refused or hang: one address may be a Service whose backends kube-proxy picks per flow,
/// and with one of two dead, all six fail together once in 64.
const FRESH_FLOWS: usize = 6;

pub use crate::wire::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no response before the timeout")]
    Timeout,
    #[error("network error: {0}")]
    Io(std::io::ErrorKind),
    #[error("connection closed before a response")]
    Closed,
    #[error("cannot connect (or backing off after failed connects)")]
    Connect,
    #[error("connection pool full and its wait queue too")]
    QueueFull,
    #[error("over this upstream's queries-per-second cap")]
    RateLimited,
    #[error("invalid response: {0}")]
    Invalid(#[from] ResponseError),
}

impl UpstreamError {
    /// The `reason` label of `nodedns_upstream_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Io(_) => "network",
            UpstreamError::Closed => "closed",
            UpstreamError::Connect => "connect",
            UpstreamError::QueueFull => "queue_full",
            UpstreamError::RateLimited => "rate_limited",
            UpstreamError::Invalid(_) => "invalid_response",
        }
    }

    /// Whether this says something about the upstream's health (a full local queue or our
    /// own rate cap does not).
    pub fn counts_against_health(&self) -> bool {
        !matches!(self, UpstreamError::QueueFull | UpstreamError::RateLimited)
    }
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Io(e.kind())
    }
}

/// A validated response and what it took to get it.
#[derive(Debug)]
pub struct Exchange {
    pub msg: Vec<u8>,
    pub response: UpstreamResponse,
    pub transport: Transport,
    /// Datagrams that arrived on our socket but were not the answer (wrong ID or question).
    pub ignored: u32,
}

/// What we send upstream besides the question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryOptions {
    /// The UDP payload size we advertise (and accept).
    pub udp_payload: u16,
    /// Send the name in random letter case and accept only answers that echo it exactly
    /// ("0x20", draft-vixie-dnsext-dns0x20): an off-path forger must guess the case too.
    pub randomize_case: bool,
}

/// A query as sent: its octets and, for the acceptance check, its ID and name.
struct Sent {
    buf: [u8; MAX_COMPOSED],
    len: usize,
    id: u16,
    name_len: usize,
    exact_case: bool,
}

impl Sent {
    /// Composes the query for `key` with ID `id`. The name goes out lower-cased, or in
    /// random case with `randomize_case`; each client gets its own case back from the cache
    /// entry either way.
    fn compose(key: &CacheKey, opts: QueryOptions, id: u16) -> Sent {
        let mut buf = [0u8; MAX_COMPOSED];
        let edns = Some((opts.udp_payload, key.dnssec_ok()));
        let len = compose::query(&mut buf, id, key.name().as_bytes(), key.qtype(), key.qclass(), key.checking_disabled(), edns);
        let name_len = key.name().as_bytes().len();
        if opts.randomize_case {
            let mut bits: u64 = rand::random();
            for (i, b) in buf[HEADER_LEN..HEADER_LEN + name_len].iter_mut().enumerate() {
                if b.is_ascii_lowercase() && (bits >> (i % 64)) & 1 == 1 {
                    b.make_ascii_uppercase();
                }
                if i % 64 == 63 {
                    bits = rand::random();
                }
            }
        }
        Sent { buf, len, id, name_len, exact_case: opts.randomize_case }
    }

    fn octets(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Checks that `msg` is the response to this query. `Ok(None)` means "not ours": keep
    /// waiting; `Err` means the server answered but with something unusable.
    fn accept(&self, msg: &[u8], key: &CacheKey) -> Result<Option<UpstreamResponse>, ResponseError> {
        if msg.len() < 2 || u16::from_be_bytes([msg[0], msg[1]]) != self.id {
            return Ok(None);
        }
        let name = HEADER_LEN..HEADER_LEN + self.name_len;
        if self.exact_case && msg.get(name.clone()) != Some(&self.buf[name]) {
            return Ok(None);
        }
        match UpstreamResponse::parse(msg, key.name(), key.qtype(), key.qclass()) {
            Ok(r) => Ok(Some(r)),
            Err(ResponseError::WrongQuestion | ResponseError::NotAResponse) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
