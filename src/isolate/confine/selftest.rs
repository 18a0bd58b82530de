//! The binary's internal self-test of worker confinement (hidden mode [`MODE`]), run by
//! `tests/worker_confinement.rs`: it confines itself with [`super::confine_worker`]'s own
//! code, proves the engine still works (a multi-threaded tokio runtime, the isolate host's
//! threads, a QuickJS call that allocates and makes a syscall through its port, a message
//! on the control socket), then attacks every layer from inside and prints a JSON
//! [`Report`] of what each attempt got. It then waits for the control socket to close and
//! ends with the attempt named by `finale` (a call on the kill list), if any.
//!
//! The probe (one JSON argument) may leave the seccomp layer or Landlock out, so that the
//! test can show what each stops alone; workers never do.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;

use super::{confine_with, Confined, Layers, WorkerConfinement};
use crate::isolate::{
    BoxFuture, CallContext, CallLimits, CallRequest, HostConfig, IsolateHost, SyscallPort,
    ToolModule,
};

/// The hidden argument that runs the self-test (internal; not a command).
pub const MODE: &str = "__isolate-worker-selftest";

/// What to attack, given by the test.
#[derive(Debug, Deserialize)]
struct Probe {
    /// A directory the test owns, holding `secret.txt`.
    workspace: String,
    /// The runtime binary (an executable file on the host).
    binary: String,
    /// A loopback TCP port the test listens on.
    tcp_port: u16,
    /// A pathname Unix socket the test listens on.
    unix_socket: String,
    /// An abstract Unix socket name (without the leading NUL) the test listens on.
    abstract_socket: String,
    /// Passed to the confinement as the expected parent.
    #[serde(default)]
    parent: Option<libc::pid_t>,
    #[serde(default)]
    address_space_bytes: Option<u64>,
    /// Leave the seccomp layer out (to observe Landlock alone).
    #[serde(default)]
    without_seccomp: bool,
    /// Leave Landlock out (to observe seccomp alone).
    #[serde(default)]
    without_landlock: bool,
    /// Start a thread before confining (the confinement must refuse).
    #[serde(default)]
    thread_first: bool,
    /// `exec` or `ptrace`: tried last, after the control socket closed.
    #[serde(default)]
    finale: Option<String>,
}

/// The outcome of one attempt: `errno` 0 means it succeeded.
#[derive(Debug, Serialize)]
struct Attempt {
    errno: i32,
    /// The system call that failed (`socket`, `connect`, …).
    step: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    confined: Confined,
    engine: Value,
    control_socket: String,
    no_new_privs: i32,
    seccomp_mode: i32,
    effective_capabilities: u64,
    attempts: BTreeMap<&'static str, Attempt>,
}

/// Runs the self-test if the process was started in its mode; returns the exit code. Call
/// first thing in `main`, before any thread starts.
pub fn run_hidden_mode() -> Option<i32> {
    let mut args = std::env::args();
    if args.nth(1).as_deref() != Some(MODE) {
        return None;
    }
    let probe = match args.next().map(|text| serde_json::from_str::<Probe>(&text)) {
        Some(Ok(probe)) => probe,
        _ => {
            eprintln!("{MODE}: expects one JSON argument describing the probe");
            return Some(2);
        }
    };
    Some(run(probe))
}

fn run(probe: Probe) -> i32 {
    let limits = WorkerConfinement {
        address_space_bytes: probe
            .address_space_bytes
            .unwrap_or(super::DEFAULT_ADDRESS_SPACE_BYTES),
        parent: probe.parent,
        ..WorkerConfinement::default()
    };
    let _early = probe
        .thread_first
        .then(|| std::thread::spawn(std::thread::park));
    let layers = Layers {
        landlock: !probe.without_landlock,
        seccomp: !probe.without_seccomp,
    };
    let confined = match confine_with(&limits, layers) {
        Ok(confined) => confined,
        Err(e) => {
            println!("{}", json!({ "confine_error": e.to_string() }));
            return 3;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("{}", json!({ "runtime_error": e.to_string() }));
            return 4;
        }
    };
    // SAFETY: descriptor 0 is the control socket this process was started with; nothing
    // else owns it.
    let control = unsafe { OwnedFd::from_raw_fd(0) };
    let address_space = limits.address_space_bytes;
    let probe_ref = &probe;
    runtime.block_on(async move {
        let control = match control_socket(control) {
            Ok(control) => control,
            Err(e) => {
                println!("{}", json!({ "control_error": e.to_string() }));
                return 4;
            }
        };
        let message = exchange(&control).await;
        let engine = run_engine().await;
        let report = Report {
            confined,
            engine,
            control_socket: message,
            no_new_privs: prctl_get(libc::PR_GET_NO_NEW_PRIVS),
            seccomp_mode: prctl_get(libc::PR_GET_SECCOMP),
            effective_capabilities: effective_capabilities(),
            attempts: attack(probe_ref, address_space),
        };
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
        wait_for_close(&control).await;
        0
    });
    match probe.finale.as_deref() {
        Some("exec") => {
            let errno = exec_here(&probe.binary);
            println!("{}", json!({ "finale": "exec", "errno": errno }));
        }
        Some("ptrace") => {
            // SAFETY: plain system call.
            let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            println!("{}", json!({ "finale": "ptrace", "rc": rc }));
        }
        _ => {}
    }
    0
}

