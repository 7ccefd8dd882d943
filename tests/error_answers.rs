//! The answers nodedns composes itself to queries it will not serve (an opcode it does not
//! implement, an EDNS version it does not speak), compared octet by octet with a real BIND
//! `named`, the reference clients and tools are written against.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(3);
/// Header flag bits, in the second octet of the flag word.
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;

fn setup() -> (Named, Nodedns) {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    (named, nd)
}

/// A query for `www.test.example. A` with opcode `opcode`, RD and CD set, and no OPT record.
fn with_opcode(opcode: u8) -> Vec<u8> {
    let mut q = build_query("www.test.example.", RecordType::A, 0x0f0f, false);
    q[2] = (opcode << 3) | RD;
    q[3] |= CD;
    q
}

/// A query with RD, CD and an OPT record of EDNS version 1 with DO set.
fn edns_version_one() -> Vec<u8> {
    let mut q = build_query("WwW.Test.Example.", RecordType::A, 0x0e0e, true);
    q[3] |= CD;
    let n = q.len();
    q[n - 5] = 1; // the OPT TTL's version octet
    q[n - 4] |= 0x80; // DO
    q
}

#[test]
fn notimp_for_an_unknown_opcode_is_the_bare_header_bind_sends() {
    let (named, nd) = setup();
    for opcode in [15, 3, 1] {
        let query = with_opcode(opcode);
        let bind = exchange_udp(named.addr, &query, T).expect("BIND answers");
        let ours = exchange_udp(nd.dns, &query, T).expect("nodedns answers");
        assert_eq!(ours[3] & 0xf, 4, "NOTIMP");
        assert_eq!(ours[3] & RA, 0, "no RA for an operation we do not offer");
        assert_eq!(ours[2] & RD, 0, "RD is not echoed");
        assert_eq!(ours, bind, "opcode {opcode}: the same octets as BIND (ID, QR, opcode, NOTIMP, no sections)");
    }
}

#[test]
fn badvers_echoes_the_question_flags_and_do_as_bind_does() {
    let (named, nd) = setup();
    let query = edns_version_one();
    let bind = exchange_udp(named.addr, &query, T).expect("BIND answers");
    let ours = exchange_udp(nd.dns, &query, T).expect("nodedns answers");
    assert_eq!(u16::from_be_bytes([ours[4], ours[5]]), 1, "one question");
    assert_eq!(&ours[12..12 + 22], &query[12..12 + 22], "the question, in the client's case");
    // nodedns offers recursion, and says so as Unbound does; BIND answers BADVERS before
    // it has chosen a view, so it never sets RA there. Everything else is BIND's.
    assert_ne!(ours[3] & RA, 0, "RA");
    let mut without_ra = ours.clone();
    without_ra[3] &= !RA;
    assert_eq!(without_ra, bind, "header (RD, CD), question and OPT (BADVERS, DO) as BIND's");
}

#[test]
fn badvers_answers_are_counted_with_rcode_badvers() {
    let (_named, nd) = setup();
    let r = exchange_udp(nd.dns, &edns_version_one(), T).expect("BADVERS answer");
    assert_eq!((r[3] & 0xf, r[r.len() - 6]), (0, 1), "extended rcode 16: 0 in the header, 1 in the OPT");
    let text = nd.metrics_text();
    let counted = |rcode: &str| {
        text.lines()
            .filter(|l| l.starts_with("coredns_dns_responses_total{") && l.contains(&format!("rcode=\"{rcode}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(counted("BADVERS"), 1.0, "{text}");
    assert_eq!(counted("NOERROR"), 0.0, "BADVERS is not NOERROR");
}
