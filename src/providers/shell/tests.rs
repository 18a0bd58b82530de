//! Unit tests of the shell provider without the OS sandbox (the operator's opt-out): output,
//! limits, environment, and program resolution. The sandboxed path is tested through the
//! kernel and the real launcher binary in `tests/shell_sandbox.rs`.

use super::*;
use crate::kernel::sandbox_policy::{NetworkPolicy, SandboxLimits};

const LIMITS: ShellLimits = ShellLimits {
    timeout_ms: 10_000,
    max_output_bytes: 1 << 20,
};

fn unsandboxed(root: &Path) -> ProcessShell {
    let config = SandboxConfig {
        mode: SandboxMode::Unsandboxed,
        ..SandboxConfig::default()
    };
    ProcessShell::with_sandbox(root.to_path_buf(), config, None)
}

fn policy() -> CheckedSandbox {
    CheckedSandbox::for_test(SandboxPolicy {
        cwd: ".".into(),
        grants: vec![],
        carve_outs: vec![],
        reserved: vec![],
        denied_programs: vec![],
        code_files: vec![],
        network: NetworkPolicy::default(),
        limits: SandboxLimits::default(),
    })
}

async fn run_in(
    root: &Path,
    words: &[&str],
    cwd: &str,
    stdin: Option<&str>,
    limits: ShellLimits,
) -> SysResult<ShellOutput> {
    unsandboxed(root)
        .run(
            &CheckedCommand::for_test(words, cwd),
            &policy(),
            stdin,
            limits,
        )
        .await
}

async fn run(words: &[&str]) -> ShellOutput {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), words, ".", None, LIMITS).await.unwrap()
}

#[tokio::test]
async fn a_command_proof_of_another_right_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let proof = CheckedCommand::for_test_with_right(
        &["touch", "made"],
        ".",
        crate::kernel::capability::Right::Read,
    );
    let err = unsandboxed(dir.path())
        .run(&proof, &policy(), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied", "{err}");
    assert!(!dir.path().join("made").exists());
}

#[tokio::test]
async fn echo_prints_and_records_the_opt_out() {
    let out = run(&["echo", "hello", "world"]).await;
    assert_eq!(out.stdout, "hello world\n");
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(out.sandbox, UNSANDBOXED);
}

#[tokio::test]
async fn exit_code_and_stderr_are_reported() {
    let out = run(&["sh", "-c", "echo oops >&2; exit 3"]).await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stderr, "oops\n");
}

#[tokio::test]
async fn stdin_is_fed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["cat"], ".", Some("from stdin"), LIMITS)
        .await
        .unwrap();
    assert_eq!(out.stdout, "from stdin");
    assert_eq!(run(&["cat"]).await.stdout, "");
}

#[tokio::test]
async fn environment_is_scrubbed_and_home_is_a_private_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["env"], ".", None, LIMITS)
        .await
        .unwrap();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("HOME=") && lines[0].contains("agent-libos-cmd-"),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains(&dir.path().display().to_string()),
        "HOME is not the workspace"
    );
    assert_eq!(
        &lines[1..3],
        ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]
    );
    assert!(lines[3].starts_with("TMPDIR="));
    // The scratch directory is gone afterwards (the shell itself creates none: nothing
    // accumulates per kernel open).
    let home = lines[0].trim_start_matches("HOME=");
    assert!(!Path::new(home).exists(), "{home} survived the command");
}

#[tokio::test]
async fn cwd_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let out = run_in(dir.path(), &["pwd"], "sub", None, LIMITS)
        .await
        .unwrap();
    let expected = std::fs::canonicalize(dir.path().join("sub")).unwrap();
    assert_eq!(out.stdout.trim_end(), expected.to_str().unwrap());
    let err = run_in(dir.path(), &["pwd"], "missing", None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotFound");
}

#[tokio::test]
async fn missing_command_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_in(dir.path(), &["no-such-command-xyz"], ".", None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SyscallError::NotFound("command not found: no-such-command-xyz".into())
    );
}

#[tokio::test]
async fn timeout_kills_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ShellLimits {
        timeout_ms: 200,
        ..LIMITS
    };
    let out = run_in(dir.path(), &["sleep", "30"], ".", None, limits)
        .await
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, None);
}

#[tokio::test]
async fn output_is_capped_without_blocking_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ShellLimits {
        max_output_bytes: 1000,
        ..LIMITS
    };
    let out = run_in(dir.path(), &["seq", "1", "200000"], ".", None, limits)
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.stdout_truncated);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.starts_with("1\n2\n3\n"));
}

#[test]
fn programs_resolve_to_their_canonical_executable() {
    let dir = tempfile::tempdir().unwrap();
    let shell = unsandboxed(dir.path());
    let rm = shell.resolve_program("rm", ".").unwrap();
    assert!(rm.ends_with("/rm"), "{rm}");
    assert_eq!(shell.resolve_program("/bin/rm", "."), Some(rm.clone()));
    assert_eq!(
        shell.resolve_program("/usr/bin/../bin/rm", "."),
        Some(rm.clone())
    );
    std::os::unix::fs::symlink(&rm, dir.path().join("gone")).unwrap();
    assert_eq!(shell.resolve_program("./gone", "."), Some(rm));
    assert_eq!(shell.resolve_program("no-such-program-xyz", "."), None);
    std::fs::create_dir(dir.path().join("d")).unwrap();
    assert_eq!(
        shell.resolve_program("./d", "."),
        None,
        "a directory is not a program"
    );
}
