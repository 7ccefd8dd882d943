//! Exchanges with one upstream server: send one question, return a validated response.
//!
//! Owns sockets toward upstreams and the checks that make a response believable: a UDP
//! answer must come from the address and port queried (the socket is connected, so the
//! kernel drops anything else), carry the random ID sent, and answer the question asked.
//! Anything else is ignored and counted, and the wait goes on. Knows nothing of caching,
//! zones or clients; choosing which server to ask belongs to `forward`.

mod tcp;
mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use crate::cache::CacheKey;
use crate::wire::compose::{self, MAX_COMPOSED};
use crate::wire::{ResponseError, UpstreamResponse};

/// Which transport carried an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no response before the timeout")]
    Timeout,
    #[error("network error: {0}")]
    Io(std::io::ErrorKind),
    #[error("connection closed before a response")]
    Closed,
    #[error("invalid response: {0}")]
    Invalid(#[from] ResponseError),
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
#[derive(Clone, Copy, Debug)]
pub struct QueryOptions {
    /// The UDP payload size we advertise (and accept).
    pub udp_payload: u16,
}

/// Asks `server` the question in `key`, over UDP and, if the answer is truncated, again
/// over TCP (RFC 7766 section 5), all within `timeout`.
pub async fn exchange(server: SocketAddr, key: &CacheKey, opts: QueryOptions, timeout: Duration) -> Result<Exchange, UpstreamError> {
    tokio::time::timeout(timeout, async {
        let udp = udp::exchange(server, key, opts).await?;
        if !udp.response.is_truncated() {
            return Ok(udp);
        }
        let mut tcp = tcp::exchange(server, key, opts).await?;
        tcp.ignored += udp.ignored;
        Ok(tcp)
    })
    .await
    .unwrap_or(Err(UpstreamError::Timeout))
}

/// Composes the query for `key` with a fresh random ID. The name goes out lower-cased;
/// each client gets its own case back from the cache entry.
fn compose_query(key: &CacheKey, opts: QueryOptions) -> (u16, [u8; MAX_COMPOSED], usize) {
    let id: u16 = rand::random();
    let mut buf = [0u8; MAX_COMPOSED];
    let edns = Some((opts.udp_payload, key.dnssec_ok()));
    let len = compose::query(&mut buf, id, key.name(), key.qtype(), key.qclass(), key.checking_disabled(), edns);
    (id, buf, len)
}

/// Checks that `msg` is the response to query `id` for `key`. `Ok(None)` means "not ours":
/// keep waiting; `Err` means the server answered but with something unusable.
fn accept(msg: &[u8], id: u16, key: &CacheKey) -> Result<Option<UpstreamResponse>, ResponseError> {
    if msg.len() < 2 || u16::from_be_bytes([msg[0], msg[1]]) != id {
        return Ok(None);
    }
    match UpstreamResponse::parse(msg, key.name(), key.qtype(), key.qclass()) {
        Ok(r) => Ok(Some(r)),
        Err(ResponseError::WrongQuestion | ResponseError::NotAResponse) => Ok(None),
        Err(e) => Err(e),
    }
}
