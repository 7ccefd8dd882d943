//! Node setup: the listen addresses exist on this node, and DNS traffic to and from them
//! bypasses connection tracking.
//!
//! A node cache removes conntrack from the DNS path (conntrack's insert races between a
//! client's parallel A and AAAA datagrams drop one of them, and the client waits 5 s) only if it owns its addresses and installs NOTRACK rules for
//! them. This module makes sure of both at start, checks them periodically (kube-proxy
//! rewrites iptables), and removes what it added at exit, unless a successor that took
//! over needs it. It uses the system's `ip` and `iptables`/`ip6tables`, and netlink for the
//! nftables table (owned by nodedns's socket, so the kernel removes it however nodedns
//! ends), so it needs CAP_NET_ADMIN (and the binaries in the image), nothing more.
//!
//! Owns addresses and packet-filter rules only; never touches sockets or DNS.

mod addresses;
mod command;
mod owned;
mod rules;

use std::net::IpAddr;
use std::time::Duration;

pub use addresses::Addresses;
pub use command::CommandError;
pub use rules::{Backend, Rules};

/// What node setup is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    pub enabled: bool,
    /// The dummy interface to create for the addresses.
    pub interface: String,
    /// Where the addresses go when the kernel has no dummy interfaces.
    pub fallback_interface: String,
    /// The addresses to own, with the DNS ports served on each.
    pub addresses: Vec<(IpAddr, u16)>,
    pub backend: Backend,
    /// node-cache's health port, also taken out of conntrack by its rules.
    pub health_port: Option<u16>,
    /// Whether the addresses are ours to assign (node-cache's `-setupinterface`).
    pub assign_addresses: bool,
    /// Remove the interface at exit even if it was there before us, as node-cache does.
    pub remove_found_interface: bool,
    /// Another instance serves the same addresses: they stay at exit.
    pub shared: bool,
    pub check_interval: Duration,
    /// Leave addresses and rules in place at exit (for a successor, or for debugging).
    pub keep_on_exit: bool,
}

/// What was set up, to check and to undo.
pub struct NodeSetup {
    settings: NodeSettings,
    /// What a previous process left, found at start (not counting a handover's).
    leftovers: Vec<&'static str>,
    addresses: Addresses,
    rules: Rules,
}

impl NodeSetup {
    /// Makes sure every address exists, before anything binds to it. A process that took
    /// over from a predecessor (`inherited`) owns the addresses it found: the predecessor
    /// left them for it, and its own stop removes them.
    pub fn prepare(settings: NodeSettings, inherited: bool) -> Result<NodeSetup, CommandError> {
        let ips: Vec<IpAddr> = if settings.assign_addresses { settings.addresses.iter().map(|(ip, _)| *ip).collect() } else { Vec::new() };
        let rules = Rules::new(settings.backend, &settings.addresses, settings.health_port);
        let mut leftovers = Vec::new();
        if !inherited {
            // With a second instance on the node, its addresses are expected.
            if !settings.shared && addresses::any_assigned(&ips)? {
                leftovers.push("addresses");
            }
            if rules.present()? {
                leftovers.push("rules");
            }
            if !leftovers.is_empty() {
                tracing::warn!(found = ?leftovers, "a previous process left its node setup: killed, crashed, or told to keep it");
            }
        }
        let addresses = Addresses::ensure(&settings.interface, &settings.fallback_interface, &ips, settings.remove_found_interface)?;
        if inherited {
            addresses.adopt()?;
        }
        Ok(NodeSetup { settings, leftovers, addresses, rules })
    }

    /// Installs the NOTRACK and ACCEPT rules; called once the server is serving, so that
    /// a server that failed to start never captures traffic.
    pub fn install_rules(&self) -> Result<(), CommandError> {
        self.rules.install()
    }

    /// What a previous process left, found at start: `addresses`, `rules`.
    pub fn leftovers(&self) -> &[&'static str] {
        &self.leftovers
    }

    pub fn check_interval(&self) -> Duration {
        self.settings.check_interval
    }

    /// Puts back whatever went missing since the last check. Returns what was repaired.
    pub fn repair(&self) -> Result<Vec<&'static str>, CommandError> {
        let mut repaired = Vec::new();
        if self.addresses.repair()? {
            repaired.push("addresses");
        }
        if self.rules.repair()? {
            repaired.push("rules");
        }
        Ok(repaired)
    }

    /// Whether a stop removes what this process set up: not when told to leave it
    /// (`keep_on_exit`), nor when a successor took the sockets over (`handed_over`), which
    /// relies on the same addresses and rules.
    pub fn removes_at_stop(&self, handed_over: bool) -> bool {
        if self.settings.keep_on_exit || handed_over {
            tracing::info!(handed_over, "leaving node addresses and rules in place");
            return false;
        }
        true
    }

    /// The first step of a stop: the rules go, so that pods' new queries take the path they
    /// have without a node cache (kube-proxy's DNAT to kube-dns) while this process still
    /// answers what is already on its way to it.
    pub fn fail_open(&self) {
        match self.rules.remove() {
            Ok(()) => tracing::info!("packet-filter rules removed: new queries go to kube-dns through kube-proxy"),
            Err(e) => tracing::warn!(error = %e, "could not remove every packet-filter rule"),
        }
    }

    /// The last step of a stop, once nothing is served any more: the addresses go, unless
    /// another instance still serves on them (`shared`).
    pub fn release_addresses(&self) {
        if self.settings.shared {
            tracing::info!("packet-filter rules removed; the addresses stay for the other instance");
            return;
        }
        match self.addresses.remove() {
            Ok(()) => tracing::info!("node addresses and rules removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove every address"),
        }
    }
}
