//! The sandbox launcher: a hidden mode of the runtime binary, started with `posix_spawn` for
//! each command and dispatched at the very top of `main`, before any thread exists. It reads
//! a [`LaunchRequest`] from its stdin (a Unix socket), then:
//!
//! ```text
//! launcher  [user ns] + mount, PID, network namespaces; loopback up; [proxy listener]
//!           masks: hidden paths, denied programs, read-only carve-outs (fd-based mounts)
//!           fork → init (PID 1): fresh /proc, private /dev/shm, pid_max
//!                  fork → command (PID 2): Landlock, rlimits, capabilities dropped,
//!                         no-new-privs, seccomp, descriptors closed on exec, execve
//!                  reap until the command exits, report, exit (the kernel kills the rest)
//!           wait for init; if the runtime closes the socket or dies, kill init
//! ```
//!
//! Every failure is reported as a [`LauncherEvent::Refused`] and the command does not start.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use landlock::{AccessFs, BitFlags, ABI};

use super::fs_rules::{self, Grant};
use super::protocol::{self, LaunchRequest, LauncherEvent};
use super::sys;
use crate::kernel::sandbox_policy::Reach;

/// A refusal: the command does not start. `denied` names the resource when the cause is a
/// rule of the policy rather than the host.
pub(super) struct Refusal {
    denied: Option<String>,
    message: String,
}

impl Refusal {
    pub(super) fn denied(resource: String, message: String) -> Refusal {
        Refusal {
            denied: Some(resource),
            message,
        }
    }

    pub(super) fn host(what: &str, err: impl std::fmt::Display) -> Refusal {
        host_error(what, err)
    }
}

fn host_error(what: &str, err: impl std::fmt::Display) -> Refusal {
    Refusal {
        denied: None,
        message: format!("{what}: {err}"),
    }
}

/// Runs the launcher; returns the process exit code.
pub fn main() -> i32 {
    // SAFETY: duplicating our own stdin to a close-on-exec descriptor above the stdio range.
    let raw = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 10) };
    if raw < 0 {
        return 2;
    }
    // SAFETY: a fresh descriptor.
    let control = unsafe { OwnedFd::from_raw_fd(raw) };
    let (request, stdin) = match protocol::recv::<LaunchRequest>(control.as_fd()) {
        Ok(Some(received)) => received,
        _ => return 2,
    };
    if let Err(refusal) = launch(&request, stdin, control.as_fd()) {
        let _ = protocol::send(
            control.as_fd(),
            &LauncherEvent::Refused {
                denied: refusal.denied,
                message: refusal.message,
            },
            None,
        );
    }
    0
}

/// Puts the command's stdin (the attached pipe, or `/dev/null`) on descriptor 0.
fn set_stdin(stdin: Option<OwnedFd>) -> Result<(), Refusal> {
    let source = match stdin {
        Some(fd) => fd,
        None => sys::open_path(Path::new("/dev/null"), libc::O_RDONLY)
            .map_err(|e| host_error("opening /dev/null", e))?,
    };
    // SAFETY: duplicating a descriptor we own onto 0.
    if unsafe { libc::dup2(source.as_raw_fd(), 0) } < 0 {
        return Err(host_error("stdin", io::Error::last_os_error()));
    }
    Ok(())
}

/// Enters fresh mount, PID and network namespaces (inside a new user namespace with an
/// identity map when not root) and makes every mount private.
pub(super) fn enter_namespaces(user_namespace: bool) -> io::Result<()> {
    // SAFETY: plain queries.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET;
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    sys::unshare(flags)?;
    if user_namespace {
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    sys::make_mounts_private()
}

fn launch(
    request: &LaunchRequest,
    stdin: Option<OwnedFd>,
    control: BorrowedFd<'_>,
) -> Result<(), Refusal> {
    set_stdin(stdin)?;
    let abi = fs_rules::abi_of(request.landlock_abi).map_err(|e| host_error("landlock", e))?;
    let filters = super::seccomp::programs().map_err(|e| host_error("seccomp", e))?;
    enter_namespaces(request.user_namespace).map_err(|e| host_error("namespaces", e))?;
    sys::loopback_up().map_err(|e| host_error("loopback", e))?;
    let mut env = request.env.clone();
    if request.policy.network.is_open() {
        let port = open_proxy_listener(control)?;
        let proxy = format!("http://127.0.0.1:{port}");
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "npm_config_proxy",
            "npm_config_https_proxy",
            "CARGO_HTTP_PROXY",
        ] {
            env.push((name.to_string(), proxy.clone()));
        }
    }
    let workspace = sys::open_path(&request.workspace, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| host_error("opening the workspace", e))?;
    super::masks::apply(request, workspace.as_fd())?;
    let rules = open_rule_targets(request, abi, workspace.as_fd())?;
    let cwd = sys::open_beneath(
        workspace.as_fd(),
        &request.policy.cwd,
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(|e| host_error(&format!("working directory {}", request.policy.cwd), e))?;
    // Init learns that the launcher is gone (before its death signal was armed) when the
    // write end of this pipe, held only by the launcher, is closed.
    let (alive, alive_writer) = std::io::pipe().map_err(|e| host_error("pipe", e))?;
    // SAFETY: the launcher is single-threaded; the child runs ordinary code and never returns.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return Err(host_error("fork", io::Error::last_os_error()));
    }
    if init == 0 {
        drop(alive_writer);
        let code = run_init(
            request,
            OwnedFd::from(alive),
            control,
            Command {
                abi,
                rules,
                filters,
                cwd,
                env,
            },
        );
        // SAFETY: leaving init.
        unsafe { libc::_exit(code) }
    }
    drop((workspace, alive));
    supervise(init, control);
    drop(alive_writer);
    Ok(())
}

