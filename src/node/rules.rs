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
//! With nftables everything is one table, `inet nodedns`, replaced atomically; it carries
//! the NOTRACK rules only, since an accept in one nftables table cannot overrule a drop in
//! another.

use std::net::IpAddr;

use super::command::{self, CommandError};

/// Which tool manages the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Iptables,
    Nftables,
    /// Addresses only: the rules are someone else's business.
    None,
}

const NOTRACK_CHAIN: &str = "NODEDNS-NOTRACK";
const ACCEPT_CHAIN: &str = "NODEDNS-ACCEPT";
const NFT_TABLE: &str = "nodedns";

/// One of our chains and where it is entered from.
struct Chain {
    table: &'static str,
    name: &'static str,
    entered_from: &'static [&'static str],
    /// Rule specifications, as `iptables -S` prints them after `-A NAME`.
    rules: Vec<String>,
}

pub struct Rules {
    backend: Backend,
    /// Per family tool (`iptables`, `ip6tables`) and its chains.
    iptables: Vec<(&'static str, Vec<Chain>)>,
    nft_ruleset: String,
}

impl Rules {
    pub fn new(backend: Backend, addresses: &[(IpAddr, u16)]) -> Rules {
        let v4: Vec<_> = addresses.iter().filter(|(ip, _)| ip.is_ipv4()).copied().collect();
        let v6: Vec<_> = addresses.iter().filter(|(ip, _)| ip.is_ipv6()).copied().collect();
        let iptables =
            [("iptables", v4), ("ip6tables", v6)].into_iter().filter(|(_, a)| !a.is_empty()).map(|(tool, a)| (tool, chains(&a))).collect();
        Rules { backend, iptables, nft_ruleset: nft_ruleset(addresses) }
    }

    pub fn install(&self) -> Result<(), CommandError> {
        match self.backend {
            Backend::None => Ok(()),
            Backend::Nftables => command::run_with_input("nft", &["-f", "-"], Some(&self.nft_ruleset)).map(drop),
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
            Backend::Nftables => {
                let present = command::succeeds("nft", &["list", "table", "inet", NFT_TABLE])?;
                if !present {
                    self.install()?;
                }
                Ok(!present)
            }
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

    pub fn remove(&self) -> Result<(), CommandError> {
        match self.backend {
            Backend::None => Ok(()),
            Backend::Nftables => command::run("nft", &["delete", "table", "inet", NFT_TABLE]).map(drop),
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

/// Creates (or empties) the chain and writes its rules.
fn write_chain(tool: &str, chain: &Chain) -> Result<(), CommandError> {
    if !command::succeeds(tool, &["-w", "-t", chain.table, "-F", chain.name])? {
        command::run(tool, &["-w", "-t", chain.table, "-N", chain.name])?;
    }
    for rule in &chain.rules {
        let args: Vec<&str> = ["-w", "-t", chain.table].into_iter().chain(rule.split(' ')).collect();
        command::run(tool, &args)?;
    }
    Ok(())
}

/// Puts the jump into our chain at the top of `from` if it is missing. True if it was.
fn ensure_jump(tool: &str, chain: &Chain, from: &str) -> Result<bool, CommandError> {
    if command::succeeds(tool, &["-w", "-t", chain.table, "-C", from, "-j", chain.name])? {
        return Ok(false);
    }
    command::run(tool, &["-w", "-t", chain.table, "-I", from, "1", "-j", chain.name])?;
    Ok(true)
}

/// The whole nftables table, written so that loading it replaces any previous version
/// atomically (the empty declaration makes the delete valid on a first install).
fn nft_ruleset(addresses: &[(IpAddr, u16)]) -> String {
    let mut rules = String::new();
    for (ip, port) in addresses {
        let family = if ip.is_ipv4() { "ip" } else { "ip6" };
        for proto in ["udp", "tcp"] {
            rules.push_str(&format!("        {family} daddr {ip} {proto} dport {port} notrack\n"));
            rules.push_str(&format!("        {family} saddr {ip} {proto} sport {port} notrack\n"));
        }
    }
    format!(
        "table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n    chain prerouting {{\n        type filter hook prerouting priority raw; policy accept;\n{rules}    }}\n    chain output {{\n        type filter hook output priority raw; policy accept;\n{rules}    }}\n}}\n"
    )
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

    #[test]
    fn the_nftables_ruleset_replaces_itself() {
        let set = nft_ruleset(&[("10.96.0.10".parse().unwrap(), 53), ("fd00::a".parse().unwrap(), 53)]);
        assert!(set.starts_with("table inet nodedns {}\ndelete table inet nodedns\n"));
        assert!(set.contains("ip daddr 10.96.0.10 udp dport 53 notrack"));
        assert!(set.contains("ip6 saddr fd00::a tcp sport 53 notrack"));
    }
}
