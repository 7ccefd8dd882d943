//! The TCP listener (RFC 7766): many queries per connection, answered as they complete
//! (possibly out of order), an idle timeout, a cap on concurrent connections, and a cap on
//! queries in flight per connection so one client cannot hold unbounded work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::Gate;
use crate::metrics::http::AcceptBackoff;
use crate::metrics::{DropReason, ListenerMetrics, Metrics};
use crate::query::handler::{Handler, Local, Request};
use crate::wire::MAX_MESSAGE;
use crate::wire::Transport;
use crate::wire::header::HEADER_LEN;

/// Limits of the TCP listener.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    pub max_clients: usize,
    /// Connections from one source address at once.
    pub max_per_client: usize,
    pub max_inflight_per_connection: usize,
}

pub struct TcpServer {
    pub handler: Arc<Handler>,
    pub metrics: Arc<Metrics>,
    pub listener_metrics: ListenerMetrics,
    pub limits: TcpLimits,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    /// Open connections per source address (entries removed at zero, so bounded by
    /// `max_clients`).
    pub per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Closed while a successor serves (`handover`): accept nothing.
    pub gate: Gate,
}

/// Binds a listening TCP socket, `SO_REUSEPORT` as for UDP.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// A listening socket taken over from a predecessor (`handover`).
pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

impl TcpServer {
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let clients = Arc::new(Semaphore::new(self.limits.max_clients));
        let mut gate = self.gate.clone();
        let mut backoff = AcceptBackoff::new("dns-tcp");
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = gate.opened() => {}
            }
            let (stream, peer) = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = gate.closed() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        backoff.accepted();
                        a
                    }
                    Err(e) => {
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => return,
                            _ = backoff.failed(&e) => continue,
                        }
                    }
                },
            };
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                self.metrics.dropped(DropReason::TcpClientLimit);
                continue;
            };
            let Some(per_client) = ClientSlot::take(&self, peer.ip()) else {
                self.metrics.dropped(DropReason::TcpPerClientLimit);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            self.tasks.spawn(async move {
                this.metrics.tcp_clients.inc();
                this.connection(stream, peer).await;
                this.metrics.tcp_clients.dec();
                drop((permit, per_client));
            });
        }
    }

    async fn connection(self: &Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let (reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(self.limits.max_inflight_per_connection);
        let activity = Arc::new(Activity::new());
        let written = activity.clone();
        let write_loop = async move {
            let mut framed = Vec::new();
            while let Some(msg) = rx.recv().await {
                // Every response already waiting goes out in the same write.
                framed.clear();
                let mut next = Some(msg);
                while let Some(msg) = next {
                    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&msg);
                    next = rx.try_recv().ok();
                }
                if writer.write_all(&framed).await.is_err() {
                    return;
                }
                written.touch();
            }
            let _ = writer.shutdown().await;
        };
        let read_loop = self.read_queries(reader, peer, tx, activity);
        tokio::join!(read_loop, write_loop);
    }

    /// Reads framed queries until EOF, a framing error, idle timeout or shutdown; every
    /// response goes to `tx`. The connection is idle when no query is in flight and nothing
    /// was read or written for `idle_timeout` (RFC 7766 section 6.2.3); a client that sends
    /// part of a frame and stalls is idle too.
    async fn read_queries(self: &Arc<Self>, reader: OwnedReadHalf, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>, activity: Arc<Activity>) {
        let max_inflight = self.limits.max_inflight_per_connection;
        let inflight = Arc::new(Semaphore::new(max_inflight));
        let mut frames = FramedRead::new(reader, crate::wire::frame_codec());
        let mut out = vec![0u8; MAX_MESSAGE];
        loop {
            let idle_deadline = activity.last() + self.limits.idle_timeout;
            let frame = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                frame = frames.next() => frame,
                _ = tokio::time::sleep_until(idle_deadline) => {
                    if inflight.available_permits() < max_inflight {
                        activity.touch();
                    } else if activity.last() + self.limits.idle_timeout <= tokio::time::Instant::now() {
                        return;
                    }
                    continue;
                }
            };
            let packet = match frame {
                Some(Ok(p)) if p.len() >= HEADER_LEN => p,
                Some(Ok(_)) | Some(Err(_)) => {
                    self.metrics.dropped(DropReason::TcpFraming);
                    return;
                }
                None => return,
            };
            activity.touch();
            let req =
                Request { transport: Transport::Tcp, client: peer, started: Instant::now(), metrics: &self.listener_metrics, held: None };
            match self.handler.answer_local(&packet, &mut out, &req) {
                Local::Reply(len) => {
                    if tx.send(out[..len].to_vec()).await.is_err() {
                        return;
                    }
                }
                Local::Drop => {}
                Local::Miss(slot) => {
                    // Waiting here for a slot is what bounds one connection's work.
                    let Ok(permit) = inflight.clone().acquire_owned().await else { return };
                    let (this, tx, started) = (self.clone(), tx.clone(), req.started);
                    self.tasks.spawn(async move {
                        let req = Request { transport: Transport::Tcp, client: peer, started, metrics: &this.listener_metrics, held: None };
                        if let Some(response) = this.handler.answer_miss(&packet, &req).await {
                            let _ = tx.send(response).await;
                        }
                        drop((permit, slot));
                    });
                }
            }
        }
    }
}

/// One of a source address's connection slots, given back on drop.
struct ClientSlot(Arc<TcpServer>, IpAddr);

impl ClientSlot {
    fn take(server: &Arc<TcpServer>, ip: IpAddr) -> Option<ClientSlot> {
        let mut table = server.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entry(ip).or_insert(0);
        if *n >= server.limits.max_per_client {
            return None;
        }
        *n += 1;
        Some(ClientSlot(server.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut table = self.0.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.1);
            }
        }
    }
}

/// When a connection last read or wrote a message.
struct Activity {
    since: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { since: tokio::time::Instant::now(), last_ms: AtomicU64::new(0) }
    }
    fn touch(&self) {
        self.last_ms.store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn last(&self) -> tokio::time::Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}
