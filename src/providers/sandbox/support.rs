//! What this host offers the sandbox, probed once: the Landlock ABI and errata, seccomp, and
//! whether mount, PID and network namespaces can be made (directly as root, or inside a user
//! namespace), with a per-namespace `pid_max`. The probe of namespaces runs in a fresh
//! single-threaded process (the runtime binary's hidden probe mode), never in the runtime.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::sys;

/// The sandbox features of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSupport {
    /// Landlock ABI version (0: no Landlock).
    pub landlock_abi: u32,
    /// Landlock errata fixed in this kernel (bitmap).
    pub landlock_errata: u32,
    /// seccomp filters can be installed.
    pub seccomp: bool,
    /// Mount, PID and network namespaces can be made.
    pub namespaces: bool,
    /// A user namespace is needed for them (the runtime is not root).
    pub user_namespace: bool,
    /// Each PID namespace has its own `pid_max` (Linux 6.14+): the process-count limit.
    pub pid_max: bool,
    /// Why namespaces failed, if they did.
    pub namespace_error: Option<String>,
}

/// Landlock ABIs the sandbox is built and tested for, best first.
const TIERS: &[u32] = &[6, 5, 3];

impl SandboxSupport {
    /// A host with nothing: every sandboxed command is refused (for tests of the refusal).
    pub fn none() -> SandboxSupport {
        SandboxSupport {
            landlock_abi: 0,
            landlock_errata: 0,
            seccomp: false,
            namespaces: false,
            user_namespace: false,
            pid_max: false,
            namespace_error: Some("not probed".into()),
        }
    }

    /// The Landlock ABI the rules are built for: the best tested tier the kernel offers.
    pub fn tier(&self) -> Option<u32> {
        TIERS
            .iter()
            .copied()
            .find(|tier| self.landlock_abi >= *tier)
    }

    /// Why the sandbox cannot be built on this host, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.tier().is_none() {
            missing.push(format!(
                "Landlock ABI 3 or later (this kernel offers {})",
                if self.landlock_abi == 0 {
                    "none".to_string()
                } else {
                    self.landlock_abi.to_string()
                }
            ));
        }
        if !self.seccomp {
            missing.push("seccomp filters".to_string());
        }
        if !self.namespaces {
            missing.push(format!(
                "mount, PID and network namespaces ({})",
                self.namespace_error.as_deref().unwrap_or("refused")
            ));
        }
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// One line naming the layers a command runs under on this host.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        match self.tier() {
            Some(tier) => {
                let _ = write!(text, "landlock-abi{tier}");
            }
            None => text.push_str("no-landlock"),
        }
        text.push_str(if self.seccomp {
            "+seccomp"
        } else {
            "+no-seccomp"
        });
        if self.namespaces {
            text.push_str(if self.user_namespace {
                "+userns+mnt+pid+net"
            } else {
                "+mnt+pid+net"
            });
        }
        if self.pid_max {
            text.push_str("+pid_max");
        }
        text
    }

    /// Probes Landlock and seccomp here, and namespaces in a fresh child of this process.
    /// Call only from a single-threaded process (the hidden probe mode).
    pub fn probe_here() -> SandboxSupport {
        let (landlock_abi, landlock_errata) = sys::landlock_version();
        // SAFETY: a plain query.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
        // SAFETY: plain query.
        let user_namespace = unsafe { libc::geteuid() } != 0;
        let (namespaces, pid_max, namespace_error) = match probe_namespaces(user_namespace) {
            Ok(pid_max) => (true, pid_max, None),
            Err(err) => (false, false, Some(err)),
        };
        SandboxSupport {
            landlock_abi,
            landlock_errata,
            seccomp,
            namespaces,
            user_namespace,
            pid_max,
            namespace_error,
        }
    }
}

/// Tries, in a child, what a launcher does: new namespaces, private mounts, a fresh `/proc`
/// in a grandchild that is PID 1, loopback up. `Ok(pid_max_works)` on success.
fn probe_namespaces(user_namespace: bool) -> Result<bool, String> {
    // SAFETY: this process is single-threaded (the probe mode runs before anything else);
    // the child only makes system calls and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let code = match super::launcher::enter_namespaces(user_namespace) {
            Err(_) => 10,
            Ok(()) => match sys::loopback_up() {
                Err(_) => 11,
                Ok(()) => probe_pid_namespace(),
            },
        };
        // SAFETY: leaving the probe child without running anything else.
        unsafe { libc::_exit(code) }
    }
    let status = wait(child);
    match status {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        Some(10) => Err("unshare of user, mount, PID or network namespaces was refused".into()),
        Some(11) => Err("loopback could not be brought up in a network namespace".into()),
        Some(12) => Err("a fresh /proc could not be mounted in a PID namespace".into()),
        other => Err(format!("the namespace probe failed ({other:?})")),
    }
}

/// In the probe child (inside the new namespaces): fork PID 1, mount `/proc`, try
/// `pid_max`. Exit code 0: all fine; 1: no per-namespace pid_max; 12: no `/proc`.
fn probe_pid_namespace() -> i32 {
    // SAFETY: single-threaded probe child.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return 12;
    }
    if init == 0 {
        let code = if sys::mount(
            "proc",
            "/proc",
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        )
        .is_err()
        {
            12
        } else if std::fs::write("/proc/sys/kernel/pid_max", "400").is_ok() {
            0
        } else {
            1
        };
        // SAFETY: leaving the probe's PID 1.
        unsafe { libc::_exit(code) }
    }
    wait(init).unwrap_or(12)
}

/// Waits for a child and returns its exit code (`None` if it was killed).
pub(super) fn wait(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_refusals_name_what_is_missing() {
        let mut support = SandboxSupport::none();
        let why = support.unavailable().unwrap();
        assert!(
            why.contains("Landlock ABI 3 or later (this kernel offers none)"),
            "{why}"
        );
        assert!(
            why.contains("seccomp") && why.contains("namespaces"),
            "{why}"
        );
        support.landlock_abi = 7;
        support.seccomp = true;
        support.namespaces = true;
        assert_eq!(support.tier(), Some(6));
        assert_eq!(support.unavailable(), None);
        assert_eq!(support.describe(), "landlock-abi6+seccomp+mnt+pid+net");
        support.landlock_abi = 4;
        assert_eq!(support.tier(), Some(3));
        support.landlock_abi = 2;
        assert!(support
            .unavailable()
            .unwrap()
            .contains("this kernel offers 2"));
    }
}
