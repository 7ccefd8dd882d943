//! A TCP stream toward an upstream that never lets an answer wait for a delayed ACK.
//!
//! Servers that write answers with Nagle's algorithm on (dnsmasq does) hold back a second
//! answer until the first is acknowledged, and Linux delays that ACK by up to 40 ms once a
//! connection looks interactive. With queries pipelined on a few pooled connections that
//! stall hits whole queues of queries: measured against dnsmasq with a pool of 8, one query
//! in six waited 32-64 ms and throughput halved. So the ACK for every read goes out at once
//! (`TCP_QUICKACK`, which the kernel clears again after use, hence set after each read).
//! Owns nothing but the socket options; framing and pipelining belong to `pool`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct QuickAck(TcpStream);

impl QuickAck {
    /// Also turns Nagle off on our side: a query must not wait for the previous one's ACK.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(QuickAck(stream))
    }

    fn ack_now(&self) {
        // Best effort: if it fails the only cost is the delay this exists to avoid.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.ack_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
