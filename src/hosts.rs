//! Local answers from hosts(5) lines: the `hosts` blocks of the configuration, each with
//! inline entries and a hosts file re-read when it changes. Owns the line format, the table
//! of names and addresses, the reverse (PTR) names, the file watch, and the answers, which
//! follow CoreDNS's `hosts` plugin:
//!
//! - A and AAAA for a listed name, with the block's TTL, authoritative (AA). Names compare
//!   case-insensitively; every name of a line maps to its address; a name outside the
//!   block's zones is left out of the table, as CoreDNS leaves it out.
//! - Another type (MX, TXT, ANY...) for a listed name, or A for a name listed with IPv6
//!   addresses only: NODATA, authoritative.
//! - PTR for an address of any block (unless `reverse` is off): its names. The reverse
//!   zones need not be among the block's zones; a PTR query nothing here answers goes on.
//! - A name in a block's zones that is not listed goes on (to the cache and the upstream)
//!   where the block's `fallthrough` zones cover it; elsewhere it gets SERVFAIL, as from
//!   CoreDNS, which has no SOA to deny it with.
//! - A name outside every block's zones goes on.
//!
//! A query is answered by the block with the longest zone containing its name (the first
//! such block on a tie), PTR queries by the first block holding the address. Nothing here
//! is cached: an answer reads the table of the moment, so a changed file shows at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;
use crate::wire::compose::{self, LocalAnswer};
use crate::wire::name::{self, LowerName};
use crate::wire::{Query, Rcode, RecordType};
use crate::zones::Zone;

/// The class every record here has, and the only one answered.
const CLASS_IN: u16 = 1;

/// One hosts(5) line: an address and the names it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub address: IpAddr,
    /// Lower-cased, in wire form.
    pub names: Vec<Box<[u8]>>,
}

/// Why a line is not a hosts(5) line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("address `{0}` has no name after it")]
    NoName(String),
    #[error("`{0}` is not a domain name (empty or over-long label, or over 255 octets)")]
    BadName(String),
}

/// Reads one hosts(5) line: an address, then names, separated by blanks; `#` starts a
/// comment. `None` for a line with nothing but blanks and comments. An IPv6 address may
/// carry a zone (`fe80::1%eth0`), which is dropped; an IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.2`) is the IPv4 address, as in CoreDNS.
pub fn parse_line(text: &str) -> Result<Option<Line>, LineError> {
    let text = text.split('#').next().unwrap_or_default();
    let mut fields = text.split_ascii_whitespace();
    let Some(address_text) = fields.next() else { return Ok(None) };
    let bare = address_text.split('%').next().unwrap_or_default();
    let address = match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        Ok(v4) => v4,
        Err(_) => return Err(LineError::BadAddress(address_text.into())),
    };
    let names = fields
        .map(|n| name::from_text(n).map(|wire| Box::from(&*wire)).ok_or_else(|| LineError::BadName(n.into())))
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        return Err(LineError::NoName(address_text.into()));
    }
    Ok(Some(Line { address, names }))
}

/// The addresses of one name, each family in the order its lines came.
#[derive(Debug, Clone, Default, PartialEq)]
struct Addresses {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

/// Names and addresses, both ways.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Lower-cased wire name to its addresses.
    names: HashMap<Box<[u8]>, Addresses>,
    /// Address to the names it has, for PTR; empty when `reverse` is off.
    reverse: HashMap<IpAddr, Vec<Box<[u8]>>>,
}

impl Table {
    /// Adds `line`'s names that lie in `zones`, and their reverse names when `reverse`. A
    /// name or address given twice is kept once.
    pub fn add(&mut self, line: &Line, zones: &[Zone], reverse: bool) {
        for wire in &line.names {
            let lower = name::lower(wire).expect("parse_line makes lower-cased names");
            if !zones.iter().any(|z| z.contains(lower)) {
                continue;
            }
            let addresses = self.names.entry(wire.clone()).or_default();
            match line.address {
                IpAddr::V4(v4) if !addresses.v4.contains(&v4) => addresses.v4.push(v4),
                IpAddr::V6(v6) if !addresses.v6.contains(&v6) => addresses.v6.push(v6),
                _ => {}
            }
            if reverse {
                let names = self.reverse.entry(line.address).or_default();
                if !names.contains(wire) {
                    names.push(wire.clone());
                }
            }
        }
    }