/// The control socket (descriptor 0, inherited) on tokio's event loop, non-blocking.
fn control_socket(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an owned descriptor stays open, and the same, for as long as the AsyncFd
    // holds it.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// `recv` on the control socket once it is readable (0: the peer closed it).
async fn receive(control: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = control.readable().await?;
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let read = ready.try_io(|fd| {
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        if let Ok(result) = read {
            return result;
        }
    }
}

/// `send` of all of `bytes` on the control socket.
async fn send_all(control: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut ready = control.writable().await?;
        // SAFETY: `bytes` is valid for `bytes.len()` bytes.
        let sent = ready.try_io(|fd| {
            let n = unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        if let Ok(result) = sent {
            bytes = &bytes[result?..];
        }
    }
    Ok(())
}

/// Reads one message from the control socket and answers it: the IPC path under
/// confinement.
async fn exchange(control: &AsyncFd<OwnedFd>) -> String {
    let mut buf = [0u8; 64];
    let n = match receive(control, &mut buf).await {
        Ok(n) => n,
        Err(e) => return format!("read: {e}"),
    };
    let got = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    if let Err(e) = send_all(control, format!("{got}: pong\n").as_bytes()).await {
        return format!("write: {e}");
    }
    got
}

async fn wait_for_close(control: &AsyncFd<OwnedFd>) {
    let mut buf = [0u8; 64];
    while let Ok(n) = receive(control, &mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Answers every syscall with a fixed value (the worker's IPC client stands here).
struct FixedPort;

impl SyscallPort for FixedPort {
    fn syscall(
        &self,
        _ctx: &CallContext,
        call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let call: Value = serde_json::from_str(call.get()).unwrap_or(Value::Null);
        Box::pin(async move { Ok(json!({ "echo": call })) })
    }

    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

const TOOL: &str = "export default { async run(args: { n: number }, libos: any) {\n\
     const rows = [];\n\
     for (let i = 0; i < args.n; i++) rows.push({ i, text: 'row ' + i });\n\
     const back = JSON.parse(JSON.stringify(rows));\n\
     const answer = await libos.fs.readText('notes.txt');\n\
     return { rows: back.length, last: back[back.length - 1].text, answer };\n\
   } };";

/// A real call in a real isolate on the isolate host's threads, and one in a throwaway
/// isolate on its test thread.
async fn run_engine() -> Value {
    let module = match crate::jit::transpile::transpile("confined", TOOL) {
        Ok(out) => Arc::new(ToolModule {
            specifier: format!("tool:confined@{}.ts", &out.hash[..12]),
            code: out.code,
            source_map: out.source_map,
            hash: out.hash,
        }),
        Err(e) => return json!({ "error": format!("transpile: {e}") }),
    };
    let host = IsolateHost::start(HostConfig {
        threads: 2,
        pool_size: 1,
        ..HostConfig::default()
    });
    let request = |pid: i64| CallRequest {
        module: module.clone(),
        args: json!({ "n": 20_000 }),
        // Generous: debug builds on a shared machine; the point is the engine, not speed.
        limits: CallLimits {
            cpu_ms: 30_000,
            ..CallLimits::default()
        },
        port: Arc::new(FixedPort),
        ctx: CallContext {
            pid,
            invocation_id: format!("selftest-{pid}"),
        },
        start_time_ms: 1_700_000_000_000,
        random_seed: 7,
    };
    let call = host.call(1, request(1)).await;
    let ephemeral = host.run_ephemeral(request(2)).await;
    let outcome = |r: Result<Value, crate::isolate::CallError>| match r {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "call": outcome(call),
        "ephemeral": outcome(ephemeral),
        "threads_started": host.stats().threads_started,
    })
}

fn prctl_get(option: libc::c_int) -> i32 {
    // SAFETY: a query without pointers.
    unsafe { libc::prctl(option, 0, 0, 0, 0) }
}

fn effective_capabilities() -> u64 {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a valid header and two data structs, as capget v3 expects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const Header,
            data.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return u64::MAX;
    }
    u64::from(data[0].effective) | (u64::from(data[1].effective) << 32)
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn done(step: &'static str, rc: libc::c_long) -> Result<libc::c_long, Attempt> {
    if rc < 0 {
        Err(Attempt {
            errno: errno(),
            step,
        })
    } else {
        Ok(rc)
    }
}

fn outcome(result: Result<(), Attempt>) -> Attempt {
    match result {
        Ok(()) => SUCCEEDED,
        Err(failed) => failed,
    }
}

const SUCCEEDED: Attempt = Attempt { errno: 0, step: "" };

fn open(path: &str, flags: i32) -> Attempt {
    let Ok(c_path) = CString::new(path) else {
        return Attempt {
            errno: libc::EINVAL,
            step: "path",
        };
    };
    outcome((|| {
        // SAFETY: a valid C string.
        let fd = done(
            "open",
            unsafe { libc::open(c_path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) } as libc::c_long,
        )?;
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd as i32) };
        Ok(())
    })())
}

fn connect_to(family: i32, addr: &libc::sockaddr_storage, len: usize) -> Attempt {
    outcome((|| {
        // SAFETY: plain system call.
        let fd = done("socket", unsafe {
            libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        } as libc::c_long)? as i32;
        // SAFETY: `addr` holds a valid address of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd,
                addr as *const libc::sockaddr_storage as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        let result = done("connect", rc as libc::c_long);
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        result.map(|_| ())
    })())
}

fn loopback(port: u16) -> (libc::sockaddr_storage, usize) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            // 127.0.0.1, already in network byte order.
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr_storage.
    unsafe {
        std::ptr::write(
            &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in,
            addr,
        )
    };
    (storage, std::mem::size_of::<libc::sockaddr_in>())
}

/// A Unix address: a path, or (with `abstract_name`) a name in the abstract namespace.
fn unix_addr(name: &str, abstract_name: bool) -> (libc::sockaddr_storage, usize) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: sockaddr_un fits in sockaddr_storage.
    let un =
        unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_un) };
    un.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let offset = usize::from(abstract_name);
    for (dst, src) in un.sun_path[offset..].iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    let len = if abstract_name {
        base + 1 + name.len()
    } else {
        base + name.len() + 1
    };
    (storage, len)
}

