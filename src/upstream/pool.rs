//! The connection pool toward one TCP or TLS upstream.
//!
//! - A hard maximum of open connections, never exceeded.
//! - Pipelining (RFC 7766): many queries in flight per connection, matched by ID, up to a cap.
//! - A bounded wait queue (length and time) when every connection is at its cap; past it
//!   the query fails fast and the forwarder moves on.
//! - Idle connections close exactly at their idle timeout; a connection that has carried
//!   `max_queries` queries drains and closes.
//! - One upstream address may be many servers (a Service's ClusterIP, which kube-proxy
//!   spreads over its pods per connection): a connect that fails or hangs is raced by a
//!   fresh one, each a new flow that may reach another server, and a query falls back to
//!   pipelining on a connection already open rather than fail because a new one did not
//!   open. Connects run in the background, so a query waits for whichever connection
//!   opens first, not for its own. Only when every try of a connect fails does the pool
//!   back off (exponentially).
//! - When a connection dies, its in-flight queries are retried once on another one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::codec::FramedRead;

use super::quickack::QuickAck;
use super::{Exchange, FRESH_FLOWS, QueryOptions, Sent, Transport, UpstreamError};
use crate::cache::CacheKey;
use crate::metrics::UpstreamMetrics;

/// Limits of one upstream's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub queue_length: usize,
    pub queue_wait: Duration,
    pub idle_timeout: Duration,
    /// 0 means unlimited.
    pub max_queries_per_connection: u64,
    pub connect_timeout: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to open a connection.
#[derive(Clone)]
pub enum Connector {
    Tcp(SocketAddr),
    Tls { addr: SocketAddr, server_name: ServerName<'static>, config: Arc<rustls::ClientConfig> },
}

impl Connector {
    async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        match self {
            Connector::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                Ok(Box::new(QuickAck::new(s)?))
            }
            Connector::Tls { addr, server_name, config } => {
                let s = TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(server_name.clone(), QuickAck::new(s)?).await?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Opens one connection, racing fresh tries against a try that fails or hangs: a try
    /// that fails starts the next at once, one still pending after [`TRY_DELAY`] is joined
    /// by another (as Happy Eyeballs does, RFC 8305), up to [`FRESH_FLOWS`] within
    /// `timeout`. Each try is a new flow, so behind a DNAT-ed Service address it has its
    /// own chance of reaching a live backend. The first to connect wins; the others are
    /// dropped before they carry anything.
    async fn connect_racing(&self, timeout: Duration, metrics: &UpstreamMetrics) -> Result<Box<dyn Stream>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tries = futures::stream::FuturesUnordered::new();
        let mut started = 0;
        let start_try = |tries: &mut futures::stream::FuturesUnordered<_>, started: &mut usize| {
            *started += 1;
            metrics.connects.inc();
            tries.push(self.connect());
        };
        loop {
            if tries.is_empty() {
                if started == FRESH_FLOWS {
                    return Err(UpstreamError::Connect);
                }
                start_try(&mut tries, &mut started);
            }
            tokio::select! {
                Some(result) = tries.next() => match result {
                    Ok(stream) => return Ok(stream),
                    Err(e) => {
                        tracing::debug!(error = %e, "upstream connect failed");
                        metrics.connect_failures.inc();
                    }
                },
                () = tokio::time::sleep(TRY_DELAY), if started < FRESH_FLOWS => start_try(&mut tries, &mut started),
                () = tokio::time::sleep_until(deadline) => {
                    metrics.connect_failures.inc_by(tries.len() as u64);
                    return Err(UpstreamError::Connect);
                }
            }
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Connector::Tcp(_) => Transport::Tcp,
            Connector::Tls { .. } => Transport::Tls,
        }
    }
}

/// How long a pending connect try waits before another joins it (RFC 8305 recommends at
/// least 100 ms): a SYN lost or a backend that drops it is otherwise a second's wait for
/// the kernel's retransmission.
const TRY_DELAY: Duration = Duration::from_millis(100);

pub struct Pool {
    connector: Connector,
    settings: PoolSettings,
    /// One permit per query slot: `max_connections x max_inflight_per_connection`.
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    conns: Arc<Mutex<Conns>>,
    /// Signalled whenever a connection opens or closes, or a connect fails, for queries
    /// waiting for a connection.
    changed: Arc<tokio::sync::Notify>,
    backoff: Arc<Mutex<Backoff>>,
    metrics: UpstreamMetrics,
}

/// The open connections and how many are being opened; together never above the maximum.
#[derive(Default)]
struct Conns {
    open: Vec<Arc<Conn>>,
    opening: usize,
}

/// A place in the wait queue, left however the wait ends (slot, timeout, or the waiting
/// query abandoned by its caller).
struct Queued<'a>(&'a Pool);

