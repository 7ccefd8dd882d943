//! One query over UDP from a fresh socket: a random source port per query (RFC 5452) on
//! top of the random ID. A refused flow (ICMP port unreachable) is tried again from another
//! fresh socket: behind a DNAT-ed Service address each new flow may reach another server.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use super::{Exchange, QueryOptions, Sent, Transport, UpstreamError};
use crate::cache::CacheKey;

/// Asks from up to `flows` fresh sockets in turn while each is refused; any other outcome
/// (an answer, a timeout, another error) is final.
pub(super) async fn exchange(server: SocketAddr, key: &CacheKey, opts: QueryOptions, flows: usize) -> Result<Exchange, UpstreamError> {
    let mut left = flows.max(1);
    loop {
        left -= 1;
        match exchange_once(server, key, opts).await {
            Err(UpstreamError::Io(std::io::ErrorKind::ConnectionRefused)) if left > 0 => continue,
            other => return other,
        }
    }
}

async fn exchange_once(server: SocketAddr, key: &CacheKey, opts: QueryOptions) -> Result<Exchange, UpstreamError> {
    let local: SocketAddr = if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel delivers only datagrams from the server's address and port.
    socket.connect(server).await?;
    let sent = Sent::compose(key, opts, rand::random());
    socket.send(sent.octets()).await?;

    let mut buf = vec![0u8; usize::from(opts.udp_payload).max(512)];
    let mut ignored = 0;
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(response) = sent.accept(&buf[..n], key)? {
            buf.truncate(n);
            return Ok(Exchange { msg: buf, response, transport: Transport::Udp, ignored });
        }
        ignored += 1;
    }
}
