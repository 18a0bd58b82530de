//! The OS confinement of an isolate worker process: what a worker may do once it has called
//! [`confine_worker`], first thing in its hidden mode, while it is still single-threaded.
//!
//! Layers, in the order they are applied (each is inherited by every thread started later):
//!
//! 1. checks: one thread only (Landlock below ABI 8 and a seccomp filter bind the calling
//!    thread and its future children, never threads that already run), and the engine's
//!    bytecode cache is off (`engine_env`);
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then the parent is checked to still be the runtime that
//!    started the worker (if it died before the signal was armed, the worker refuses);
//! 3. rlimits: address space ([`WorkerConfinement::address_space_bytes`]), no core files,
//!    few descriptors;
//! 4. every capability dropped (bounding, ambient, permitted, effective, inheritable),
//!    no-new-privs;
//! 5. Landlock: every filesystem right and TCP bind/connect handled with no rule (nothing
//!    can be opened, created, listed or executed, `/proc` and the binary included; no TCP),
//!    abstract Unix sockets and signals scoped to the worker;
//! 6. seccomp ([`filter`]): an allowlist of what the engine, tokio, threads, the allocator
//!    and the IPC over inherited descriptors need; anything else fails with `EPERM`, a few
//!    calls that only an attacker makes (`execve`, `ptrace`, …) kill the worker.
//!
//! **Without Landlock** (a kernel before 5.13, or Landlock not enabled at boot) a worker
//! refuses to start, and so do tools: there is no opt-out. Workers run model-written code;
//! a weaker boundary would be a choice for an operator to make explicitly, tested, and no
//! operator edge offers it. Likewise a host without seccomp filters cannot run workers.
//!
//! The test `tests/worker_confinement.rs` runs the binary's hidden self-test mode
//! ([`selftest`]), which calls [`confine_worker`] and then attacks every layer from inside.

mod filter;
pub mod selftest;

use std::io;
use std::os::fd::RawFd;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus,
    Scope, ABI,
};

use crate::providers::sandbox::sys;

/// The limits and choices of a worker's confinement. `Default` is what a worker runs under
/// unless the operator's configuration says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfinement {
    /// `RLIMIT_AS`: the worker's whole address space, reservations included (default
    /// 4 GiB). It bounds memory the JavaScript heap limits do not see (the engine's own
    /// allocations, buffers, thread stacks). What counts against it besides the heaps:
    /// 16 MiB reserved per isolate thread, 2 MiB per tokio thread, and glibc's 64 MiB
    /// reservation per malloc arena (one per thread that allocates). The self-test (three
    /// isolate threads, two tokio workers, two isolates) peaks at about 0.9 GiB; 4 GiB
    /// leaves room for some thirty more isolate threads and their heaps.
    pub address_space_bytes: u64,
    /// `RLIMIT_NOFILE` (default 64): a worker opens nothing; it holds its stdio, the control
    /// socket, and tokio's epoll and event descriptors.
    pub open_files: u64,
    /// The runtime that started the worker. `None`: the peer of the control socket on
    /// descriptor 0 (`SO_PEERCRED`), which is the process that created the socket pair.
    pub parent: Option<libc::pid_t>,
}

/// Default [`WorkerConfinement::address_space_bytes`].
pub const DEFAULT_ADDRESS_SPACE_BYTES: u64 = 4 << 30;
/// Default [`WorkerConfinement::open_files`].
pub const DEFAULT_OPEN_FILES: u64 = 64;

impl Default for WorkerConfinement {
    fn default() -> Self {
        WorkerConfinement {
            address_space_bytes: DEFAULT_ADDRESS_SPACE_BYTES,
            open_files: DEFAULT_OPEN_FILES,
            parent: None,
        }
    }
}

