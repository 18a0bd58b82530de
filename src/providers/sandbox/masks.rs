//! Carve-outs made with mounts in the sandbox's private mount namespace: what must stay
//! unreachable inside something granted (a deny rule's path, the runtime's state, a denied
//! program) is covered by an empty, read-only, mode-000 file or directory; what must stay
//! unchanged (`.git/hooks`, a write-deny) is re-mounted read-only onto itself. Targets are
//! opened beneath the workspace without following symlinks and mounted onto by descriptor,
//! so a symlink or a rename cannot redirect a mask.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::launcher::Refusal;
use super::protocol::LaunchRequest;
use super::sys;

/// Applies every mask and read-only carve-out of the request.
pub(super) fn apply(request: &LaunchRequest, workspace: BorrowedFd<'_>) -> Result<(), Refusal> {
    let mut hide: Vec<OwnedFd> = Vec::new();
    let mut read_only: Vec<OwnedFd> = Vec::new();
    for carve_out in &request.policy.carve_outs {
        match sys::open_beneath(workspace, &carve_out.path, libc::O_PATH) {
            Ok(fd) if carve_out.hide => hide.push(fd),
            Ok(fd) => read_only.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !carve_out.required => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(Refusal::denied(
                    format!("fs:{}", carve_out.path),
                    format!(
                        "{} does not exist inside a writable tree: the command could create it and \
                         dodge {}",
                        carve_out.path, carve_out.reason
                    ),
                ))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)) => {
                return Err(Refusal::denied(
                    format!("fs:{}", carve_out.path),
                    format!(
                        "{} leads through a symlink, so it cannot be carved out",
                        carve_out.path
                    ),
                ))
            }
            Err(e) => return Err(Refusal::host(&format!("opening {}", carve_out.path), e)),
        }
    }
    for path in request.hidden.iter().chain(&request.denied_executables) {
        match sys::open_path(path, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => hide.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Refusal::host(&format!("opening {}", path.display()), e)),
        }
    }
    if !hide.is_empty() {
        let source = mask_source(request).map_err(|e| Refusal::host("preparing masks", e))?;
        for target in &hide {
            let st = sys::fstat(target.as_fd()).map_err(|e| Refusal::host("stat", e))?;
            let name = if sys::is_dir(&st) { "d" } else { "f" };
            let mask = sys::clone_tree(source.as_fd(), name, false)
                .map_err(|e| Refusal::host("cloning a mask", e))?;
            sys::move_mount_onto(mask.as_fd(), target.as_fd())
                .map_err(|e| Refusal::host("mounting a mask", e))?;
        }
    }
    for target in &read_only {
        let tree = sys::clone_tree(target.as_fd(), "", true)
            .map_err(|e| Refusal::host("cloning a read-only carve-out", e))?;
        sys::set_mount_attrs(tree.as_fd(), sys::MOUNT_ATTR_RDONLY)
            .map_err(|e| Refusal::host("making a carve-out read-only", e))?;
        sys::move_mount_onto(tree.as_fd(), target.as_fd())
            .map_err(|e| Refusal::host("mounting a read-only carve-out", e))?;
    }
    Ok(())
}

/// A read-only tmpfs on the scratch directory's `.mask`, holding an empty mode-000 file `f`
/// and directory `d`; returns a descriptor of its root.
fn mask_source(request: &LaunchRequest) -> io::Result<OwnedFd> {
    let at = request.scratch.join(".mask");
    let target = sys::open_path(&at, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
    let fs = sys::new_tmpfs(
        &[("mode", "0755"), ("size", "16k")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )?;
    sys::create_file_at(fs.as_fd(), "f", 0)?;
    sys::mkdir_at(fs.as_fd(), "d", 0)?;
    sys::set_mount_attrs(fs.as_fd(), sys::MOUNT_ATTR_RDONLY)?;
    sys::move_mount_onto(fs.as_fd(), target.as_fd())?;
    sys::open_path(&at, libc::O_PATH | libc::O_DIRECTORY)
}
