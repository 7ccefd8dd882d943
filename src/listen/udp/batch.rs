//! Batched datagram I/O for one UDP worker: `recvmmsg` and `sendmmsg` over message
//! headers, buffers and peer addresses that are allocated and linked to each other once.
//! A batch then costs the two system calls and nothing else: no headers built per call,
//! no socket addresses copied (an answer goes out to the very address slot its query was
//! read into).
//!
//! Owns only the memory the kernel reads and writes. What the answers say is the caller's.
//! Written by hand because the general wrappers (nix's `MultiHeaders`) rebuild and copy
//! every header and 128-octet address on each call: `perf` showed that work as 2.4% of the
//! worker's CPU at 60k hits/s, a third of all of nodedns's own share.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Queries read (and answers sent) per system call at most.
pub const BATCH: usize = 32;
/// The room for one query (a longer one is dropped: no real client sends one), and for one
/// answer: no UDP answer exceeds `server.udp_payload`, which is at most this.
pub const SLOT: usize = crate::wire::MAX_UDP_PAYLOAD as usize;

/// The buffers of one worker. Not `Send`: the kernel is given pointers into it, so it
/// stays on the thread that made it.
pub struct Batch {
    queries: Box<[u8]>,
    answers: Box<[u8]>,
    /// Large enough for either family; the kernel writes `sockaddr_in` for IPv4 sockets.
    peers: Box<[libc::sockaddr_in6; BATCH]>,
    recv_iov: Box<[libc::iovec; BATCH]>,
    recv_hdr: Box<[libc::mmsghdr; BATCH]>,
    send_iov: Box<[libc::iovec; BATCH]>,
    send_hdr: Box<[libc::mmsghdr; BATCH]>,
    received: usize,
}

