//! The OS sandbox of shell commands: the launcher that builds it (a hidden mode of the
//! runtime binary), the probe of what the host supports, the operator's configuration, and
//! the network proxy that is a sandbox's only way out.
//!
//! Layers, applied to the command just before `execve`: Landlock (filesystem; signal and
//! abstract-socket scopes), mount-namespace masks, a PID namespace (the whole tree dies with
//! the command), a network namespace with loopback only (plus the proxy when the process
//! holds `net:` capabilities), a seccomp deny list, every capability dropped,
//! no-new-privs, rlimits, inherited descriptors closed.

mod fs_rules;
pub(crate) mod launcher;
mod masks;
pub(crate) mod protocol;
pub mod proxy;
mod seccomp;
pub mod support;
pub(crate) mod sys;

use std::path::PathBuf;

use crate::kernel::sandbox_policy::SandboxLimits;

pub use support::SandboxSupport;

/// The hidden argument that makes the runtime binary a sandbox launcher.
pub const LAUNCH_MODE: &str = "__sandbox-launch";
/// The hidden argument that makes the runtime binary print the host's [`SandboxSupport`].
pub const PROBE_MODE: &str = "__sandbox-probe";

/// Whether shell commands run in the OS sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SandboxMode {
    /// Every command runs sandboxed; where the host cannot build the sandbox, commands are
    /// refused.
    #[default]
    Enforce,
    /// The operator's explicit opt-out (`--unsandboxed-shell`): commands run with the
    /// runtime's own authority, confined only by the argv policy. Recorded in the audit
    /// record of every command.
    Unsandboxed,
}

/// The operator's sandbox configuration.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Toolchains outside `/usr` (rustup's `CARGO_HOME` and `RUSTUP_HOME`, nvm, pyenv):
    /// readable and executable by every command.
    pub toolchains: Vec<PathBuf>,
    /// Package caches: readable and writable by every command.
    pub caches: Vec<PathBuf>,
    /// Per-command limits (CPU seconds are derived from each call's timeout).
    pub limits: SandboxLimits,
    /// Skip the probe and assume this support (tests, and operators who know better).
    pub assume_support: Option<SandboxSupport>,
}

/// Runs a hidden mode if the process was started as one; returns its exit code. Call first
/// thing in `main`, before any thread, runtime or engine starts.
pub fn run_hidden_mode() -> Option<i32> {
    let mode = std::env::args_os().nth(1)?;
    if mode == LAUNCH_MODE {
        return Some(launcher::main());
    }
    if mode == PROBE_MODE {
        let support = SandboxSupport::probe_here();
        println!("{}", serde_json::to_string(&support).unwrap_or_default());
        return Some(0);
    }
    None
}

/// System files every command may read: what common programs open outside `/usr` (the
/// dynamic loader's cache, name-service and time-zone files, TLS roots). Never `/etc` whole:
/// `/etc/shadow` is readable by root.
pub const ETC_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/etc/gitconfig",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/inputrc",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/perl",
];

/// Directories readable and executable by every command: `/usr`, and the top-level ones
/// that are real directories rather than symlinks into `/usr`.
pub const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Devices every command may use.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
