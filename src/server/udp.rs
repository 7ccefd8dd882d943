//! The UDP listener: one receive loop per socket. Hits are answered inline from the loop;
//! misses are handed to a task so the loop never waits on an upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Handler, Local, Request, Transport};
use super::handover::Gate;
use crate::metrics::ListenerMetrics;
use crate::wire::MAX_MESSAGE;

/// Binds a UDP socket with a large receive buffer, so a burst of queries (a job's pods all
/// starting at once) queues in the kernel rather than being dropped. `SO_REUSEPORT`, so
/// that a successor that could not take this socket over can still bind beside it.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps this at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A socket taken over from a predecessor (`handover`).
pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::from(fd);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

pub async fn serve(socket: UdpSocket, handler: Arc<Handler>, metrics: ListenerMetrics, tasks: TaskTracker, stop: CancellationToken, mut gate: Gate) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = gate.opened() => {}
        }
        let (n, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = gate.closed() => continue,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some kernels; keep serving.
                Err(_) => continue,
            },
        };
        let req = Request { transport: Transport::Udp, client: peer, started: Instant::now(), metrics: &metrics };
        match handler.answer_local(&buf[..n], &mut out, &req) {
            Local::Reply(len) => {
                let _ = socket.send_to(&out[..len], peer).await;
            }
            Local::Drop => {}
            Local::Miss(slot) => {
                let packet = buf[..n].to_vec();
                let (socket, handler, metrics, started) = (socket.clone(), handler.clone(), metrics.clone(), req.started);
                tasks.spawn(async move {
                    let req = Request { transport: Transport::Udp, client: peer, started, metrics: &metrics };
                    if let Some(response) = handler.answer_miss(&packet, &req).await {
                        let _ = socket.send_to(&response, peer).await;
                    }
                    drop(slot);
                });
            }
        }
    }
}
