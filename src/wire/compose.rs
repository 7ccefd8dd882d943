//! Composing the messages nodedns writes itself: error responses to clients, queries to
//! upstreams, and the OPT record it attaches. Callers provide the buffer; sizes are bounded
//! (a header, one question of at most 255 + 4 octets, one OPT record).

use super::RecordType;
use super::header::{Flags, HEADER_LEN, Header, Rcode};
use super::query::Edns;

/// Length of an OPT record with no options.
pub const OPT_LEN: usize = 11;
/// Room for any message composed here.
pub const MAX_COMPOSED: usize = HEADER_LEN + 255 + 4 + OPT_LEN;

/// Writes an OPT record with no options at the start of `out`; returns its length.
#[inline]
pub fn opt(out: &mut [u8], udp_payload: u16, dnssec_ok: bool, extended_rcode: u8) -> usize {
    out[0] = 0;
    out[1..3].copy_from_slice(&RecordType::OPT.to_be_bytes());
    out[3..5].copy_from_slice(&udp_payload.to_be_bytes());
    out[5] = extended_rcode;
    out[6] = 0; // version
    out[7] = if dnssec_ok { 0x80 } else { 0 };
    out[8] = 0;
    out[9..11].copy_from_slice(&0u16.to_be_bytes());
    OPT_LEN
}

/// Composes a recursive query for one question, as sent to an upstream; returns its length.
/// `edns` is (our UDP payload, DO bit).
pub fn query(out: &mut [u8], id: u16, name: &[u8], qtype: RecordType, qclass: u16, cd: bool, edns: Option<(u16, bool)>) -> usize {
    let header =
        Header { id, flags: Flags(Flags::RD).with(Flags::CD, cd), qdcount: 1, ancount: 0, nscount: 0, arcount: u16::from(edns.is_some()) };
    header.compose(out);
    let mut pos = HEADER_LEN;
    out[pos..pos + name.len()].copy_from_slice(name);
    pos += name.len();
    out[pos..pos + 2].copy_from_slice(&qtype.to_be_bytes());
    out[pos + 2..pos + 4].copy_from_slice(&qclass.to_be_bytes());
    pos += 4;
    if let Some((payload, dnssec_ok)) = edns {
        pos += opt(&mut out[pos..], payload, dnssec_ok, 0);
    }
    pos
}

/// Composes a response carrying only an error code, echoing the client's ID, opcode, RD and
/// CD bits and, when it was readable, its question. An OPT record is added when the client
/// sent one; `Rcode(16)` (BADVERS) is carried in the OPT's extended code (RFC 6891).
pub fn error_response(
    out: &mut [u8],
    query: &Header,
    question: Option<&[u8]>,
    rcode: Rcode,
    client_edns: Option<Edns>,
    our_payload: u16,
) -> usize {
    let keep = query.flags.0 & (Flags::OPCODE | Flags::RD | Flags::CD);
    let header = Header {
        id: query.id,
        flags: Flags(keep | Flags::QR | Flags::RA).with_rcode(Rcode(rcode.0 & 0xf)),
        qdcount: u16::from(question.is_some()),
        ancount: 0,
        nscount: 0,
        arcount: u16::from(client_edns.is_some()),
    };
    header.compose(out);
    let mut pos = HEADER_LEN;
    if let Some(q) = question {
        out[pos..pos + q.len()].copy_from_slice(q);
        pos += q.len();
    }
    if let Some(edns) = client_edns {
        pos += opt(&mut out[pos..], our_payload, edns.dnssec_ok, rcode.0 >> 4);
    }
    pos
}

/// Composes NOTIMP for an opcode nodedns does not implement: the client's ID and opcode,
/// QR, and nothing else, octet for octet what BIND sends. RA would offer recursion for an
/// operation we do not serve at all, and RD and CD are QUERY's bits, so neither is echoed;
/// the rest of such a message is never read, so there is no question or OPT to echo.
pub fn not_implemented(out: &mut [u8], query: &Header) -> usize {
    let header = Header {
        id: query.id,
        flags: Flags((query.flags.0 & Flags::OPCODE) | Flags::QR).with_rcode(Rcode::NOTIMP),
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    };
    header.compose(out);
    HEADER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Opcode;

    #[test]
    fn notimp_keeps_only_the_id_and_opcode() {
        let all = Flags(Flags::OPCODE | Flags::RD | Flags::CD | Flags::AD | Flags::TC | Flags::AA);
        let query = Header { id: 0xabcd, flags: all, qdcount: 1, ancount: 0, nscount: 0, arcount: 1 };
        let mut out = [0xffu8; MAX_COMPOSED];
        let len = not_implemented(&mut out, &query);
        let answer = Header::parse(&out[..len]).unwrap();
        assert_eq!(answer.id, 0xabcd);
        assert_eq!(answer.flags.opcode(), Opcode(15));
        assert_eq!(answer.flags.rcode(), Rcode::NOTIMP);
        assert_eq!(answer.flags.0 & !(Flags::OPCODE | 0xf), Flags::QR, "QR alone: no RA, RD, CD");
        assert_eq!((answer.qdcount, answer.ancount, answer.nscount, answer.arcount), (0, 0, 0, 0));
    }

    #[test]
    fn badvers_goes_half_in_the_header_half_in_the_opt() {
        let query = Header { id: 1, flags: Flags(Flags::RD | Flags::CD), qdcount: 1, ancount: 0, nscount: 0, arcount: 1 };
        let question = b"\x01a\x00\x00\x01\x00\x01";
        let edns = Edns { udp_payload: 4096, version: 1, dnssec_ok: true };
        let mut out = [0u8; MAX_COMPOSED];
        let len = error_response(&mut out, &query, Some(question), Rcode::BADVERS, Some(edns), 1232);
        let answer = Header::parse(&out).unwrap();
        assert_eq!(answer.flags.rcode(), Rcode::NOERROR, "16's low four bits");
        assert!(answer.flags.has(Flags::RD) && answer.flags.has(Flags::CD) && answer.flags.has(Flags::RA));
        assert_eq!(&out[HEADER_LEN..HEADER_LEN + question.len()], question);
        let opt = &out[HEADER_LEN + question.len()..len];
        assert_eq!((opt.len(), opt[5], opt[6], opt[7]), (OPT_LEN, 1, 0, 0x80), "extended code 1, version 0, DO echoed");
    }
}
