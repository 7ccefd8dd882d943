//! The UDP listener: one socket per worker thread on every listen address (`SO_REUSEPORT`,
//! so the kernel spreads clients over the workers), each read and answered by its own OS
//! thread in batches ([`batch`]): `recvmmsg` takes up to [`BATCH`] queries in one call, hits
//! are answered inline into per-slot buffers, and `sendmmsg` sends the answers in one call.
//! No async runtime, no epoll, no allocation on this path. Misses are handed to the async
//! side as tasks, so a worker never waits on an upstream.
//!
//! A worker blocks in `recvmmsg` for at most `POLL`, and a busy one reads batches for at
//! most `LOOK`, before it looks at the stop token and the handover gate: a paused process
//! stops reading within that time.

mod batch;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendto};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::Gate;
use crate::metrics::{HeldLatencies, HeldSizes, ListenerMetrics};
use crate::query::handler::{Handler, Local, Request};
use crate::wire::Transport;
use crate::wire::name::MAX_NAME;
use batch::{BATCH, Batch};

/// How long a worker blocks before it checks for a stop or a handover.
const POLL: Duration = Duration::from_millis(50);
/// How often a busy worker checks for a stop or a handover.
const LOOK: Duration = Duration::from_millis(5);

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
    /// The address the socket is bound to.
    pub local: std::net::IpAddr,
    pub metrics: ListenerMetrics,
    /// Where misses run and are tracked.
    pub runtime: tokio::runtime::Handle,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    pub gate: Gate,
    /// Pin the thread to the CPU of this index among those the process may use (modulo
    /// their number): worker `i` passes `i`.
    pub cpu: Option<usize>,
}

/// Starts a worker thread serving `socket` until `stop`; the handle joins it.
pub fn spawn(name: String, socket: std::net::UdpSocket, worker: Worker) -> std::io::Result<std::thread::JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(POLL))?;
    std::thread::Builder::new().name(name).spawn(move || serve(socket, worker))
}

fn serve(socket: std::net::UdpSocket, w: Worker) {
    let _runtime = w.runtime.enter();
    if let Some(n) = w.cpu {
        match pin(n) {
            Ok(cpu) => tracing::debug!(cpu, "UDP worker pinned"),
            Err(e) => tracing::warn!(worker = n, error = %e, "cannot pin the UDP worker; it runs unpinned"),
        }
    }
    let socket = Arc::new(socket);
    let fd = socket.as_raw_fd();
    let mut batch = Batch::new();
    let mut scratch = Scratch {
        lowers: Box::new([[0u8; MAX_NAME]; BATCH]),
        replies: [(0, 0); BATCH],
        held: HeldLatencies::default(),
        sizes: HeldSizes::default(),
    };
    let (mut look, mut next_look) = (true, Instant::now());
    loop {
        if look {
            if w.stop.is_cancelled() {
                return;
            }
            if !w.gate.is_open() {
                std::thread::sleep(POLL);
                continue;
            }
        }
        // Timeouts and errors (ICMP errors of earlier sends surface here) end the batch empty.
        let Ok(count) = batch.receive(fd) else {
            look = true;
            continue;
        };
        let started = Instant::now();
        // The token and the gate each take a lock to read: looked at every LOOK, not per batch.
        look = started >= next_look;
        if look {
            next_look = started + LOOK;
        }
        let replies = answer_batch(&w, &socket, &mut batch, count, &mut scratch, started);
        batch.send(fd, &scratch.replies[..replies]);
        if scratch.held.any() {
            scratch.held.release(&w.metrics, started.elapsed().as_secs_f64());
        }
        scratch.sizes.release(&w.metrics);
    }
}

/// What a worker reuses from one batch to the next besides the batch's buffers.
struct Scratch {
    /// Each query's lower-cased name, which its parsed form points into.
    lowers: Box<[[u8; MAX_NAME]; BATCH]>,
    /// The answers to send: (datagram index, answer length).
    replies: [(usize, usize); BATCH],
    held: HeldLatencies,
    /// The sizes of the batch's answers and their queries.
    sizes: HeldSizes,
}