/// Creates the proxy listener inside the new network namespace and hands it to the runtime.
fn open_proxy_listener(control: BorrowedFd<'_>) -> Result<u16, Refusal> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| host_error("proxy listener", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| host_error("proxy listener", e))?
        .port();
    protocol::send(
        control,
        &LauncherEvent::Proxy { port },
        Some(listener.as_fd()),
    )
    .map_err(|e| host_error("handing over the proxy listener", e))?;
    Ok(port)
}

/// Descriptors and rights for every Landlock rule but the ones on fresh mounts.
fn open_rule_targets(
    request: &LaunchRequest,
    abi: ABI,
    workspace: BorrowedFd<'_>,
) -> Result<Vec<(OwnedFd, BitFlags<AccessFs>)>, Refusal> {
    let mut rules = Vec::new();
    let system = &request.system;
    let trusted = system
        .read_exec
        .iter()
        .map(|p| (p, Grant::ReadExec))
        .chain(system.toolchains.iter().map(|p| (p, Grant::ReadExec)))
        .chain(system.read.iter().map(|p| (p, Grant::Read)))
        .chain(system.devices.iter().map(|p| (p, Grant::Device)))
        .chain(system.caches.iter().map(|p| (p, Grant::Private)))
        .chain(std::iter::once((&request.scratch, Grant::Private)));
    for (path, grant) in trusted {
        // Missing system paths are skipped: nothing to grant.
        let Ok(fd) = sys::open_path(path, libc::O_PATH) else {
            continue;
        };
        let st = sys::fstat(fd.as_fd()).map_err(|e| host_error("stat", e))?;
        rules.push((fd, fs_rules::rights(abi, grant, sys::is_dir(&st))));
    }
    for grant in &request.policy.grants {
        let target = match grant.reach {
            Reach::Children => {
                rules.extend(children(workspace, &grant.path, abi, grant.access)?);
                continue;
            }
            _ => open_grant_root(
                workspace,
                &grant.path,
                grant.reach == Reach::Tree && (grant.access.write || grant.access.delete),
            )?,
        };
        let Some(fd) = target else { continue };
        let st = sys::fstat(fd.as_fd()).map_err(|e| host_error("stat", e))?;
        rules.push((
            fd,
            fs_rules::rights(
                abi,
                Grant::Workspace(grant.access, grant.reach),
                sys::is_dir(&st),
            ),
        ));
    }
    Ok(rules)
}

/// Opens a granted workspace path beneath the workspace, never through a symlink. A missing
/// read-only root is skipped; a missing writable tree is created.
fn open_grant_root(
    workspace: BorrowedFd<'_>,
    path: &str,
    create: bool,
) -> Result<Option<OwnedFd>, Refusal> {
    match sys::open_beneath(workspace, path, libc::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
            let mut dir = sys::open_beneath(workspace, ".", libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| host_error("workspace", e))?;
            for part in path.split('/') {
                match sys::open_beneath(dir.as_fd(), part, libc::O_PATH | libc::O_DIRECTORY) {
                    Ok(next) => dir = next,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        sys::mkdir_at(dir.as_fd(), part, 0o755)
                            .map_err(|e| host_error(&format!("creating {path}"), e))?;
                        dir =
                            sys::open_beneath(dir.as_fd(), part, libc::O_PATH | libc::O_DIRECTORY)
                                .map_err(|e| host_error(&format!("opening {path}"), e))?;
                    }
                    Err(e) => return Err(symlink_or_error(path, e)),
                }
            }
            Ok(Some(dir))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(symlink_or_error(path, e)),
    }
}

