//! Running the system's network tools, with their complaint in the error.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source} (is it installed, and does nodedns have CAP_NET_ADMIN?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    /// The nftables backend talks to the kernel itself, not through a tool.
    #[error(transparent)]
    Netlink(#[from] super::owned::NetlinkError),
}

impl CommandError {
    /// The kind of node-cache setup error this is (`coredns_nodecache_setup_errors_total`).
    pub fn setup_error_type(&self) -> &'static str {
        let (command, stderr) = match self {
            CommandError::Spawn { command, .. } => (command, ""),
            CommandError::Failed { command, stderr } => (command, stderr.as_str()),
            // node-cache's kinds have none for nftables; its rules are "iptables".
            CommandError::Netlink(_) => return "iptables",
        };
        match command.split(' ').next() {
            Some("ip") if command.contains(" add ") => "interface_add",
            Some("ip") => "interface_check",
            _ if stderr.contains("xtables lock") => "iptables_lock",
            _ => "iptables",
        }
    }
}

/// Runs `program args...`; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, CommandError> {
    run_with_input(program, args, None)
}

/// Like [`run`], writing `input` to the program's stdin.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, CommandError> {
    let (out, command) = output(program, args, input)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CommandError::Failed { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// Runs a check such as `iptables -C`, whose exit status 1 means "no" and anything else
/// but 0 means it could not tell (`iptables` exits 4 when another program held the xtables
/// lock past `-w`): inserting a rule after a check that could not tell may duplicate it.
pub fn check(program: &str, args: &[&str]) -> Result<bool, CommandError> {
    let (out, command) = output(program, args, None)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(CommandError::Failed { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() }),
    }
}

/// Runs `program args...` to completion; its output and the command line, for errors.
fn output(program: &str, args: &[&str], input: Option<&str>) -> Result<(std::process::Output, String), CommandError> {
    use std::io::Write;
    use std::process::Stdio;
    let command = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn { command: command(), source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|source| CommandError::Spawn { command: command(), source })?;
    }
    let out = child.wait_with_output().map_err(|source| CommandError::Spawn { command: command(), source })?;
    Ok((out, command()))
}

/// Whether `program args...` succeeds (for checks such as `iptables -C`).
pub fn succeeds(program: &str, args: &[&str]) -> Result<bool, CommandError> {
    match run(program, args) {
        Ok(_) => Ok(true),
        Err(CommandError::Failed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_cannot_tell_is_an_error_not_a_no() {
        assert!(check("sh", &["-c", "exit 0"]).unwrap());
        assert!(!check("sh", &["-c", "exit 1"]).unwrap());
        let e = check("sh", &["-c", "echo 'Another app is currently holding the xtables lock' >&2; exit 4"]).unwrap_err();
        assert_eq!(e.setup_error_type(), "iptables_lock");
        assert!(check("sh", &["-c", "kill -9 $$"]).is_err(), "killed by a signal: no exit status");
    }
}
