//! Upgrades that drop nothing: a starting nodedns takes the listening sockets and the cache
//! of the one already running, over a unix socket, instead of opening its own.
//!
//! Two processes bound with plain `SO_REUSEPORT` split the traffic, and when the old one
//! closes its socket the datagrams queued on it are lost (Unbound lost 21 of 60k queries so
//! in a handover measured here). Passing the socket itself (`SCM_RIGHTS`) keeps one kernel
//! queue throughout: whichever process reads it, nothing queued is dropped.
//!
//! The exchange, on a stream socket at `server.handover_socket`:
//! 1. successor -> predecessor: `NODEDNS-HANDOVER 1\n`;
//! 2. predecessor -> successor: a u32 length and a descriptor (`udp|tcp|http ADDR` lines)
//!    carrying the listening sockets as `SCM_RIGHTS`, one per line, then a u64 length and a
//!    cache snapshot (`cache::snapshot`);
//! 3. the successor loads the cache, starts serving, and sends `SERVING\n`;
//! 4. the predecessor stops reading its sockets (its in-flight queries are still answered)
//!    and reports not ready. If the successor's connection then closes while the predecessor
//!    is still alive (the successor crashed), the predecessor serves again.
//!
//! Owns the exchange and the switch of the pause gate ([`crate::gate::Gate`]) only; binding
//! and serving stay with the listeners.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::sync::watch;

use crate::cache::{Cache, snapshot};

const HELLO: &[u8] = b"NODEDNS-HANDOVER 1\n";
const SERVING: &[u8] = b"SERVING\n";
/// Most sockets passed in one message (Linux's SCM_MAX_FD): every UDP worker's socket and the
/// TCP listener on every listen address, plus metrics.
const MAX_SOCKETS: usize = 253;
/// The longest descriptor line: role, space, the longest socket address text (IPv6 with an
/// embedded IPv4 address, a scope and a port), newline.
const MAX_LINE: usize = "http ".len() + "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535".len() + 1;
/// The longest descriptor a predecessor can send; a longer length is garbage, not a reason
/// to allocate it.
const MAX_DESCRIPTOR: usize = MAX_SOCKETS * MAX_LINE;
/// How long the predecessor waits for its successor to start serving.
const SUCCESSOR_START: Duration = Duration::from_secs(60);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("handover socket {path}: {what}")]
    Protocol { path: PathBuf, what: String },
}

/// What a listening socket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Udp,
    Tcp,
    Http,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Udp => "udp",
            Role::Tcp => "tcp",
            Role::Http => "http",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Udp, Role::Tcp, Role::Http].into_iter().find(|r| r.as_str() == s)
    }
}

/// The sockets and cache received from a predecessor.
pub struct Inheritance {
    sockets: Vec<(Role, SocketAddr, OwnedFd)>,
    pub snapshot: Vec<u8>,
    link: UnixStream,
}

impl Inheritance {
    /// The predecessor's socket for `role` on `addr`, if it had one.
    pub fn take(&mut self, role: Role, addr: SocketAddr) -> Option<OwnedFd> {
        let i = self.sockets.iter().position(|(r, a, _)| *r == role && *a == addr)?;
        Some(self.sockets.swap_remove(i).2)
    }

    /// Tells the predecessor to stop reading. The returned link must live as long as this
    /// process serves: its closing tells the predecessor to serve again.
    pub fn serving(mut self) -> std::io::Result<UnixStream> {
        for (role, addr, _) in &self.sockets {
            tracing::warn!(role = role.as_str(), %addr, "the predecessor served this address; this configuration does not, so it goes unserved");
        }
        self.link.write_all(SERVING)?;
        Ok(self.link)
    }
}

