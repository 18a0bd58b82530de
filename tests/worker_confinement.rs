//! The OS confinement of isolate worker processes, attacked from inside a confined process:
//! the binary's internal self-test mode confines itself with the workers' own code, runs a
//! real QuickJS call on a multi-threaded tokio runtime, answers on its control socket, then
//! tries to read, create and list files, reach the network and the host's Unix sockets,
//! fork, exec, ptrace, signal its parent and grow past its address-space cap. Each
//! assertion names the layer that stops the attempt; one run leaves seccomp out to show
//! what Landlock alone stops.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_agent-libos");
const MODE: &str = "__isolate-worker-selftest";

/// What the confined process is let loose on: a workspace with a secret, a TCP listener, a
/// pathname and an abstract Unix socket, all opened by this test on the host.
struct Targets {
    workspace: tempfile::TempDir,
    tcp: TcpListener,
    unix: UnixListener,
    abstract_socket: UnixListener,
    abstract_name: String,
}

impl Targets {
    fn new() -> Targets {
        let workspace = tempfile::tempdir().unwrap();
        std::fs::write(workspace.path().join("secret.txt"), "TOP-SECRET").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let unix = UnixListener::bind(workspace.path().join("host.sock")).unwrap();
        let abstract_name = format!("agent-libos-confine-{}", uuid::Uuid::new_v4());
        let abstract_socket =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap())
                .unwrap();
        for listener in [&unix, &abstract_socket] {
            listener.set_nonblocking(true).unwrap();
        }
        tcp.set_nonblocking(true).unwrap();
        Targets {
            workspace,
            tcp,
            unix,
            abstract_socket,
            abstract_name,
        }
    }

    fn probe(&self, extra: Value) -> Value {
        let mut probe = json!({
            "workspace": self.workspace.path(),
            "binary": BINARY,
            "tcp_port": self.tcp.local_addr().unwrap().port(),
            "unix_socket": self.workspace.path().join("host.sock"),
            "abstract_socket": self.abstract_name,
        });
        for (key, value) in extra.as_object().unwrap() {
            probe[key] = value.clone();
        }
        probe
    }

    /// Nothing reached the listeners, nothing was created in the workspace.
    fn assert_untouched(&self) {
        let would_block =
            |r: std::io::Result<()>| matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock);
        assert!(
            would_block(self.tcp.accept().map(drop)),
            "a TCP connection arrived"
        );
        assert!(
            would_block(self.unix.accept().map(drop)),
            "a Unix connection arrived"
        );
        assert!(
            would_block(self.abstract_socket.accept().map(drop)),
            "an abstract-socket connection arrived"
        );
        assert!(!self.workspace.path().join("created.txt").exists());
    }
}

/// A confined self-test process and this side of its control socket.
struct Worker {
    child: Child,
    control: UnixStream,
    stdout: BufReader<ChildStdout>,
}

fn start(probe: &Value) -> Worker {
    let (control, theirs) = UnixStream::pair().unwrap();
    let mut child = Command::new(BINARY)
        .arg(MODE)
        .arg(probe.to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Worker {
        child,
        control,
        stdout,
    }
}

/// Waits for `child`, killing it after `limit`.
fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the confined process did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The errno of an attempt in the report (0: it succeeded) and the call that failed.
fn attempt(report: &Value, name: &str) -> (i64, String) {
    let attempt = &report["attempts"][name];
    assert!(attempt.is_object(), "no attempt {name} in {report}");
    (
        attempt["errno"].as_i64().unwrap(),
        attempt["step"].as_str().unwrap().to_string(),
    )
}

/// Fields of `/proc/<pid>/status`, read from outside the confined process.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn kib(text: &str) -> u64 {
    text.trim_end_matches(" kB").trim().parse().unwrap()
}

fn assert_engine_worked(report: &Value) {
    for call in ["call", "ephemeral"] {
        let out = &report["engine"][call]["ok"];
        assert_eq!(out["rows"], 20_000, "{call}: {report}");
        assert_eq!(out["last"], "row 19999", "{call}: {report}");
        assert_eq!(
            out["answer"]["echo"]["primitive"], "fs.read_text",
            "{call}: the syscall did not reach the port: {report}"
        );
    }
    assert!(report["engine"]["threads_started"].as_u64().unwrap() >= 3);
    assert_eq!(report["control_socket"], "ping", "{report}");
}