/// What [`confine_worker`] put in place (for the runtime's records).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Confined {
    /// The Landlock ABI the ruleset was built for; `None` only in the self-test that leaves
    /// Landlock out to attack the other layers alone.
    pub landlock_abi: Option<u32>,
    /// The runtime's pid, checked after the parent-death signal was armed.
    pub parent: libc::pid_t,
    /// Seccomp filters installed (the allowlist, the kill list, `clone3` → `ENOSYS`).
    pub seccomp_filters: usize,
    pub address_space_bytes: u64,
    pub open_files: u64,
}

/// Why a worker could not be confined. The worker must exit: it never runs a tool
/// unconfined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("worker confinement: the process already runs {threads} threads; hint: call confine_worker first thing in the worker mode, before tokio, the engine or any thread starts")]
    Threaded { threads: usize },
    #[error("worker confinement: the engine's bytecode cache is on; hint: the cache is switched off before main on Linux builds with the quickjs feature (isolate::engine_env); do not run workers elsewhere")]
    BytecodeCache,
    #[error("worker confinement: cannot tell which process started the worker: {0}; hint: start the worker with the runtime's socket on descriptor 0, or pass the runtime's pid")]
    UnknownParent(io::Error),
    #[error("worker confinement: the runtime that started the worker (pid {expected}) is gone (the parent is now pid {actual}); hint: nothing to fix here: a worker never outlives its runtime, the runtime starts another")]
    ParentGone {
        expected: libc::pid_t,
        actual: libc::pid_t,
    },
    #[error("worker confinement: this kernel has no Landlock, so the worker's filesystem and network confinement cannot be built; hint: enable Landlock (Linux 5.13 or later, `lsm=…,landlock` on the kernel command line); tools do not run on this host until it is enabled")]
    NoLandlock,
    #[error("worker confinement: {step}: {source}; hint: the worker needs this step, check the host's kernel and container restrictions")]
    Step {
        step: &'static str,
        source: io::Error,
    },
    #[error("worker confinement: landlock: {0}; hint: `agent-libos sandbox check` shows what this kernel offers")]
    Landlock(String),
    #[error("worker confinement: seccomp: {0}; hint: a kernel with seccomp filters (CONFIG_SECCOMP_FILTER) is required for workers")]
    Seccomp(String),
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> ConfineError {
    move |source| ConfineError::Step { step, source }
}

/// Confines the calling process for good; see the module documentation for the layers.
///
/// **Call order:** first thing in the worker mode, right after `main` dispatched it:
/// before tokio, the isolate host, the engine, a logger thread or anything else starts a
/// thread. Every descriptor the worker will use must already be open (the control socket
/// on 0); none can be opened afterwards. On error the worker must exit without running
/// anything.
///
/// **Spawning side:** the parent-death signal follows the *thread* that spawned the
/// worker, not the runtime: spawn workers from a thread that lives as long as they should
/// (not tokio's blocking pool, whose idle threads exit), and create the control socket pair
/// in the runtime process (its creator is the expected parent when
/// [`WorkerConfinement::parent`] is `None`).
///
/// **Inside:** tokio (any runtime with I/O: its signal driver makes a socket pair), std
/// threads and the isolate host work; `/etc/localtime` cannot be read, so local time is
/// UTC; `available_parallelism` falls back to the affinity mask (no cgroup files).
pub fn confine_worker(limits: &WorkerConfinement) -> Result<Confined, ConfineError> {
    confine_with(limits, Layers::ALL)
}

/// Which layers to apply: all of them in a worker; the self-test leaves one out on request
/// to show that the others stop what they claim to stop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layers {
    pub landlock: bool,
    pub seccomp: bool,
}

impl Layers {
    pub(crate) const ALL: Layers = Layers {
        landlock: true,
        seccomp: true,
    };
}

