//! What the runtime and the sandbox launcher say to each other over the launcher's stdin, a
//! Unix stream socket: one [`LaunchRequest`] (with the command's stdin pipe attached), then
//! [`LauncherEvent`]s back (the proxy listener attached to `Proxy`). Frames are those of
//! [`crate::util::frame`] (a 4-byte little-endian length and JSON); a descriptor rides on a
//! frame's first byte.
//!
//! The socket is also the lifeline: when the runtime closes it (the call returned, timed out
//! or was dropped) or dies, the launcher kills the command's whole process tree.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kernel::sandbox_policy::SandboxPolicy;
use crate::util::frame;

/// Everything the launcher needs to build the sandbox and start the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub policy: SandboxPolicy,
    /// The workspace directory (canonical).
    pub workspace: PathBuf,
    /// The command's private scratch directory (canonical): `home/` and `tmp/` inside.
    pub scratch: PathBuf,
    pub system: SystemAccess,
    /// Absolute paths to hide (the runtime's state inside something granted).
    pub hidden: Vec<PathBuf>,
    /// Programs to make unexecutable (canonical paths of denied programs).
    pub denied_executables: Vec<PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The command's stdin pipe is attached to the request frame.
    pub stdin: bool,
    /// The Landlock ABI to build rules for (the tier; 3, 5 or 6).
    pub landlock_abi: u32,
    /// Enter a user namespace first (when not running as root).
    pub user_namespace: bool,
    /// Bound the number of processes with the PID namespace's own `pid_max`.
    pub pid_max: bool,
}

/// System locations every command may use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SystemAccess {
    /// Read and execute: `/usr` and the real `/bin`, `/lib*` directories.
    pub read_exec: Vec<PathBuf>,
    /// Read only: the `/etc` allowlist.
    pub read: Vec<PathBuf>,
    /// Read and write, with device ioctls: `/dev/null`, `/dev/zero`, …
    pub devices: Vec<PathBuf>,
    /// Operator-configured toolchains (read and execute).
    pub toolchains: Vec<PathBuf>,
    /// Operator-configured caches (read and write).
    pub caches: Vec<PathBuf>,
}

/// What the launcher reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LauncherEvent {
    /// The network proxy listener (inside the sandbox's network namespace) is attached.
    Proxy { port: u16 },
    /// The command exited with a code.
    Exited { code: i32 },
    /// The command was killed by a signal.
    Signaled { signal: i32 },
    /// The sandbox could not be built as the policy asks; the command did not start.
    Refused {
        denied: Option<String>,
        message: String,
    },
    /// `execve` of the command failed with this errno.
    ExecFailed { errno: i32 },
}

/// Sends one frame, with `pass` attached if given.
pub fn send(
    socket: BorrowedFd<'_>,
    message: &impl Serialize,
    pass: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let frame = frame::encode(message)?;
    let mut sent = send_first(socket, &frame, pass)?;
    while sent < frame.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe {
            libc::send(
                socket.as_raw_fd(),
                frame[sent..].as_ptr() as *const libc::c_void,
                frame.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        sent += n as usize;
    }
    Ok(())
}

fn send_first(
    socket: BorrowedFd<'_>,
    frame: &[u8],
    pass: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = pass {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(one fd) bytes, so the first header and
        // its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one frame and the descriptor attached to it; `None` at end of stream.
pub fn recv<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
) -> io::Result<Option<(T, Option<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let (first, fd) = recv_first(socket, &mut header)?;
    if first == 0 {
        return Ok(None);
    }
    let mut stream = FdReader(socket);
    stream.read_exact(&mut header[first..])?;
    let mut body = vec![0u8; frame::body_len(header, frame::MAX_FRAME)?];
    stream.read_exact(&mut body)?;
    Ok(Some((frame::decode(&body)?, fd)))
}

fn recv_first(
    socket: BorrowedFd<'_>,
    header: &mut [u8; 4],
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: header.as_mut_ptr() as *mut libc::c_void,
        iov_len: header.len(),
    };
    // SAFETY: pure size computation.
    let space = unsafe { libc::CMSG_SPACE((4 * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut received = Vec::new();
    // SAFETY: walking the control messages the kernel filled in, within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    received.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // Anything beyond the first descriptor is unexpected and closed here.
    Ok((n, received.into_iter().next()))
}

/// `Read` over a borrowed descriptor.
struct FdReader<'a>(BorrowedFd<'a>);

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_carry_messages_and_a_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
        let pipe_r: OwnedFd = pipe_r.into();
        send(
            a.as_fd(),
            &LauncherEvent::Proxy { port: 7 },
            Some(pipe_r.as_fd()),
        )
        .unwrap();
        send(a.as_fd(), &LauncherEvent::Exited { code: 3 }, None).unwrap();
        drop(a);
        let (first, fd) = recv::<LauncherEvent>(b.as_fd()).unwrap().unwrap();
        assert_eq!(first, LauncherEvent::Proxy { port: 7 });
        assert!(fd.is_some());
        let (second, fd) = recv::<LauncherEvent>(b.as_fd()).unwrap().unwrap();
        assert_eq!(second, LauncherEvent::Exited { code: 3 });
        assert!(fd.is_none());
        assert!(recv::<LauncherEvent>(b.as_fd()).unwrap().is_none());
    }
}
