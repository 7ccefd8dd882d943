//! The packet-filter rules that take DNS to and from our addresses out of conntrack.
//!
//! With iptables the rules live in chains of our own (`NODEDNS-NOTRACK` in `raw`,
//! `NODEDNS-ACCEPT` in `filter`), entered by one jump at the top of each built-in chain:
//! checking is comparing our chains and finding the jumps, repairing is rewriting them,
//! and removal cannot touch anyone else's rules. For every address and DNS port, UDP and
//! TCP: NOTRACK on the way in (PREROUTING, and OUTPUT for host-network clients) and on the
//! way out (OUTPUT), and ACCEPT in INPUT and OUTPUT, because untracked packets no longer
//! match the "established" rules a node's firewall accepts replies with.
//!
//! With node-cache's rules (`node_cache`) the rules are those NodeLocal DNSCache's
//! node-cache writes, in the built-in chains, each checked with `-C` and inserted at the
//! top when missing, and every copy deleted at exit. Being the same rules is what lets
//! either program take over a node from the other: neither adds a duplicate, and with
//! `-skipteardown` neither leaves a gap.
//!
//! With nftables everything is one table of this process's own (`owned`), written in one
//! transaction through nodedns's netlink socket and owned by it, so that the kernel deletes
//! it when nodedns ends, however it ends: the only backend that fails open. It carries the
//! NOTRACK rules only, since an accept in one nftables table cannot overrule a drop in
//! another.
//!
//! iptables and node-cache's rules do not fail open: they outlive a crash (`kill -9`, the
//! OOM killer), and until a successor or an operator removes them, pods' DNS goes to a
//! closed socket.

use std::net::IpAddr;

use super::command::{self, CommandError};
use super::owned::OwnedTable;

/// Which tool manages the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Rules that outlive a crash (no fail-open).
    Iptables,
    /// A table owned by nodedns's netlink socket, deleted by the kernel when nodedns ends.
    Nftables,
    /// node-cache's own rules, for a node switched between node-cache and nodedns; they
    /// outlive a crash (no fail-open).
    NodeCache,
    /// Addresses only: the rules are someone else's business.
    None,
}

const NOTRACK_CHAIN: &str = "NODEDNS-NOTRACK";
const ACCEPT_CHAIN: &str = "NODEDNS-ACCEPT";

/// One of our chains and where it is entered from.
struct Chain {
    table: &'static str,
    name: &'static str,
    entered_from: &'static [&'static str],
    /// Rule specifications, as `iptables -S` prints them after `-A NAME`.
    rules: Vec<String>,
}

/// One of node-cache's rules: a tool, table, built-in chain and rule specification.
struct BuiltinRule {
    tool: &'static str,
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

pub struct Rules {
    backend: Backend,
    node_cache: Vec<BuiltinRule>,
    /// Per family tool (`iptables`, `ip6tables`) and its chains.
    iptables: Vec<(&'static str, Vec<Chain>)>,
    nftables: OwnedTable,
}

impl Rules {
    /// The rules for `addresses`; `health_port` is the HTTP port node-cache's rules also
    /// take out of conntrack (its liveness probe's).
    pub fn new(backend: Backend, addresses: &[(IpAddr, u16)], health_port: Option<u16>) -> Rules {
        let v4: Vec<_> = addresses.iter().filter(|(ip, _)| ip.is_ipv4()).copied().collect();
        let v6: Vec<_> = addresses.iter().filter(|(ip, _)| ip.is_ipv6()).copied().collect();
        let iptables =
            [("iptables", v4), ("ip6tables", v6)].into_iter().filter(|(_, a)| !a.is_empty()).map(|(tool, a)| (tool, chains(&a))).collect();
        let node_cache = match backend {
            Backend::NodeCache => node_cache_rules(addresses, health_port),
            _ => Vec::new(),
        };
        Rules { backend, node_cache, iptables, nftables: OwnedTable::new(addresses) }
    }

