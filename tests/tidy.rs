//! Code-base invariants checked as tests: every module says why it exists, and ambient
//! authority (host filesystem, processes, network, environment) is used only where the
//! architecture allows it.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

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

/// `text` without its test code: each `#[cfg(test)]` attribute and the item it guards (a
/// `mod tests { … }` block, a `mod tests;` declaration, a function), and nothing more.
fn without_test_code(text: &str) -> String {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(ATTRIBUTE) {
        out.push_str(&rest[..at]);
        rest = after_item(&rest[at + ATTRIBUTE.len()..]);
    }
    out.push_str(rest);
    out
}

/// What follows the item at the start of `text`: up to its first `;` outside braces, or its
/// first brace block. Strings, chars and comments are skipped, so a brace in them does not
/// count.
fn after_item(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                // A raw string `r#"…"#` ends at a quote followed by as many `#` as it opened with.
                let hashes = text[..i].chars().rev().take_while(|c| *c == '#').count();
                let raw = text[..i - hashes].ends_with('r');
                i += 1;
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == b'"' && text[i + 1..].starts_with(&"#".repeat(hashes)) {
                        i += hashes;
                        break;
                    }
                    i += 1;
                }
            }
            b'\'' if bytes.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            b';' if depth == 0 => return &text[i + 1..],
            _ => {}
        }
        i += 1;
    }
    ""
}

/// Files that are test modules: declared `#[cfg(test)] mod name;` in their parent.
fn test_module_files(sources: &[(String, String)]) -> Vec<String> {
    let mut files = Vec::new();
    for (path, text) in sources {
        let dir = match path
            .strip_suffix("mod.rs")
            .or_else(|| path.strip_suffix("lib.rs"))
        {
            Some(dir) => dir.to_string(),
            None => format!("{}/", path.trim_end_matches(".rs")),
        };
        for guarded in text.split("#[cfg(test)]").skip(1) {
            let item = guarded.trim_start();
            if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.split(';').next()) {
                if !name.contains('{') {
                    files.push(format!("{dir}{}.rs", name.trim()));
                }
            }
        }
    }
    files
}

/// Non-test code of every source file (test modules left out).
fn production_sources() -> Vec<(String, String)> {
    let all = sources();
    let tests = test_module_files(&all);
    all.into_iter()
        .filter(|(path, _)| !tests.contains(path))
        .map(|(path, text)| (path, without_test_code(&text)))
        .collect()
}

#[test]
fn test_code_is_left_out_and_nothing_after_it() {
    let text = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn t() { let s = \"}\"; let c = '}'; std::fs::read(\"x\"); }\n}\nfn after() { std::fs::write(\"y\", \"\"); }\n#[cfg(test)]\nmod more;\nfn last() { std::env::var(\"Z\"); }\n";
    let code = without_test_code(text);
    assert!(!code.contains("std::fs::read("), "{code}");
    assert!(code.contains("std::fs::write("), "{code}");
    assert!(code.contains("std::env::var("), "{code}");
    let files = test_module_files(&[("src/jit/mod.rs".into(), text.into())]);
    assert_eq!(files, ["src/jit/more.rs"]);
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
    // An isolate worker confining itself (it reads its own /proc entry before Landlock) and
    // the self-test that attacks the confinement from inside.
    "src/isolate/confine",
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
    // Unit tests may build their fixtures on the host; everything else is checked.
    for (path, code) in production_sources() {
        if ALLOWED.iter().any(|a| path.starts_with(a)) {
            continue;
        }
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
    let minted: Vec<String> = production_sources()
        .into_iter()
        .filter(|(_, code)| code.contains("ambient_authority()"))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(minted, ["src/providers/fs.rs"]);
}

/// Text a tool, a model or a file controls reaches the terminal only through
/// `cli::terminal`, which shows control characters escaped: no other printing in the CLI.
#[test]
fn the_cli_prints_only_through_the_escaping_writers() {
    let mut offenders = Vec::new();
    for (path, text) in sources() {
        if !path.starts_with("src/cli/") || path == "src/cli/terminal.rs" {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        for needle in ["print!(", "println!("] {
            if code.contains(needle) {
                offenders.push(format!("{path}: {needle}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "printing around cli::terminal: {offenders:?}"
    );
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

/// `clippy.toml` refuses host I/O everywhere (`cargo clippy -- -D warnings` runs in CI); the
/// lint may be allowed only at the operator edges, never in the kernel, the isolates, the
/// ops or the JIT front end.
#[test]
fn host_io_lints_are_allowed_only_at_the_operator_edges() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("clippy.toml")).expect("clippy.toml");
    for needle in [
        "std::fs::read",
        "std::process::Command",
        "std::net::TcpStream",
        "tokio::fs::",
        "tokio::process::Command",
        "tokio::net::",
        "reqwest::Client",
        "std::env::var",
        "cap_std::ambient_authority",
    ] {
        assert!(
            config.contains(needle),
            "clippy.toml does not refuse {needle}"
        );
    }
    let allowed: Vec<String> = production_sources()
        .into_iter()
        .filter(|(path, code)| {
            (code.contains("clippy::disallowed_methods")
                || code.contains("clippy::disallowed_types"))
                && !ALLOWED.iter().any(|a| path.starts_with(a))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        allowed.is_empty(),
        "host I/O allowed outside the operator edges: {allowed:?}"
    );
}

/// Primitives no tool may call, so they have no op (see ARCHITECTURE.md, `ops/`).
const NO_OP: &[&str] = &[
    "proc.self",
    "proc.exec",
    "cap.list",
    "cap.grant",
    "cap.revoke",
    "image.register",
];

#[test]
fn every_primitive_has_an_op_unless_tools_may_not_call_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let syscalls = std::fs::read_to_string(root.join("src/kernel/syscall.rs")).unwrap();
    let mut primitives: Vec<&str> = syscalls
        .split("#[serde(rename = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.contains('.'))
        .collect();
    primitives.sort();
    primitives.dedup();
    let ops = std::fs::read_to_string(root.join("ops/src/ops.rs")).unwrap();
    let mut with_op: Vec<&str> = ops
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    with_op.sort();
    for op in &with_op {
        assert!(primitives.contains(op), "op for an unknown primitive {op}");
    }
    let without: Vec<&str> = primitives
        .iter()
        .copied()
        .filter(|p| !with_op.contains(p))
        .collect();
    let mut expected = NO_OP.to_vec();
    expected.sort();
    assert_eq!(
        without, expected,
        "primitives without an op must be exactly the ones ARCHITECTURE.md names"
    );
}

/// The kernel's authority path never names the JavaScript side: only the tool lifecycle
/// (and the kernel's handle holding it) does.
#[test]
fn only_the_tool_lifecycle_knows_javascript() {
    let knows: Vec<String> = production_sources()
        .into_iter()
        .filter(|(path, code)| {
            path.starts_with("src/kernel/")
                && [
                    "crate::isolate",
                    "crate::jit",
                    "deno_core",
                    "deno_ast",
                    "agent_libos_ops",
                ]
                .iter()
                .any(|n| code.contains(n))
        })
        .map(|(path, _)| path)
        .collect();
    assert_eq!(knows, ["src/kernel/mod.rs", "src/kernel/tools.rs"]);
}