fn bind_tcp() -> Attempt {
    outcome((|| {
        // SAFETY: plain system call.
        let fd = done("socket", unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        } as libc::c_long)? as i32;
        let (addr, len) = loopback(0);
        // SAFETY: a valid address of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd,
                &addr as *const libc::sockaddr_storage as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        let result = done("bind", rc as libc::c_long);
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        result.map(|_| ())
    })())
}

/// Forks a child that exits at once (or, with `exec`, runs `binary --version`); the
/// attempt succeeds when the child ran (and exec'd).
fn fork_child(exec: Option<&str>) -> Attempt {
    let program = exec.and_then(|p| CString::new(p).ok());
    // SAFETY: the child only calls async-signal-safe functions (execve, _exit) on data
    // prepared before the fork.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Attempt {
            errno: errno(),
            step: "fork",
        };
    }
    if child == 0 {
        let code = match &program {
            Some(path) => {
                let args = [path.as_ptr(), c"--version".as_ptr(), std::ptr::null()];
                let env = [std::ptr::null()];
                // SAFETY: null-terminated arrays of valid C strings.
                unsafe { libc::execve(path.as_ptr(), args.as_ptr(), env.as_ptr()) };
                errno()
            }
            None => 0,
        };
        // SAFETY: leaving the child.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    if code == 0 {
        SUCCEEDED
    } else {
        Attempt {
            errno: code,
            step: "execve",
        }
    }
}

