//! The host side of isolate worker processes: starting the runtime binary in its worker
//! mode with a Unix socket as its stdin, turning a socket into async halves, and reading a
//! worker's resident memory. The protocol and its policy live in `crate::isolate`.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncWrite};

/// An async reading half.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// An async writing half.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Starts `binary` with `args`, only `env` in its environment, and one end of a fresh
/// socket pair as its stdin; returns the child (killed when dropped) and the other end.
/// Call on a thread that outlives the child: its parent-death signal follows that thread.
pub fn spawn(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
) -> io::Result<(tokio::process::Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = tokio::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, ours))
}

/// The async halves of `socket`, on the current tokio runtime.
pub fn split(socket: UnixStream) -> io::Result<(Reader, Writer)> {
    socket.set_nonblocking(true)?;
    let (reader, writer) = tokio::net::UnixStream::from_std(socket)?.into_split();
    Ok((Box::new(reader), Box::new(writer)))
}

/// The resident memory of process `pid`, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: a plain query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// The variables among `names` set in this process's environment.
pub fn passthrough_env(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect()
}
