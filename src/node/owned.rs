//! The nftables table that holds nodedns's NOTRACK rules, owned by nodedns's own netlink
//! socket, so that the kernel removes it whatever way nodedns ends.
//!
//! Owns one table, `inet nodedns_<port id>`, and the NETLINK_NETFILTER socket that created
//! it. The table is created with the owner flag (`NFT_TABLE_F_OWNER`): the kernel binds it
//! to that socket, refuses changes to it from any other socket, and deletes it when the
//! socket closes. A process's sockets close however it ends, `kill -9` and the OOM killer
//! included, so a dead nodedns cannot leave NOTRACK rules sending pods to a closed socket:
//! the node fails open, back to the path it had without a node cache (conntrack, and
//! kube-proxy's DNAT of the Service IP to kube-dns), with nobody else having to notice.
//!
//! The name carries the socket's netlink port id, which the kernel makes unique in the
//! network namespace (it is the process id when that is free, and it is not when two
//! containers both run as pid 1), so a handover successor or a second instance holds a
//! table of its own and never touches another's.
//!
//! The table is written in one nfnetlink batch (one transaction: all of it or nothing),
//! every message asking for an ACK; a refusal names the message the kernel refused. The
//! kernel handles a batch inside the `send` call, so every answer is queued on the socket
//! when `send` returns and is read without waiting.

use std::io;
use std::net::IpAddr;
use std::num::NonZeroI32;
use std::sync::Mutex;

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, InetHookNumber, ListAttribute, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

/// The nfnetlink subsystem a batch is addressed to (`NFNL_SUBSYS_NFTABLES`).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_ACCEPT: u32 = 1;
/// `priority raw`.
const PRIORITY_RAW: i32 = -300;
/// Room for every ACK of a large batch: an unread ACK lost to a full buffer would read
/// as no answer.
const RECEIVE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netfilter netlink socket: {0} (does nodedns have CAP_NET_ADMIN?)")]
    Open(io::Error),
    #[error("netlink `{message}`: {source}")]
    Io { message: String, source: io::Error },
    #[error("the kernel refused `{message}`: {source}")]
    Refused { message: String, source: io::Error },
    #[error("no answer from the kernel to `{message}`")]
    NoAnswer { message: String },
    #[error("cannot read the kernel's answer to `{message}`: {detail}")]
    Decode { message: String, detail: String },
}

/// One message of an exchange, with what it does in nft's words, for errors.
struct Request {
    what: String,
    message: NetlinkMessage<NetfilterMessage>,
}

pub struct OwnedTable {
    addresses: Vec<(IpAddr, u16)>,
    /// Opened at the first install; dropping it is what deletes the table.
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    socket: Socket,
    table: String,
    sequence: u32,
}

impl OwnedTable {
    pub fn new(addresses: &[(IpAddr, u16)]) -> OwnedTable {
        OwnedTable { addresses: addresses.to_vec(), conn: Mutex::new(None) }
    }

    /// Creates the table (or replaces it, atomically, if this process has one already).
    pub fn install(&self) -> Result<(), NetlinkError> {
        let mut conn = self.lock();
        if conn.is_none() {
            *conn = Some(Conn::open()?);
        }
        let conn = conn.as_mut().expect("opened above");
        let batch = install_batch(&conn.table, &self.addresses);
        conn.exchange(batch)?;
        tracing::info!(table = %format!("inet {}", conn.table), "nftables table owned by this process written");
        Ok(())
    }

    /// Re-creates the table if it is gone. True if it was.
    pub fn repair(&self) -> Result<bool, NetlinkError> {
        let present = match self.lock().as_mut() {
            Some(conn) => conn.table_exists()?,
            None => false,
        };
        if !present {
            self.install()?;
        }
        Ok(!present)
    }

