//! The UDP listener: one socket per worker thread on every listen address (`SO_REUSEPORT`,
//! so the kernel spreads clients over the workers), each read and answered by its own OS
//! thread in batches: `recvmmsg` takes up to [`BATCH`] queries in one call, hits are
//! answered inline into per-slot buffers, and `sendmmsg` sends the answers in one call.
//! No async runtime, no epoll, no allocation on this path. Misses are handed to the async
//! side as tasks, so a worker never waits on an upstream.
//!
//! A worker blocks in `recvmmsg` for at most `POLL`, then looks at the stop token and the
//! handover gate: a paused process stops reading within that time.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Handler, Local, Request, Transport};
use super::handover::Gate;
use crate::metrics::ListenerMetrics;
use crate::wire::MAX_MESSAGE;

/// Queries read (and answers sent) per system call at most.
pub const BATCH: usize = 32;
/// The largest query read; a longer datagram is dropped (no real client sends one).
const MAX_QUERY: usize = 4096;
/// How long a worker blocks before it checks for a stop or a handover.
const POLL: Duration = Duration::from_millis(50);

/// Binds a UDP socket with a large receive buffer, so a burst of queries (a job's pods all
/// starting at once) queues in the kernel rather than being dropped. `SO_REUSEPORT`, so
/// that every worker (and a successor that could not take the sockets over) binds the
/// same address.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps this at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A socket taken over from a predecessor (`handover`).
pub fn adopt(fd: OwnedFd) -> std::io::Result<std::net::UdpSocket> {
    Ok(std::net::UdpSocket::from(fd))
}

/// What a worker needs besides its socket.
#[derive(Clone)]
pub struct Worker {
    pub handler: Arc<Handler>,
    pub metrics: ListenerMetrics,
    /// Where misses run and are tracked.
    pub runtime: tokio::runtime::Handle,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    pub gate: Gate,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
}

/// Starts a worker thread serving `socket` until `stop`; the handle joins it.
pub fn spawn(name: String, socket: std::net::UdpSocket, worker: Worker) -> std::io::Result<std::thread::JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(POLL))?;
    std::thread::Builder::new().name(name).spawn(move || serve(socket, worker))
}

/// Per-worker buffers: allocated once, reused for every batch.
struct Buffers {
    queries: Vec<u8>,
    answers: Vec<u8>,
    received: MultiHeaders<SockaddrStorage>,
    sending: MultiHeaders<SockaddrStorage>,
}

fn serve(socket: std::net::UdpSocket, w: Worker) {
    let _runtime = w.runtime.enter();
    if let Some(cpu) = w.cpu {
        pin_to(cpu);
    }
    let socket = Arc::new(socket);
    let mut b = Buffers {
        queries: vec![0u8; BATCH * MAX_QUERY],
        answers: vec![0u8; BATCH * MAX_MESSAGE],
        received: MultiHeaders::preallocate(BATCH, None),
        sending: MultiHeaders::preallocate(BATCH, None),
    };
    let mut peers: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    let mut lengths = [0usize; BATCH];
    while !w.stop.is_cancelled() {
        if !w.gate.is_open() {
            std::thread::sleep(POLL);
            continue;
        }
        let Some(count) = receive(&socket, &mut b, &mut lengths, &mut peers) else { continue };
        let started = Instant::now();
        let mut replies: [(usize, usize); BATCH] = [(0, 0); BATCH];
        let mut n_replies = 0;
        for i in 0..count {
            let Some(peer) = peers[i].as_ref().and_then(socket_addr) else { continue };
            let req = Request { transport: Transport::Udp, client: peer, started, metrics: &w.metrics };
            let query = &b.queries[i * MAX_QUERY..i * MAX_QUERY + lengths[i]];
            let out = &mut b.answers[n_replies * MAX_MESSAGE..(n_replies + 1) * MAX_MESSAGE];
            match w.handler.answer_local(query, out, &req) {
                Local::Reply(len) => {
                    replies[n_replies] = (i, len);
                    n_replies += 1;
                }
                Local::Drop => {}
                Local::Miss(slot) => {
                    let (packet, socket, handler, metrics) = (query.to_vec(), socket.clone(), w.handler.clone(), w.metrics.clone());
                    w.tasks.spawn(async move {
                        let req = Request { transport: Transport::Udp, client: peer, started, metrics: &metrics };
                        if let Some(response) = handler.answer_miss(&packet, &req).await {
                            // Never block the runtime on a full send buffer: drop instead, as
                            // the network would.
                            let _ = sendto(socket.as_raw_fd(), &response, &SockaddrStorage::from(peer), MsgFlags::MSG_DONTWAIT);
                        }
                        drop(slot);
                    });
                }
            }
        }
        send(&socket, &mut b, &replies[..n_replies], &peers);
    }
}

/// Reads up to [`BATCH`] datagrams, waiting for the first at most [`POLL`]. Lengths and
/// sources land in `lengths` and `peers`; `None` when nothing came.
fn receive(socket: &std::net::UdpSocket, b: &mut Buffers, lengths: &mut [usize; BATCH], peers: &mut [Option<SockaddrStorage>; BATCH]) -> Option<usize> {
    let mut chunks = b.queries.chunks_mut(MAX_QUERY);
    let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH chunks"))]);
    // Timeouts and errors (ICMP errors of earlier sends surface here) end the batch empty.
    let results = recvmmsg(socket.as_raw_fd(), &mut b.received, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None).ok()?;
    let mut count = 0;
    for msg in results {
        lengths[count] = msg.bytes;
        // A query longer than the buffer is dropped rather than parsed cut short.
        peers[count] = if msg.flags.contains(MsgFlags::MSG_TRUNC) { None } else { msg.address };
        count += 1;
    }
    Some(count)
}

/// Sends the replies of a batch: `replies` holds (index of the query, answer length), the
/// answer of reply `k` being in answer slot `k`.
fn send(socket: &std::net::UdpSocket, b: &mut Buffers, replies: &[(usize, usize)], peers: &[Option<SockaddrStorage>; BATCH]) {
    let mut sent = 0;
    while sent < replies.len() {
        let pending = &replies[sent..];
        let mut chunks = b.answers.chunks(MAX_MESSAGE).skip(sent);
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| match (k < pending.len(), chunks.next()) {
            (true, Some(chunk)) => [IoSlice::new(&chunk[..pending[k].1])],
            _ => [IoSlice::new(&[])],
        });
        let addrs: [Option<SockaddrStorage>; BATCH] = std::array::from_fn(|k| pending.get(k).and_then(|&(i, _)| peers[i]));
        match sendmmsg(socket.as_raw_fd(), &mut b.sending, slices[..pending.len()].iter(), &addrs[..pending.len()], [] as [ControlMessage<'_>; 0], MsgFlags::empty()) {
            Ok(results) => {
                let n = results.count();
                if n == 0 {
                    return;
                }
                sent += n;
            }
            // An unreachable client or a full buffer: skip that one answer, as UDP would.
            Err(_) => sent += 1,
        }
    }
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    storage.as_sockaddr_in6().map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

fn pin_to(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() && sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok() {
        tracing::debug!(cpu, "UDP worker pinned");
    } else {
        tracing::warn!(cpu, "cannot pin the UDP worker to this CPU; it runs unpinned");
    }
}
