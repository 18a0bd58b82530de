//! Replays every fixture in `fixtures/` through the real binary: 0 failed.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::process::Command;

#[test]
fn every_fixture_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(cli_support::bin())
        .args(["replay", "fixtures/", "-j", "2"])
        .current_dir(root)
        .env_remove("RUST_LOG")
        .output()
        .expect("run agent-libos replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let closing = stdout.trim_end().lines().last().unwrap_or("");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        closing.contains(" passed, 0 failed"),
        "closing line {closing:?}; failures:\n{}\nstderr:\n{}",
        failures.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let passed: usize = closing
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 30, "only {passed} cases passed");
}

/// Primitives no capability gates: their refused case is a budget, a timeout, a missing tool
/// or a human's rejection instead of a denial.
const NEED_NO_CAPABILITY: &[&str] = &[
    "clock.now",
    "clock.sleep",
    "proc.getcwd",
    "proc.self",
    "proc.children",
    "proc.exit",
    "proc.spawn",
    "event.wait",
    "cap.list",
    "human.request_permission",
    "tool.propose",
    "tool.list",
    "tool.call",
];

/// Every primitive of `Syscall` (read from its wire names in `src/kernel/syscall.rs`).
fn primitives() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("src/kernel/syscall.rs")).unwrap();
    let mut names: Vec<String> = text
        .split("#[serde(rename = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.contains('.'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `(action, decision)` of every audit record a fixture case requires (replay checks each
/// one is there).
fn audited_outcomes() -> std::collections::BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with(".schema.json") {
            continue;
        }
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in fixture["cases"].as_array().unwrap() {
            if case.get("skip").is_some() {
                continue;
            }
            for record in case["effects"]["audit"].as_array().into_iter().flatten() {
                if let (Some(action), Some(decision)) =
                    (record["action"].as_str(), record["decision"].as_str())
                {
                    seen.insert((action.to_string(), decision.to_string()));
                }
            }
        }
    }
    seen
}

#[test]
fn every_primitive_has_an_allowed_and_a_denied_fixture() {
    let seen = audited_outcomes();
    let has = |p: &str, d: &str| seen.contains(&(p.to_string(), d.to_string()));
    let all = primitives();
    assert!(all.len() >= 44, "{all:?}");
    let mut missing = Vec::new();
    for p in &all {
        if !has(p, "allow") {
            missing.push(format!("{p}: no case audited `allow`"));
        }
        let refused = if NEED_NO_CAPABILITY.contains(&p.as_str()) {
            has(p, "deny") || has(p, "error") || has(p, "rejected")
        } else {
            has(p, "deny")
        };
        if !refused {
            missing.push(format!("{p}: no case audited `deny`"));
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures/ must pin every primitive allowed and denied (see fixtures/primitives.json):\n{}",
        missing.join("\n")
    );
}