    /// The table of `text`, a hosts file, scoped as [`Table::add`]; and the lines left out
    /// as not hosts(5) lines, by line number (from 1).
    pub fn from_file_text(text: &str, zones: &[Zone], reverse: bool) -> (Table, Vec<(usize, LineError)>) {
        let mut table = Table::default();
        let mut bad = Vec::new();
        for (i, text) in text.lines().enumerate() {
            match parse_line(text) {
                Ok(Some(line)) => table.add(&line, zones, reverse),
                Ok(None) => {}
                Err(e) => bad.push((i + 1, e)),
            }
        }
        (table, bad)
    }

    /// Both tables in one: `self`'s records first.
    fn merged(&self, other: &Table) -> Table {
        let mut out = self.clone();
        for (wire, addresses) in &other.names {
            let into = out.names.entry(wire.clone()).or_default();
            into.v4.extend(addresses.v4.iter().filter(|a| !into.v4.contains(a)).collect::<Vec<_>>());
            into.v6.extend(addresses.v6.iter().filter(|a| !into.v6.contains(a)).collect::<Vec<_>>());
        }
        for (address, names) in &other.reverse {
            let into = out.reverse.entry(*address).or_default();
            into.extend(names.iter().filter(|n| !into.contains(n)).cloned().collect::<Vec<_>>());
        }
        out
    }
}

/// One `hosts` block, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSettings {
    /// The names this block answers for.
    pub zones: Vec<Zone>,
    /// The inline entries, scoped to `zones`.
    pub entries: Table,
    /// A hosts(5) file, read at start and re-read when it changes.
    pub file: Option<PathBuf>,
    /// How often the file is checked for a change; zero: never.
    pub reload: Duration,
    pub ttl: u32,
    /// Whether the addresses have PTR records.
    pub reverse: bool,
    /// Where a name this block does not list goes on to the cache and the upstream.
    pub fallthrough: Vec<Zone>,
}

/// What identifies one version of a file: a rewrite changes its modification time or size,
/// a replacement (a symlink swap, a rename over it) its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// What the watch of one file knows between its checks.
#[derive(Default)]
struct Watch {
    seen: Option<Stamp>,
    /// Whether the last check could not read the file (warned once until it can again).
    failing: bool,
}

struct Block {
    settings: BlockSettings,
    /// The file's entries and the inline ones.
    table: ArcSwap<Table>,
}

impl Block {
    /// Reads the file when it changed since `watch` saw it; an unreadable file keeps the
    /// entries last read.
    fn refresh(&self, path: &Path, watch: &mut Watch) {
        let read = stamp(path).and_then(|now| {
            if watch.seen == Some(now) {
                return Ok(None);
            }
            Ok(Some((now, std::fs::read_to_string(path)?)))
        });
        match read {
            Ok(None) => {}
            Ok(Some((now, text))) => {
                let (file, bad) = Table::from_file_text(&text, &self.settings.zones, self.settings.reverse);
                if let Some((line, error)) = bad.first() {
                    tracing::warn!(path = %path.display(), line, %error, left_out = bad.len(), "hosts file: lines that are not hosts(5) lines left out");
                }
                tracing::info!(path = %path.display(), names = file.names.len(), "hosts file read");
                self.table.store(Arc::new(file.merged(&self.settings.entries)));
                *watch = Watch { seen: Some(now), failing: false };
            }
            Err(error) => {
                if !watch.failing {
                    tracing::warn!(path = %path.display(), %error, "hosts file cannot be read; its entries last read stay");
                }
                watch.failing = true;
            }
        }
    }

    /// Whether a name this block does not list goes on.
    fn falls_through(&self, qname: LowerName<'_>) -> bool {
        self.settings.fallthrough.iter().any(|z| z.contains(qname))
    }
}

/// What [`Hosts::answer`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub len: usize,
    pub rcode: Rcode,
    /// For the query log and `nodedns_local_answers`.
    pub reason: &'static str,
}

const ANSWERED: &str = "hosts";
const UNLISTED: &str = "hosts_unlisted";

