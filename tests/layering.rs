//! Every import points down the layers `src/lib.rs` lists: a module uses only modules of
//! lower layers, so the layout shows the architecture and no dependency runs in a circle.
//! Test code (a file's test module, `tests.rs` files) and the shared test fixtures
//! (`harness`, `testutil`, `fuzzing`) may use anything.

use std::path::Path;

/// Bottom first, as in `src/lib.rs`.
const LAYERS: &[&[&str]] = &[
    &["wire", "ratelimit", "gate"],
    &["metrics"],
    &["cache"],
    &["upstream"],
    &["zones"],
    &["forward"],
    &["kubernetes", "node", "hosts", "loops"],
    &["query"],
    &["listen"],
    &["config"],
    &["process"],
    &["diagnose"],
    &["cli"],
];
const TEST_SUPPORT: &[&str] = &["harness", "testutil", "fuzzing"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The product code of a file: up to its test module (`#[cfg(test)]` then `mod`), which
/// every file keeps last.
fn product_code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod ").map_or(text, |at| &text[..at])
}

/// The top-level modules `code` names as `crate::MODULE` or in `crate::{A, B::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let module = |text: &str| -> String { text.trim_start().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + 7..];
        match rest.strip_prefix('{') {
            // Top-level entries of the group: split at commas outside nested braces.
            Some(group) => {
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            out.push(module(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push(module(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => out.push(module(rest)),
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

#[test]
fn grouped_imports_name_each_module() {
    assert_eq!(crate_paths("use crate::{cache::Cache, wire::{self, Rcode}};"), ["cache", "wire"]);
    assert_eq!(crate_paths("crate::metrics::Metrics::new()"), ["metrics"]);
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layering_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main"].contains(&top.as_str())
            || TEST_SUPPORT.contains(&top.as_str())
            || file.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let own = layer(&top).unwrap_or_else(|| panic!("{}: module `{top}` is in no layer of LAYERS", relative.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(product_code(&text)) {
            if used == top || TEST_SUPPORT.contains(&used.as_str()) {
                continue;
            }
            let theirs = layer(&used).unwrap_or_else(|| panic!("{}: `crate::{used}` is in no layer of LAYERS", relative.display()));
            if theirs >= own {
                upward.push(format!("{} (layer {own}) uses crate::{used} (layer {theirs})", relative.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports that do not point down:\n{}", upward.join("\n"));
}

#[test]
fn every_module_of_the_crate_is_in_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod "))) {
        let module = line.trim_end_matches(';');
        assert!(layer(module).is_some() || TEST_SUPPORT.contains(&module), "module `{module}` is in no layer");
    }
}
