//! Unit-test fixtures shared by the modules: upstream responses built with `hickory-proto`,
//! an independent encoder, so our parser is checked against someone else's writer.

use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::wire::name;

pub fn hname(text: &str) -> Name {
    Name::from_str(text).unwrap()
}

pub fn wire_name(text: &str) -> crate::wire::name::LowerNameBuf {
    name::from_text(text).unwrap()
}

/// A response to `qname`/`qtype` with the given rcode, answers and authority records.
pub fn response(qname: &str, qtype: RecordType, rcode: ResponseCode, answers: Vec<Record>, authority: Vec<Record>, edns: bool) -> Vec<u8> {
    let mut msg = Message::new(0x4242, MessageType::Response, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.metadata.recursion_available = true;
    msg.metadata.response_code = rcode;
    msg.add_query(HQuery::query(hname(qname), qtype));
    msg.add_answers(answers);
    msg.add_authorities(authority);
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.edns = Some(e);
    }
    msg.to_vec().unwrap()
}

pub fn a(owner: &str, ttl: u32, addr: [u8; 4]) -> Record {
    Record::from_rdata(hname(owner), ttl, RData::A(A(Ipv4Addr::from(addr))))
}

pub fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(hname(owner), ttl, RData::CNAME(CNAME(hname(target))))
}

pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let soa = SOA::new(hname(&format!("ns.{zone}")), hname(&format!("admin.{zone}")), 1, 3600, 600, 86400, minimum);
    Record::from_rdata(hname(zone), ttl, RData::SOA(soa))
}

/// A client query in wire form, with an optional (payload, DO) OPT.
pub fn query(qname: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut out = vec![0u8; crate::wire::compose::MAX_COMPOSED];
    let wire: Vec<u8> = {
        // Keep the caller's case: build labels by hand rather than through `from_text`.
        let mut w = Vec::new();
        for label in qname.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            w.push(label.len() as u8);
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    };
    let len = crate::wire::compose::query(&mut out, 0x9999, &wire, crate::wire::RecordType(qtype), 1, false, edns);
    out.truncate(len);
    out[2] &= !1; // clear RD; callers set what they test
    out
}

pub fn parse_message(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap()
}
