//! One query over a new TCP connection (RFC 7766 two-octet length framing). Used when a UDP
//! answer comes back truncated.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Exchange, QueryOptions, Transport, UpstreamError, accept, compose_query};
use crate::cache::CacheKey;

pub(super) async fn exchange(server: SocketAddr, key: &CacheKey, opts: QueryOptions) -> Result<Exchange, UpstreamError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let (id, query, len) = compose_query(key, opts);
    let mut framed = Vec::with_capacity(len + 2);
    framed.extend_from_slice(&(len as u16).to_be_bytes());
    framed.extend_from_slice(&query[..len]);
    stream.write_all(&framed).await?;

    let mut ignored = 0;
    loop {
        let size = match stream.read_u16().await {
            Ok(size) => usize::from(size),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(UpstreamError::Closed),
            Err(e) => return Err(e.into()),
        };
        let mut msg = vec![0u8; size];
        stream.read_exact(&mut msg).await?;
        if let Some(response) = accept(&msg, id, key)? {
            return Ok(Exchange { msg, response, transport: Transport::Tcp, ignored });
        }
        ignored += 1;
    }
}