impl<'a> Queued<'a> {
    fn join(pool: &'a Pool) -> Option<Self> {
        if pool.waiting.fetch_add(1, Ordering::SeqCst) >= pool.settings.queue_length {
            pool.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        pool.metrics.queue_depth.inc();
        Some(Queued(pool))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.queue_depth.dec();
    }
}

/// Gives back a reserved place in the pool however the connect ends, and wakes the queries
/// waiting for a connection.
struct Opening {
    conns: Arc<Mutex<Conns>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).opening -= 1;
        self.changed.notify_waiters();
    }
}

/// What a query needing a connection does now.
enum Pick {
    Use(Arc<Conn>),
    /// Wait for a change (a connection opened or closed, a connect failed); past the wait,
    /// fail with this.
    Wait(UpstreamError),
    Fail(UpstreamError),
}

/// Exponential backoff after failed connects (every try of one), and after connections the
/// server closed without answering anything (a server that accepts and hangs up must not
/// get a reconnect storm).
#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn failed(&mut self) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
        self.until = Some(Instant::now() + self.delay);
    }

    fn blocks(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }
}

impl Pool {
    pub fn new(connector: Connector, settings: PoolSettings, metrics: UpstreamMetrics) -> Self {
        let slots = settings.max_connections * settings.max_inflight_per_connection;
        Pool {
            connector,
            settings,
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            conns: Arc::new(Mutex::new(Conns::default())),
            changed: Arc::new(tokio::sync::Notify::new()),
            backoff: Arc::new(Mutex::new(Backoff::default())),
            metrics,
        }
    }

    /// Asks the question in `key` over a pooled connection.
    pub async fn exchange(&self, key: &CacheKey, opts: QueryOptions) -> Result<Exchange, UpstreamError> {
        let _slot = self.slot().await?;
        // A connection that dies under the query gets it retried once on another one.
        let mut last = UpstreamError::Closed;
        for _ in 0..2 {
            let conn = self.connection_or_wait().await?;
            match conn.exchange(key, opts).await {
                Err(UpstreamError::Closed) => last = UpstreamError::Closed,
                other => return other.map(|(msg, response)| Exchange { msg, response, transport: self.connector.transport(), ignored: 0 }),
            }
        }
        Err(last)
    }

