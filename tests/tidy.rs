//! Code-base invariants checked as tests: every module says why it exists, and ambient
//! authority (host filesystem, processes, network, environment) is used only where the
//! architecture allows it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("ops/src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc: {missing:?}"
    );
}

/// Where host I/O may appear: the providers (on behalf of agents, after the kernel's checks),
/// the store (the database file), and the operator's edges (CLI, benchmarks, model client
/// configuration) — never the kernel, the isolates, the ops or the JIT front end.
const ALLOWED: &[&str] = &[
    "src/providers/",
    "src/store/",
    "src/cli/",
    "src/bench/",
    "src/agent/model/",
    "src/main.rs",
];

const AMBIENT: &[&str] = &[
    "std::fs::",
    "tokio::fs::",
    "std::process::Command",
    "tokio::process::Command",
    "std::net::",
    "tokio::net::",
    "std::env::var",
    "reqwest::Client",
    "cap_std::ambient_authority",
];

#[test]
fn ambient_authority_stays_in_the_providers_store_and_operator_edges() {
    let mut offenders = Vec::new();
    for (path, text) in sources() {
        if ALLOWED.iter().any(|a| path.starts_with(a)) {
            continue;
        }
        // Unit tests may build their fixtures on the host.
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        for needle in AMBIENT {
            if code.contains(needle) {
                offenders.push(format!("{path}: {needle}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "host access outside the allowed modules: {offenders:?}"
    );
}

#[test]
fn only_the_filesystem_provider_mints_ambient_authority() {
    let minted: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| {
            text.split("#[cfg(test)]")
                .next()
                .unwrap_or("")
                .contains("ambient_authority()")
        })
        .map(|(path, _)| path)
        .collect();
    assert_eq!(minted, ["src/providers/fs.rs"]);
}

/// The database belongs to the kernel: the operator edges (CLI, MCP server, benchmarks) read
/// it only through the store's named queries, never through its connection pool.
#[test]
fn only_the_kernel_and_the_store_use_the_connection_pool() {
    let users: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| {
            !path.starts_with("src/kernel/")
                && !path.starts_with("src/store/")
                && text.contains(".pool()")
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        users.is_empty(),
        "the store's pool used outside the kernel: {users:?}"
    );
}
