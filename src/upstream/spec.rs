//! How an upstream is written in the configuration and on the command line:
//! `udp://ADDR:PORT`, `tcp://ADDR:PORT`, `tls://ADDR:PORT#server-name`, or a bare `ADDR:PORT`
//! meaning UDP with TCP on truncation. A bare IP means port 53 (853 for `tls://`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The transport used toward one upstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// UDP, and TCP when the answer is truncated (RFC 7766 section 5). The bare form.
    PreferUdp,
    /// UDP only: a truncated answer is passed on (uncached) as it is.
    Udp,
    /// TCP only, over the pipelined connection pool.
    Tcp,
    /// DNS over TLS (RFC 7858), over the pool; the name is checked against the certificate.
    Tls { server_name: String },
}

/// One upstream server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl UpstreamSpec {
    /// A plain address, UDP with TCP on truncation.
    pub fn prefer_udp(addr: SocketAddr) -> Self {
        UpstreamSpec { addr, protocol: Protocol::PreferUdp }
    }

    /// Whether queries go over the connection pool rather than UDP.
    pub fn is_stream(&self) -> bool {
        matches!(self.protocol, Protocol::Tcp | Protocol::Tls { .. })
    }
}

fn parse_addr(text: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

impl FromStr for UpstreamSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad =
            || format!("`{text}` is not an upstream (expected ADDR:PORT, udp://ADDR:PORT, tcp://ADDR:PORT or tls://ADDR:PORT#server-name)");
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) => (s, r),
            None => ("", t),
        };
        let spec = match scheme {
            "" => UpstreamSpec { addr: parse_addr(rest, 53).ok_or_else(bad)?, protocol: Protocol::PreferUdp },
            "udp" => UpstreamSpec { addr: parse_addr(rest, 53).ok_or_else(bad)?, protocol: Protocol::Udp },
            "tcp" => UpstreamSpec { addr: parse_addr(rest, 53).ok_or_else(bad)?, protocol: Protocol::Tcp },
            "tls" => {
                let (addr, name) = rest.split_once('#').ok_or_else(|| {
                    format!("`{text}`: tls:// needs the server's name after `#`, e.g. tls://1.1.1.1:853#cloudflare-dns.com")
                })?;
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(bad());
                }
                UpstreamSpec { addr: parse_addr(addr, 853).ok_or_else(bad)?, protocol: Protocol::Tls { server_name: name.to_string() } }
            }
            _ => return Err(bad()),
        };
        Ok(spec)
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.protocol {
            Protocol::PreferUdp => write!(f, "{}", self.addr),
            Protocol::Udp => write!(f, "udp://{}", self.addr),
            Protocol::Tcp => write!(f, "tcp://{}", self.addr),
            Protocol::Tls { server_name } => write!(f, "tls://{}#{server_name}", self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_displays_back() {
        for text in ["10.0.0.1:53", "udp://10.0.0.1:5353", "tcp://[::1]:53", "tls://1.1.1.1:853#cloudflare-dns.com"] {
            assert_eq!(text.parse::<UpstreamSpec>().unwrap().to_string(), text);
        }
        assert_eq!("10.0.0.1".parse::<UpstreamSpec>().unwrap().addr.port(), 53);
        assert_eq!("tls://9.9.9.9#dns.quad9.net".parse::<UpstreamSpec>().unwrap().addr.port(), 853);
        assert!("tcp://10.0.0.1:53".parse::<UpstreamSpec>().unwrap().is_stream());
    }

    #[test]
    fn malformed_forms_are_rejected() {
        for text in ["", "http://10.0.0.1", "tls://10.0.0.1:853", "tls://10.0.0.1:853#", "udp://name.example:53", "10.0.0.1:99999"] {
            assert!(text.parse::<UpstreamSpec>().is_err(), "{text}");
        }
    }
}
