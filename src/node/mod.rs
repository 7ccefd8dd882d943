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
    pub check_interval: Duration,
    /// Leave addresses and rules in place at exit (for a successor, or for debugging).
    pub keep_on_exit: bool,
}

/// What was set up, to check and to undo.
pub struct NodeSetup {
    settings: NodeSettings,
    addresses: Addresses,
    rules: Rules,
}

impl NodeSetup {
    /// Makes sure every address exists, before anything binds to it.
    pub fn prepare(settings: NodeSettings) -> Result<NodeSetup, CommandError> {
        let ips: Vec<IpAddr> = if settings.assign_addresses { settings.addresses.iter().map(|(ip, _)| *ip).collect() } else { Vec::new() };
        let addresses = Addresses::ensure(&settings.interface, &settings.fallback_interface, &ips, settings.remove_found_interface)?;
        let rules = Rules::new(settings.backend, &settings.addresses, settings.health_port);
        Ok(NodeSetup { settings, addresses, rules })
    }

    /// Installs the NOTRACK and ACCEPT rules; called once the server is serving, so that
    /// a server that failed to start never captures traffic.
    pub fn install_rules(&self) -> Result<(), CommandError> {
        self.rules.install()
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

    /// Removes what this process added, unless told to leave it (`keep_on_exit`) or a
    /// successor serves on the same addresses (`handed_over`).
    pub fn teardown(&self, handed_over: bool) {
        if self.settings.keep_on_exit || handed_over {
            tracing::info!(handed_over, "leaving node addresses and rules in place");
            return;
        }
        if let Err(e) = self.rules.remove() {
            tracing::warn!(error = %e, "could not remove every packet-filter rule");
        }
        if let Err(e) = self.addresses.remove() {
            tracing::warn!(error = %e, "could not remove every address");
        }
        tracing::info!("node addresses and rules removed");
    }
}
