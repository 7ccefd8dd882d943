//! The two ways the diagnostics ask: a DNS stub resolver (one question to one server over
//! UDP, or TCP on truncation or when told) and an HTTP request to a nodedns endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire::header::{Flags, Header};
use crate::wire::{Rcode, RecordType, compose, name};

/// The answer to one question: its rcode and how many answer records came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub rcode: Rcode,
    pub answers: u16,
    pub latency: Duration,
    pub tcp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("`{0}` is not a valid domain name")]
    BadName(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Asks `server` for `name`/`qtype` the way a libc stub does: UDP, `attempts` tries of
/// `timeout` each, TCP when the answer is truncated (or at once with `tcp`).
pub async fn ask(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
    attempts: u32,
) -> Result<Answered, AskError> {
    let wire = name::from_text(name).ok_or_else(|| AskError::BadName(name.to_string()))?;
    let started = Instant::now();
    let id: u16 = rand::random();
    let wire = wire.as_name().as_bytes();
    let mut query = vec![0u8; wire.len() + 12 + 4 + 11];
    let len = compose::query(&mut query, id, wire, qtype, 1, false, Some((1232, false)));
    query.truncate(len);
    if !tcp {
        let mut truncated = false;
        for _ in 0..attempts.max(1) {
            match tokio::time::timeout(timeout, over_udp(server, &query, id)).await {
                Ok(Ok(header)) if !header.flags.has(Flags::TC) => return Ok(answered(&header, started, false)),
                Ok(Ok(_)) => {
                    truncated = true;
                    break;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_elapsed) => {}
            }
        }
        if !truncated {
            return Err(AskError::Timeout(started.elapsed()));
        }
    }
    match tokio::time::timeout(timeout, over_tcp(server, &query, id)).await {
        Ok(Ok(header)) => Ok(answered(&header, started, true)),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(AskError::Timeout(started.elapsed())),
    }
}

fn answered(header: &Header, started: Instant, tcp: bool) -> Answered {
    Answered { rcode: header.flags.rcode(), answers: header.ancount, latency: started.elapsed(), tcp }
}

async fn over_udp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Header> {
    let bind: SocketAddr = if server.is_ipv6() { "[::]:0".parse().expect("literal") } else { "0.0.0.0:0".parse().expect("literal") };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(header) = Header::parse(&buf[..n]).filter(|h| h.id == id && h.flags.has(Flags::QR)) {
            return Ok(header);
        }
    }
}

async fn over_tcp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Header> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        if let Some(header) = Header::parse(&buf).filter(|h| h.id == id) {
            return Ok(header);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{0}` is not an http://HOST:PORT/ URL")]
    BadUrl(String),
    #[error("{url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {message}")]
    Protocol { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
}

/// [`http`] on `path` (with any query) of the nodedns instance at `base`
/// (`http://HOST:PORT`, with or without a trailing slash).
pub async fn instance(method: hyper::Method, base: &str, path: &str) -> Result<String, HttpError> {
    http(method, &format!("{}/{path}", base.trim_end_matches('/'))).await
}

/// GET (or POST) `url` and return the body of a 200 response. A plain-HTTP client for
/// nodedns's own endpoint, with a 5 s limit.
pub async fn http(method: hyper::Method, url: &str) -> Result<String, HttpError> {
    let uri: hyper::Uri = url.parse().map_err(|_| HttpError::BadUrl(url.to_string()))?;
    let authority = uri.authority().filter(|_| uri.scheme_str() == Some("http")).ok_or_else(|| HttpError::BadUrl(url.to_string()))?.clone();
    let protocol = |e: &dyn std::fmt::Display| HttpError::Protocol { url: url.to_string(), message: e.to_string() };
    let exchange = async {
        let stream = TcpStream::connect(authority.as_str()).await.map_err(|source| HttpError::Connect { url: url.to_string(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| protocol(&e))?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| protocol(&e))?;
        let response = sender.send_request(request).await.map_err(|e| protocol(&e))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| protocol(&e))?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        match status {
            200 => Ok(body),
            _ => Err(HttpError::Status { url: url.to_string(), status, body: body.trim().to_string() }),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap_or_else(|_| Err(protocol(&"no response within 5 s")))
}