    /// Deletes the table at once and closes the socket (which would delete it too).
    pub fn remove(&self) -> Result<(), NetlinkError> {
        let Some(mut conn) = self.lock().take() else { return Ok(()) };
        let batch = batch(vec![request(
            format!("delete table inet {}", conn.table),
            NfTablesMessage::DeleteTable(TableMessage { attributes: vec![TableAttribute::Name(conn.table.clone())] }),
            0,
        )]);
        match conn.exchange(batch) {
            Err(NetlinkError::Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        // A panic mid-exchange leaves nothing half-done that the next exchange relies on.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Conn {
    fn open() -> Result<Conn, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
        let port = socket.bind_auto().map_err(NetlinkError::Open)?.port_number();
        // Errors then carry the refused message's header, not all of it.
        socket.set_cap_ack(true).map_err(NetlinkError::Open)?;
        socket.set_rx_buf_sz(RECEIVE_BUFFER).map_err(NetlinkError::Open)?;
        Ok(Conn { socket, table: format!("nodedns_{port}"), sequence: 0 })
    }

    fn table_exists(&mut self) -> Result<bool, NetlinkError> {
        let get = request(
            format!("list table inet {}", self.table),
            NfTablesMessage::GetTable(TableMessage { attributes: vec![TableAttribute::Name(self.table.clone())] }),
            0,
        );
        match self.exchange(vec![get]) {
            Ok(replies) => Ok(replies.iter().any(|m| matches!(&m.payload, NetlinkPayload::InnerMessage(m) if is_table(m, &self.table)))),
            Err(NetlinkError::Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `requests` in one datagram and reads every answer: the first refusal is the
    /// error; otherwise the messages other than ACKs that came back.
    fn exchange(&mut self, requests: Vec<Request>) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, NetlinkError> {
        self.discard_stale();
        let first = self.sequence.wrapping_add(1);
        let mut waiting = Vec::new();
        let mut buffer = Vec::new();
        for (i, mut r) in requests.into_iter().enumerate() {
            r.message.header.sequence_number = first.wrapping_add(i as u32);
            r.message.finalize();
            let start = buffer.len();
            buffer.resize(start + r.message.buffer_len(), 0);
            r.message.serialize(&mut buffer[start..]);
            if r.message.header.flags & NLM_F_ACK != 0 {
                waiting.push((r.message.header.sequence_number, r.what));
            }
        }
        self.sequence = first.wrapping_add(waiting.len() as u32 + 2);
        let all = waiting.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join("; ");
        self.socket.send(&buffer, 0).map_err(|source| NetlinkError::Io { message: all.clone(), source })?;

        let mut replies = Vec::new();
        let mut refused = None;
        while !waiting.is_empty() {
            let datagram = match self.receive() {
                Ok(Some(d)) => d,
                // The kernel answered everything inside `send`: what is missing now never comes.
                Ok(None) => break,
                Err(source) => return Err(NetlinkError::Io { message: all, source }),
            };
            let mut offset = 0;
            while offset < datagram.len() {
                let message = NetlinkMessage::<NetfilterMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| NetlinkError::Decode { message: all.clone(), detail: e.to_string() })?;
                let length = message.header.length as usize;
                let sequence = message.header.sequence_number;
                match message.payload {
                    NetlinkPayload::Error(e) => {
                        if let Some(at) = waiting.iter().position(|(s, _)| *s == sequence) {
                            let (_, what) = waiting.remove(at);
                            if let Some(code) = e.code {
                                refused.get_or_insert(NetlinkError::Refused { message: what, source: errno(code) });
                            }
                        }
                    }
                    NetlinkPayload::InnerMessage(_) => replies.push(message),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length.next_multiple_of(4);
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
        if let Some((_, what)) = waiting.into_iter().next() {
            return Err(NetlinkError::NoAnswer { message: what });
        }
        Ok(replies)
    }

    /// One datagram, or None if nothing is queued.
    fn receive(&self) -> io::Result<Option<Vec<u8>>> {
        let mut datagram = vec![0u8; 64 * 1024];
        match self.socket.recv(&mut &mut datagram[..], libc::MSG_DONTWAIT) {
            Ok(n) => {
                datagram.truncate(n);
                Ok(Some(datagram))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Answers left over from an exchange that ended early would be taken for this one's.
    fn discard_stale(&self) {
        while let Ok(Some(_)) = self.receive() {}
    }
}

fn is_table(message: &NetfilterMessage, name: &str) -> bool {
    use netlink_packet_netfilter::NetfilterMessageInner;
    match &message.inner {
        NetfilterMessageInner::NfTables(NfTablesMessage::NewTable(t)) => {
            t.attributes.iter().any(|a| matches!(a, TableAttribute::Name(n) if n == name))
        }
        _ => false,
    }
}

fn errno(code: NonZeroI32) -> io::Error {
    io::Error::from_raw_os_error(-code.get())
}

fn request(what: String, message: NfTablesMessage, extra_flags: u16) -> Request {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), message));
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
    Request { what, message }
}

/// `requests` between the batch's begin and end: one transaction.
fn batch(requests: Vec<Request>) -> Vec<Request> {
    let control = |what: &str, m: ControlMessage| {
        let mut message =
            NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES), m));
        message.header.flags = NLM_F_REQUEST;
        Request { what: what.to_string(), message }
    };
    let mut all = vec![control("batch begin", ControlMessage::BatchBegin)];
    all.extend(requests);
    all.push(control("batch end", ControlMessage::BatchEnd));
    all
}

/// The owned table as one batch: declared, deleted and written again, so that loading it
/// over an earlier version of this process's table replaces it in one transaction (the
/// first declaration makes the delete valid when there is none).
fn install_batch(table: &str, addresses: &[(IpAddr, u16)]) -> Vec<Request> {
    let new_table = || {
        request(
            format!("add table inet {table} {{ flags owner; }}"),
            NfTablesMessage::NewTable(TableMessage {
                attributes: vec![TableAttribute::Name(table.to_string()), TableAttribute::Flags(TableFlags::Owner)],
            }),
            NLM_F_CREATE,
        )
    };
    let mut requests = vec![
        new_table(),
        request(
            format!("delete table inet {table}"),
            NfTablesMessage::DeleteTable(TableMessage { attributes: vec![TableAttribute::Name(table.to_string())] }),
            0,
        ),
        new_table(),
    ];
    for (chain, hook) in [("prerouting", InetHookNumber::PreRouting), ("output", InetHookNumber::LocalOut)] {
        requests.push(request(
            format!("add chain inet {table} {chain} {{ type filter hook {chain} priority raw; policy accept; }}"),
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table.to_string()),
                    ChainAttribute::Name(chain.to_string()),
                    ChainAttribute::Hook(vec![Hook::Number(hook.into()), Hook::Priority(PRIORITY_RAW as u32)]),
                    ChainAttribute::Policy(NF_ACCEPT),
                    ChainAttribute::Type("filter".to_string()),
                ],
            }),
            NLM_F_CREATE,
        ));
        for rule in notrack_rules(addresses) {
            requests.push(request(
                format!("add rule inet {table} {chain} {}", rule.text),
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table.to_string()),
                        RuleAttribute::Chain(chain.to_string()),
                        RuleAttribute::Expressions(rule.expressions),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND,
            ));
        }
    }
    batch(requests)
}