const EPERM: i64 = libc::EPERM as i64;
const EACCES: i64 = libc::EACCES as i64;
const ENOMEM: i64 = libc::ENOMEM as i64;

/// Every attempt seccomp's allowlist refuses: the first call of each fails with EPERM
/// (Landlock would answer EACCES, and a missing filter would let them through).
const REFUSED_BY_SECCOMP: &[(&str, &str)] = &[
    ("read_workspace_file", "open"),
    ("list_workspace", "open"),
    ("create_file", "open"),
    ("read_etc_passwd", "open"),
    ("open_proc_self_mem", "open"),
    ("read_own_binary", "open"),
    ("tcp_connect", "socket"),
    ("tcp_bind", "socket"),
    ("unix_connect_path", "socket"),
    ("unix_connect_abstract", "socket"),
    ("fork", "fork"),
    ("raise_address_space", "setrlimit"),
    ("signal_parent", "kill"),
    ("map_executable", "mmap"),
    ("disarm_parent_death_signal", "prctl"),
    ("limit_parent", "prlimit"),
];

/// Other system calls with the effect of a refused one, each tried raw in the seccomp runs.
const OTHER_SPELLINGS: &[&str] = &[
    "openat2",
    "open_by_handle_at",
    "openat_x32",
    "clone_process",
    "tkill_parent",
    "rt_sigqueueinfo_parent",
    "pidfd_open_parent",
    "setrlimit_raw",
    "mprotect_executable",
    "pkey_mprotect_executable",
    "memfd_create",
    "io_uring_setup",
    "socketpair_inet",
    "unshare",
    "userfaultfd",
    "bpf",
];

#[test]
fn a_confined_worker_runs_the_engine_and_reaches_nothing() {
    let targets = Targets::new();
    let mut worker = start(&targets.probe(json!({})));
    let report = worker.report();
    assert_eq!(worker.answer(), "ping: pong\n");
    assert_engine_worked(&report);
    assert_eq!(report["confined"]["seccomp_filters"], 3, "{report}");
    assert!(
        report["confined"]["landlock_abi"].as_u64().unwrap() >= 6,
        "{report}"
    );
    for (name, step) in REFUSED_BY_SECCOMP {
        assert_eq!(
            attempt(&report, name),
            (EPERM, step.to_string()),
            "{name}: {report}"
        );
    }
    // Other spellings of the same effects: the allowlist does not know them.
    for name in OTHER_SPELLINGS {
        assert_eq!(
            attempt(&report, name),
            (EPERM, name.to_string()),
            "{name}: {report}"
        );
    }
    // The address-space limit: a reservation of the whole cap does not fit.
    assert_eq!(
        attempt(&report, "map_beyond_address_space"),
        (ENOMEM, "mmap".to_string()),
        "{report}"
    );
    // Seen from inside, then from outside.
    assert_eq!(report["no_new_privs"], 1, "{report}");
    assert_eq!(report["seccomp_mode"], 2, "{report}");
    assert_eq!(report["effective_capabilities"], 0, "{report}");
    let pid = worker.child.id();
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "Seccomp_filters"), "3");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    // Resource limits, soft and hard: no core file, few descriptors, the address-space cap.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let cap = report["confined"]["address_space_bytes"].as_u64().unwrap();
    for (name, value) in [
        ("Max core file size", "0".to_string()),
        ("Max open files", "64".to_string()),
        ("Max address space", cap.to_string()),
    ] {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
        let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
        assert_eq!(&fields[..2], [value.as_str(), value.as_str()], "{line}");
    }
    let peak = kib(&status_field(pid, "VmPeak")) * 1024;
    assert!(peak <= cap, "VmPeak {peak} above the cap {cap}");
    let (status, rest) = worker.finish();
    assert_eq!(status.code(), Some(0), "{status:?} {rest}");
    targets.assert_untouched();
}