    /// Waits (bounded in queue length and time) for a query slot.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, UpstreamError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let Some(_queued) = Queued::join(self) else {
            self.metrics.queue_rejected.inc();
            return Err(UpstreamError::QueueFull);
        };
        let started = Instant::now();
        let permit = tokio::time::timeout(self.settings.queue_wait, self.slots.clone().acquire_owned()).await;
        self.metrics.queue_wait.observe(started.elapsed().as_secs_f64());
        match permit {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.metrics.queue_rejected.inc();
                Err(UpstreamError::QueueFull)
            }
        }
    }

    /// A connection for one query. An idle connection if there is one; else a new one while
    /// the pool has room (servers such as dnsmasq answer one query at a time per connection,
    /// so spreading load over the allowed connections beats queueing it on one); else the
    /// least busy connection with room to pipeline.
    ///
    /// Connects are the pool's, not the query's: a query waits for whichever connection
    /// opens first, and after [`TRY_DELAY`] pipelines on a busy one rather than wait on. So
    /// a connect that hangs on a dead server behind the address holds up no query that a
    /// live one can carry, and neither does the backoff after failed connects. Waits at most
    /// the connect timeout (or the queue wait, if longer).
    async fn connection_or_wait(&self) -> Result<Arc<Conn>, UpstreamError> {
        let now = tokio::time::Instant::now();
        let (patience, until) = (now + TRY_DELAY, now + self.settings.connect_timeout.max(self.settings.queue_wait));
        loop {
            // Made before looking, so that a change while we look still wakes us.
            let changed = self.changed.notified();
            let now = tokio::time::Instant::now();
            match self.pick(now >= patience) {
                Pick::Use(conn) => return Ok(conn),
                Pick::Fail(e) => return Err(e),
                Pick::Wait(e) if now >= until => return Err(e),
                Pick::Wait(_) => {
                    let wake = if now < patience { patience } else { until };
                    let _ = tokio::time::timeout_at(wake.min(until), changed).await;
                }
            }
        }
    }

    /// One look at the pool for [`Pool::connection_or_wait`]; starts a connect when there is
    /// room and no backoff. `pipeline` lets a query that has waited take a busy connection
    /// although a new one may be opening.
    fn pick(&self, pipeline: bool) -> Pick {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.open.retain(|c| !c.closed.load(Ordering::SeqCst));
        let least_busy = self.least_busy(&conns);
        if let Some(idle) = least_busy.as_ref().filter(|c| c.inflight() == 0) {
            self.metrics.conn_reused.inc();
            return Pick::Use(idle.clone());
        }
        let room = conns.open.len() + conns.opening < self.settings.max_connections;
        let backing_off = self.backoff.lock().unwrap_or_else(|e| e.into_inner()).blocks();
        if room && !backing_off {
            conns.opening += 1;
            self.open_in_background();
            if !pipeline || least_busy.is_none() {
                return Pick::Wait(UpstreamError::Connect);
            }
        }
        match least_busy {
            Some(busy) => {
                self.metrics.conn_reused.inc();
                Pick::Use(busy)
            }
            // Every connection is draining toward its query limit: one closing makes room.
            None if !room => Pick::Wait(UpstreamError::QueueFull),
            None if conns.opening > 0 => Pick::Wait(UpstreamError::Connect),
            None => Pick::Fail(UpstreamError::Connect),
        }
    }

    /// Opens a connection into the pool in the background; the caller has counted it in
    /// `opening`. Failing every try of the connect starts (or lengthens) the backoff.
    fn open_in_background(&self) {
        self.metrics.conn_opened.inc();
        let opening = Opening { conns: self.conns.clone(), changed: self.changed.clone() };
        let (connector, settings, metrics, backoff) = (self.connector.clone(), self.settings, self.metrics.clone(), self.backoff.clone());
        tokio::spawn(async move {
            match connector.connect_racing(settings.connect_timeout, &metrics).await {
                Ok(stream) => {
                    let conn = Conn::start(stream, settings, metrics, opening.changed.clone(), backoff);
                    opening.conns.lock().unwrap_or_else(|e| e.into_inner()).open.push(conn);
                }
                Err(_) => backoff.lock().unwrap_or_else(|e| e.into_inner()).failed(),
            }
            drop(opening);
        });
    }

    /// The open connection with the fewest queries in flight that can take one more.
    fn least_busy(&self, conns: &Conns) -> Option<Arc<Conn>> {
        let cap = self.settings.max_inflight_per_connection;
        conns.open.iter().filter(|c| c.usable(cap)).min_by_key(|c| c.inflight()).cloned()
    }
}

/// One pipelined connection: a task owns the socket; queries reach it through a channel and
/// answers come back through per-ID oneshot channels.
///
/// A query stays pending until its answer arrives, even if the caller stopped waiting (a
/// faster attempt won): the connection is idle only when nothing is on the wire, so closing
/// it never cuts off an answer (which would make the kernel reset the connection).
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u16, Pending>>,
    queries: AtomicU64,
    /// This connection's query limit (0: none): the configured one less up to a quarter at
    /// random, so that connections filled evenly do not all drain at the same moment.
    max_queries: u64,
    closed: AtomicBool,
}

struct Pending {
    sent: Instant,
    waiter: oneshot::Sender<Vec<u8>>,
}