/// A symlink on the way to a granted path would make the rule grant its target.
fn symlink_or_error(path: &str, err: io::Error) -> Refusal {
    if matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)) {
        Refusal {
            denied: Some(format!("fs:{path}")),
            message: format!(
                "fs:{path} leads through a symlink, which the sandbox does not follow"
            ),
        }
    } else {
        host_error(&format!("opening {path}"), err)
    }
}

/// File rules for the regular files directly inside `dir` (`fs:dir/*`), as they exist now.
fn children(
    workspace: BorrowedFd<'_>,
    dir: &str,
    abi: ABI,
    access: crate::kernel::sandbox_policy::FsAccess,
) -> Result<Vec<(OwnedFd, BitFlags<AccessFs>)>, Refusal> {
    let fd = match sys::open_beneath(workspace, dir, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(symlink_or_error(dir, e)),
    };
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| host_error(&format!("listing {dir}"), e))?;
    let mut rules = Vec::new();
    for entry in listing.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(child) = sys::open_beneath(fd.as_fd(), &name, libc::O_PATH) else {
            continue;
        };
        let Ok(st) = sys::fstat(child.as_fd()) else {
            continue;
        };
        if sys::is_regular(&st) {
            rules.push((
                child,
                fs_rules::rights(abi, Grant::Workspace(access, Reach::Entry), false),
            ));
        }
    }
    Ok(rules)
}

/// What the command process needs, prepared before forking.
struct Command {
    abi: ABI,
    rules: Vec<(OwnedFd, BitFlags<AccessFs>)>,
    filters: Vec<seccompiler::BpfProgram>,
    cwd: OwnedFd,
    env: Vec<(String, String)>,
}