/// Answers the `count` datagrams of the last receive: hits and local answers into their
/// slots, listed in `scratch.replies` (how many is returned); misses go to the async side.
fn answer_batch(
    w: &Worker,
    socket: &Arc<std::net::UdpSocket>,
    batch: &mut Batch,
    count: usize,
    scratch: &mut Scratch,
    started: Instant,
) -> usize {
    let (received, mut answers) = batch.split();
    // Every query is read, and its cache slot then its entry loaded, before any is
    // answered: the batch waits for memory about once per step instead of twice per
    // query. A lone query has nothing to overlap its waits with.
    let ahead = count > 1;
    let mut parsed = ArrayVec::<_, BATCH>::new();
    for (i, lower) in scratch.lowers.iter_mut().take(count).enumerate() {
        let Some(packet) = received.query(i) else { continue };
        let query = w.handler.parse(packet, lower);
        if ahead {
            w.handler.prefetch_slots(&query);
        }
        parsed.push((i, packet, query));
    }
    if ahead {
        for (_, _, query) in &parsed {
            w.handler.prefetch_entry(query);
        }
    }
    let mut replies = 0;
    for &(i, packet, ref query) in &parsed {
        let Some(peer) = received.peer(i) else { continue };
        let req =
            Request { transport: Transport::Udp, client: peer, local: w.local, started, metrics: &w.metrics, held: Some(&scratch.held) };
        match w.handler.answer_parsed(query, answers.room(i), &req) {
            Local::Reply(len) => {
                scratch.replies[replies] = (i, len);
                scratch.sizes.hold(packet.len(), len);
                replies += 1;
            }
            Local::Drop => {}
            Local::Miss(slot) => spawn_miss(w, socket.clone(), packet.to_vec(), peer, started, slot),
        }
    }
    replies
}

/// Resolves a miss on the async side and sends its answer from the worker's socket.
fn spawn_miss(
    w: &Worker,
    socket: Arc<std::net::UdpSocket>,
    packet: Vec<u8>,
    peer: SocketAddr,
    started: Instant,
    slot: OwnedSemaphorePermit,
) {
    let (handler, metrics, local) = (w.handler.clone(), w.metrics.clone(), w.local);
    w.tasks.spawn(async move {
        let req = Request { transport: Transport::Udp, client: peer, local, started, metrics: &metrics, held: None };
        if let Some(response) = handler.answer_miss(&packet, &req).await {
            metrics.sizes(packet.len(), response.len());
            // Never block the runtime on a full send buffer: drop instead, as the network would.
            let _ = sendto(socket.as_raw_fd(), &response, &SockaddrStorage::from(peer), MsgFlags::MSG_DONTWAIT);
        }
        drop(slot);
    });
}

/// Why a UDP worker runs unpinned.
#[derive(Debug, thiserror::Error)]
enum PinError {
    #[error("cannot read the CPUs this process may use: {0}")]
    Allowed(nix::Error),
    #[error("this process may use no CPU")]
    NoCpu,
    #[error("cannot pin to CPU {0}: {1}")]
    Pin(usize, nix::Error),
}

/// Pins the calling thread to the `n`-th CPU this process may use; returns that CPU. Counted
/// within the process's own set, not from CPU 0: in a pod with a CPU set, CPU `n` is likely
/// not ours, and pinning to it fails (or, under `taskset`, escapes the restriction).
fn pin(n: usize) -> Result<usize, PinError> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    // The process's set is its main thread's; this thread's own may already be narrowed.
    let allowed = sched_getaffinity(Pid::this()).map_err(PinError::Allowed)?;
    let cpu = nth_allowed(&allowed, n).ok_or(PinError::NoCpu)?;
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| PinError::Pin(cpu, e))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| PinError::Pin(cpu, e))?;
    Ok(cpu)
}

/// The `n`-th CPU of `allowed`, counting modulo its size; `None` if it is empty.
fn nth_allowed(allowed: &nix::sched::CpuSet, n: usize) -> Option<usize> {
    let cpus = || (0..nix::sched::CpuSet::count()).filter(|&cpu| allowed.is_set(cpu).unwrap_or(false));
    let count = cpus().count();
    if count == 0 {
        return None;
    }
    cpus().nth(n % count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::CpuSet;

    fn set(cpus: &[usize]) -> CpuSet {
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu).unwrap();
        }
        set
    }

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        let allowed = set(&[2, 5, 7]);
        let cpus: Vec<_> = (0..5).map(|n| nth_allowed(&allowed, n)).collect();
        assert_eq!(cpus, [Some(2), Some(5), Some(7), Some(2), Some(5)]);
        assert_eq!(nth_allowed(&set(&[1]), 0), Some(1), "worker 0 of a one-CPU pod on CPU 1");
        assert_eq!(nth_allowed(&set(&[]), 0), None);
    }
}
