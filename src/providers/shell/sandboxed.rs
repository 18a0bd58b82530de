//! Commands inside the OS sandbox: spawn the launcher (the runtime binary in its hidden
//! mode) with `posix_spawn` — an absolute program, no `pre_exec` — send it the request over
//! its stdin socket, serve its network proxy, collect output, and map what it reports.
//! The socket is the command's lifeline: dropping the run (timeout, cancel) shuts it down
//! and the launcher kills the whole tree; so does the launcher's own death (init has
//! `PR_SET_PDEATHSIG`).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::capture::Capture;
use super::{ShellLimits, ShellOutput, DRAIN_GRACE};
use crate::kernel::error::{SysResult, SyscallError};
use crate::kernel::sandbox_policy::NetworkPolicy;
use crate::providers::sandbox::protocol::{self, LaunchRequest, LauncherEvent};
use crate::providers::sandbox::proxy::{self, ProxyLog};
use crate::providers::sandbox::LAUNCH_MODE;

/// Shuts the control socket down when the run ends, however it ends.
struct Lifeline(UnixStream);

impl Drop for Lifeline {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// How the command ended, as the launcher reported it.
#[derive(Default)]
struct Ending {
    status: Option<LauncherEvent>,
}

pub(super) async fn run(
    binary: &Path,
    request: LaunchRequest,
    stdin: Option<&str>,
    limits: ShellLimits,
    sandbox: String,
) -> SysResult<ShellOutput> {
    let program = request.argv.first().cloned().unwrap_or_default();
    let network = request.policy.network.clone();
    let (ours, theirs) = UnixStream::pair().map_err(io_error)?;
    let mut child = tokio::process::Command::new(binary)
        .arg(LAUNCH_MODE)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            SyscallError::Io(format!(
                "shell sandbox: cannot start the launcher {}: {e}",
                binary.display()
            ))
        })?;
    let lifeline = Lifeline(ours.try_clone().map_err(io_error)?);
    let input = match stdin {
        Some(text) => {
            let (reader, writer) = std::io::pipe().map_err(io_error)?;
            Some((
                OwnedFd::from(reader),
                OwnedFd::from(writer),
                text.as_bytes().to_vec(),
            ))
        }
        None => None,
    };
    protocol::send(
        ours.as_fd(),
        &request,
        input.as_ref().map(|(r, _, _)| r.as_fd()),
    )
    .map_err(|e| SyscallError::Io(format!("shell sandbox: sending the request: {e}")))?;
    if let Some((reader, writer, bytes)) = input {
        drop(reader);
        let mut writer = tokio::net::unix::pipe::Sender::from_owned_fd(writer).map_err(io_error)?;
        // A command that exits without reading its input closes the pipe: not an error.
        tokio::spawn(async move {
            let _ = writer.write_all(&bytes).await;
        });
    }
    let mut events = read_events(ours);
    let mut stdout = Capture::spawn(child.stdout.take(), limits.max_output_bytes);
    let mut stderr = Capture::spawn(child.stderr.take(), limits.max_output_bytes);
    let log = ProxyLog::default();
    let mut proxies = Vec::new();
    let mut ending = Ending::default();
    let finished = tokio::time::timeout(Duration::from_millis(limits.timeout_ms), async {
        while let Some((event, fd)) = events.recv().await {
            match event {
                LauncherEvent::Proxy { .. } => {
                    if let Some(fd) = fd {
                        proxies.push(start_proxy(fd, network.clone(), log.clone())?);
                    }
                }
                other => {
                    if ending.status.is_none() {
                        ending.status = Some(other);
                    }
                }
            }
        }
        stdout.wait().await;
        stderr.wait().await;
        let _ = child.wait().await;
        Ok::<(), SyscallError>(())
    })
    .await;
    let timed_out = match finished {
        Ok(result) => {
            result?;
            false
        }
        Err(_elapsed) => {
            let _ = child.start_kill();
            drop(lifeline);
            let _ = child.wait().await;
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                stdout.wait().await;
                stderr.wait().await;
            })
            .await;
            true
        }
    };
    drop(proxies);
    let (stdout, stdout_truncated) = stdout.finish();
    let (stderr, stderr_truncated) = stderr.finish();
    let exit_code = match ending.status {
        Some(LauncherEvent::Exited { code }) => Some(code),
        Some(LauncherEvent::Signaled { .. }) => None,
        Some(LauncherEvent::Refused {
            denied: Some(resource),
            message,
        }) => return Err(SyscallError::denied_because(resource, "execute", message)),
        Some(LauncherEvent::Refused {
            denied: None,
            message,
        }) => return Err(SyscallError::Io(format!("shell sandbox: {message}"))),
        Some(LauncherEvent::ExecFailed { errno }) => return Err(exec_error(errno, &program)),
        Some(LauncherEvent::Proxy { .. }) | None if timed_out => None,
        Some(LauncherEvent::Proxy { .. }) | None => {
            return Err(SyscallError::Internal(format!(
                "shell sandbox: the launcher ended without reporting how the command ended{}",
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stderr.trim_end())
                }
            )))
        }
    };
    let (connections, _count) = log.take();
    Ok(ShellOutput {
        exit_code,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        timed_out,
        sandbox,
        connections,
    })
}

fn io_error(err: std::io::Error) -> SyscallError {
    SyscallError::Io(format!("shell sandbox: {err}"))
}

fn exec_error(errno: i32, program: &str) -> SyscallError {
    match errno {
        libc::ENOENT | libc::ENOTDIR => {
            SyscallError::NotFound(format!("command not found: {program}"))
        }
        libc::EACCES | libc::EPERM => {
            SyscallError::Io(format!("cannot execute {program}: permission denied"))
        }
        other => SyscallError::Io(format!(
            "cannot start {program}: {}",
            std::io::Error::from_raw_os_error(other)
        )),
    }
}

fn start_proxy(
    fd: OwnedFd,
    network: NetworkPolicy,
    log: ProxyLog,
) -> SysResult<tokio::task::JoinSet<()>> {
    let listener = std::net::TcpListener::from(fd);
    proxy::serve(listener, network, log)
        .map_err(|e| SyscallError::Io(format!("shell sandbox: proxy: {e}")))
}

/// Reads the launcher's events on a blocking thread until the socket ends.
fn read_events(socket: UnixStream) -> mpsc::Receiver<(LauncherEvent, Option<OwnedFd>)> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        while let Ok(Some(received)) = protocol::recv::<LauncherEvent>(socket.as_fd()) {
            if tx.blocking_send(received).is_err() {
                break;
            }
        }
    });
    rx
}
