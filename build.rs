//! Records the version of the Rust compiler building nodedns, for `coredns_build_info`'s
//! `goversion` label (CoreDNS puts Go's there): `NODEDNS_RUST_VERSION`, as "rust1.88.0".

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.88.0 (6b00bc388 2025-06-23)": the second word. A compiler that cannot say
    // still builds nodedns; the label then reads "rust".
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    println!("cargo:rustc-env=NODEDNS_RUST_VERSION=rust{version}");
    println!("cargo:rerun-if-changed=build.rs");
}
