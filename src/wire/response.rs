//! An upstream's response, checked before anything in it is believed or stored.
//!
//! Parsing walks every record once, so a response that reaches the cache is known to be
//! well-formed, to answer the question that was asked, and to have its TTL fields at known
//! offsets (which is what lets a cache hit patch TTLs without parsing again).

use super::header::{Flags, HEADER_LEN, Header, Rcode};
use super::name::{self, LowerName, MAX_NAME};
use super::record::{self, RecordAt};
use super::{RecordType, read_u16, read_u32};

/// Why an upstream response was rejected. None of these is ever cached or passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response too short or not a response")]
    NotAResponse,
    #[error("response does not carry exactly one question")]
    QuestionCount,
    #[error("response answers a different question")]
    WrongQuestion,
    #[error("malformed record in response")]
    Malformed,
    #[error("more than one OPT record")]
    DuplicateOpt,
}

/// A validated upstream response, described by offsets into the octets it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    pub header: Header,
    /// The octets worth keeping are `msg[..kept_len]`: header, question and every record
    /// before the OPT record. The OPT is per-hop (RFC 6891) and is recomposed for each client;
    /// records after it (TSIG, SIG(0)) are per-hop too.
    pub kept_len: usize,
    /// Additional-section records kept, i.e. before the OPT.
    pub kept_arcount: u16,
    /// Offset of each kept record's TTL field.
    pub ttl_offsets: Vec<u16>,
    /// Smallest TTL among the kept records, `None` when there are none.
    pub min_ttl: Option<u32>,
    /// For a negative answer, `min(SOA TTL, SOA MINIMUM)` of the authority's SOA (RFC 2308
    /// section 5), when there is one.
    pub soa_negative_ttl: Option<u32>,
    /// The full response code, with the OPT's upper eight bits.
    pub rcode: u16,
}

impl UpstreamResponse {
    /// Parses `msg` as the response to the question (`qname`, `qtype`, `qclass`).
    pub fn parse(msg: &[u8], qname: LowerName<'_>, qtype: RecordType, qclass: u16) -> Result<Self, ResponseError> {
        let header = Header::parse(msg).ok_or(ResponseError::NotAResponse)?;
        if !header.flags.has(Flags::QR) {
            return Err(ResponseError::NotAResponse);
        }
        if header.qdcount != 1 {
            return Err(ResponseError::QuestionCount);
        }
        let mut lower = [0u8; MAX_NAME];
        let (name_end, asked) = name::read_lowercased(msg, HEADER_LEN, &mut lower).map_err(|_| ResponseError::Malformed)?;
        let question_type = RecordType(read_u16(msg, name_end).ok_or(ResponseError::Malformed)?);
        let question_class = read_u16(msg, name_end + 2).ok_or(ResponseError::Malformed)?;
        if asked != qname || question_type != qtype || question_class != qclass {
            return Err(ResponseError::WrongQuestion);
        }

        let mut walk = RecordWalk {
            msg,
            pos: name_end + 4,
            ttl_offsets: Vec::with_capacity(usize::from(header.ancount) + usize::from(header.nscount) + 1),
            min_ttl: None,
        };
        walk.section(header.ancount, |_| Ok(()))?;
        let mut soa_negative_ttl = None;
        walk.section(header.nscount, |rec| {
            if rec.rtype == RecordType::SOA && soa_negative_ttl.is_none() {
                soa_negative_ttl = Some(rec.ttl.min(soa_minimum(msg, rec.rdata_start, rec.end)?));
            }
            Ok(())
        })?;
        let (kept_len, kept_arcount, extended) = walk.additional(header.arcount)?;
        Ok(UpstreamResponse {
            header,
            kept_len,
            kept_arcount,
            rcode: (u16::from(extended) << 4) | u16::from(header.flags.rcode().0),
            ttl_offsets: walk.ttl_offsets,
            min_ttl: walk.min_ttl,
            soa_negative_ttl,
        })
    }

    pub fn rcode(&self) -> Rcode {
        Rcode(self.header.flags.rcode().0)
    }

    pub fn is_truncated(&self) -> bool {
        self.header.flags.has(Flags::TC)
    }
}

struct RecordWalk<'a> {
    msg: &'a [u8],
    pos: usize,
    ttl_offsets: Vec<u16>,
    min_ttl: Option<u32>,
}

impl RecordWalk<'_> {
    fn next(&mut self) -> Result<RecordAt, ResponseError> {
        let rec = record::read(self.msg, self.pos).ok_or(ResponseError::Malformed)?;
        self.pos = rec.end;
        Ok(rec)
    }

    fn keep(&mut self, ttl_at: usize, ttl: u32) {
        // Messages are at most 65535 octets, so every offset fits.
        self.ttl_offsets.push(ttl_at as u16);
        // RFC 2181 section 8: a TTL with the top bit set is treated as zero.
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        self.min_ttl = Some(self.min_ttl.map_or(ttl, |m| m.min(ttl)));
    }

    fn section(&mut self, count: u16, mut inspect: impl FnMut(&RecordAt) -> Result<(), ResponseError>) -> Result<(), ResponseError> {
        for _ in 0..count {
            let rec = self.next()?;
            if rec.rtype == RecordType::OPT {
                return Err(ResponseError::Malformed);
            }
            inspect(&rec)?;
            self.keep(rec.ttl_at, rec.ttl);
        }
        Ok(())
    }

    /// Walks the additional section; returns the kept length, kept record count and the
    /// OPT's extended response code.
    fn additional(&mut self, count: u16) -> Result<(usize, u16, u8), ResponseError> {
        let mut opt: Option<(usize, u8)> = None;
        let mut kept = 0;
        for _ in 0..count {
            let rec = self.next()?;
            if rec.rtype == RecordType::OPT {
                if opt.is_some() {
                    return Err(ResponseError::DuplicateOpt);
                }
                opt = Some((rec.owner, (rec.ttl >> 24) as u8));
            } else if opt.is_none() {
                self.keep(rec.ttl_at, rec.ttl);
                kept += 1;
            }
        }
        if self.pos != self.msg.len() && self.msg[self.pos..].iter().any(|&b| b != 0) {
            // Trailing octets that are not padding mean the counts lie.
            return Err(ResponseError::Malformed);
        }
        Ok(match opt {
            Some((start, extended)) => (start, kept, extended),
            None => (self.pos, kept, 0),
        })
    }
}

/// The MINIMUM field of an SOA record's RDATA (two names, then five 32-bit fields).
fn soa_minimum(msg: &[u8], start: usize, end: usize) -> Result<u32, ResponseError> {
    let bounded = &msg[..end];
    let after_mname = name::skip(bounded, start).map_err(|_| ResponseError::Malformed)?;
    let after_rname = name::skip(bounded, after_mname).map_err(|_| ResponseError::Malformed)?;
    if after_rname + 20 != end {
        return Err(ResponseError::Malformed);
    }
    read_u32(bounded, after_rname + 16).ok_or(ResponseError::Malformed)
}