fn exec_here(binary: &str) -> i32 {
    let Ok(path) = CString::new(binary) else {
        return libc::EINVAL;
    };
    let args = [path.as_ptr(), c"--version".as_ptr(), std::ptr::null()];
    let env = [std::ptr::null()];
    // SAFETY: null-terminated arrays of valid C strings.
    unsafe { libc::execve(path.as_ptr(), args.as_ptr(), env.as_ptr()) };
    errno()
}

fn attack(probe: &Probe, address_space: u64) -> BTreeMap<&'static str, Attempt> {
    let mut attempts = BTreeMap::new();
    let secret = format!("{}/secret.txt", probe.workspace);
    attempts.insert("read_workspace_file", open(&secret, libc::O_RDONLY));
    attempts.insert(
        "list_workspace",
        open(&probe.workspace, libc::O_RDONLY | libc::O_DIRECTORY),
    );
    attempts.insert(
        "create_file",
        open(
            &format!("{}/created.txt", probe.workspace),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        ),
    );
    attempts.insert("read_etc_passwd", open("/etc/passwd", libc::O_RDONLY));
    attempts.insert("open_proc_self_mem", open("/proc/self/mem", libc::O_RDWR));
    attempts.insert("read_own_binary", open(&probe.binary, libc::O_RDONLY));
    let (tcp, len) = loopback(probe.tcp_port);
    attempts.insert("tcp_connect", connect_to(libc::AF_INET, &tcp, len));
    attempts.insert("tcp_bind", bind_tcp());
    let (path, len) = unix_addr(&probe.unix_socket, false);
    attempts.insert("unix_connect_path", connect_to(libc::AF_UNIX, &path, len));
    let (name, len) = unix_addr(&probe.abstract_socket, true);
    attempts.insert(
        "unix_connect_abstract",
        connect_to(libc::AF_UNIX, &name, len),
    );
    // SAFETY: plain queries and a permission check (signal 0 delivers nothing).
    let parent = unsafe { libc::kill(libc::getppid(), 0) };
    attempts.insert(
        "signal_parent",
        outcome(done("kill", parent as libc::c_long).map(|_| ())),
    );
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_AS, &unlimited) };
    attempts.insert(
        "raise_address_space",
        outcome(done("setrlimit", raised as libc::c_long).map(|_| ())),
    );
    // Another process's limits (the runtime's: same user) are out of reach. Harmless if it
    // succeeded: no core files for the test process.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit struct; no old-value pointer.
    let limited = unsafe {
        libc::prlimit(
            libc::getppid(),
            libc::RLIMIT_CORE,
            &no_core,
            std::ptr::null_mut(),
        )
    };
    attempts.insert(
        "limit_parent",
        outcome(done("prlimit", limited as libc::c_long).map(|_| ())),
    );
    attempts.insert(
        "map_beyond_address_space",
        map(address_space, libc::PROT_NONE),
    );
    attempts.insert(
        "map_executable",
        map(4096, libc::PROT_READ | libc::PROT_EXEC),
    );
    // A worker that could disarm its parent-death signal would outlive the runtime.
    // SAFETY: plain prctl.
    let disarmed = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    attempts.insert(
        "disarm_parent_death_signal",
        outcome(done("prctl", disarmed as libc::c_long).map(|_| ())),
    );
    attempts.insert("fork", fork_child(None));
    if probe.without_seccomp {
        // With seccomp, exec kills the worker: that is the finale's job.
        attempts.insert("fork_exec", fork_child(Some(&probe.binary)));
    } else {
        // Unfiltered, some of these would act (a raw clone forks): only with the filter.
        attempts.extend(other_spellings());
    }
    attempts
}

/// Maps `bytes` of anonymous memory with `prot` (`MAP_NORESERVE`: no memory is committed).
fn map(bytes: u64, prot: i32) -> Attempt {
    // SAFETY: an anonymous reservation, unmapped at once if it succeeds.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Attempt {
            errno: errno(),
            step: "mmap",
        };
    }
    // SAFETY: unmapping what we just mapped.
    unsafe { libc::munmap(ptr, bytes as usize) };
    SUCCEEDED
}