pub(crate) fn confine_with(
    limits: &WorkerConfinement,
    layers: Layers,
) -> Result<Confined, ConfineError> {
    let threads = sys::thread_count().map_err(step("counting threads"))?;
    if threads != 1 {
        return Err(ConfineError::Threaded { threads });
    }
    if !super::engine_env::bytecode_cache_is_off() {
        return Err(ConfineError::BytecodeCache);
    }
    let parent = guard_parent(limits.parent)?;
    // Everything that needs /proc or a system file happens above this line.
    set_limits(limits)?;
    let abi = require_landlock(landlock_abi())?;
    let programs = if layers.seccomp {
        filter::programs(own_pid()).map_err(ConfineError::Seccomp)?
    } else {
        Vec::new()
    };
    sys::drop_capabilities().map_err(step("dropping capabilities"))?;
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(step("setting no-new-privs")(io::Error::last_os_error()));
    }
    let landlock_abi = match layers.landlock {
        true => {
            restrict_landlock(abi)?;
            Some(abi as u32)
        }
        false => None,
    };
    filter::install(&programs).map_err(ConfineError::Seccomp)?;
    tracing::info!(
        landlock_abi,
        parent,
        seccomp_filters = programs.len(),
        address_space_bytes = limits.address_space_bytes,
        "isolate worker confined"
    );
    Ok(Confined {
        landlock_abi,
        parent,
        seccomp_filters: programs.len(),
        address_space_bytes: limits.address_space_bytes,
        open_files: limits.open_files,
    })
}

/// This process's pid (the only process a worker may signal).
fn own_pid() -> libc::pid_t {
    // SAFETY: plain query.
    unsafe { libc::getpid() }
}

/// Arms the parent-death signal, then checks that the parent is still the runtime: if it
/// died in between, the signal will never come and the worker must not live on.
fn guard_parent(expected: Option<libc::pid_t>) -> Result<libc::pid_t, ConfineError> {
    let expected = match expected {
        Some(pid) => pid,
        None => control_peer(0).map_err(ConfineError::UnknownParent)?,
    };
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(step("arming the parent-death signal")(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: plain query.
    let actual = unsafe { libc::getppid() };
    if actual != expected {
        return Err(ConfineError::ParentGone { expected, actual });
    }
    Ok(expected)
}

/// The pid of the process that created the Unix socket pair whose other end is `fd`.
fn control_peer(fd: RawFd) -> io::Result<libc::pid_t> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-parameters of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptor 0 has no peer process",
        ));
    }
    Ok(cred.pid)
}

fn set_limits(limits: &WorkerConfinement) -> Result<(), ConfineError> {
    for (resource, value, what) in [
        (
            libc::RLIMIT_AS,
            limits.address_space_bytes,
            "limiting the address space",
        ),
        (libc::RLIMIT_CORE, 0, "disabling core files"),
        (
            libc::RLIMIT_NOFILE,
            limits.open_files,
            "limiting open descriptors",
        ),
    ] {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &limit) } < 0 {
            return Err(step(what)(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Refuses a host without Landlock.
fn require_landlock(abi: Option<ABI>) -> Result<ABI, ConfineError> {
    abi.ok_or(ConfineError::NoLandlock)
}

/// The newest Landlock ABI both this kernel and the `landlock` crate know, if any.
fn landlock_abi() -> Option<ABI> {
    let (version, _) = sys::landlock_version();
    [
        ABI::V7,
        ABI::V6,
        ABI::V5,
        ABI::V4,
        ABI::V3,
        ABI::V2,
        ABI::V1,
    ]
    .into_iter()
    .find(|abi| version >= *abi as u32)
}

/// Handles every right of `abi` with no rule: nothing on the filesystem, no TCP, no
/// abstract Unix socket or signal outside the worker.
fn restrict_landlock(abi: ABI) -> Result<(), ConfineError> {
    let err = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    let net = AccessNet::from_all(abi);
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(err)?;
    }
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(err)?;
    }
    let status = ruleset
        .create()
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(ConfineError::Landlock(format!(
            "the ruleset is not fully enforced ({:?})",
            status.ruleset
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_landlock_is_refused() {
        let err = require_landlock(None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("worker confinement: this kernel has no Landlock"),
            "{text}"
        );
        assert!(text.contains("enable Landlock"), "{text}");
        assert!(require_landlock(Some(ABI::V1)).is_ok());
    }
}