#[test]
fn landlock_alone_denies_files_tcp_signals_and_abstract_sockets() {
    let targets = Targets::new();
    let mut worker = start(&targets.probe(json!({ "without_seccomp": true })));
    let report = worker.report();
    assert_engine_worked(&report);
    assert_eq!(report["seccomp_mode"], 0, "{report}");
    for (name, step, errno) in [
        ("read_workspace_file", "open", EACCES),
        ("list_workspace", "open", EACCES),
        ("create_file", "open", EACCES),
        ("read_etc_passwd", "open", EACCES),
        ("open_proc_self_mem", "open", EACCES),
        ("read_own_binary", "open", EACCES),
        // TCP: the socket is made, the connection and the bind are refused.
        ("tcp_connect", "connect", EACCES),
        ("tcp_bind", "bind", EACCES),
        // Scopes: abstract sockets and signals outside the worker's domain.
        ("unix_connect_abstract", "connect", EPERM),
        ("signal_parent", "kill", EPERM),
        // Execute is handled with no rule: a forked child cannot run a program.
        ("fork_exec", "execve", EACCES),
        // Without CAP_SYS_RESOURCE (dropped) the hard limit cannot be raised.
        ("raise_address_space", "setrlimit", EPERM),
        ("map_beyond_address_space", "mmap", ENOMEM),
    ] {
        assert_eq!(
            attempt(&report, name),
            (errno, step.to_string()),
            "{name}: {report}"
        );
    }
    assert_eq!(report["effective_capabilities"], 0, "{report}");
    let (status, rest) = worker.finish();
    assert_eq!(status.code(), Some(0), "{status:?} {rest}");
    assert!(targets.tcp.accept().is_err());
    assert!(targets.abstract_socket.accept().is_err());
    assert!(!targets.workspace.path().join("created.txt").exists());
}

#[test]
fn seccomp_alone_refuses_files_network_processes_and_signals() {
    // The seccomp allowlist holds on its own, should Landlock ever fail to hold.
    let targets = Targets::new();
    let mut worker = start(&targets.probe(json!({ "without_landlock": true })));
    let report = worker.report();
    assert_engine_worked(&report);
    assert_eq!(report["confined"]["landlock_abi"], Value::Null, "{report}");
    for (name, step) in REFUSED_BY_SECCOMP {
        assert_eq!(
            attempt(&report, name),
            (EPERM, step.to_string()),
            "{name}: {report}"
        );
    }
    for name in OTHER_SPELLINGS {
        assert_eq!(
            attempt(&report, name),
            (EPERM, name.to_string()),
            "{name}: {report}"
        );
    }
    let (status, rest) = worker.finish();
    assert_eq!(status.code(), Some(0), "{status:?} {rest}");
    targets.assert_untouched();
}

#[test]
fn exec_and_ptrace_kill_the_worker() {
    for finale in ["exec", "ptrace"] {
        let targets = Targets::new();
        let mut worker = start(&targets.probe(json!({ "finale": finale })));
        let report = worker.report();
        assert_engine_worked(&report);
        let (status, rest) = worker.finish();
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{finale}: {status:?}, printed {rest:?}"
        );
        assert!(!rest.contains("finale"), "{finale} returned: {rest}");
    }
}

#[test]
fn a_worker_whose_parent_is_not_the_runtime_refuses_to_start() {
    // The runtime's pid is given (here a wrong one): as if the runtime had died before the
    // death signal was armed and the worker had been re-parented.
    let targets = Targets::new();
    let worker = start(&targets.probe(json!({ "parent": 1 })));
    let (status, out) = worker.finish();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(
        out.contains("the runtime that started the worker (pid 1) is gone"),
        "{out}"
    );
}

#[test]
fn a_process_that_already_runs_threads_is_not_confined() {
    let targets = Targets::new();
    let worker = start(&targets.probe(json!({ "thread_first": true })));
    let (status, out) = worker.finish();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("already runs 2 threads"), "{out}");
}

#[test]
fn a_worker_dies_with_the_thread_that_started_it() {
    // The parent-death signal follows the thread that spawned the worker: when it exits,
    // the worker is killed, even while the rest of the runtime (this test) lives on.
    let targets = Targets::new();
    let probe = targets.probe(json!({}));
    let spawner = std::thread::spawn(move || {
        let mut worker = start(&probe);
        let report = worker.report();
        assert_engine_worked(&report);
        worker
    });
    let mut worker = spawner.join().unwrap();
    let status = wait(&mut worker.child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

impl Worker {
    /// Sends the control message, reads the answer and the JSON report.
    fn report(&mut self) -> Value {
        self.control.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let report: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a report ({e}): {line:?}"));
        report
    }

    fn answer(&mut self) -> String {
        self.control
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = self.control.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    /// Closes the control socket and waits for the process (at most 60 s).
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.control);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (wait(&mut self.child, Duration::from_secs(60)), rest)
    }
}
