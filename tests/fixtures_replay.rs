//! Replays every fixture in `fixtures/` through the real binary: 0 failed.

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
