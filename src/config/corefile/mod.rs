//! Reading a CoreDNS Corefile, as NodeLocal DNSCache deployments write it, into nodedns's
//! own configuration: [`parse`] reads the syntax, [`map`](mod@map) turns the plugins into the
//! YAML of `docs/CONFIG.md`, with a comment on every line whose meaning differs from
//! CoreDNS's. The YAML is then loaded like any configuration file, so what
//! `nodedns import-corefile` prints is exactly what runs.
//!
//! A plugin nodedns cannot honour stops the start with `FILE:LINE: plugin NAME: why`; none
//! is silently ignored.

mod map;
mod parse;

pub use map::{Context, Import, import};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CorefileError {
    #[error("{file}:{line}: {message}")]
    Syntax { file: String, line: usize, message: String },
    #[error("{file}:{line}: plugin {plugin}: {message}")]
    Plugin { file: String, line: usize, plugin: String, message: String },
}