/// The running `hosts` blocks. Dropping it stops their file watches.
pub struct Hosts {
    blocks: Vec<Arc<Block>>,
    answered: Counter,
    unlisted: Counter,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

impl Hosts {
    /// Reads the blocks' files and, on a runtime, starts watching those with a `reload`
    /// interval. `None` without blocks.
    pub fn start(settings: &[BlockSettings], metrics: &Metrics) -> Option<Arc<Hosts>> {
        if settings.is_empty() {
            return None;
        }
        let mut watches = Vec::new();
        let blocks = settings
            .iter()
            .map(|s| {
                let block = Arc::new(Block { settings: s.clone(), table: ArcSwap::from_pointee(s.entries.clone()) });
                if let Some(path) = &s.file {
                    let mut watch = Watch::default();
                    block.refresh(path, &mut watch);
                    if let (false, Ok(runtime)) = (s.reload.is_zero(), tokio::runtime::Handle::try_current()) {
                        watches.push(runtime.spawn(keep_reading(block.clone(), path.clone(), watch)));
                    }
                }
                block
            })
            .collect();
        let answered = metrics.local_answer_counter(ANSWERED);
        let unlisted = metrics.local_answer_counter(UNLISTED);
        Some(Arc::new(Hosts { blocks, answered, unlisted, watches }))
    }

    /// Answers `query` (its name lower-cased: `qname`) into `out`, at most `limit` octets,
    /// advertising `our_payload` when the client sent EDNS; `None` when the query goes on.
    pub fn answer(&self, query: &Query<'_>, qname: LowerName<'_>, out: &mut [u8], limit: usize, our_payload: u16) -> Option<Answered> {
        if query.qclass != CLASS_IN {
            return None;
        }
        if query.qtype == RecordType::PTR {
            let address = reverse_address(qname)?;
            return self.blocks.iter().find_map(|block| {
                let table = block.table.load();
                let names = table.reverse.get(&address)?;
                let mut answer = LocalAnswer::new(&mut *out, &query.header, query.question, query.edns, limit);
                for wire in names {
                    answer.record(RecordType::PTR, block.settings.ttl, wire);
                }
                Some(self.answered(answer.finish(our_payload)))
            });
        }
        let block = self.block_for(qname)?;
        let table = block.table.load();
        let Some(addresses) = table.names.get(qname.as_bytes()) else {
            if block.falls_through(qname) {
                return None;
            }
            self.unlisted.inc();
            let len = compose::error_response(out, &query.header, Some(query.question), Rcode::SERVFAIL, query.edns, our_payload);
            return Some(Answered { len, rcode: Rcode::SERVFAIL, reason: UNLISTED });
        };
        let ttl = block.settings.ttl;
        let mut answer = LocalAnswer::new(out, &query.header, query.question, query.edns, limit);
        // Any other type is NODATA: the name exists, with no records of that type.
        if query.qtype == RecordType::A {
            for a in &addresses.v4 {
                answer.record(RecordType::A, ttl, &a.octets());
            }
        } else if query.qtype == RecordType::AAAA {
            for a in &addresses.v6 {
                answer.record(RecordType::AAAA, ttl, &a.octets());
            }
        }
        Some(self.answered(answer.finish(our_payload)))
    }

    fn answered(&self, len: usize) -> Answered {
        self.answered.inc();
        Answered { len, rcode: Rcode::NOERROR, reason: ANSWERED }
    }

    /// The block with the longest zone containing `qname`.
    fn block_for(&self, qname: LowerName<'_>) -> Option<&Block> {
        let mut best: Option<(&Block, usize)> = None;
        for block in &self.blocks {
            for zone in block.settings.zones.iter().filter(|z| z.contains(qname)) {
                let depth = zone.wire().as_bytes().len();
                if best.is_none_or(|(_, d)| depth > d) {
                    best = Some((block, depth));
                }
            }
        }
        best.map(|(block, _)| block)
    }
}

/// Checks the file every `reload` interval, reading it off the runtime's threads (a hosts
/// file used as a block list can run to many megabytes).
async fn keep_reading(block: Arc<Block>, path: PathBuf, mut watch: Watch) {
    let mut every = tokio::time::interval(block.settings.reload);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let (block, path) = (block.clone(), path.clone());
        match tokio::task::spawn_blocking(move || {
            block.refresh(&path, &mut watch);
            watch
        })
        .await
        {
            Ok(checked) => watch = checked,
            // Only when the runtime shuts down.
            Err(_) => return,
        }
    }
}