/// Other system calls with the effect of a refused one (another way to open, fork, signal,
/// re-limit, get executable memory, or get around the filter), with the call's raw
/// number. Each must fail with `EPERM`: the allowlist does not know them.
fn other_spellings() -> Vec<(&'static str, Attempt)> {
    let passwd = c"/etc/passwd";
    // SAFETY: plain queries.
    let parent = unsafe { libc::getppid() } as libc::c_long;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = libc::O_RDONLY as u64;
    let page = 4096usize;
    let rlimit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut siginfo: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut uring_params = [0u8; 120];
    let calls: Vec<(&'static str, libc::c_long, [libc::c_long; 5])> = vec![
        (
            "openat2",
            libc::SYS_openat2,
            [
                libc::AT_FDCWD as libc::c_long,
                passwd.as_ptr() as libc::c_long,
                &how as *const libc::open_how as libc::c_long,
                std::mem::size_of::<libc::open_how>() as libc::c_long,
                0,
            ],
        ),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            [libc::AT_FDCWD as libc::c_long, 0, 0, 0, 0],
        ),
        (
            "openat_x32",
            libc::SYS_openat | 0x4000_0000,
            [
                libc::AT_FDCWD as libc::c_long,
                passwd.as_ptr() as libc::c_long,
                libc::O_RDONLY as libc::c_long,
                0,
                0,
            ],
        ),
        (
            "clone_process",
            libc::SYS_clone,
            [libc::SIGCHLD as libc::c_long, 0, 0, 0, 0],
        ),
        ("tkill_parent", libc::SYS_tkill, [parent, 0, 0, 0, 0]),
        (
            "rt_sigqueueinfo_parent",
            libc::SYS_rt_sigqueueinfo,
            [
                parent,
                libc::SIGCONT as libc::c_long,
                &mut siginfo as *mut libc::siginfo_t as libc::c_long,
                0,
                0,
            ],
        ),
        (
            "pidfd_open_parent",
            libc::SYS_pidfd_open,
            [parent, 0, 0, 0, 0],
        ),
        (
            "setrlimit_raw",
            #[cfg(target_arch = "x86_64")]
            libc::SYS_setrlimit,
            #[cfg(not(target_arch = "x86_64"))]
            libc::SYS_prlimit64,
            [
                libc::RLIMIT_AS as libc::c_long,
                &rlimit as *const libc::rlimit as libc::c_long,
                0,
                0,
                0,
            ],
        ),
        (
            "mprotect_executable",
            libc::SYS_mprotect,
            [
                passwd.as_ptr() as libc::c_long & !(page as libc::c_long - 1),
                page as libc::c_long,
                (libc::PROT_READ | libc::PROT_EXEC) as libc::c_long,
                0,
                0,
            ],
        ),
        (
            "pkey_mprotect_executable",
            libc::SYS_pkey_mprotect,
            [
                passwd.as_ptr() as libc::c_long & !(page as libc::c_long - 1),
                page as libc::c_long,
                (libc::PROT_READ | libc::PROT_EXEC) as libc::c_long,
                -1,
                0,
            ],
        ),
        (
            "memfd_create",
            libc::SYS_memfd_create,
            [passwd.as_ptr() as libc::c_long, 0, 0, 0, 0],
        ),
        (
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            [8, uring_params.as_mut_ptr() as libc::c_long, 0, 0, 0],
        ),
        (
            "socketpair_inet",
            libc::SYS_socketpair,
            [
                libc::AF_INET as libc::c_long,
                libc::SOCK_STREAM as libc::c_long,
                0,
                0,
                0,
            ],
        ),
        (
            "unshare",
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as libc::c_long, 0, 0, 0, 0],
        ),
        ("userfaultfd", libc::SYS_userfaultfd, [0, 0, 0, 0, 0]),
        ("bpf", libc::SYS_bpf, [0, 0, 0, 0, 0]),
    ];
    calls
        .into_iter()
        .map(|(name, nr, [a, b, c, d, e])| {
            // SAFETY: every pointer argument points at live data of the right type; the
            // calls are expected to be refused before they run. A raw clone that ran anyway
            // leaves its child at once.
            let rc = unsafe { libc::syscall(nr, a, b, c, d, e) };
            if rc == 0 && nr == libc::SYS_clone {
                // SAFETY: leaving the child of an unfiltered clone.
                unsafe { libc::_exit(0) }
            }
            let attempt = match rc {
                rc if rc < 0 => Attempt {
                    errno: errno(),
                    step: name,
                },
                _ => SUCCEEDED,
            };
            (name, attempt)
        })
        .collect()
}
