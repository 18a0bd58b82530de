//! The host side of isolate worker processes: starting the runtime binary in its worker
//! mode with a Unix socket as its stdin, turning a socket into async halves, and reading a
//! worker's resident memory. The protocol and its policy live in `crate::isolate`.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncRead;

/// An async reading half.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// An async writing half.
pub type Writer = tokio::net::unix::OwnedWriteHalf;

/// How much of one worker's standard error the runtime logs; the rest is read and dropped.
pub const STDERR_BUDGET: usize = 64 * 1024;
/// The longest line of a worker's standard error logged as one.
const STDERR_LINE: u64 = 4 * 1024;

/// Starts `binary` with `args`, only `env` in its environment, and one end of a fresh
/// socket pair as its stdin; returns the child (killed when dropped) and the other end.
/// Its standard error is a pipe to the runtime, never the runtime's own (a terminal that a
/// compromised worker would write escape sequences to): see [`relay_stderr`].
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
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, ours))
}

/// The async halves of `socket`, on the current tokio runtime: a buffered reader (many
/// small frames in one read) and the writing half (see
/// [`crate::providers::frame_writer::FrameWriter`]).
pub fn split(socket: UnixStream) -> io::Result<(Reader, Writer)> {
    socket.set_nonblocking(true)?;
    let (reader, writer) = tokio::net::UnixStream::from_std(socket)?.into_split();
    Ok((
        Box::new(tokio::io::BufReader::with_capacity(READ_BUFFER, reader)),
        writer,
    ))
}

/// Bytes a socket's reader takes from the OS at once.
const READ_BUFFER: usize = 64 * 1024;

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

/// Logs what a worker writes to its standard error, on the current runtime: line by line,
/// control characters escaped, at most [`STDERR_BUDGET`] bytes; the rest is read and
/// dropped so the worker never blocks on a full pipe.
pub fn relay_stderr(child: &mut tokio::process::Child, worker: u64) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(relay_lines(stderr, STDERR_BUDGET, move |line| {
            tracing::warn!(worker, "isolate worker: {line}");
        }));
    }
}

/// Hands each line of `reader` to `sink`, escaped, until `budget` bytes were handed; reads
/// the rest to its end.
pub async fn relay_lines(
    reader: impl AsyncRead + Unpin,
    mut budget: usize,
    mut sink: impl FnMut(&str),
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(STDERR_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if budget == 0 {
            continue;
        }
        let kept = &line[..line.len().min(budget)];
        budget -= kept.len();
        let text = String::from_utf8_lossy(kept);
        sink(&text.trim_end_matches('\n').escape_debug().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workers_stderr_is_piped_escaped_and_bounded() {
        let script =
            "printf 'title\\033]0;pwned\\007\\n' >&2; head -c 300000 /dev/zero | tr '\\0' x >&2";
        let (mut child, _socket) = spawn(
            Path::new("/bin/sh"),
            &["-c".to_string(), script.to_string()],
            &[],
        )
        .unwrap();
        // Not the runtime's own standard error.
        let stderr = child.stderr.take().expect("a pipe");
        let mut lines = Vec::new();
        relay_lines(stderr, STDERR_BUDGET, |line| lines.push(line.to_string())).await;
        assert!(child.wait().await.unwrap().success());
        assert_eq!(lines[0], "title\\u{1b}]0;pwned\\u{7}");
        assert!(lines.iter().all(|l| !l.contains('\u{1b}')));
        let logged: usize = lines.iter().map(String::len).sum();
        assert!(logged <= STDERR_BUDGET + 64, "{logged}");
        assert!(logged >= STDERR_BUDGET / 2, "{logged}");
    }
}
