//! A client's query: the header, the single question and the EDNS(0) OPT record, read in place.

use super::header::{Flags, HEADER_LEN, Header, Opcode};
use super::name::{self, LowerName, MAX_NAME};
use super::record::{self, RecordAt};
use super::{RecordType, read_u16};

/// What the client said about itself in its OPT record (RFC 6891 section 6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP response the client can take; values below 512 mean 512.
    pub udp_payload: u16,
    pub version: u8,
    /// DNSSEC OK: the client wants signatures (RFC 3225).
    pub dnssec_ok: bool,
}

/// A parsed query borrowing the datagram it came in.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub header: Header,
    /// The question name in wire form, in the client's own case.
    pub qname: &'a [u8],
    pub qtype: RecordType,
    pub qclass: u16,
    /// The octets of the question section (name, type, class), to echo in error responses.
    pub question: &'a [u8],
    pub edns: Option<Edns>,
}

/// Why a query gets no normal answer. Each variant says what the client receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError<'a> {
    /// Too short for a header, or a response rather than a query: answering could loop, so drop.
    #[error("not a query; dropped")]
    Drop,
    /// Parsed far enough to reply: FORMERR.
    #[error("malformed query")]
    Malformed(Header),
    /// An opcode other than QUERY: NOTIMP.
    #[error("opcode not implemented")]
    NotImplemented(Header),
    /// An EDNS version we do not speak: BADVERS with our OPT (RFC 6891 section 6.1.3),
    /// echoing the question (its octets in the datagram) and the client's DO bit as BIND
    /// and Unbound do.
    #[error("unsupported EDNS version")]
    BadVersion { header: Header, question: &'a [u8], edns: Edns },
}

impl QueryError<'_> {
    /// The query log's `reason`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueryError::Drop => "not_a_query",
            QueryError::Malformed(_) => "malformed",
            QueryError::NotImplemented(_) => "opcode_not_implemented",
            QueryError::BadVersion { .. } => "bad_edns_version",
        }
    }
}

impl<'a> Query<'a> {
    /// Parses `msg`, writing the lower-cased question name into `lower`; returns the query and
    /// that name. Rules follow Unbound's request checks: exactly one
    /// question, empty answer and authority sections, at most one OPT record.
    #[inline]
    pub fn parse<'b>(msg: &'a [u8], lower: &'b mut [u8; MAX_NAME]) -> Result<(Query<'a>, LowerName<'b>), QueryError<'a>> {
        let header = Header::parse(msg).ok_or(QueryError::Drop)?;
        if header.flags.has(Flags::QR) {
            return Err(QueryError::Drop);
        }
        if header.flags.opcode() != Opcode::QUERY {
            return Err(QueryError::NotImplemented(header));
        }
        if header.qdcount != 1 || header.ancount != 0 || header.nscount != 0 {
            return Err(QueryError::Malformed(header));
        }
        let malformed = || QueryError::Malformed(header);
        let (name_end, lower_name) = name::read_lowercased(msg, HEADER_LEN, lower).map_err(|_| malformed())?;
        let qtype = RecordType(read_u16(msg, name_end).ok_or_else(malformed)?);
        let qclass = read_u16(msg, name_end + 2).ok_or_else(malformed)?;
        let question_end = name_end + 4;
        let edns = parse_additional(msg, question_end, header.arcount).ok_or_else(malformed)?;
        if let Some(edns) = edns.filter(|e| e.version != 0) {
            return Err(QueryError::BadVersion { header, question: &msg[HEADER_LEN..question_end], edns });
        }
        let query = Query { header, qname: &msg[HEADER_LEN..name_end], qtype, qclass, question: &msg[HEADER_LEN..question_end], edns };
        Ok((query, lower_name))
    }

    /// The largest response this client accepts over UDP, capped by our own limit.
    #[inline]
    pub fn udp_limit(&self, our_max: u16) -> usize {
        match self.edns {
            Some(e) => e.udp_payload.clamp(512, our_max.max(512)) as usize,
            None => 512,
        }
    }
}

