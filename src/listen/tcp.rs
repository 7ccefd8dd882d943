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
    /// The address the listener is bound to.
    pub local: IpAddr,
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
        while let Some((stream, peer)) = backoff.accept(&listener, &mut gate, &self.stop).await {
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
            let req = Request {
                transport: Transport::Tcp,
                client: peer,
                local: self.local,
                started: Instant::now(),
                metrics: &self.listener_metrics,
                held: None,
            };
            match self.handler.answer_local(&packet, &mut out, &req) {
                Local::Reply(len) => {
                    self.listener_metrics.sizes(packet.len(), len);
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
                        let req = Request {
                            transport: Transport::Tcp,
                            client: peer,
                            local: this.local,
                            started,
                            metrics: &this.listener_metrics,
                            held: None,
                        };
                        if let Some(response) = this.handler.answer_miss(&packet, &req).await {
                            this.listener_metrics.sizes(packet.len(), response.len());
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream, UdpSocket};
    use tokio::sync::watch;
    use tokio::time::timeout;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{TcpLimits, TcpServer, bind};
    use crate::gate::Gate;
    use crate::harness;
    use crate::metrics::Metrics;
    use crate::query::handler::Handler;

    /// How long a test waits for something that should happen at once; reached only when it
    /// fails.
    const PROMPTLY: Duration = Duration::from_millis(500);
    const IDLE: Duration = Duration::from_millis(100);

    fn roomy() -> TcpLimits {
        TcpLimits { idle_timeout: Duration::from_secs(5), max_clients: 8, max_per_client: 8, max_inflight_per_connection: 8 }
    }

    /// A `TcpServer` on an ephemeral loopback port, stopped when dropped.
    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        _gate: watch::Sender<bool>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl Server {
        fn start(handler: Handler, metrics: Arc<Metrics>, limits: TcpLimits) -> Server {
            let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a loopback listener");
            let addr = listener.local_addr().expect("bound");
            let (switch, gate) = Gate::new();
            let stop = CancellationToken::new();
            let server = Arc::new(TcpServer {
                local: std::net::IpAddr::from([127, 0, 0, 1]),
                handler: Arc::new(handler),
                listener_metrics: metrics.listener("dns://test", "tcp", false),
                metrics: metrics.clone(),
                limits,
                tasks: TaskTracker::new(),
                stop: stop.clone(),
                per_client: Default::default(),
                gate,
            });
            tokio::spawn(server.serve(listener));
            Server { addr, metrics, stop, _gate: switch }
        }

        /// One whose cache answers `harness::bench_name(0..4)` and forwards nowhere.
        fn answering_from_cache(limits: TcpLimits) -> Server {
            let metrics = Arc::new(Metrics::new());
            let cache = harness::cache_for(4);
            for i in 0..4 {
                harness::store_a(&cache, i, Instant::now());
            }
            Server::start(harness::handler(cache, &metrics, 16), metrics, limits)
        }

        /// One whose cache is empty, so every query goes to `upstream`.
        fn forwarding_to(upstream: &HeldUpstream, limits: TcpLimits) -> Server {
            let metrics = Arc::new(Metrics::new());
            Server::start(harness::forwarding_handler(upstream.addr(), &metrics), metrics, limits)
        }

        async fn connect(&self) -> TcpStream {
            let stream = TcpStream::connect(self.addr).await.expect("connected");
            stream.set_nodelay(true).expect("nodelay");
            stream
        }

        async fn connect_from(&self, source: [u8; 4]) -> TcpStream {
            let socket = TcpSocket::new_v4().expect("a socket");
            socket.bind(SocketAddr::from((source, 0))).expect("a loopback source");
            socket.connect(self.addr).await.expect("connected")
        }

        fn dropped(&self, reason: &str) -> u64 {
            let line = format!("nodedns_dropped_queries_total{{reason=\"{reason}\"}} ");
            let text = self.metrics.encode();
            text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.trim().parse().expect("a count"))
        }
    }

    /// An upstream that holds every query until told to answer, so a test decides how long
    /// misses stay in flight.
    struct HeldUpstream {
        socket: UdpSocket,
        held: Vec<(Vec<u8>, SocketAddr)>,
    }

    impl HeldUpstream {
        async fn start() -> HeldUpstream {
            HeldUpstream { socket: UdpSocket::bind("127.0.0.1:0").await.expect("a loopback socket"), held: Vec::new() }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().expect("bound")
        }

        /// Holds whatever arrives within `window`.
        async fn hold_for(&mut self, window: Duration) {
            let until = tokio::time::Instant::now() + window;
            let mut buf = [0u8; 512];
            while let Ok(Ok((n, from))) = tokio::time::timeout_at(until, self.socket.recv_from(&mut buf)).await {
                self.held.push((buf[..n].to_vec(), from));
            }
        }

        /// The distinct names asked so far (a retried attempt asks the same name again).
        fn names(&self) -> std::collections::BTreeSet<Vec<u8>> {
            self.held.iter().map(|(query, _)| question_name(query).to_vec()).collect()
        }

        /// Answers every query held, one A record each.
        async fn answer_all(&mut self) {
            for (query, from) in self.held.drain(..) {
                let answer = harness::a_response(id(&query), question_name(&query), [192, 0, 2, 1]);
                self.socket.send_to(&answer, from).await.expect("sent");
            }
        }
    }

    /// The wire name of a query's question, uncompressed as every query's is.
    fn question_name(query: &[u8]) -> &[u8] {
        let mut end = 12;
        while query[end] != 0 {
            end += 1 + query[end] as usize;
        }
        &query[12..=end]
    }

    fn id(message: &[u8]) -> u16 {
        u16::from_be_bytes([message[0], message[1]])
    }

    fn hit_query(id: u16) -> Vec<u8> {
        harness::client_query(id, &harness::bench_name(id as usize % 4))
    }

    fn miss_query(id: u16) -> Vec<u8> {
        harness::client_query(id, &format!("miss{id}.example."))
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        [&(message.len() as u16).to_be_bytes()[..], message].concat()
    }

    /// The next framed message, if one arrives within `wait`.
    async fn read_message(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        let read = async {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.ok()?;
            let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut message).await.ok()?;
            Some(message)
        };
        timeout(wait, read).await.ok().flatten()
    }

    /// An answer to `id`: a response with that ID and one answer record.
    async fn expect_answer(stream: &mut TcpStream, expected_id: u16) {
        let answer = read_message(stream, PROMPTLY).await.unwrap_or_else(|| panic!("no answer to query {expected_id}"));
        assert_eq!(id(&answer), expected_id);
        assert!(answer[2] & 0x80 != 0, "a response");
        assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 1, "one answer record");
    }

    /// Whether the server closes the connection within `wait`.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut octet = [0u8; 1];
        matches!(timeout(wait, stream.read(&mut octet)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn two_queries_written_in_one_segment_are_both_answered() {
        let server = Server::answering_from_cache(roomy());
        let mut client = server.connect().await;
        client.write_all(&[framed(&hit_query(1)), framed(&hit_query(2))].concat()).await.unwrap();
        expect_answer(&mut client, 1).await;
        expect_answer(&mut client, 2).await;
    }

    #[tokio::test]
    async fn a_query_split_across_writes_is_answered_once_complete() {
        let server = Server::answering_from_cache(roomy());
        let mut client = server.connect().await;
        let whole = framed(&hit_query(7));
        // Split inside the length prefix and again inside the message.
        for part in [&whole[..1], &whole[1..6]] {
            client.write_all(part).await.unwrap();
            assert!(read_message(&mut client, Duration::from_millis(30)).await.is_none(), "answered before the frame was complete");
        }
        client.write_all(&whole[6..]).await.unwrap();
        expect_answer(&mut client, 7).await;
    }

    #[tokio::test]
    async fn a_zero_length_frame_closes_the_connection() {
        let server = Server::answering_from_cache(roomy());
        let mut client = server.connect().await;
        client.write_all(&[0, 0]).await.unwrap();
        assert!(closed_within(&mut client, PROMPTLY).await);
        assert_eq!(server.dropped("tcp_framing"), 1);
    }

    #[tokio::test]
    async fn a_frame_shorter_than_a_dns_header_closes_the_connection() {
        let server = Server::answering_from_cache(roomy());
        let mut client = server.connect().await;
        client.write_all(&framed(&[0x12, 0x34, 1, 0, 0])).await.unwrap();
        assert!(closed_within(&mut client, PROMPTLY).await);
        assert_eq!(server.dropped("tcp_framing"), 1);
    }

    #[tokio::test]
    async fn a_frame_promising_more_than_arrives_is_closed_at_the_idle_timeout() {
        let server = Server::answering_from_cache(TcpLimits { idle_timeout: IDLE, ..roomy() });
        let mut client = server.connect().await;
        client.write_all(&[0, 40, 0x12]).await.unwrap();
        let started = Instant::now();
        assert!(closed_within(&mut client, PROMPTLY).await);
        assert!(started.elapsed() >= IDLE - Duration::from_millis(10), "closed after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let server = Server::answering_from_cache(TcpLimits { idle_timeout: IDLE, ..roomy() });
        let mut client = server.connect().await;
        client.write_all(&framed(&hit_query(1))).await.unwrap();
        expect_answer(&mut client, 1).await;
        let answered = Instant::now();
        assert!(closed_within(&mut client, PROMPTLY).await);
        assert!(answered.elapsed() >= IDLE - Duration::from_millis(10), "closed after {:?}", answered.elapsed());
    }

    #[tokio::test]
    async fn a_connection_asking_more_often_than_the_idle_timeout_stays_open() {
        // Asked every 50 ms for twice the idle timeout: 150 ms of slack per gap, for a busy
        // machine's scheduling.
        let idle = Duration::from_millis(200);
        let server = Server::answering_from_cache(TcpLimits { idle_timeout: idle, ..roomy() });
        let mut client = server.connect().await;
        for i in 0..8 {
            client.write_all(&framed(&hit_query(i))).await.unwrap();
            expect_answer(&mut client, i).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_miss_in_flight_keeps_its_connection_open_past_the_idle_timeout() {
        let mut upstream = HeldUpstream::start().await;
        let server = Server::forwarding_to(&upstream, TcpLimits { idle_timeout: IDLE, ..roomy() });
        let mut client = server.connect().await;
        client.write_all(&framed(&miss_query(1))).await.unwrap();
        upstream.hold_for(IDLE * 3).await;
        upstream.answer_all().await;
        expect_answer(&mut client, 1).await;
        // Still reading: a connection that stopped would have delivered that answer too.
        client.write_all(&framed(&miss_query(2))).await.unwrap();
        upstream.hold_for(Duration::from_millis(50)).await;
        upstream.answer_all().await;
        expect_answer(&mut client, 2).await;
    }

    #[tokio::test]
    async fn a_connection_has_at_most_max_tcp_inflight_misses_upstream_and_reads_on_as_they_finish() {
        let mut upstream = HeldUpstream::start().await;
        let server = Server::forwarding_to(&upstream, TcpLimits { max_inflight_per_connection: 2, ..roomy() });
        let mut client = server.connect().await;
        client.write_all(&[framed(&miss_query(1)), framed(&miss_query(2)), framed(&miss_query(3))].concat()).await.unwrap();
        upstream.hold_for(Duration::from_millis(150)).await;
        assert_eq!(upstream.names().len(), 2, "the third miss waits for a slot");
        upstream.answer_all().await;
        let mut answered = vec![];
        for _ in 0..2 {
            answered.push(id(&read_message(&mut client, PROMPTLY).await.expect("an answer to a first miss")));
        }
        answered.sort();
        assert_eq!(answered, [1, 2]);
        upstream.hold_for(Duration::from_millis(50)).await;
        upstream.answer_all().await;
        expect_answer(&mut client, 3).await;
    }

    #[tokio::test]
    async fn connections_past_max_tcp_clients_are_closed_at_once() {
        let server = Server::answering_from_cache(TcpLimits { max_clients: 1, ..roomy() });
        let mut first = server.connect().await;
        first.write_all(&framed(&hit_query(1))).await.unwrap();
        expect_answer(&mut first, 1).await;
        let mut second = server.connect().await;
        assert!(closed_within(&mut second, PROMPTLY).await);
        assert_eq!(server.dropped("tcp_client_limit"), 1);
        first.write_all(&framed(&hit_query(2))).await.unwrap();
        expect_answer(&mut first, 2).await;
    }

    #[tokio::test]
    async fn a_closed_connection_gives_its_client_slot_back() {
        let server = Server::answering_from_cache(TcpLimits { max_clients: 1, ..roomy() });
        let mut first = server.connect().await;
        first.write_all(&framed(&hit_query(1))).await.unwrap();
        expect_answer(&mut first, 1).await;
        drop(first);
        // The server sees the close when it next reads; until then the slot is still taken.
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let mut next = server.connect().await;
            next.write_all(&framed(&hit_query(2))).await.unwrap();
            if read_message(&mut next, PROMPTLY).await.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the slot never came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_source_past_max_tcp_per_client_is_closed_while_other_sources_are_served() {
        let server = Server::answering_from_cache(TcpLimits { max_per_client: 1, ..roomy() });
        let mut first = server.connect_from([127, 0, 0, 1]).await;
        first.write_all(&framed(&hit_query(1))).await.unwrap();
        expect_answer(&mut first, 1).await;
        let mut again = server.connect_from([127, 0, 0, 1]).await;
        assert!(closed_within(&mut again, PROMPTLY).await);
        assert_eq!(server.dropped("tcp_per_client_limit"), 1);
        let mut other = server.connect_from([127, 0, 0, 2]).await;
        other.write_all(&framed(&hit_query(2))).await.unwrap();
        expect_answer(&mut other, 2).await;
    }
}
