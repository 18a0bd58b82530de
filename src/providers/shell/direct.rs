//! Commands without the OS sandbox — only under the operator's explicit opt-out
//! (`--unsandboxed-shell`). The command runs with the runtime's authority in its own process
//! group, which a timeout kills; a child that leaves the group (`setsid`) survives.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::capture::Capture;
use super::{spawn_error, Scratch, ShellLimits, ShellOutput, DRAIN_GRACE};
use crate::kernel::error::{SysResult, SyscallError};

pub(super) async fn run(
    argv: &[String],
    cwd: &std::path::Path,
    env: &[(String, String)],
    stdin: Option<&str>,
    limits: ShellLimits,
    _scratch: &Scratch,
) -> SysResult<ShellOutput> {
    let program = resolve_in_path(&argv[0], env);
    let mut command = tokio::process::Command::new(&program);
    command
        .arg0(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command.spawn().map_err(|e| spawn_error(e, &argv[0]))?;
    let mut group = ProcessGroup::of(&child);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let mut stdout = Capture::spawn(child.stdout.take(), limits.max_output_bytes);
    let mut stderr = Capture::spawn(child.stderr.take(), limits.max_output_bytes);
    // Read to the end first and reap last: until it is reaped, the child's pid keeps its
    // process group id reserved, so killing the group cannot hit an unrelated process.
    let finished = tokio::time::timeout(Duration::from_millis(limits.timeout_ms), async {
        stdout.wait().await;
        stderr.wait().await;
        child.wait().await
    })
    .await;
    let (exit_code, timed_out) = match finished {
        Ok(status) => {
            group.disarm();
            let status =
                status.map_err(|e| SyscallError::Io(format!("waiting for {}: {e}", argv[0])))?;
            (status.code(), false)
        }
        Err(_elapsed) => {
            group.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            group.disarm();
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                stdout.wait().await;
                stderr.wait().await;
            })
            .await;
            (None, true)
        }
    };
    let (stdout, stdout_truncated) = stdout.finish();
    let (stderr, stderr_truncated) = stderr.finish();
    Ok(ShellOutput {
        exit_code,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        timed_out,
        sandbox: super::UNSANDBOXED.to_string(),
        connections: Vec::new(),
    })
}

/// Resolves a bare program name against the command's `PATH` here, so the spawn keeps the
/// `posix_spawn` fast path (std falls back to fork when `PATH` changes and argv0 is bare).
fn resolve_in_path(program: &str, env: &[(String, String)]) -> std::path::PathBuf {
    if program.contains('/') {
        return program.into();
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    path.split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| program.into())
}

/// Kills the child's whole process group (grandchildren included) when the run times out
/// or is abandoned (its future dropped), unless disarmed once the child has been reaped.
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroup {
    fn of(child: &tokio::process::Child) -> Self {
        // `process_group(0)` made the child the leader of a group whose id is its pid.
        let pgid = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        ProcessGroup { pgid }
    }

    fn kill(&self) {
        if let Some(pgid) = self.pgid.filter(|pgid| *pgid > 1) {
            // SAFETY: killpg only sends a signal; the group id belongs to our unreaped child.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