/// Walks the additional section, returning the OPT record's contents if there is one, or
/// `None` (malformed) for a second OPT, an OPT not owned by the root, or records that overrun.
fn parse_additional(msg: &[u8], mut pos: usize, count: u16) -> Option<Option<Edns>> {
    let mut edns = None;
    for _ in 0..count {
        let RecordAt { owner, rtype, class, ttl, end, .. } = record::read(msg, pos)?;
        pos = end;
        if rtype == RecordType::OPT {
            if edns.is_some() || msg[owner] != 0 {
                return None;
            }
            edns = Some(Edns { udp_payload: class, version: (ttl >> 16) as u8, dnssec_ok: ttl & 0x8000 != 0 });
        }
    }
    Some(edns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::compose;

    fn query_bytes(name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let wire = name::from_text(name).unwrap();
        let mut out = vec![0u8; 512];
        let len = compose::query(&mut out, 0x1234, &wire, RecordType(qtype), 1, false, edns);
        out.truncate(len);
        out
    }

    #[test]
    fn parses_question_and_edns() {
        let msg = query_bytes("Www.Example.COM", 28, Some((4096, true)));
        let mut lower = [0u8; MAX_NAME];
        let (q, name) = Query::parse(&msg, &mut lower).unwrap();
        assert_eq!(q.header.id, 0x1234);
        assert_eq!(q.qname, &msg[12..29]);
        assert_eq!(name.as_bytes(), b"\x03www\x07example\x03com\x00");
        assert_eq!((q.qtype, q.qclass), (RecordType::AAAA, 1));
        assert_eq!(q.edns, Some(Edns { udp_payload: 4096, version: 0, dnssec_ok: true }));
        assert_eq!(q.udp_limit(1232), 1232);
    }

    #[test]
    fn small_or_missing_payload_means_512() {
        let mut lower = [0u8; MAX_NAME];
        let plain = query_bytes("a.b", 1, None);
        assert_eq!(Query::parse(&plain, &mut lower).unwrap().0.udp_limit(1232), 512);
        let tiny = query_bytes("a.b", 1, Some((100, false)));
        assert_eq!(Query::parse(&tiny, &mut lower).unwrap().0.udp_limit(1232), 512);
    }

    #[test]
    fn rejects_what_is_not_one_plain_question() {
        let mut lower = [0u8; MAX_NAME];
        let good = query_bytes("a.b", 1, None);
        assert_eq!(Query::parse(&good[..5], &mut lower).unwrap_err(), QueryError::Drop);

        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(Query::parse(&response, &mut lower).unwrap_err(), QueryError::Drop);

        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        assert!(matches!(Query::parse(&notify, &mut lower), Err(QueryError::NotImplemented(_))));

        let mut two = good.clone();
        two[5] = 2;
        assert!(matches!(Query::parse(&two, &mut lower), Err(QueryError::Malformed(_))));

        assert!(matches!(Query::parse(&good[..good.len() - 1], &mut lower), Err(QueryError::Malformed(_))));
    }

    #[test]
    fn rejects_second_opt_and_unknown_edns_version() {
        let mut lower = [0u8; MAX_NAME];
        let mut two_opts = query_bytes("a.b", 1, Some((1232, false)));
        let opt = two_opts[two_opts.len() - 11..].to_vec();
        two_opts.extend_from_slice(&opt);
        two_opts[11] = 2;
        assert!(matches!(Query::parse(&two_opts, &mut lower), Err(QueryError::Malformed(_))));

        let mut v1 = query_bytes("a.b", 1, Some((1232, false)));
        let n = v1.len();
        v1[n - 5] = 1; // version octet of the OPT TTL
        assert!(matches!(Query::parse(&v1, &mut lower), Err(QueryError::BadVersion { .. })));
    }

    #[test]
    fn bad_version_carries_the_question_and_the_clients_edns() {
        let mut lower = [0u8; MAX_NAME];
        let mut v1 = query_bytes("Www.Example.COM", 28, Some((4096, true)));
        let n = v1.len();
        v1[n - 5] = 1;
        let Err(QueryError::BadVersion { header, question, edns }) = Query::parse(&v1, &mut lower) else {
            panic!("BADVERS expected");
        };
        assert_eq!(header.id, 0x1234);
        assert_eq!(question, &v1[HEADER_LEN..n - 11], "name in the client's case, type, class");
        assert_eq!(edns, Edns { udp_payload: 4096, version: 1, dnssec_ok: true });
    }
}
