//! Composing the messages nodedns writes itself: error responses to clients, queries to
//! upstreams, and the OPT record it attaches; and answers from local data, record by record
//! ([`LocalAnswer`]). Callers provide the buffer; sizes are bounded (a header, one question
//! of at most 255 + 4 octets, one OPT record), except a local answer's, which stops at the
//! limit it is given.

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

/// The owner of every record of a [`LocalAnswer`]: a compression pointer to the question's
/// name, which sits right after the header.
const QUESTION_NAME: [u8; 2] = [0xc0, HEADER_LEN as u8];

/// An authoritative answer composed from local data: the header and the question (echoing
/// the client's ID, opcode, RD and CD bits, as [`error_response`] does), then the records
/// [`LocalAnswer::record`] adds, each owned by the question's name, then the OPT record when
/// the client sent one. A record that would take the message past its limit is left out and
/// the answer marked truncated (TC), so a UDP client asks again over TCP.
pub struct LocalAnswer<'a> {
    out: &'a mut [u8],
    header: Header,
    len: usize,
    /// The limit less the room the OPT record will take.
    room: usize,
    client_edns: Option<Edns>,
}

impl<'a> LocalAnswer<'a> {
    /// Starts an answer to the query with header `query` and question octets `question`, in
    /// `out`, of at most `limit` octets (and at most `out`'s length).
    pub fn new(out: &'a mut [u8], query: &Header, question: &[u8], client_edns: Option<Edns>, limit: usize) -> Self {
        let keep = query.flags.0 & (Flags::OPCODE | Flags::RD | Flags::CD);
        let header =
            Header { id: query.id, flags: Flags(keep | Flags::QR | Flags::AA | Flags::RA), qdcount: 1, ancount: 0, nscount: 0, arcount: 0 };
        out[HEADER_LEN..HEADER_LEN + question.len()].copy_from_slice(question);
        let opt_room = if client_edns.is_some() { OPT_LEN } else { 0 };
        let room = limit.min(out.len()).saturating_sub(opt_room);
        LocalAnswer { out, header, len: HEADER_LEN + question.len(), room, client_edns }
    }

    /// Adds a record of `rtype`, class IN, owned by the question's name; `rdata` is its
    /// RDATA in wire form. Returns whether it fit.
    pub fn record(&mut self, rtype: RecordType, ttl: u32, rdata: &[u8]) -> bool {
        let end = self.len + QUESTION_NAME.len() + 10 + rdata.len();
        if end > self.room || self.header.flags.has(Flags::TC) {
            self.header.flags = self.header.flags.with(Flags::TC, true);
            return false;
        }
        let out = &mut self.out[self.len..end];
        out[..2].copy_from_slice(&QUESTION_NAME);
        out[2..4].copy_from_slice(&rtype.to_be_bytes());
        out[4..6].copy_from_slice(&1u16.to_be_bytes());
        out[6..10].copy_from_slice(&ttl.to_be_bytes());
        out[10..12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
        out[12..].copy_from_slice(rdata);
        self.header.ancount += 1;
        self.len = end;
        true
    }

    /// Writes the header and the OPT record; returns the answer's length.
    pub fn finish(mut self, our_payload: u16) -> usize {
        if let Some(edns) = self.client_edns {
            self.header.arcount = 1;
            self.len += opt(&mut self.out[self.len..], our_payload, edns.dnssec_ok, 0);
        }
        self.header.compose(self.out);
        self.len
    }
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
    fn a_local_answer_is_authoritative_and_stops_whole_records_at_its_limit() {
        let query = Header { id: 9, flags: Flags(Flags::RD | Flags::CD | Flags::AD), qdcount: 1, ancount: 0, nscount: 0, arcount: 1 };
        let question = b"\x02db\x00\x00\x01\x00\x01";
        let edns = Edns { udp_payload: 1232, version: 0, dnssec_ok: true };
        let mut out = [0u8; 512];
        let mut answer = LocalAnswer::new(&mut out, &query, question, Some(edns), 512);
        assert!(answer.record(RecordType::A, 3600, &[10, 0, 0, 5]));
        let len = answer.finish(1232);
        let header = Header::parse(&out).unwrap();
        assert_eq!((header.id, header.qdcount, header.ancount, header.nscount, header.arcount), (9, 1, 1, 0, 1));
        assert!(header.flags.has(Flags::AA) && header.flags.has(Flags::QR) && header.flags.has(Flags::RD) && header.flags.has(Flags::CD));
        assert!(!header.flags.has(Flags::AD) && !header.flags.has(Flags::TC));
        let record = crate::wire::record::read(&out[..len], HEADER_LEN + question.len()).unwrap();
        assert_eq!((record.rtype, record.class, record.ttl), (RecordType::A, 1, 3600));
        assert_eq!(&out[record.owner..record.owner + 2], &QUESTION_NAME);
        assert_eq!(&out[record.rdata_start..record.end], &[10, 0, 0, 5]);
        assert_eq!(len, record.end + OPT_LEN);

        // Room for the header, question, OPT and one AAAA record (28 octets) but not two.
        let limit = HEADER_LEN + question.len() + OPT_LEN + 28 + 27;
        let mut answer = LocalAnswer::new(&mut out, &query, question, Some(edns), limit);
        assert!(answer.record(RecordType::AAAA, 60, &[0; 16]));
        assert!(!answer.record(RecordType::AAAA, 60, &[1; 16]));
        assert!(!answer.record(RecordType::A, 60, &[1; 4]), "nothing after a record left out, even one that would fit");
        let len = answer.finish(1232);
        let header = Header::parse(&out).unwrap();
        assert!(header.flags.has(Flags::TC));
        assert_eq!((header.ancount, len), (1, limit - 27));
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
