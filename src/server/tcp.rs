//! The TCP listener (RFC 7766): many queries per connection, answered as they complete
//! (possibly out of order), an idle timeout, a cap on concurrent connections, and a cap on
//! queries in flight per connection so one client cannot hold unbounded work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Handler, Local, Request, Transport};
use crate::metrics::{DropReason, ListenerMetrics, Metrics};
use crate::wire::MAX_MESSAGE;
use crate::wire::header::HEADER_LEN;

/// Limits of the TCP listener.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    pub max_clients: usize,
    pub max_inflight_per_connection: usize,
}

pub struct TcpServer {
    pub handler: Arc<Handler>,
    pub metrics: Arc<Metrics>,
    pub listener_metrics: ListenerMetrics,
    pub limits: TcpLimits,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

impl TcpServer {
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let clients = Arc::new(Semaphore::new(self.limits.max_clients));
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                self.metrics.dropped(DropReason::TcpClientLimit);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            self.tasks.spawn(async move {
                this.metrics.tcp_clients.inc();
                this.connection(stream, peer).await;
                this.metrics.tcp_clients.dec();
                drop(permit);
            });
        }
    }

    async fn connection(self: &Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(self.limits.max_inflight_per_connection);
        let write_loop = async move {
            while let Some(msg) = rx.recv().await {
                let mut framed = Vec::with_capacity(msg.len() + 2);
                framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                framed.extend_from_slice(&msg);
                if writer.write_all(&framed).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        };
        let read_loop = self.read_queries(&mut reader, peer, tx);
        tokio::join!(read_loop, write_loop);
    }

    /// Reads framed queries until EOF, error, idle timeout or shutdown; every response goes
    /// to `tx`. Returns (dropping `tx`'s last clone) once in-flight answers are sent.
    async fn read_queries(self: &Arc<Self>, reader: &mut OwnedReadHalf, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>) {
        let inflight = Arc::new(Semaphore::new(self.limits.max_inflight_per_connection));
        let mut out = vec![0u8; MAX_MESSAGE];
        loop {
            let frame = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                frame = tokio::time::timeout(self.limits.idle_timeout, read_frame(reader)) => frame,
            };
            let packet = match frame {
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => return,
                Ok(Err(FrameError::TooShort)) => {
                    self.metrics.dropped(DropReason::TcpFraming);
                    return;
                }
                Ok(Err(FrameError::Io)) | Err(_) => return,
            };
            let req = Request { transport: Transport::Tcp, client: peer, started: Instant::now(), metrics: &self.listener_metrics };
            match self.handler.answer_local(&packet, &mut out, &req) {
                Local::Reply(len) => {
                    if tx.send(out[..len].to_vec()).await.is_err() {
                        return;
                    }
                }
                Local::Drop => {}
                Local::Miss => {
                    // Waiting here for a slot is what bounds one connection's work.
                    let Ok(permit) = inflight.clone().acquire_owned().await else { return };
                    let (this, tx, started) = (self.clone(), tx.clone(), req.started);
                    self.tasks.spawn(async move {
                        let req = Request { transport: Transport::Tcp, client: peer, started, metrics: &this.listener_metrics };
                        if let Some(response) = this.handler.answer_miss(&packet, &req).await {
                            let _ = tx.send(response).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

enum FrameError {
    TooShort,
    Io,
}

/// Reads one length-prefixed message; `None` on a clean end of stream between messages.
async fn read_frame(reader: &mut OwnedReadHalf) -> Result<Option<Vec<u8>>, FrameError> {
    let len = match reader.read_u16().await {
        Ok(len) => usize::from(len),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(FrameError::Io),
    };
    if len < HEADER_LEN {
        return Err(FrameError::TooShort);
    }
    let mut packet = vec![0u8; len];
    reader.read_exact(&mut packet).await.map_err(|_| FrameError::Io)?;
    Ok(Some(packet))
}