/// Connects to a predecessor at `path` and takes its sockets and cache. `None` when there is
/// no predecessor (no socket file, or nobody listening on it).
pub fn inherit(path: &Path) -> Result<Option<Inheritance>, HandoverError> {
    let io = |source| HandoverError::Io { path: path.to_owned(), source };
    let protocol = |what: &str| HandoverError::Protocol { path: path.to_owned(), what: what.into() };
    let mut link = match UnixStream::connect(path) {
        Ok(link) => link,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    link.set_read_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io)?;
    link.set_write_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io)?;
    link.write_all(HELLO).map_err(io)?;

    let (descriptor, fds) = receive_sockets(&link).map_err(io)?;
    let lines: Vec<&str> = descriptor.lines().collect();
    if lines.len() != fds.len() {
        return Err(protocol(&format!("{} sockets described, {} received", lines.len(), fds.len())));
    }
    let mut sockets = Vec::with_capacity(fds.len());
    for (line, fd) in lines.into_iter().zip(fds) {
        let (role, addr) = line.split_once(' ').ok_or_else(|| protocol("bad descriptor"))?;
        let role = Role::parse(role).ok_or_else(|| protocol("bad socket role"))?;
        let addr = addr.parse().map_err(|_| protocol("bad socket address"))?;
        sockets.push((role, addr, fd));
    }
    let mut len = [0u8; 8];
    link.read_exact(&mut len).map_err(io)?;
    let len = u64::from_be_bytes(len);
    if len > 1 << 32 {
        return Err(protocol("cache snapshot larger than 4 GiB"));
    }
    let mut snapshot = vec![0u8; len as usize];
    link.set_read_timeout(Some(SUCCESSOR_START)).map_err(io)?;
    link.read_exact(&mut snapshot).map_err(io)?;
    link.set_read_timeout(None).map_err(io)?;
    Ok(Some(Inheritance { sockets, snapshot, link }))
}

/// Reads the descriptor and the sockets attached to it. The descriptor's length comes first,
/// so the buffer is sized from what the predecessor sent: a fixed one would cap the sockets
/// at what happens to fit (three IPv6 addresses with 64 workers each need about 10 KiB).
fn receive_sockets(link: &UnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let (got, fds) = receive_with_rights(link, &mut len)?;
    if got == 0 {
        return Err(invalid("short handover message"));
    }
    let mut reader = link;
    reader.read_exact(&mut len[got..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_DESCRIPTOR {
        return Err(invalid("handover descriptor too long"));
    }
    let mut descriptor = vec![0u8; len];
    reader.read_exact(&mut descriptor)?;
    let descriptor = String::from_utf8(descriptor).map_err(|_| invalid("descriptor is not text"))?;
    Ok((descriptor, fds))
}

/// Reads into `buf` and takes the sockets passed with those octets. The kernel hands the
/// sockets over with the first octet read of the message they came with, so a short read
/// (the length alone) is enough to receive all of them.
fn receive_with_rights(link: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(link.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just created these descriptors for this process, and
            // nothing else refers to them.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((msg.bytes, fds))
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// What a running process offers its successor.
pub struct Offer {
    /// Duplicates of the listening sockets, so they stay valid whatever the listeners do.
    pub sockets: Vec<(Role, SocketAddr, OwnedFd)>,
    pub cache: Arc<Cache>,
    pub gate: watch::Sender<bool>,
    /// Set once the sockets have been sent to a successor, cleared if it then fails to
    /// serve: a process stopped in between leaves the node's addresses and rules to it.
    pub passed: Arc<std::sync::atomic::AtomicBool>,
    /// Readiness follows the gate.
    pub on_pause: Box<dyn Fn(bool) + Send>,
}

/// Listens at `path` (replacing whatever socket file was there: a predecessor's, already
/// taken over, or a dead one) and hands over to successors, one at a time, on a thread of
/// its own. Returns the path's identity so that only this process removes it.
pub fn offer(path: &Path, offer: Offer) -> Result<OfferedAt, HandoverError> {
    let io = |source| HandoverError::Io { path: path.to_owned(), source };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).map_err(io)?);
    let shown = path.display().to_string();
    let passed = offer.passed.clone();
    std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            for link in listener.incoming() {
                match link.map(|link| hand_over(link, &offer)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => tracing::warn!(socket = %shown, error = %e, "handover failed; still serving"),
                }
            }
        })
        .map_err(io)?;
    Ok(OfferedAt { path: path.to_owned(), inode, passed })
}

/// The socket file this process listens on for successors.
pub struct OfferedAt {
    path: PathBuf,
    inode: u64,
    passed: Arc<std::sync::atomic::AtomicBool>,
}

