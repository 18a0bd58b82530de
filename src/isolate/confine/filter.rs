//! The worker's seccomp filters, built with `seccompiler` for the architecture the runtime
//! was compiled for (x86-64 or AArch64; the generated program kills calls made through
//! another ABI, such as i386's `int 0x80`). Three filters, stacked; the kernel answers with
//! the strictest verdict of all of them:
//!
//! 1. the **allowlist** ([`ALLOWED`], [`conditional_rules`]): everything else fails with
//!    `EPERM`, so an unexpected call is a clear error in the worker rather than a silent
//!    death. Numbers outside the native table (x32's) match nothing and fail too;
//! 2. the **kill list** ([`KILLED`]): calls only an attacker makes kill the whole worker;
//! 3. `clone3` answers `ENOSYS`, so glibc falls back to `clone`, whose flags (in a
//!    register, unlike `clone3`'s) the allowlist checks: threads only, never a process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Allowed whatever their arguments, by group.
const ALLOWED: &[libc::c_long] = &[
    // Memory: the allocator, QuickJS's heaps, thread stacks and their guard pages
    // (mmap and mprotect are conditional: no executable memory).
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads and their synchronisation: std, tokio's pools, the isolate threads.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // clone3 passes here and is answered ENOSYS by the third filter.
    libc::SYS_clone3,
    // Signals, delivered within the worker: std's stack-overflow handler on an alternate
    // stack, the runtime's masks.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // Randomness (hash seeds, the engine).
    libc::SYS_getrandom,
    // The event loop: tokio's epoll instance and waker.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    // I/O on descriptors the worker already holds (the control socket, stdio).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_close,
    // Reading its own capabilities (reports).
    libc::SYS_capget,
    // The x86-64 only spelling of epoll_pwait.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
];

/// Calls that no engine, runtime or allocator makes: a worker that tries one is running an
/// attacker's code and dies on the spot.
const KILLED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
];

/// `prctl` options a thread may use: its name (std and tokio name their threads), and
/// queries of its own confinement.
const PRCTL_ALLOWED: &[libc::c_int] = &[
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    libc::PR_GET_NO_NEW_PRIVS,
    libc::PR_GET_SECCOMP,
    libc::PR_GET_PDEATHSIG,
    libc::PR_GET_DUMPABLE,
];

/// `fcntl` commands on descriptors the worker holds (tokio duplicates its epoll
/// descriptor; `RLIMIT_NOFILE` bounds the copies).
const FCNTL_ALLOWED: &[libc::c_int] = &[
    libc::F_GETFD,
    libc::F_SETFD,
    libc::F_GETFL,
    libc::F_SETFL,
    libc::F_DUPFD_CLOEXEC,
];

/// `ioctl` requests: non-blocking and close-on-exec switches (std, mio).
const IOCTL_ALLOWED: &[u64] = &[libc::FIONBIO, libc::FIOCLEX];

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

/// One rule per value: argument `arg` (an `int`) equals one of `values`.
fn one_of(arg: u8, values: impl IntoIterator<Item = u64>) -> Result<Vec<SeccompRule>, String> {
    values
        .into_iter()
        .map(|v| {
            rule(vec![cond(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                v,
            )?])
        })
        .collect()
}

/// Calls allowed only with some arguments.
fn conditional_rules(pid: libc::pid_t) -> Result<Vec<(libc::c_long, Vec<SeccompRule>)>, String> {
    use SeccompCmpArgLen::{Dword, Qword};
    use SeccompCmpOp::{Eq, MaskedEq};
    let no_exec = || cond(2, Qword, MaskedEq(libc::PROT_EXEC as u64), 0);
    let thread = (libc::CLONE_THREAD | libc::CLONE_VM) as u64;
    Ok(vec![
        // No executable memory: QuickJS interprets, it does not compile to machine code.
        // V8's JIT maps executable memory: V8 builds are type-checked only and have never
        // run confined.
        (libc::SYS_mmap, vec![rule(vec![no_exec()?])?]),
        (libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]),
        // Threads, never processes.
        (
            libc::SYS_clone,
            vec![rule(vec![cond(0, Qword, MaskedEq(thread), thread)?])?],
        ),
        // Signals to itself only (the runtime, other workers and every other process are out
        // of reach).
        (libc::SYS_kill, one_of(0, [pid as u64])?),
        (libc::SYS_tgkill, one_of(0, [pid as u64])?),
        // Limits may be read, never changed.
        (
            libc::SYS_prlimit64,
            vec![rule(vec![cond(0, Dword, Eq, 0)?, cond(2, Qword, Eq, 0)?])?],
        ),
        // `send` is `sendto` with no address; a destination needs a socket of its own.
        (libc::SYS_sendto, vec![rule(vec![cond(4, Qword, Eq, 0)?])?]),
        (
            libc::SYS_prctl,
            one_of(0, PRCTL_ALLOWED.iter().map(|o| *o as u64))?,
        ),
        (
            libc::SYS_fcntl,
            one_of(1, FCNTL_ALLOWED.iter().map(|c| *c as u64))?,
        ),
        (libc::SYS_ioctl, one_of(1, IOCTL_ALLOWED.iter().copied())?),
        // tokio's signal driver, built with every runtime that has I/O, wakes itself through
        // a Unix socket pair. A pair has no address: both ends stay in the worker.
        (libc::SYS_socketpair, one_of(0, [libc::AF_UNIX as u64])?),
    ])
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, mismatch, matched, ARCH).map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// The compiled filters, in installation order; `pid` is the worker's own.
pub(super) fn programs(pid: libc::pid_t) -> Result<Vec<BpfProgram>, String> {
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    for (nr, rules) in conditional_rules(pid)? {
        allowed.insert(nr, rules);
    }
    let allowlist = compile(
        allowed,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?;
    let killed = compile(
        KILLED.iter().map(|nr| (*nr, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::KillProcess,
    )?;
    let clone3 = compile(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    // The allowlist goes last: `seccompiler` sets no-new-privs with `prctl` before each
    // filter, which the allowlist refuses. The verdicts do not depend on the order.
    Ok(vec![killed, clone3, allowlist])
}

/// Installs the filters on every thread of the process (there is one) and its future
/// threads.
pub(super) fn install(programs: &[BpfProgram]) -> Result<(), String> {
    for program in programs {
        seccompiler::apply_filter_all_threads(program).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_lists_do_not_overlap() {
        let programs = programs(1234).unwrap();
        assert_eq!(programs.len(), 3);
        for nr in KILLED {
            assert!(!ALLOWED.contains(nr), "{nr} is both allowed and killed");
        }
        for forbidden in [
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_setrlimit,
        ] {
            assert!(!ALLOWED.contains(&forbidden), "{forbidden} is allowed");
        }
    }
}
