//! The listen addresses, on a dummy interface of their own or, where the kernel has none,
//! on an existing interface such as `lo`.

use std::net::IpAddr;
use std::sync::Mutex;

use super::command::{self, CommandError};

pub struct Addresses {
    /// The interface the addresses are on.
    interface: String,
    /// Whether this process created it (and so removes it).
    created: bool,
    wanted: Vec<IpAddr>,
    /// The addresses this process added (and so removes).
    added: Mutex<Vec<IpAddr>>,
}

fn prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

fn link_exists(name: &str) -> Result<bool, CommandError> {
    command::succeeds("ip", &["link", "show", "dev", name])
}

/// Whether `ip` is assigned to any interface.
fn assigned(ip: &IpAddr) -> Result<bool, CommandError> {
    let out = command::run("ip", &["-o", "addr", "show"])?;
    let needle = format!(" {}/", ip);
    Ok(out.lines().any(|line| line.contains(&needle)))
}

/// Whether any of `ips` is assigned already.
pub fn any_assigned(ips: &[IpAddr]) -> Result<bool, CommandError> {
    for ip in ips {
        if assigned(ip)? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Addresses {
    /// Assigns each of `ips` that is not assigned yet, to `interface` (created as a dummy
    /// interface if missing) or, when the kernel cannot create one, to `fallback`.
    /// With `owns_found`, an interface that was already there counts as this process's too
    /// (node-cache's behaviour: it removes the interface at exit whoever made it).
    pub fn ensure(interface: &str, fallback: &str, ips: &[IpAddr], owns_found: bool) -> Result<Addresses, CommandError> {
        let (interface, created) = if ips.is_empty() {
            (interface.to_string(), false)
        } else if link_exists(interface)? {
            (interface.to_string(), owns_found)
        } else {
            match command::run("ip", &["link", "add", interface, "type", "dummy"]) {
                Ok(_) => {
                    command::run("ip", &["link", "set", interface, "up"])?;
                    tracing::info!(interface, "created a dummy interface for the listen addresses");
                    (interface.to_string(), true)
                }
                Err(CommandError::Failed { stderr, .. }) => {
                    tracing::warn!(interface, fallback, reason = %stderr, "this kernel cannot create dummy interfaces; putting the listen addresses on the fallback interface");
                    (fallback.to_string(), false)
                }
                Err(e) => return Err(e),
            }
        };
        let addresses = Addresses { interface, created, wanted: ips.to_vec(), added: Mutex::default() };
        addresses.repair()?;
        Ok(addresses)
    }

    /// Counts the wanted addresses already assigned as this process's, to remove at its
    /// exit: what a predecessor that handed over to it added.
    pub fn adopt(&self) -> Result<(), CommandError> {
        let mut added = self.added.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in &self.wanted {
            if !added.contains(ip) && assigned(ip)? {
                added.push(*ip);
            }
        }
        Ok(())
    }

    /// Assigns whichever wanted address is missing. True if any was.
    pub fn repair(&self) -> Result<bool, CommandError> {
        if self.created && !link_exists(&self.interface)? {
            command::run("ip", &["link", "add", &self.interface, "type", "dummy"])?;
            command::run("ip", &["link", "set", &self.interface, "up"])?;
        }
        let mut repaired = false;
        for ip in &self.wanted {
            if !assigned(ip)? {
                command::run("ip", &["addr", "add", &prefix(ip), "dev", &self.interface])?;
                tracing::info!(address = %ip, interface = %self.interface, "address added");
                let mut added = self.added.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !added.contains(ip) {
                    added.push(*ip);
                }
                repaired = true;
            }
        }
        Ok(repaired)
    }

    /// Removes the addresses (and the interface) this process added.
    pub fn remove(&self) -> Result<(), CommandError> {
        if self.created {
            return command::run("ip", &["link", "del", &self.interface]).map(drop);
        }
        let added = self.added.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in added.iter() {
            command::run("ip", &["addr", "del", &prefix(ip), "dev", &self.interface])?;
        }
        Ok(())
    }
}