impl OfferedAt {
    /// Whether the sockets are with a successor that has not failed to serve.
    pub fn passed(&self) -> bool {
        self.passed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Removes the socket file at exit, unless a successor has already replaced it.
    pub fn withdraw(&self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One handover, predecessor side. Returns when the successor's link closes, or at once
/// if the successor never started serving.
fn hand_over(mut link: UnixStream, offer: &Offer) -> std::io::Result<()> {
    link.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    link.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut hello = [0u8; HELLO.len()];
    link.read_exact(&mut hello)?;
    if hello != HELLO {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a nodedns successor"));
    }
    let descriptor: String = offer.sockets.iter().map(|(role, addr, _)| format!("{} {addr}\n", role.as_str())).collect();
    let mut message = (descriptor.len() as u32).to_be_bytes().to_vec();
    message.extend_from_slice(descriptor.as_bytes());
    let fds: Vec<RawFd> = offer.sockets.iter().map(|(_, _, fd)| fd.as_raw_fd()).collect();
    let sent = sendmsg::<()>(link.as_raw_fd(), &[IoSlice::new(&message)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)?;
    // A stream socket may take part of a long message; the sockets went with that part.
    link.write_all(&message[sent..])?;

    let started = std::time::Instant::now();
    let cache = snapshot::encode(&offer.cache, std::time::Instant::now(), std::time::SystemTime::now());
    link.write_all(&(cache.len() as u64).to_be_bytes())?;
    link.write_all(&cache)?;
    tracing::info!(sockets = fds.len(), cache_bytes = cache.len(), took = ?started.elapsed(), "sockets and cache handed to a successor");

    offer.passed.store(true, std::sync::atomic::Ordering::SeqCst);
    link.set_read_timeout(Some(SUCCESSOR_START))?;
    let mut serving = [0u8; SERVING.len()];
    let confirmed = link.read_exact(&mut serving).is_ok() && serving == SERVING;
    if !confirmed {
        offer.passed.store(false, std::sync::atomic::Ordering::SeqCst);
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "successor did not confirm"));
    }
    offer.gate.send_replace(false);
    (offer.on_pause)(true);
    tracing::info!("successor is serving: stopped reading; in-flight queries still answered");

    // Until the successor goes away. A clean stop of this process ends the thread with it.
    link.set_read_timeout(None)?;
    let mut rest = [0u8; 64];
    while matches!(link.read(&mut rest), Ok(n) if n > 0) {}
    offer.gate.send_replace(true);
    (offer.on_pause)(false);
    tracing::warn!("successor gone while this process still runs: serving again");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Gate;

    /// The sockets a predecessor with `addrs` listen addresses and `workers` UDP workers
    /// offers: every worker's UDP socket and one TCP listener per address, plus metrics. All
    /// are duplicates of one socket: only their number and description matter here.
    fn sockets(addrs: &[SocketAddr], workers: usize) -> Vec<(Role, SocketAddr, OwnedFd)> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dup = || OwnedFd::from(socket.try_clone().unwrap());
        let mut out = Vec::new();
        for &addr in addrs {
            out.extend((0..workers).map(|_| (Role::Udp, addr, dup())));
            out.push((Role::Tcp, addr, dup()));
        }
        out.push((Role::Http, "127.0.0.1:9253".parse().unwrap(), dup()));
        out
    }

    #[test]
    fn many_sockets_on_long_ipv6_addresses_are_all_handed_over() {
        let addrs: Vec<SocketAddr> = [
            "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:53",
            "[fd00:1234:5678:9abc:def0:1234:5678:9abd]:53",
            "[fd00:1234:5678:9abc:def0:1234:5678:9abe]:53",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let offered = sockets(&addrs, 64);
        let expected: Vec<(Role, SocketAddr)> = offered.iter().map(|(role, addr, _)| (*role, *addr)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let (gate, _) = Gate::new();
        let cache = crate::harness::cache_for(16);
        offer(&path, Offer { sockets: offered, cache, gate, passed: Default::default(), on_pause: Box::new(|_| {}) }).unwrap();

        let inherited = inherit(&path).expect("handover succeeds").expect("a predecessor");
        let got: Vec<(Role, SocketAddr)> = inherited.sockets.iter().map(|(role, addr, _)| (*role, *addr)).collect();
        assert_eq!(got.len(), 3 * 65 + 1);
        assert_eq!(got, expected, "every socket, described as offered, in order");
    }
}