/// The address a reverse name stands for: `d.c.b.a.in-addr.arpa.` (four decimal labels) or
/// the 32 nibbles of an IPv6 address under `ip6.arpa.`, lowest first. `None` for any other
/// name, a partial one included (it names a network, not an address).
pub fn reverse_address(qname: LowerName<'_>) -> Option<IpAddr> {
    let mut labels: Vec<&[u8]> = Vec::with_capacity(34);
    let wire = qname.as_bytes();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos)
        && len != 0
    {
        labels.push(wire.get(pos + 1..pos + 1 + len as usize)?);
        pos += 1 + len as usize;
    }
    match labels.as_slice() {
        [d, c, b, a, b"in-addr", b"arpa"] => {
            let octet = |label: &[u8]| -> Option<u8> {
                // Digits alone, without leading zeros: `01` does not name the octet 1.
                let decimal = label.iter().all(u8::is_ascii_digit) && (label.len() == 1 || label[0] != b'0');
                decimal.then(|| std::str::from_utf8(label).ok()?.parse().ok())?
            };
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., b"ip6", b"arpa"] if nibbles.len() == 32 => {
            let mut value = 0u128;
            for label in nibbles.iter().rev() {
                let [digit] = label else { return None };
                value = (value << 4) | u128::from((*digit as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::compose::MAX_COMPOSED;
    use crate::wire::header::{Flags, HEADER_LEN, Header};
    use crate::wire::name::MAX_NAME;

    fn zones(list: &[&str]) -> Vec<Zone> {
        list.iter().map(|z| z.parse().unwrap()).collect()
    }

    fn wire(text: &str) -> Box<[u8]> {
        Box::from(&*name::from_text(text).unwrap())
    }

    /// The reverse name of `address`, as a resolver asks for it.
    fn reverse_name(address: IpAddr) -> String {
        match address {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
            }
            IpAddr::V6(v6) => {
                let hex = format!("{:032x}", u128::from(v6));
                let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
                format!("{}.ip6.arpa.", nibbles.join("."))
            }
        }
    }

    #[test]
    fn lines_have_an_address_then_names_and_comments_are_ignored() {
        let line = parse_line("10.0.0.5\tDB.example.internal  db   # the database").unwrap().unwrap();
        assert_eq!(line.address, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(line.names, vec![wire("db.example.internal"), wire("db")]);
        assert_eq!(parse_line("   # only a comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        let v6 = parse_line("fd00::5 db.example.internal.").unwrap().unwrap();
        assert_eq!(v6.address, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(v6.names, vec![wire("db.example.internal")], "a trailing dot changes nothing");
    }

    #[test]
    fn ipv6_zones_are_dropped_and_mapped_ipv4_is_ipv4() {
        assert_eq!(parse_line("fe80::1%eth0 router").unwrap().unwrap().address, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(parse_line("::ffff:10.0.0.2 mapped").unwrap().unwrap().address, "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(parse_line("10.0.0.256 a"), Err(LineError::BadAddress("10.0.0.256".into())));
        assert_eq!(parse_line("db.example 10.0.0.1"), Err(LineError::BadAddress("db.example".into())));
        assert_eq!(parse_line("10.0.0.1   # no name"), Err(LineError::NoName("10.0.0.1".into())));
        assert_eq!(parse_line("10.0.0.1 a..b"), Err(LineError::BadName("a..b".into())));
    }

    #[test]
    fn a_file_keeps_its_good_lines_and_numbers_the_bad_ones() {
        let text = "# hosts\n127.0.0.1 localhost\nnot-an-address x\n\n::1 localhost ip6-localhost\n10.0.0.1\n";
        let (table, bad) = Table::from_file_text(text, &zones(&["."]), true);
        assert_eq!(bad.iter().map(|(line, _)| *line).collect::<Vec<_>>(), vec![3, 6]);
        let localhost = &table.names[&wire("localhost")];
        assert_eq!((localhost.v4.len(), localhost.v6.len()), (1, 1));
        assert!(table.names.contains_key(&wire("ip6-localhost")));
    }

    #[test]
    fn names_outside_the_zones_are_left_out_and_reverse_can_be_off() {
        let line = parse_line("10.0.0.5 db.example.internal db").unwrap().unwrap();
        let mut table = Table::default();
        table.add(&line, &zones(&["example.internal"]), true);
        assert_eq!(table.names.keys().cloned().collect::<Vec<_>>(), vec![wire("db.example.internal")]);
        assert_eq!(table.reverse[&line.address], vec![wire("db.example.internal")]);
        let mut no_reverse = Table::default();
        no_reverse.add(&line, &zones(&["."]), false);
        assert_eq!(no_reverse.names.len(), 2);
        assert!(no_reverse.reverse.is_empty());
    }

    #[test]
    fn merged_tables_keep_each_address_once() {
        let dot = zones(&["."]);
        let mut file = Table::default();
        file.add(&parse_line("10.0.0.1 a b").unwrap().unwrap(), &dot, true);
        let mut inline = Table::default();
        inline.add(&parse_line("10.0.0.1 a").unwrap().unwrap(), &dot, true);
        inline.add(&parse_line("10.0.0.2 a").unwrap().unwrap(), &dot, true);
        let both = file.merged(&inline);
        assert_eq!(both.names[&wire("a")].v4, vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(both.reverse[&"10.0.0.1".parse::<IpAddr>().unwrap()], vec![wire("a"), wire("b")]);
    }

    #[test]
    fn reverse_names_read_back_as_their_addresses() {
        for text in ["10.0.0.5", "192.168.1.255", "0.0.0.0", "fd00::5", "2001:db8::abcd:1", "::1"] {
            let address: IpAddr = text.parse().unwrap();
            let reverse = name::from_text(&reverse_name(address)).unwrap();
            assert_eq!(reverse_address(reverse.as_name()), Some(address), "{}", reverse_name(address));
        }
        assert_eq!(reverse_name("fd00::5".parse().unwrap()), "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.");
        let mixed_case = name::from_text("5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.D.F.IP6.ARPA.").unwrap();
        assert_eq!(reverse_address(mixed_case.as_name()), Some("fd00::5".parse().unwrap()));
        for not_an_address in [
            "0.10.in-addr.arpa.",
            "256.0.0.10.in-addr.arpa.",
            "05.0.0.10.in-addr.arpa.",
            "x.0.0.10.in-addr.arpa.",
            "ip6.arpa.",
            "db.example.",
        ] {
            assert_eq!(reverse_address(name::from_text(not_an_address).unwrap().as_name()), None, "{not_an_address}");
        }
    }

    fn block(entries: &[&str], zone_list: &[&str], fallthrough: &[&str]) -> BlockSettings {
        let zones = zones(zone_list);
        let mut table = Table::default();
        for e in entries {
            table.add(&parse_line(e).unwrap().unwrap(), &zones, true);
        }
        BlockSettings {
            zones,
            entries: table,
            file: None,
            reload: Duration::ZERO,
            ttl: 3600,
            reverse: true,
            fallthrough: fallthrough.iter().map(|z| z.parse().unwrap()).collect(),
        }
    }

    /// An answer record's type, TTL and RDATA.
    type Rr = (RecordType, u32, Vec<u8>);

    /// What `hosts` answers for `name` and `qtype`: the header and the answer records;
    /// `None` when the query goes on.
    fn ask(hosts: &Hosts, qname: &str, qtype: RecordType) -> Option<(Header, Vec<Rr>)> {
        let mut packet = [0u8; MAX_COMPOSED];
        let len = compose::query(&mut packet, 77, &name::from_text(qname).unwrap(), qtype, CLASS_IN, false, None);
        let mut lower = [0u8; MAX_NAME];
        let (query, lower_name) = Query::parse(&packet[..len], &mut lower).unwrap();
        let mut out = [0u8; 512];
        let answered = hosts.answer(&query, lower_name, &mut out, 512, 1232)?;
        let header = Header::parse(&out).unwrap();
        assert_eq!(header.flags.rcode(), answered.rcode);
        let mut pos = HEADER_LEN + query.question.len();
        let mut records = Vec::new();
        for _ in 0..header.ancount {
            let r = crate::wire::record::read(&out[..answered.len], pos).unwrap();
            records.push((r.rtype, r.ttl, out[r.rdata_start..r.end].to_vec()));
            pos = r.end;
        }
        Some((header, records))
    }

    fn hosts(blocks: Vec<BlockSettings>) -> Arc<Hosts> {
        Hosts::start(&blocks, &Metrics::new()).unwrap()
    }

    #[test]
    fn listed_names_get_their_addresses_authoritatively_in_any_letter_case() {
        let h = hosts(vec![block(
            &["10.0.0.5 db.example.internal", "10.0.0.6 db.example.internal", "fd00::5 db.example.internal"],
            &["example.internal"],
            &[],
        )]);
        let (header, records) = ask(&h, "DB.Example.Internal", RecordType::A).unwrap();
        assert!(header.flags.has(Flags::AA));
        assert_eq!(header.flags.rcode(), Rcode::NOERROR);
        assert_eq!(records, vec![(RecordType::A, 3600, vec![10, 0, 0, 5]), (RecordType::A, 3600, vec![10, 0, 0, 6])]);
        let (_, records) = ask(&h, "db.example.internal", RecordType::AAAA).unwrap();
        assert_eq!(records, vec![(RecordType::AAAA, 3600, "fd00::5".parse::<Ipv6Addr>().unwrap().octets().to_vec())]);
    }

    #[test]
    fn another_type_for_a_listed_name_is_nodata() {
        let h = hosts(vec![block(&["10.0.0.5 v4only.example"], &["."], &[])]);
        for qtype in [RecordType(15), RecordType::AAAA, RecordType(255)] {
            let (header, records) = ask(&h, "v4only.example", qtype).unwrap();
            assert!(header.flags.has(Flags::AA), "{qtype}");
            assert_eq!((header.flags.rcode(), records.len()), (Rcode::NOERROR, 0), "{qtype}");
        }
    }

    #[test]
    fn unlisted_names_in_the_zones_fail_unless_they_fall_through_and_others_go_on() {
        let strict = hosts(vec![block(&["10.0.0.5 db.example.internal"], &["example.internal"], &[])]);
        let (header, records) = ask(&strict, "other.example.internal", RecordType::A).unwrap();
        assert_eq!((header.flags.rcode(), records.len()), (Rcode::SERVFAIL, 0));
        assert!(!header.flags.has(Flags::AA));
        assert!(ask(&strict, "db.example.org", RecordType::A).is_none(), "outside the zones");

        let partly = hosts(vec![block(&["10.0.0.5 db.example.internal"], &["example.internal"], &["sub.example.internal"])]);
        assert!(ask(&partly, "x.sub.example.internal", RecordType::A).is_none(), "falls through");
        assert_eq!(ask(&partly, "x.example.internal", RecordType::A).unwrap().0.flags.rcode(), Rcode::SERVFAIL);
        let everywhere = hosts(vec![block(&["10.0.0.5 db.example.internal"], &["example.internal"], &["."])]);
        assert!(ask(&everywhere, "x.example.internal", RecordType::A).is_none());
    }

    #[test]
    fn ptr_comes_from_any_block_and_otherwise_goes_on() {
        let h = hosts(vec![
            block(&["10.0.0.5 db.example.internal"], &["example.internal"], &[]),
            block(&["fd00::7 web.example.org"], &["example.org"], &[]),
        ]);
        let (header, records) = ask(&h, "5.0.0.10.in-addr.arpa", RecordType::PTR).unwrap();
        assert!(header.flags.has(Flags::AA));
        assert_eq!(records, vec![(RecordType::PTR, 3600, wire("db.example.internal").to_vec())]);
        let (_, records) = ask(&h, &reverse_name("fd00::7".parse().unwrap()), RecordType::PTR).unwrap();
        assert_eq!(records, vec![(RecordType::PTR, 3600, wire("web.example.org").to_vec())]);
        assert!(ask(&h, "6.0.0.10.in-addr.arpa", RecordType::PTR).is_none(), "an address not listed");
        assert!(ask(&h, "db.example.internal", RecordType::PTR).is_none(), "not a reverse name: CoreDNS passes it on");
    }

    #[test]
    fn the_longest_zone_picks_the_block() {
        let h = hosts(vec![block(&["10.0.0.1 a.example"], &["."], &["."]), block(&["10.0.0.2 b.corp.example"], &["corp.example"], &[])]);
        assert_eq!(ask(&h, "a.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 1]);
        assert_eq!(ask(&h, "b.corp.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 2]);
        assert_eq!(ask(&h, "c.corp.example", RecordType::A).unwrap().0.flags.rcode(), Rcode::SERVFAIL);
        assert!(ask(&h, "c.example", RecordType::A).is_none());
    }

    #[test]
    fn a_changed_file_is_read_and_an_unreadable_one_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "10.0.0.1 a.example\n").unwrap();
        let settings = BlockSettings { file: Some(path.clone()), ..block(&["10.0.0.9 inline.example"], &["."], &[]) };
        let h = hosts(vec![settings]);
        assert_eq!(ask(&h, "a.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 1]);
        assert_eq!(ask(&h, "inline.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 9]);

        let block = &h.blocks[0];
        let mut watch = Watch { seen: Some(stamp(&path).unwrap()), failing: false };
        std::fs::write(&path, "10.0.0.2 a.example\n10.0.0.3 b.example\n").unwrap();
        block.refresh(&path, &mut watch);
        assert_eq!(ask(&h, "a.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 2]);
        assert!(ask(&h, "inline.example", RecordType::A).is_some(), "inline entries stay");

        std::fs::remove_file(&path).unwrap();
        block.refresh(&path, &mut watch);
        assert!(watch.failing);
        assert_eq!(ask(&h, "b.example", RecordType::A).unwrap().1[0].2, vec![10, 0, 0, 3], "the entries last read stay");
    }
}
