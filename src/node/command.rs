//! Running the system's network tools, with their complaint in the error.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source} (is it installed, and does nodedns have CAP_NET_ADMIN?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

impl CommandError {
    /// The kind of node-cache setup error this is (`coredns_nodecache_setup_errors_total`).
    pub fn setup_error_type(&self) -> &'static str {
        let (command, stderr) = match self {
            CommandError::Spawn { command, .. } => (command, ""),
            CommandError::Failed { command, stderr } => (command, stderr.as_str()),
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
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CommandError::Failed { command: command(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// Whether `program args...` succeeds (for checks such as `iptables -C`).
pub fn succeeds(program: &str, args: &[&str]) -> Result<bool, CommandError> {
    match run(program, args) {
        Ok(_) => Ok(true),
        Err(CommandError::Failed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
