//! DNS wire format: the few parts of RFC 1035 / RFC 6891 that the hot path needs, read and
//! written in place on borrowed byte slices.
//!
//! Vocabulary (borrowed from NLnet Labs' `domain`): *parsing* reads from wire octets,
//! *composing* writes them. Nothing here allocates on the query path, does I/O, or knows about
//! caching policy; it only answers "what does this message say" and "write this message".
//!
//! - [`header`]: the 12-octet header, flags and counts.
//! - [`name`]: domain names (label walking, compression pointers, lower-casing).
//! - [`query`]: a client's query: header, the one question, its EDNS(0) OPT record.
//! - [`response`]: an upstream's response: validation, record TTL positions, negative TTL.
//! - [`compose`]: error responses, upstream queries and the OPT record we send.

pub mod compose;
pub mod header;
pub mod name;
pub mod query;
pub mod record;
pub mod response;

pub use header::{Flags, Header, Opcode, Rcode};

/// What carries a DNS message: a client's query to us, or our exchange with an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS around it (RFC 7858); toward upstreams only.
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}
pub use query::{Edns, Query, QueryError};
pub use response::{ResponseError, UpstreamResponse};

/// The largest DNS message, the limit of a TCP frame.
pub const MAX_MESSAGE: usize = 65535;
/// The largest EDNS payload size nodedns uses over UDP (RFC 6891 suggests 4096 as a
/// starting point; DNS Flag Day 2020 settled on 1232): the bound of `server.udp_payload`.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// Mnemonics of the record types people type and read; others are `TYPEnnn` (RFC 3597).
const TYPE_NAMES: [(u16, &str); 20] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (13, "HINFO"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (41, "OPT"),
    (43, "DS"),
    (46, "RRSIG"),
    (48, "DNSKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
];

/// A record (or query) type: its code on the wire, written for people as its mnemonic
/// (`AAAA`) or, for a type without one, `TYPE65534` (RFC 3597). Every code is a valid type:
/// a cache passes through what it does not interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u16);

impl RecordType {
    /// An IPv4 address.
    pub const A: RecordType = RecordType(1);
    pub const NS: RecordType = RecordType(2);
    /// A start of authority, which carries the negative TTL (RFC 2308).
    pub const SOA: RecordType = RecordType(6);
    /// A pointer to a name: the name of an address under `in-addr.arpa.` or `ip6.arpa.`.
    pub const PTR: RecordType = RecordType(12);
    /// An IPv6 address.
    pub const AAAA: RecordType = RecordType(28);
    pub const SRV: RecordType = RecordType(33);
    /// The EDNS(0) pseudo-record (RFC 6891).
    pub const OPT: RecordType = RecordType(41);
    /// Zone transfers, which a cache will not forward.
    pub const IXFR: RecordType = RecordType(251);
    pub const AXFR: RecordType = RecordType(252);

    /// Its two octets on the wire.
    #[inline]
    pub fn to_be_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match TYPE_NAMES.iter().find(|(code, _)| *code == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl std::str::FromStr for RecordType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.to_ascii_uppercase();
        if let Some(&(code, _)) = TYPE_NAMES.iter().find(|(_, name)| *name == upper) {
            return Ok(RecordType(code));
        }
        upper
            .strip_prefix("TYPE")
            .and_then(|n| n.parse().ok())
            .map(RecordType)
            .ok_or_else(|| format!("`{text}` is not a record type (A, AAAA, SRV, ... or TYPEnnn)"))
    }
}

/// Reads a big-endian u16 at `at`, or `None` past the end.
#[inline]
pub fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian u32 at `at`, or `None` past the end.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// RFC 1035 section 4.2.2 framing: each message preceded by its two-octet length.
pub fn frame_codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder().length_field_length(2).max_frame_length(MAX_MESSAGE).new_codec()
}

#[cfg(test)]
mod tests {
    use super::RecordType;

    #[test]
    fn type_names_round_trip_and_unknown_types_use_the_generic_form() {
        for text in ["A", "AAAA", "SRV", "HTTPS", "TYPE65534"] {
            assert_eq!(text.parse::<RecordType>().unwrap().to_string(), text);
        }
        assert_eq!("aaaa".parse::<RecordType>(), Ok(RecordType(28)));
        assert!("AAAAA".parse::<RecordType>().is_err());
    }
}