/// PID 1 of the sandbox: mounts `/proc` and `/dev/shm`, bounds the process count, starts the
/// command as PID 2, reaps everything, reports the command's end.
fn run_init(
    request: &LaunchRequest,
    alive: OwnedFd,
    control: BorrowedFd<'_>,
    command: Command,
) -> i32 {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut check = libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout only looks.
    if unsafe { libc::poll(&mut check, 1, 0) } != 0 {
        // The launcher died before the death signal was armed.
        return 1;
    }
    drop(alive);
    let refuse = |message: String| {
        let _ = protocol::send(
            control,
            &LauncherEvent::Refused {
                denied: None,
                message,
            },
            None,
        );
        1
    };
    if let Err(e) = sys::mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ) {
        return refuse(format!("mounting /proc: {e}"));
    }
    if Path::new("/dev/shm").is_dir() {
        if let Err(e) = sys::mount(
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777,size=64m",
        ) {
            return refuse(format!("mounting /dev/shm: {e}"));
        }
    }
    if request.pid_max {
        let pid_max = request.policy.limits.processes.saturating_add(1).max(301);
        if let Err(e) = std::fs::write("/proc/sys/kernel/pid_max", pid_max.to_string()) {
            return refuse(format!("limiting processes (pid_max): {e}"));
        }
    }
    // SAFETY: init is single-threaded; the child runs ordinary code and never returns.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return refuse(format!("fork: {}", io::Error::last_os_error()));
    }
    if child == 0 {
        run_command(request, control, command);
    }
    drop(command);
    loop {
        let mut status = 0;
        // SAFETY: reaping our children (and the orphans the namespace gives PID 1).
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == child {
            let event = if libc::WIFSIGNALED(status) {
                LauncherEvent::Signaled {
                    signal: libc::WTERMSIG(status),
                }
            } else {
                LauncherEvent::Exited {
                    code: libc::WEXITSTATUS(status),
                }
            };
            let _ = protocol::send(control, &event, None);
            return 0;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

/// PID 2: confines itself, then becomes the command. Never returns.
fn run_command(request: &LaunchRequest, control: BorrowedFd<'_>, command: Command) -> ! {
    let refuse = |denied: Option<String>, message: String| refuse_command(control, denied, message);
    // SAFETY: plain prctl and setsid.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::setsid();
    }
    // SAFETY: changing to a directory we hold open.
    if unsafe { libc::fchdir(command.cwd.as_raw_fd()) } < 0 {
        refuse(
            None,
            format!("working directory: {}", io::Error::last_os_error()),
        );
    }
    let program = request.argv.first().cloned().unwrap_or_default();
    for code in &request.policy.code_files {
        match std::fs::metadata(code) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => refuse(
                Some(format!("shell:{program} -")),
                format!("{code} is not a regular file: interpreter code read from a device, pipe or stdin cannot be checked"),
            ),
            Err(e) => refuse(
                Some(format!("shell:{program} -")),
                format!("{code}: {e}: the script must be a regular file"),
            ),
        }
    }
    let mut rules: Vec<(BorrowedFd<'_>, BitFlags<AccessFs>)> = command
        .rules
        .iter()
        .map(|(fd, access)| (fd.as_fd(), *access))
        .collect();
    let mut fresh = Vec::new();
    for (path, grant) in [("/proc", Grant::Read), ("/dev/shm", Grant::Private)] {
        if let Ok(fd) = sys::open_path(Path::new(path), libc::O_PATH | libc::O_DIRECTORY) {
            fresh.push((fd, fs_rules::rights(command.abi, grant, true)));
        }
    }
    rules.extend(fresh.iter().map(|(fd, access)| (fd.as_fd(), *access)));
    if let Err(e) = set_limits(request) {
        refuse(None, format!("resource limits: {e}"));
    }
    if let Err(e) = sys::drop_capabilities() {
        refuse(None, format!("dropping capabilities: {e}"));
    }
    if let Err(e) = fs_rules::restrict_self(command.abi, &rules) {
        refuse(None, e);
    }
    if let Err(e) = super::seccomp::install(&command.filters) {
        refuse(None, e);
    }
    if let Err(e) = sys::cloexec_from_3() {
        refuse(None, format!("closing descriptors: {e}"));
    }
    let errno = exec(&request.argv, &command.env);
    let _ = protocol::send(control, &LauncherEvent::ExecFailed { errno }, None);
    // SAFETY: leaving after a failed exec.
    unsafe { libc::_exit(127) }
}

/// Reports why the command cannot start and leaves the command process.
fn refuse_command(control: BorrowedFd<'_>, denied: Option<String>, message: String) -> ! {
    let _ = protocol::send(control, &LauncherEvent::Refused { denied, message }, None);
    // SAFETY: leaving the command process before exec.
    unsafe { libc::_exit(126) }
}

fn set_limits(request: &LaunchRequest) -> io::Result<()> {
    let limits = &request.policy.limits;
    let mut pairs = vec![
        (libc::RLIMIT_CPU, limits.cpu_seconds),
        (libc::RLIMIT_DATA, limits.memory_bytes),
        (libc::RLIMIT_FSIZE, limits.file_bytes),
        (libc::RLIMIT_NOFILE, limits.open_files),
        (libc::RLIMIT_CORE, 0),
    ];
    // RLIMIT_NPROC counts the user's processes everywhere and is ignored for root; a PID
    // namespace's pid_max is the real bound. Without it, use what there is.
    if !request.pid_max {
        pairs.push((libc::RLIMIT_NPROC, limits.processes));
    }
    for (resource, value) in pairs {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &limit) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `execve` of argv0 (searched in the command's `PATH` when it has no slash); returns the
/// errno of the most telling failure.
fn exec(argv: &[String], env: &[(String, String)]) -> i32 {
    use std::ffi::CString;
    let Some(program) = argv.first() else {
        return libc::ENOENT;
    };
    let Ok(args) = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return libc::EINVAL;
    };
    let Ok(vars) = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()
    else {
        return libc::EINVAL;
    };
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|dir| format!("{dir}/{program}"))
            .collect()
    };
    let mut errno = libc::ENOENT;
    for candidate in candidates {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(path.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr()) };
        let err = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT);
        if err != libc::ENOENT && err != libc::ENOTDIR {
            errno = err;
        }
    }
    errno
}

/// Waits for init; kills it when the runtime closes the control socket or dies.
fn supervise(init: libc::pid_t, control: BorrowedFd<'_>) {
    let pidfd = sys::pidfd_open(init).ok();
    // The launcher holds nothing the runtime reads: let output reach EOF with init.
    // SAFETY: replacing our stdio with /dev/null.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
    loop {
        let mut fds = vec![libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(pidfd) = &pidfd {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: a valid pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            sys::kill(init);
            break;
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            break;
        }
        if fds[0].revents != 0 {
            let mut byte = [0u8; 64];
            // SAFETY: reading into a local buffer.
            let read = unsafe {
                libc::read(
                    control.as_raw_fd(),
                    byte.as_mut_ptr() as *mut libc::c_void,
                    byte.len(),
                )
            };
            if read <= 0 {
                sys::kill(init);
                break;
            }
        }
    }
    super::support::wait(init);
}