impl Batch {
    pub fn new() -> Batch {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zeroed = || -> [libc::mmsghdr; BATCH] { unsafe { std::mem::zeroed() } };
        let iov = || [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut b = Batch {
            queries: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            answers: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            // SAFETY: all-zero is a valid `sockaddr_in6` (family 0, address and port zero).
            peers: Box::new(unsafe { std::mem::zeroed() }),
            recv_iov: Box::new(iov()),
            recv_hdr: Box::new(zeroed()),
            send_iov: Box::new(iov()),
            send_hdr: Box::new(zeroed()),
            received: 0,
        };
        // The boxes never move, so these links stay valid for the life of the batch.
        for i in 0..BATCH {
            b.recv_iov[i] = libc::iovec { iov_base: b.queries[i * SLOT..].as_mut_ptr().cast(), iov_len: SLOT };
            b.recv_hdr[i].msg_hdr.msg_iov = &mut b.recv_iov[i];
            b.recv_hdr[i].msg_hdr.msg_iovlen = 1;
            b.recv_hdr[i].msg_hdr.msg_name = (&mut b.peers[i] as *mut libc::sockaddr_in6).cast();
            b.send_hdr[i].msg_hdr.msg_iov = &mut b.send_iov[i];
            b.send_hdr[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    /// Reads up to [`BATCH`] datagrams from `fd`, blocking for the first as the socket's
    /// receive timeout allows. Returns how many came.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        for hdr in self.recv_hdr.iter_mut() {
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            hdr.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at an iovec and an address slot owned by `self`,
        // with their true lengths.
        let n =
            unsafe { libc::recvmmsg(fd, self.recv_hdr.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The datagrams of the last receive, beside the room for their answers: a worker reads
    /// every query of a batch before it answers any.
    pub fn split(&mut self) -> (Received<'_>, Answers<'_>) {
        let received = Received { queries: &self.queries, headers: &self.recv_hdr[..self.received], peers: &self.peers };
        (received, Answers(&mut self.answers))
    }

    /// Sends the answers given as (datagram index, answer length), each to the datagram's
    /// sender. An answer the kernel refuses (unreachable client, full buffer) is skipped,
    /// as the network would lose it; a call a signal interrupted is made again.
    pub fn send(&mut self, fd: RawFd, replies: &[(usize, usize)]) {
        self.send_through(replies, |headers| {
            // SAFETY: `headers` were just pointed at answers and addresses owned by `self`,
            // and the count is theirs.
            let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
    }

    /// [`Batch::send`] with the system call given: `sendmmsg` over the headers still to
    /// send, returning how many went (tests stand in for the kernel here).
    fn send_through(&mut self, replies: &[(usize, usize)], mut sendmmsg: impl FnMut(&mut [libc::mmsghdr]) -> io::Result<usize>) {
        self.address(replies);
        let mut sent = 0;
        while sent < replies.len() {
            match sendmmsg(&mut self.send_hdr[sent..replies.len()]) {
                Ok(0) => return,
                Ok(n) => sent += n,
                // A signal came before the first answer went: nothing was sent, so send again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The kernel reports an error only when the first answer failed (after one
                // went, it returns the count instead): that answer alone is lost.
                Err(_) => sent += 1,
            }
        }
    }

    /// Points the first send headers at the answers and at their datagrams' senders.
    fn address(&mut self, replies: &[(usize, usize)]) {
        for (k, &(i, len)) in replies.iter().enumerate() {
            debug_assert!(i < self.received && len <= SLOT);
            self.send_iov[k] = libc::iovec { iov_base: self.answers[i * SLOT..].as_mut_ptr().cast(), iov_len: len.min(SLOT) };
            let hdr = &mut self.send_hdr[k].msg_hdr;
            hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_in6).cast();
            hdr.msg_namelen = self.recv_hdr[i].msg_hdr.msg_namelen;
        }
    }
}

/// The datagrams of one receive.
pub struct Received<'b> {
    queries: &'b [u8],
    headers: &'b [libc::mmsghdr],
    peers: &'b [libc::sockaddr_in6; BATCH],
}

impl<'b> Received<'b> {
    /// Datagram `i`, if it fit in its slot (a longer one is dropped rather than parsed cut short).
    pub fn query(&self, i: usize) -> Option<&'b [u8]> {
        let hdr = self.headers.get(i)?;
        (hdr.msg_hdr.msg_flags & libc::MSG_TRUNC == 0).then(|| &self.queries[i * SLOT..i * SLOT + hdr.msg_len as usize])
    }

    /// Who sent datagram `i`; `None` for an address family nodedns does not serve.
    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        peer_of(&self.peers[i], self.headers.get(i)?.msg_hdr.msg_namelen)
    }
}

/// The room for the answers of one receive, one slot per datagram.
pub struct Answers<'b>(&'b mut [u8]);

impl Answers<'_> {
    /// The room for the answer to datagram `i`.
    pub fn room(&mut self, i: usize) -> &mut [u8] {
        &mut self.0[i * SLOT..(i + 1) * SLOT]
    }
}

fn peer_of(addr: &libc::sockaddr_in6, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(addr.sin6_family) {
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(addr.sin6_port), addr.sin6_flowinfo, addr.sin6_scope_id).into())
        }
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a `sockaddr_in` here (family AF_INET, length checked);
            // it is smaller than the slot and has no stricter alignment.
            let v4 = unsafe { &*(addr as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            Some(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)), u16::from_be(v4.sin_port)).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn bound(addr: &str) -> UdpSocket {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    #[test]
    fn answers_go_back_to_each_sender_in_one_batch() {
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let server = bound(any);
            let clients: Vec<UdpSocket> = (0..3).map(|_| bound(any)).collect();
            for (n, c) in clients.iter().enumerate() {
                c.send_to(&[n as u8; 7], server.local_addr().unwrap()).unwrap();
            }
            let mut batch = Batch::new();
            let mut got = 0;
            let mut replies = Vec::new();
            while got < clients.len() {
                let count = batch.receive(server.as_raw_fd()).unwrap();
                let (received, mut answers) = batch.split();
                for i in 0..count {
                    let (query, peer) = (received.query(i).unwrap(), received.peer(i).unwrap());
                    assert_eq!(query.len(), 7);
                    assert_eq!(clients[query[0] as usize].local_addr().unwrap(), peer);
                    answers.room(i)[..3].copy_from_slice(&[query[0], 0xAA, 0xBB]);
                    replies.push((i, 3));
                }
                batch.send(server.as_raw_fd(), &replies);
                replies.clear();
                got += count;
            }
            for (n, c) in clients.iter().enumerate() {
                let mut buf = [0u8; 16];
                let (len, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..len], from), (&[n as u8, 0xAA, 0xBB][..], server.local_addr().unwrap()));
            }
        }
    }

    /// A batch holding one query from each of `clients`, each answered with its own index.
    fn answered(server: &UdpSocket, clients: &[UdpSocket]) -> (Batch, Vec<(usize, usize)>) {
        for (n, c) in clients.iter().enumerate() {
            c.send_to(&[n as u8], server.local_addr().unwrap()).unwrap();
        }
        // Loopback delivers within microseconds: after this, one read takes them all.
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = Batch::new();
        assert_eq!(batch.receive(server.as_raw_fd()).unwrap(), clients.len());
        let (received, mut answers) = batch.split();
        let replies = (0..clients.len()).map(|i| (i, 1)).collect::<Vec<_>>();
        for &(i, _) in &replies {
            answers.room(i)[0] = received.query(i).unwrap()[0];
        }
        (batch, replies)
    }

    /// Which of `clients` got their answer.
    fn delivered(clients: &[UdpSocket]) -> Vec<bool> {
        clients
            .iter()
            .enumerate()
            .map(|(n, c)| {
                c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let mut buf = [0u8; 4];
                c.recv_from(&mut buf).is_ok_and(|(len, _)| buf[..len] == [n as u8])
            })
            .collect()
    }

    /// The real `sendmmsg`, after `failures` errors made up for the first calls.
    fn failing_first(fd: RawFd, mut failures: Vec<i32>) -> impl FnMut(&mut [libc::mmsghdr]) -> io::Result<usize> {
        failures.reverse();
        move |headers| match failures.pop() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => {
                // SAFETY: `send_through` hands over headers it has just linked.
                let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            }
        }
    }

    #[test]
    fn an_interrupted_send_drops_no_answer() {
        let server = bound("127.0.0.1:0");
        let clients: Vec<UdpSocket> = (0..3).map(|_| bound("127.0.0.1:0")).collect();
        let (mut batch, replies) = answered(&server, &clients);
        batch.send_through(&replies, failing_first(server.as_raw_fd(), vec![libc::EINTR, libc::EINTR]));
        assert_eq!(delivered(&clients), [true, true, true]);
    }

    #[test]
    fn a_refused_answer_costs_only_itself() {
        let server = bound("127.0.0.1:0");
        let clients: Vec<UdpSocket> = (0..3).map(|_| bound("127.0.0.1:0")).collect();
        let (mut batch, replies) = answered(&server, &clients);
        batch.send_through(&replies, failing_first(server.as_raw_fd(), vec![libc::ECONNREFUSED]));
        assert_eq!(delivered(&clients), [false, true, true], "the first answer failed, the others went");
    }

    #[test]
    fn a_datagram_longer_than_a_slot_is_not_offered() {
        let server = bound("127.0.0.1:0");
        let client = bound("127.0.0.1:0");
        client.send_to(&vec![1u8; SLOT + 1], server.local_addr().unwrap()).unwrap();
        client.send_to(&[2u8; 20], server.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new();
        let mut seen = Vec::new();
        let mut count = 0;
        while seen.len() < 2 {
            count = batch.receive(server.as_raw_fd()).unwrap();
            let (received, _) = batch.split();
            seen.extend((0..count).map(|i| received.query(i).map(<[u8]>::len)));
        }
        assert_eq!(seen, vec![None, Some(20)]);
        let (received, _) = batch.split();
        assert!(received.query(count).is_none() && received.peer(count).is_none(), "past the batch");
    }
}