    pub fn install(&self) -> Result<(), CommandError> {
        match self.backend {
            Backend::None => Ok(()),
            Backend::NodeCache => self.ensure_builtin().map(drop),
            Backend::Nftables => Ok(self.nftables.install()?),
            Backend::Iptables => {
                for (tool, chains) in &self.iptables {
                    for chain in chains {
                        write_chain(tool, chain)?;
                        for from in chain.entered_from {
                            ensure_jump(tool, chain, from)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Reinstalls whatever differs from what was installed. True if anything did.
    pub fn repair(&self) -> Result<bool, CommandError> {
        match self.backend {
            Backend::None => Ok(false),
            Backend::NodeCache => self.ensure_builtin(),
            Backend::Nftables => Ok(self.nftables.repair()?),
            Backend::Iptables => {
                let mut repaired = false;
                for (tool, chains) in &self.iptables {
                    for chain in chains {
                        if listed(tool, chain)? != chain.rules {
                            write_chain(tool, chain)?;
                            repaired = true;
                        }
                        for from in chain.entered_from {
                            repaired |= ensure_jump(tool, chain, from)?;
                        }
                    }
                }
                Ok(repaired)
            }
        }
    }

    /// Whether rules of ours are in place already (left by an earlier process): the
    /// iptables chains, node-cache's first rule. An owned nftables table cannot be left.
    pub fn present(&self) -> Result<bool, CommandError> {
        match self.backend {
            Backend::None | Backend::Nftables => Ok(false),
            Backend::NodeCache => match self.node_cache.first() {
                Some(rule) => command::check(rule.tool, &rule.args("-C")),
                None => Ok(false),
            },
            Backend::Iptables => {
                for (tool, chains) in &self.iptables {
                    if let Some(chain) = chains.first()
                        && !listed(tool, chain)?.is_empty()
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    pub fn remove(&self) -> Result<(), CommandError> {
        match self.backend {
            Backend::None => Ok(()),
            Backend::NodeCache => {
                // A rule that cannot be removed does not keep the others in place.
                let mut first_error = None;
                for rule in &self.node_cache {
                    if let Err(e) = rule.remove_every_copy() {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            Backend::Nftables => Ok(self.nftables.remove()?),
            Backend::Iptables => {
                for (tool, chains) in &self.iptables {
                    for chain in chains {
                        for from in chain.entered_from {
                            while command::succeeds(tool, &["-w", "-t", chain.table, "-D", from, "-j", chain.name])? {}
                        }
                        command::run(tool, &["-w", "-t", chain.table, "-F", chain.name])?;
                        command::run(tool, &["-w", "-t", chain.table, "-X", chain.name])?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl Rules {
    /// Inserts each of node-cache's rules that is missing, in node-cache's order. True if
    /// any was.
    fn ensure_builtin(&self) -> Result<bool, CommandError> {
        let mut added = false;
        for rule in &self.node_cache {
            if !command::check(rule.tool, &rule.args("-C"))? {
                command::run(rule.tool, &rule.args("-I"))?;
                added = true;
            }
        }
        Ok(added)
    }
}

impl BuiltinRule {
    /// Every copy: an earlier program may have added one more.
    fn remove_every_copy(&self) -> Result<(), CommandError> {
        while command::check(self.tool, &self.args("-C"))? {
            command::run(self.tool, &self.args("-D"))?;
        }
        Ok(())
    }

    fn args(&self, op: &'static str) -> Vec<&str> {
        ["-w", "5", op, self.chain, "-t", self.table].into_iter().chain(self.spec.iter().map(String::as_str)).collect()
    }
}

const SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
const ALLOW_TRAFFIC: &str = "NodeLocal DNS Cache: allow DNS traffic";

/// node-cache's rules for each address, in its order: DNS in and out untracked and
/// accepted, host-network clients' queries untracked, and its health port untracked.
fn node_cache_rules(addresses: &[(IpAddr, u16)], health_port: Option<u16>) -> Vec<BuiltinRule> {
    let mut rules = Vec::new();
    for (ip, port) in addresses {
        let tool = if ip.is_ipv4() { "iptables" } else { "ip6tables" };
        let mut rule = |table, chain, proto: &str, dir: &str, port: u16, target: &str, comment: &str| {
            let port_flag = if dir == "-d" { "--dport" } else { "--sport" };
            let spec =
                ["-p", proto, dir, &ip.to_string(), port_flag, &port.to_string(), "-j", target, "-m", "comment", "--comment", comment]
                    .map(str::to_string)
                    .to_vec();
            rules.push(BuiltinRule { tool, table, chain, spec });
        };
        for (table, chain, dir, target, comment) in [
            ("raw", "PREROUTING", "-d", "NOTRACK", SKIP_CONNTRACK),
            ("filter", "INPUT", "-d", "ACCEPT", ALLOW_TRAFFIC),
            ("raw", "OUTPUT", "-s", "NOTRACK", SKIP_CONNTRACK),
            ("filter", "OUTPUT", "-s", "ACCEPT", ALLOW_TRAFFIC),
            ("raw", "OUTPUT", "-d", "NOTRACK", SKIP_CONNTRACK),
        ] {
            for proto in ["tcp", "udp"] {
                rule(table, chain, proto, dir, *port, target, comment);
            }
        }
        if let Some(health) = health_port {
            rule("raw", "OUTPUT", "tcp", "-d", health, "NOTRACK", SKIP_CONNTRACK);
            rule("raw", "OUTPUT", "tcp", "-s", health, "NOTRACK", SKIP_CONNTRACK);
        }
    }
    rules
}

fn chains(addresses: &[(IpAddr, u16)]) -> Vec<Chain> {
    let mut notrack = Vec::new();
    let mut accept = Vec::new();
    for (ip, port) in addresses {
        let host = if ip.is_ipv4() { format!("{ip}/32") } else { format!("{ip}/128") };
        for proto in ["udp", "tcp"] {
            for (addr, port_flag) in [("-d", "--dport"), ("-s", "--sport")] {
                let spec = format!("{addr} {host} -p {proto} -m {proto} {port_flag} {port}");
                notrack.push(format!("-A {NOTRACK_CHAIN} {spec} -j CT --notrack"));
                accept.push(format!("-A {ACCEPT_CHAIN} {spec} -j ACCEPT"));
            }
        }
    }
    vec![
        Chain { table: "raw", name: NOTRACK_CHAIN, entered_from: &["PREROUTING", "OUTPUT"], rules: notrack },
        Chain { table: "filter", name: ACCEPT_CHAIN, entered_from: &["INPUT", "OUTPUT"], rules: accept },
    ]
}

/// Our chain's rules as the tool lists them (without the `-N` line).
fn listed(tool: &str, chain: &Chain) -> Result<Vec<String>, CommandError> {
    match command::run(tool, &["-w", "-t", chain.table, "-S", chain.name]) {
        Ok(out) => Ok(out.lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect()),
        Err(CommandError::Failed { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Creates the chain or replaces its rules, in one transaction: flushing it and adding the
/// rules one by one would leave a moment without them (a starting successor's 0.3-0.5 s,
/// in which pods' DNS went through conntrack to kube-dns). With `--noflush` the rest of the
/// table is left alone, and the chain's declaration empties it within the same commit.
fn write_chain(tool: &str, chain: &Chain) -> Result<(), CommandError> {
    command::run_with_input(&format!("{tool}-restore"), &["-w", "--noflush"], Some(&restore_input(chain))).map(drop)
}

/// The `iptables-restore` input that makes `chain` hold exactly its rules.
fn restore_input(chain: &Chain) -> String {
    let mut input = format!("*{}\n:{} - [0:0]\n", chain.table, chain.name);
    for rule in &chain.rules {
        input.push_str(rule);
        input.push('\n');
    }
    input.push_str("COMMIT\n");
    input
}

/// Puts the jump into our chain at the top of `from` if it is missing. True if it was.
fn ensure_jump(tool: &str, chain: &Chain, from: &str) -> Result<bool, CommandError> {
    if command::check(tool, &["-w", "-t", chain.table, "-C", from, "-j", chain.name])? {
        return Ok(false);
    }
    command::run(tool, &["-w", "-t", chain.table, "-I", from, "1", "-j", chain.name])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules are compared with `iptables -S` output on every check, so they must be
    /// written exactly as iptables prints them back, or every check would "repair".
    #[test]
    fn rules_are_written_in_the_form_iptables_lists_them() {
        let chains = chains(&[("169.254.20.10".parse().unwrap(), 53)]);
        assert_eq!(chains[0].rules[0], "-A NODEDNS-NOTRACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -j CT --notrack");
        assert_eq!(chains[1].rules[3], "-A NODEDNS-ACCEPT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j ACCEPT");
        assert_eq!(chains[0].rules.len(), 4);
    }

    /// Switching a node between node-cache and nodedns relies on both writing the same
    /// rules: these are node-cache's, argument for argument.
    #[test]
    fn node_cache_rules_are_node_caches_twelve_per_address() {
        let rules = node_cache_rules(&[("169.254.20.10".parse().unwrap(), 53)], Some(8080));
        assert_eq!(rules.len(), 12);
        assert_eq!(
            rules[0].args("-C"),
            [
                "-w",
                "5",
                "-C",
                "PREROUTING",
                "-t",
                "raw",
                "-p",
                "tcp",
                "-d",
                "169.254.20.10",
                "--dport",
                "53",
                "-j",
                "NOTRACK",
                "-m",
                "comment",
                "--comment",
                "NodeLocal DNS Cache: skip conntrack"
            ]
        );
        let last = &rules[11];
        assert_eq!((last.table, last.chain), ("raw", "OUTPUT"));
        assert_eq!(last.spec[..6], ["-p", "tcp", "-s", "169.254.20.10", "--sport", "8080"]);
        assert_eq!(rules[3].spec.last().unwrap(), "NodeLocal DNS Cache: allow DNS traffic");
        assert_eq!(node_cache_rules(&[("fd00::10".parse().unwrap(), 53)], None)[0].tool, "ip6tables");
    }

    #[test]
    fn a_chain_is_replaced_in_one_restore_transaction() {
        let chains = chains(&[("169.254.20.10".parse().unwrap(), 53)]);
        let input = restore_input(&chains[0]);
        assert!(input.starts_with("*raw\n:NODEDNS-NOTRACK - [0:0]\n-A NODEDNS-NOTRACK -d 169.254.20.10/32 -p udp"), "{input}");
        assert!(input.ends_with("--sport 53 -j CT --notrack\nCOMMIT\n"), "{input}");
        assert_eq!(input.lines().filter(|l| l.starts_with("-A ")).count(), 4);
    }
}