/// A rule as nft lists it, and its expressions.
struct Rule {
    text: String,
    expressions: Vec<ListAttribute<ExpressionAttribute>>,
}

/// For each address and port, UDP and TCP: `<family> daddr ADDR <proto> dport PORT notrack`
/// and `<family> saddr ADDR <proto> sport PORT notrack`, in the expressions nft writes
/// for them in an inet table (the family match first, then the address, the protocol,
/// the port).
fn notrack_rules(addresses: &[(IpAddr, u16)]) -> Vec<Rule> {
    let load = |base, offset, len| {
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(base),
            Payload::Offset(offset),
            Payload::Len(len),
        ])
        .into()
    };
    let meta = |key| Expressions::Meta(vec![Meta::Key(key), Meta::DestinationRegister(Register::Reg1)]).into();
    let equals = |value: Vec<u8>| {
        Expressions::Cmp(vec![Cmp::SourceRegister(Register::Reg1), Cmp::Op(Operator::Equal), Cmp::Data(DataAttribute::Value(value))]).into()
    };
    let mut rules = Vec::new();
    for (ip, port) in addresses {
        let (family, nfproto, octets, saddr_at) = match ip {
            IpAddr::V4(v4) => ("ip", NFPROTO_IPV4, v4.octets().to_vec(), 12),
            IpAddr::V6(v6) => ("ip6", NFPROTO_IPV6, v6.octets().to_vec(), 8),
        };
        let len = octets.len() as u32;
        for (proto, number) in [("udp", libc::IPPROTO_UDP as u8), ("tcp", libc::IPPROTO_TCP as u8)] {
            // The destination address follows the source; the destination port likewise.
            for (addr, addr_at, port_dir, port_at) in [("daddr", saddr_at + len, "dport", 2), ("saddr", saddr_at, "sport", 0)] {
                rules.push(Rule {
                    text: format!("{family} {addr} {ip} {proto} {port_dir} {port} notrack"),
                    expressions: vec![
                        meta(MetaKey::Nfproto),
                        equals(vec![nfproto]),
                        load(NFT_PAYLOAD_NETWORK_HEADER, addr_at, len),
                        equals(octets.clone()),
                        meta(MetaKey::L4Proto),
                        equals(vec![number]),
                        load(NFT_PAYLOAD_TRANSPORT_HEADER, port_at, 2),
                        equals(port.to_be_bytes().to_vec()),
                        // Exactly what nft sends for `notrack`: the name, no data.
                        ListAttribute::Element(vec![ExpressionAttribute::Name("notrack".to_string())]),
                    ],
                });
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_netfilter::NetfilterMessageInner;

    fn nftables(r: &Request) -> Option<&NfTablesMessage> {
        match &r.message.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage { inner: NetfilterMessageInner::NfTables(m), .. }) => Some(m),
            _ => None,
        }
    }

    /// Ownership is the whole point: every declaration of the table carries the owner
    /// flag, or a crash would leave the rules behind.
    #[test]
    fn the_batch_declares_an_owned_table_with_two_chains_and_four_rules_per_address_in_each() {
        let addresses = [("169.254.20.10".parse().unwrap(), 53), ("fd00::a".parse().unwrap(), 5353)];
        let batch = install_batch("nodedns_42", &addresses);
        assert_eq!(batch.first().unwrap().what, "batch begin");
        assert_eq!(batch.last().unwrap().what, "batch end");
        let messages: Vec<_> = batch.iter().filter_map(nftables).collect();
        let tables: Vec<_> = messages.iter().filter_map(|m| if let NfTablesMessage::NewTable(t) = m { Some(t) } else { None }).collect();
        assert_eq!(tables.len(), 2);
        for t in tables {
            assert!(t.attributes.contains(&TableAttribute::Flags(TableFlags::Owner)));
            assert!(t.attributes.contains(&TableAttribute::Name("nodedns_42".to_string())));
        }
        assert!(TableFlags::Owner.bits() == 0x2, "NFT_TABLE_F_OWNER");
        let chains = messages.iter().filter(|m| matches!(m, NfTablesMessage::NewChain(_))).count();
        let rules = messages.iter().filter(|m| matches!(m, NfTablesMessage::NewRule(_))).count();
        assert_eq!((chains, rules), (2, 2 * 2 * 4));
        // Every message in the transaction is acknowledged, so a refusal can be named.
        assert!(batch[1..batch.len() - 1].iter().all(|r| r.message.header.flags & NLM_F_ACK != 0));
        let texts: Vec<_> = batch.iter().map(|r| r.what.as_str()).collect();
        assert!(texts.contains(&"add rule inet nodedns_42 prerouting ip daddr 169.254.20.10 udp dport 53 notrack"));
        assert!(texts.contains(&"add rule inet nodedns_42 output ip6 saddr fd00::a tcp sport 5353 notrack"));
        assert!(texts.contains(&"add chain inet nodedns_42 output { type filter hook output priority raw; policy accept; }"));
    }

    /// The offsets are the IPv4 and IPv6 headers' and the UDP/TCP ports'; a wrong one
    /// would match nothing and leave DNS tracked, silently.
    #[test]
    fn rules_compare_the_right_header_fields() {
        let rules = notrack_rules(&[("10.96.0.10".parse().unwrap(), 53), ("fd00::a".parse().unwrap(), 53)]);
        let payloads = |r: &Rule| -> Vec<(u32, u32, u32)> {
            r.expressions
                .iter()
                .filter_map(|e| match e {
                    ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                        ExpressionAttribute::Data(Expressions::Payload(p)) => {
                            let get = |f: fn(&Payload) -> Option<u32>| p.iter().find_map(f).unwrap();
                            Some((
                                get(|x| if let Payload::Base(v) = x { Some(*v) } else { None }),
                                get(|x| if let Payload::Offset(v) = x { Some(*v) } else { None }),
                                get(|x| if let Payload::Len(v) = x { Some(*v) } else { None }),
                            ))
                        }
                        _ => None,
                    }),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(rules[0].text, "ip daddr 10.96.0.10 udp dport 53 notrack");
        assert_eq!(payloads(&rules[0]), [(1, 16, 4), (2, 2, 2)]);
        assert_eq!(rules[1].text, "ip saddr 10.96.0.10 udp sport 53 notrack");
        assert_eq!(payloads(&rules[1]), [(1, 12, 4), (2, 0, 2)]);
        assert_eq!(rules[4].text, "ip6 daddr fd00::a udp dport 53 notrack");
        assert_eq!(payloads(&rules[4]), [(1, 24, 16), (2, 2, 2)]);
        assert_eq!(payloads(&rules[5]), [(1, 8, 16), (2, 0, 2)]);
    }

    /// Runs `f` on a thread in a network namespace of its own, so that the kernel's side
    /// can be checked without touching the host's ruleset (needs root, as the tests have).
    fn in_own_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a network namespace of our own (run as root)");
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `nft list table` in this thread's namespace, as nft decodes what the kernel holds.
    fn nft_list(table: &str) -> String {
        let thread = std::fs::read_link("/proc/thread-self").unwrap();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", thread.display()))
            .args(["nft", "list", "table", "inet", table])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn delete(table: &str) -> Vec<Request> {
        batch(vec![request(
            format!("delete table inet {table}"),
            NfTablesMessage::DeleteTable(TableMessage { attributes: vec![TableAttribute::Name(table.to_string())] }),
            0,
        )])
    }

    /// Only the owner's socket changes the table; a vanished table comes back at the
    /// next check; a refusal names the message refused; removal leaves nothing.
    #[test]
    fn the_kernel_keeps_the_table_for_its_owner_and_repair_and_removal_work() {
        in_own_netns(|| {
            let table = OwnedTable::new(&[("10.96.0.10".parse().unwrap(), 53)]);
            table.install().unwrap();
            let name = table.lock().as_ref().unwrap().table.clone();
            let mut stranger = Conn::open().unwrap();
            stranger.table = name.clone();
            assert!(stranger.table_exists().unwrap());
            match stranger.exchange(delete(&name)) {
                Err(NetlinkError::Refused { message, source }) => {
                    assert_eq!(message, format!("delete table inet {name}"));
                    assert_eq!(source.raw_os_error(), Some(libc::EPERM));
                }
                other => panic!("another socket deleted an owned table: {:?}", other.map(drop)),
            }

            assert!(!table.repair().unwrap(), "nothing to repair");
            // Installing again replaces the table rather than doubling its rules.
            table.install().unwrap();
            let listed = nft_list(&name);
            assert_eq!(listed.matches(" notrack").count(), 8, "{listed}");
            assert!(listed.contains("flags owner") && listed.contains("ip daddr 10.96.0.10 udp dport 53 notrack"), "{listed}");
            table.lock().as_mut().unwrap().exchange(delete(&name)).unwrap();
            assert!(!stranger.table_exists().unwrap());
            assert!(table.repair().unwrap(), "a missing table is put back");
            assert!(stranger.table_exists().unwrap());

            let mut rule = install_batch(&name, &[("10.96.0.10".parse().unwrap(), 53)]);
            rule.retain(|r| r.what.starts_with("batch") || r.what.contains(" prerouting ip daddr 10.96.0.10 udp"));
            for r in &mut rule {
                r.what = r.what.replace(" prerouting ", " absent ");
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(m)),
                    ..
                }) = &mut r.message.payload
                {
                    m.attributes[1] = RuleAttribute::Chain("absent".to_string());
                }
            }
            match table.lock().as_mut().unwrap().exchange(rule) {
                Err(NetlinkError::Refused { message, source }) => {
                    assert_eq!(message, format!("add rule inet {name} absent ip daddr 10.96.0.10 udp dport 53 notrack"));
                    assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
                }
                other => panic!("a rule in a missing chain was accepted: {:?}", other.map(drop)),
            }

            table.remove().unwrap();
            assert!(!stranger.table_exists().unwrap());
        })
    }
}