impl Conn {
    fn start(
        stream: Box<dyn Stream>,
        settings: PoolSettings,
        metrics: UpstreamMetrics,
        on_close: Arc<tokio::sync::Notify>,
        backoff: Arc<Mutex<Backoff>>,
    ) -> Arc<Conn> {
        let (tx, rx) = mpsc::channel(settings.max_inflight_per_connection);
        let limit = settings.max_queries_per_connection;
        let max_queries = if limit == 0 { 0 } else { limit - rand::random_range(0..=limit / 4) };
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
            max_queries,
            closed: AtomicBool::new(false),
        });
        metrics.connections.inc();
        let task = conn.clone();
        tokio::spawn(async move {
            let ended = task.clone().run(stream, rx, settings, metrics).await;
            let mut backoff = backoff.lock().unwrap_or_else(|e| e.into_inner());
            if ended.answers > 0 {
                *backoff = Backoff::default();
            } else if ended.by_server || task.queries.load(Ordering::SeqCst) > 0 {
                // A server that accepts and hangs up, before or after our first query.
                backoff.failed();
            }
            drop(backoff);
            on_close.notify_waiters();
        });
        conn
    }

    fn inflight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forgets queries the server has not answered for `after`: it dropped them.
    fn give_up_stale(&self, after: Duration) {
        let now = Instant::now();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, p| now.duration_since(p.sent) < after);
    }

    fn usable(&self, cap: usize) -> bool {
        !self.closed.load(Ordering::SeqCst) && self.inflight() < cap && !self.drained()
    }

    fn drained(&self) -> bool {
        self.max_queries > 0 && self.queries.load(Ordering::SeqCst) >= self.max_queries
    }

    async fn exchange(&self, key: &CacheKey, opts: QueryOptions) -> Result<(Vec<u8>, crate::wire::UpstreamResponse), UpstreamError> {
        let (id, receiver) = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut id: u16 = rand::random();
            while pending.contains_key(&id) {
                id = rand::random();
            }
            let (waiter, receiver) = oneshot::channel();
            pending.insert(id, Pending { sent: Instant::now(), waiter });
            (id, receiver)
        };
        self.queries.fetch_add(1, Ordering::SeqCst);
        let sent = Sent::compose(key, opts, id);
        let mut framed = Vec::with_capacity(sent.octets().len() + 2);
        framed.extend_from_slice(&(sent.octets().len() as u16).to_be_bytes());
        framed.extend_from_slice(sent.octets());
        let unsent = Unsent(self, id);
        self.tx.send(framed).await.map_err(|_| UpstreamError::Closed)?;
        std::mem::forget(unsent);
        let msg = receiver.await.map_err(|_| UpstreamError::Closed)?;
        match sent.accept(&msg, key)? {
            Some(response) => Ok((msg, response)),
            None => Err(UpstreamError::Invalid(crate::wire::ResponseError::WrongQuestion)),
        }
    }

    /// Owns the socket: writes queries, dispatches answers by ID, and closes the connection
    /// when idle for `idle_timeout`, when drained past its query limit, or on any error.
    /// Queries unanswered for `idle_timeout` are given up (the server dropped them).
    async fn run(
        self: Arc<Self>,
        stream: Box<dyn Stream>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        settings: PoolSettings,
        metrics: UpstreamMetrics,
    ) -> Ended {
        let mut answers = 0;
        let mut by_server = false;
        let (reader, mut writer) = tokio::io::split(stream);
        let mut frames = FramedRead::new(reader, crate::wire::frame_codec());
        let mut last_activity = tokio::time::Instant::now();
        let mut next_sweep = last_activity + settings.idle_timeout / 4;
        let timer = tokio::time::sleep_until(last_activity + settings.idle_timeout);
        tokio::pin!(timer);
        let mut in_use = false;
        let mut reported = 0i64;
        loop {
            let inflight = self.inflight();
            metrics.inflight.inc_by(inflight as i64 - reported);
            reported = inflight as i64;
            if in_use != (inflight > 0) {
                in_use = inflight > 0;
                if in_use {
                    metrics.in_use.inc();
                    next_sweep = tokio::time::Instant::now() + settings.idle_timeout / 4;
                } else {
                    metrics.in_use.dec();
                }
            }
            let idle = inflight == 0;
            if idle && self.drained() {
                break;
            }
            // Re-arming a timer costs more than a query: only when its deadline moves.
            let wake = if idle { last_activity + settings.idle_timeout } else { next_sweep };
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(mut batch) => {
                        // Every query already queued goes out in the same write.
                        while let Ok(more) = rx.try_recv() {
                            batch.extend_from_slice(&more);
                        }
                        if writer.write_all(&batch).await.is_err() {
                            by_server = true;
                            break;
                        }
                        last_activity = tokio::time::Instant::now();
                    }
                    None => break,
                },
                frame = frames.next() => match frame {
                    Some(Ok(msg)) if msg.len() >= 2 => {
                        last_activity = tokio::time::Instant::now();
                        let id = u16::from_be_bytes([msg[0], msg[1]]);
                        let answered = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        match answered {
                            Some(p) => {
                                answers += 1;
                                let _ = p.waiter.send(msg.to_vec());
                            }
                            None => {
                                metrics.ignored.inc();
                            }
                        }
                    }
                    _ => {
                        by_server = true;
                        break;
                    }
                },
                () = &mut timer => {
                    if idle {
                        if self.inflight() == 0 && rx.is_empty() {
                            break;
                        }
                    } else {
                        self.give_up_stale(settings.idle_timeout);
                        next_sweep = tokio::time::Instant::now() + settings.idle_timeout / 4;
                    }
                }
            }
        }
        // Close the socket before the pool may count this connection as gone, so the server
        // never sees more than `max_connections` established at once.
        let _ = writer.shutdown().await;
        drop((writer, frames));
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the waiters fails every query still pending here: each is retried once.
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if in_use {
            metrics.in_use.dec();
        }
        metrics.inflight.dec_by(reported);
        metrics.connections.dec();
        Ended { answers, by_server }
    }
}

