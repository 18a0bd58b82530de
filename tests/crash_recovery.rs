//! The short form of `scripts/crash-test`: the real workload binary is killed with SIGKILL
//! a few times mid-flight, then the checker resumes the runtime and verifies the audit chain,
//! that no acknowledged write is missing, that nothing journaled happened twice, and that
//! every process is resumable.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn killed_hosts_lose_no_acknowledged_write_and_repeat_no_effect() {
    let bin = env!("CARGO_BIN_EXE_agent-libos-crash");
    let dir = tempfile::tempdir().unwrap();
    // The first run starts an isolate worker before its first acknowledged step.
    for delay_ms in [3000u64, 1100, 600] {
        let mut child = Command::new(bin)
            .arg("work")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let acks = std::fs::read_to_string(dir.path().join("acks.log")).unwrap_or_default();
    assert!(
        !acks.is_empty(),
        "the workload acknowledged some steps before being killed"
    );
    let out = Command::new(bin)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("chain ok")
            && stdout.contains("missing 0")
            && stdout.contains("duplicated 0"),
        "{stdout}"
    );
}