/// How a connection ended: the answers it carried, and whether the server closed it (or
/// broke it) rather than nodedns.
struct Ended {
    answers: u64,
    by_server: bool,
}

/// Removes a query that never reached the connection's writer (its caller gave up first).
struct Unsent<'a>(&'a Conn, u16);

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    //! Against fake upstreams on loopback listeners, in real time: the pool's clocks include
    //! the standard one (the backoff), which a paused runtime does not stop.

    use futures::FutureExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::cache::KeyRef;
    use crate::metrics::Metrics;

    const OPTS: QueryOptions = QueryOptions { udp_payload: 1232, randomize_case: false };

    fn key() -> CacheKey {
        KeyRef::new(crate::wire::name::from_text("example.com.").unwrap().as_name(), crate::wire::RecordType::A, 1, false, false).to_owned()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One connection carrying one query at a time, one query allowed to wait for it.
    fn one_slot() -> PoolSettings {
        PoolSettings {
            max_connections: 1,
            max_inflight_per_connection: 1,
            queue_length: 1,
            queue_wait: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_queries_per_connection: 0,
            connect_timeout: Duration::from_secs(1),
        }
    }

    fn pool(addr: SocketAddr, settings: PoolSettings) -> Arc<Pool> {
        Arc::new(Pool::new(Connector::Tcp(addr), settings, Metrics::new().upstream("tcp://fake", "tcp")))
    }

    fn spawn_query(pool: &Arc<Pool>) -> JoinHandle<Result<Exchange, UpstreamError>> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.exchange(&key(), OPTS).await })
    }

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < give_up, "timed out waiting until {what}");
            tokio::time::sleep(ms(1)).await;
        }
    }

    /// How the fake upstream treats one connection.
    #[derive(Clone, Copy)]
    struct Conduct {
        /// Answers once this many queries are waiting.
        batch: usize,
        /// Closes the connection on reading the query after this many answered.
        close_after: usize,
    }

    const ANSWERS: Conduct = Conduct { batch: 1, close_after: usize::MAX };
    const ANSWERS_IN_PAIRS: Conduct = Conduct { batch: 2, close_after: usize::MAX };
    const NEVER_ANSWERS: Conduct = Conduct { batch: usize::MAX, close_after: usize::MAX };

    const fn closes_after(answered: usize) -> Conduct {
        Conduct { batch: 1, close_after: answered }
    }

    /// A fake upstream treating the connections it accepts as `conducts` says, in order; the
    /// last conduct goes on for any later connection.
    async fn upstream(conducts: Vec<Conduct>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for k in 0.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(serve(stream, conducts[k.min(conducts.len() - 1)]));
            }
        });
        addr
    }

    async fn serve(mut stream: TcpStream, conduct: Conduct) {
        let (mut waiting, mut answered) = (Vec::new(), 0);
        while let Some(query) = read_frame(&mut stream).await {
            if answered == conduct.close_after {
                return;
            }
            waiting.push(query);
            if waiting.len() < conduct.batch {
                continue;
            }
            for mut answer in waiting.drain(..) {
                answer[2] |= 0x80; // QR: the query, echoed, is an empty NOERROR answer
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
                answered += 1;
            }
        }
    }

    async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut msg).await.ok()?;
        Some(msg)
    }

    /// An address nothing listens on: every connect is refused.
    fn closed_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_query_past_the_queue_length_fails_with_queue_full_at_once() {
        let pool = pool(upstream(vec![NEVER_ANSWERS]).await, one_slot());
        let holding = spawn_query(&pool);
        until("the first query holds the only slot", || pool.slots.available_permits() == 0).await;
        let queued = spawn_query(&pool);
        until("the second query is queued", || pool.waiting.load(Ordering::SeqCst) == 1).await;
        let third = pool.exchange(&key(), OPTS).now_or_never().expect("no waiting");
        assert_eq!(third.err(), Some(UpstreamError::QueueFull));
        assert_eq!(pool.metrics.queue_rejected.get(), 1);
        assert!(!queued.is_finished(), "the queued query still waits");
        holding.abort();
        queued.abort();
    }

    #[tokio::test]
    async fn a_queued_query_gives_up_with_queue_full_after_the_queue_wait() {
        let pool = pool(upstream(vec![NEVER_ANSWERS]).await, PoolSettings { queue_wait: ms(100), ..one_slot() });
        let holding = spawn_query(&pool);
        until("the first query holds the only slot", || pool.slots.available_permits() == 0).await;
        let started = Instant::now();
        assert_eq!(pool.exchange(&key(), OPTS).await.err(), Some(UpstreamError::QueueFull));
        let waited = started.elapsed();
        assert!(waited >= ms(100) && waited < Duration::from_secs(2), "waited {waited:?}");
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0, "left the queue");
        holding.abort();
    }

    #[tokio::test]
    async fn after_every_connect_try_fails_queries_fail_fast_without_connecting_until_the_backoff_passes() {
        let pool = pool(closed_port(), one_slot());
        assert_eq!(pool.exchange(&key(), OPTS).await.err(), Some(UpstreamError::Connect));
        assert_eq!(pool.metrics.connects.get(), FRESH_FLOWS as u64, "one connect, every fresh try of it");

        let during = pool.exchange(&key(), OPTS).now_or_never().expect("no waiting during the backoff");
        assert_eq!(during.err(), Some(UpstreamError::Connect));
        assert_eq!(pool.metrics.connects.get(), FRESH_FLOWS as u64, "no new connect during the backoff");

        // The first backoff is 50 ms.
        tokio::time::sleep(ms(80)).await;
        assert_eq!(pool.exchange(&key(), OPTS).await.err(), Some(UpstreamError::Connect));
        assert_eq!(pool.metrics.connects.get(), 2 * FRESH_FLOWS as u64, "connects again once it passed");
    }

    #[tokio::test]
    async fn an_open_connection_carries_queries_during_the_backoff() {
        let settings = PoolSettings { max_connections: 2, max_inflight_per_connection: 2, ..one_slot() };
        let pool = pool(upstream(vec![ANSWERS_IN_PAIRS]).await, settings);
        let first = spawn_query(&pool);
        until("the first query is on an open connection", || pool.conns.lock().unwrap().open.iter().any(|c| c.inflight() == 1)).await;
        // As after failed connects: the pool has room for a second connection but may not open it.
        pool.backoff.lock().unwrap().until = Some(Instant::now() + Duration::from_secs(60));
        // The upstream answers only once both queries are on the connection.
        assert!(pool.exchange(&key(), OPTS).await.is_ok(), "pipelined on the open connection");
        assert!(first.await.unwrap().is_ok());
        assert_eq!(pool.metrics.conn_opened.get(), 1, "no connect during the backoff");
    }

    #[tokio::test]
    async fn a_query_whose_connection_dies_under_it_is_retried_once_on_a_new_connection() {
        let pool = pool(upstream(vec![closes_after(1), ANSWERS]).await, one_slot());
        assert!(pool.exchange(&key(), OPTS).await.is_ok(), "answered on the first connection");
        assert!(pool.exchange(&key(), OPTS).await.is_ok(), "its connection closed under it, answered on the next");
        assert_eq!(pool.metrics.conn_opened.get(), 2);
    }

    #[tokio::test]
    async fn a_query_whose_retry_dies_too_fails_with_closed() {
        let pool = pool(upstream(vec![closes_after(1), closes_after(0)]).await, one_slot());
        assert!(pool.exchange(&key(), OPTS).await.is_ok(), "answered on the first connection");
        assert_eq!(pool.exchange(&key(), OPTS).await.err(), Some(UpstreamError::Closed));
        assert_eq!(pool.metrics.conn_opened.get(), 2, "retried once, not again");
    }
}
