//! The OS sandbox of shell commands, attacked with real programs and real kernel features on
//! this machine: what a command can read, write, connect to, signal, run and leave behind is
//! what its process's capabilities say, whatever program runs.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::kernel::{Kernel, Pid, ShellCall, Syscall, SyscallError};
use agent_libos::providers::{SandboxMode, SandboxSupport};
use serde_json::Value;

const SECRET: &str = "TOP-SECRET-7f3a";

fn run(argv: &[&str]) -> Syscall {
    Syscall::Shell(ShellCall::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: None,
        stdin: None,
    })
}

fn run_with(argv: &[&str], stdin: Option<&str>, timeout_ms: Option<u64>) -> Syscall {
    Syscall::Shell(ShellCall::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms,
        stdin: stdin.map(str::to_string),
    })
}

async fn ok(kernel: &Kernel, pid: Pid, call: Syscall) -> Value {
    let text = format!("{call:?}");
    kernel
        .syscall(pid, call)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Runs Python code; returns (exit code, stdout + stderr).
async fn py(kernel: &Kernel, pid: Pid, code: &str) -> (i64, String) {
    let out = ok(kernel, pid, run(&["python3", "-c", code])).await;
    let text = format!(
        "{}{}",
        out["stdout"].as_str().unwrap(),
        out["stderr"].as_str().unwrap()
    );
    (out["exit_code"].as_i64().unwrap_or(-1), text)
}

/// Python that prints `OK` or the exception's class for an expression.
fn attempt(expr: &str) -> String {
    format!(
        "try:\n    {expr}\n    print('OK')\nexcept Exception as e:\n    print(type(e).__name__)"
    )
}

fn workspace_with_secret(h: &common::TestHost) {
    let ws = h.workspace();
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    std::fs::create_dir_all(ws.join("config")).unwrap();
    std::fs::write(ws.join("docs/notes.txt"), "public notes").unwrap();
    std::fs::write(ws.join("config/private.key"), SECRET).unwrap();
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

async fn gone(marker: &str) -> bool {
    for _ in 0..100 {
        if processes_with(marker).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn marker() -> String {
    format!("1000.{}", std::process::id() as u64 * 1000 + rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 1000
}

/// The detail of the latest `shell.run` audit record, read from the database file.
async fn shell_audit(kernel: &Kernel, db: &std::path::Path) -> Value {
    kernel.store().flush().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit WHERE action = 'shell.run' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    serde_json::from_str(&detail).unwrap()
}

async fn last_shell_audit(h: &common::TestHost) -> Value {
    shell_audit(&h.kernel, &h.db_path()).await
}

#[tokio::test]
async fn python_reads_only_what_its_process_may_read() {
    let h = common::host().await;
    workspace_with_secret(&h);
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let ssh = std::path::Path::new(&home).join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = ssh.join(format!("agent-libos-test-{}", std::process::id()));
    std::fs::write(&key, SECRET).unwrap();
    let pid = h
        .spawn(&["shell:python3 -c=execute", "fs:docs/**=read"])
        .await;
    let (_, out) = py(
        &h.kernel,
        pid,
        &attempt("print(open('docs/notes.txt').read())"),
    )
    .await;
    assert!(out.contains("public notes") && out.contains("OK"), "{out}");
    for path in [
        "config/private.key".to_string(),
        h.db_path().display().to_string(),
        key.display().to_string(),
        "/etc/shadow".to_string(),
        format!("/proc/{}/environ", std::process::id()),
    ] {
        let (_, out) = py(&h.kernel, pid, &attempt(&format!("open({path:?}).read()"))).await;
        assert!(
            out.contains("PermissionError") || out.contains("FileNotFoundError"),
            "{path}: {out}"
        );
        assert!(!out.contains(SECRET), "{path}: {out}");
    }
    let (_, out) = py(&h.kernel, pid, &attempt("import os; os.listdir('config')")).await;
    assert_eq!(out.trim(), "PermissionError");
    std::fs::remove_file(&key).unwrap();
}

#[tokio::test]
async fn python_writes_only_where_its_process_may_write() {
    let h = common::host().await;
    workspace_with_secret(&h);
    let pid = h
        .spawn(&[
            "shell:python3 -c=execute",
            "fs:docs/**=read",
            "fs:out/**=write",
        ])
        .await;
    for path in [
        "x.txt",
        "docs/x.txt",
        "config/private.key",
        "/tmp/agent-libos-escape",
        "../escape.txt",
    ] {
        let (_, out) = py(
            &h.kernel,
            pid,
            &attempt(&format!("open({path:?}, 'w').write('x')")),
        )
        .await;
        assert_eq!(out.trim(), "PermissionError", "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("config/private.key")).unwrap(),
        SECRET
    );
    let (_, out) = py(&h.kernel, pid, &attempt("open('out/x', 'w').write('made')")).await;
    assert_eq!(out.trim(), "OK");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("out/x")).unwrap(),
        "made"
    );
    // The scratch HOME and TMPDIR are writable, and gone afterwards.
    let (_, out) = py(
        &h.kernel,
        pid,
        "import os, tempfile; p = os.path.join(os.environ['HOME'], 'f'); open(p, 'w').write('x'); \
         tempfile.NamedTemporaryFile().write(b'x'); print(p)",
    )
    .await;
    let scratch_file = out.trim();
    assert!(scratch_file.contains("agent-libos-cmd-"), "{out}");
    assert!(!std::path::Path::new(scratch_file).exists());
}

#[tokio::test]
async fn a_command_cannot_connect_anywhere_without_a_net_capability() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let h = common::host().await;
    let pid = h.spawn(&["shell:python3 -c=execute"]).await;
    for family in ["socket.AF_INET", "socket.AF_INET6"] {
        let host = if family.ends_with('6') {
            "::1"
        } else {
            "127.0.0.1"
        };
        let code = attempt(&format!(
            "import socket; s = socket.socket({family}); s.settimeout(2); s.connect(({host:?}, {port}))"
        ));
        let (_, out) = py(&h.kernel, pid, &code).await;
        assert!(
            out.contains("ConnectionRefusedError") || out.contains("OSError"),
            "{out}"
        );
    }
    let (_, out) = py(
        &h.kernel,
        pid,
        &attempt("import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)"),
    )
    .await;
    assert_ne!(out.trim(), "OK");
    let (_, out) = py(&h.kernel, pid, &attempt(&format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('127.0.0.1', {port}))"
    )))
    .await;
    // A datagram may be "sent" inside the sandbox's own loopback; it never reaches the host.
    let _ = out;
    assert!(listener.accept().is_err(), "the host listener was reached");
}

#[tokio::test]
async fn the_state_database_is_unreachable_even_with_fs_all() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // The historical default: the database inside the workspace.
    let config = common::config(ws.join(".agent-libos/state.db"), ws.clone());
    let kernel = Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "t".into(),
            grants: ["fs:**=read,write,delete", "shell:python3 -c=execute"]
                .iter()
                .map(|g| agent_libos::kernel::CapabilitySpec::parse_grant(g).unwrap())
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    for expr in [
        "open('.agent-libos/state.db', 'rb').read(16)",
        "import os; os.listdir('.agent-libos')",
        "open('.agent-libos/state.db', 'wb').write(b'x')",
        "import os; os.remove('.agent-libos/state.db')",
    ] {
        let (_, out) = py(&kernel, pid, &attempt(expr)).await;
        assert!(
            out.contains("PermissionError") || out.contains("OSError"),
            "{expr}: {out}"
        );
    }
    assert!(kernel.verify_audit().await.unwrap().is_ok());
    // A database in the workspace root cannot be masked without hiding the workspace: refused.
    let config = common::config(ws.join("state.db"), ws.clone());
    let kernel = Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "t".into(),
            grants: ["fs:**=read", "shell:true=execute"]
                .iter()
                .map(|g| agent_libos::kernel::CapabilitySpec::parse_grant(g).unwrap())
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = kernel.syscall(pid, run(&["true"])).await.unwrap_err();
    assert_eq!(err.kind(), "IllegalState");
    assert!(err.to_string().contains("--db"), "{err}");
}

#[tokio::test]
async fn programs_that_run_programs_are_confined_the_same_way() {
    let h = common::host().await;
    workspace_with_secret(&h);
    let ws = h.workspace();
    std::fs::write(
        ws.join("docs/Makefile"),
        "all:\n\tcat ../config/private.key\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&ws)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(status.status.success(), "{args:?}: {status:?}");
    };
    git(&["init", "-q"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    ]);
    let pid = h
        .spawn(&[
            "shell:git=execute",
            "shell:find=execute",
            "shell:awk=execute",
            "shell:make=execute",
            "shell:env -S=execute",
            "shell:xargs=execute",
            "shell:cat=execute",
            "fs:docs/**=read",
            "fs:.git/**=read",
        ])
        .await;
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (
            vec!["git", "-c", "alias.x=!cat config/private.key", "x"],
            None,
        ),
        (
            vec![
                "find",
                "docs",
                "-maxdepth",
                "0",
                "-exec",
                "cat",
                "config/private.key",
                ";",
            ],
            None,
        ),
        (
            vec!["awk", "BEGIN{system(\"cat config/private.key\")}"],
            None,
        ),
        (vec!["make", "-C", "docs"], None),
        (vec!["env", "-S", "cat config/private.key"], None),
        (vec!["xargs", "cat"], Some("config/private.key")),
    ];
    for (argv, stdin) in cases {
        let out = ok(&h.kernel, pid, run_with(&argv, stdin, None)).await;
        let text = format!("{}{}", out["stdout"], out["stderr"]);
        assert!(!text.contains(SECRET), "{argv:?} read the secret: {text}");
        assert!(
            text.contains("Permission denied") || text.contains("permission denied"),
            "{argv:?}: {text}"
        );
    }
}

#[tokio::test]
async fn a_deny_inside_an_allowed_tree_holds() {
    let h = common::host().await;
    workspace_with_secret(&h);
    std::fs::create_dir_all(h.workspace().join("docs/secret")).unwrap();
    std::fs::write(h.workspace().join("docs/secret/key"), SECRET).unwrap();
    std::fs::write(h.workspace().join("keep.txt"), "original").unwrap();
    let pid = h
        .spawn(&[
            "shell:python3 -c=execute",
            "fs:**=read,write",
            "fs:docs/secret/**=read:deny",
            "fs:docs/secret=read:deny",
            "fs:keep.txt=write:deny",
        ])
        .await;
    for expr in [
        "open('docs/secret/key').read()",
        "import os; os.listdir('docs/secret')",
        "open('keep.txt', 'w').write('changed')",
        "open('.git/hooks/pre-commit', 'w').write('evil')",
    ] {
        let (_, out) = py(&h.kernel, pid, &attempt(expr)).await;
        assert_ne!(out.trim(), "OK", "{expr}: {out}");
        assert!(!out.contains(SECRET));
    }
    let (_, out) = py(
        &h.kernel,
        pid,
        &attempt("print(open('docs/notes.txt').read()); open('new.txt', 'w').write('n')"),
    )
    .await;
    assert!(out.contains("public notes") && out.contains("OK"), "{out}");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("keep.txt")).unwrap(),
        "original"
    );
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("docs/secret/key")).unwrap(),
        SECRET,
        "the host still sees it"
    );
}

#[tokio::test]
async fn a_write_deny_on_a_missing_path_in_a_writable_tree_is_refused() {
    let h = common::host().await;
    let pid = h
        .spawn(&[
            "shell:true=execute",
            "fs:**=read,write",
            "fs:later.txt=write:deny",
        ])
        .await;
    let err = h.kernel.syscall(pid, run(&["true"])).await.unwrap_err();
    match err {
        SyscallError::PermissionDenied {
            resource, detail, ..
        } => {
            assert_eq!(resource, "fs:later.txt");
            assert!(detail.contains("does not exist"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_symlinked_grant_is_refused_not_followed() {
    let h = common::host().await;
    let outside = h.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(&outside, h.workspace().join("docs")).unwrap();
    let pid = h.spawn(&["shell:cat=execute", "fs:docs/**=read"]).await;
    let err = h
        .kernel
        .syscall(pid, run(&["cat", "docs/secret.txt"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied", "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[tokio::test]
async fn fork_and_memory_bombs_hit_their_limits_and_the_host_survives() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:python3 -c=execute"]).await;
    let bomb = "import os, time\nn = 0\ntry:\n    for _ in range(5000):\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno)\n";
    let started = std::time::Instant::now();
    let out = ok(
        &h.kernel,
        pid,
        run_with(&["python3", "-c", bomb], None, Some(20_000)),
    )
    .await;
    let text = out["stdout"].as_str().unwrap();
    let forked: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(text.starts_with("stopped") && forked < 1000, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the sleeping children were killed with the command"
    );
    let out = ok(
        &h.kernel,
        pid,
        run(&["python3", "-c", "bytearray(8 << 30)"]),
    )
    .await;
    assert!(
        out["stderr"].as_str().unwrap().contains("MemoryError"),
        "{out}"
    );
    let out = ok(&h.kernel, pid, run(&["python3", "-c", "print('alive')"])).await;
    assert_eq!(out["stdout"], "alive\n");
}

#[tokio::test]
async fn no_background_child_survives_the_call() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:bash -c=execute"]).await;
    let mark = marker();
    let script = format!(
        "sleep {mark} & setsid sleep {mark} & nohup sleep {mark} >/dev/null 2>&1 & (sleep {mark} &) ; disown -a; echo started"
    );
    let out = ok(&h.kernel, pid, run(&["bash", "-c", &script])).await;
    assert_eq!(out["stdout"], "started\n");
    assert!(gone(&mark).await, "survivors: {:?}", processes_with(&mark));
    // At a timeout.
    let mark = marker();
    let out = ok(
        &h.kernel,
        pid,
        run_with(
            &["bash", "-c", &format!("setsid sleep {mark} & sleep {mark}")],
            None,
            Some(500),
        ),
    )
    .await;
    assert_eq!(out["timed_out"], true);
    assert!(gone(&mark).await, "survivors: {:?}", processes_with(&mark));
    // When the caller drops the call (cancel).
    let mark = marker();
    let call = h.kernel.syscall(
        pid,
        run(&["bash", "-c", &format!("setsid sleep {mark} & sleep {mark}")]),
    );
    assert!(tokio::time::timeout(Duration::from_millis(700), call)
        .await
        .is_err());
    assert!(gone(&mark).await, "survivors: {:?}", processes_with(&mark));
}

#[tokio::test]
async fn a_command_cannot_signal_or_see_the_runtime() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:python3 -c=execute"]).await;
    let me = std::process::id();
    let (_, out) = py(
        &h.kernel,
        pid,
        &attempt(&format!("import os, signal; os.kill({me}, signal.SIGTERM)")),
    )
    .await;
    assert!(
        out.contains("ProcessLookupError") || out.contains("PermissionError"),
        "{out}"
    );
    let (_, out) = py(
        &h.kernel,
        pid,
        "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
    )
    .await;
    assert_eq!(
        out.trim(),
        "[1, 2]",
        "only init and the command are visible"
    );
}

#[tokio::test]
async fn dangerous_system_calls_and_privileges_are_refused() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:python3 -c=execute"]).await;
    let code = r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(rc):
    return 'ok' if rc == 0 else os.strerror(ctypes.get_errno())
print('unshare', errno_of(libc.unshare(0x10000000)))
print('mount', errno_of(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)))
print('ptrace', errno_of(libc.ptrace(16, 1, None, None)))
print('io_uring', errno_of(libc.syscall(425, 8, ctypes.create_string_buffer(120))))
print('bpf', errno_of(libc.syscall(321, 0, None, 0)))
print('x32', errno_of(libc.syscall(0x40000000 + 39)))
for fam in ('AF_UNIX', 'AF_PACKET', 'AF_NETLINK'):
    try:
        socket.socket(getattr(socket, fam), socket.SOCK_DGRAM if fam != 'AF_PACKET' else socket.SOCK_RAW)
        print(fam, 'ok')
    except OSError as e:
        print(fam, os.strerror(e.errno))
a, b = socket.socketpair(); print('socketpair ok')
status = open('/proc/self/status').read()
print([l for l in status.splitlines() if l.startswith(('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp:'))])
"#;
    let out = ok(&h.kernel, pid, run(&["python3", "-c", code])).await;
    let text = out["stdout"].as_str().unwrap();
    for line in [
        "unshare Operation not permitted",
        "mount Operation not permitted",
        "ptrace Operation not permitted",
        "io_uring Operation not permitted",
        "bpf Operation not permitted",
        "x32 Operation not permitted",
        "AF_UNIX Operation not permitted",
        "socketpair ok",
    ] {
        assert!(
            text.contains(line),
            "{line} missing in:\n{text}\n{}",
            out["stderr"]
        );
    }
    assert!(!text.contains("AF_PACKET ok"), "{text}");
    assert!(
        text.contains("'CapEff:\\t0000000000000000'")
            && text.contains("'CapBnd:\\t0000000000000000'"),
        "{text}"
    );
    assert!(
        text.contains("'NoNewPrivs:\\t1'") && text.contains("'Seccomp:\\t2'"),
        "{text}"
    );
}

#[tokio::test]
async fn descriptors_of_the_runtime_do_not_reach_the_command() {
    let h = common::host().await;
    let path = h.dir.path().join("leaky.txt");
    std::fs::write(&path, SECRET).unwrap();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: opening a test file without O_CLOEXEC on purpose, closed below.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY) };
    assert!(fd > 2);
    let pid = h.spawn(&["shell:python3 -c=execute"]).await;
    let (_, out) = py(
        &h.kernel,
        pid,
        "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))",
    )
    .await;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    assert_eq!(
        out.trim(),
        "[0, 1, 2, 3]",
        "only stdio and the listing's own descriptor"
    );
}

#[tokio::test]
async fn deny_rm_also_denies_every_spelling_of_rm() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("notes.txt"), "keep me").unwrap();
    let rm = std::fs::canonicalize("/bin/rm").unwrap();
    std::os::unix::fs::symlink(&rm, h.workspace().join("gone")).unwrap();
    let pid = h
        .spawn(&[
            "shell:**=execute",
            "shell:rm=execute:always_deny",
            "fs:**=read,write,delete",
        ])
        .await;
    for argv in [
        vec!["rm", "notes.txt"],
        vec!["/bin/rm", "notes.txt"],
        vec!["/usr/bin/../bin/rm", "notes.txt"],
        vec!["./gone", "notes.txt"],
        vec!["env", "rm", "notes.txt"],
        vec!["env", "PATH=/usr/bin", "rm", "notes.txt"],
        vec!["xargs", "/bin/rm"],
        vec![rm.to_str().unwrap(), "notes.txt"],
    ] {
        let err = h.kernel.syscall(pid, run(&argv)).await.unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied", "{argv:?}: {err}");
    }
    // A dynamic script hides the name from the analysis; the sandbox still cannot run rm.
    let out = ok(&h.kernel, pid, run(&["bash", "-c", "x=r; ${x}m notes.txt"])).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[tokio::test]
async fn multi_byte_options_are_a_denial_not_a_crash() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:env=execute"]).await;
    for argv in [
        vec!["env", "-é", "x"],
        vec!["env", "-éé"],
        vec!["xargs", "-é"],
        vec!["python3", "-é"],
    ] {
        let err = h.kernel.syscall(pid, run(&argv)).await.unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied", "{argv:?}: {err}");
    }
}

#[tokio::test]
async fn interpreter_code_from_stdin_or_a_device_needs_the_stdin_form() {
    let h = common::host().await;
    std::os::unix::fs::symlink("/dev/stdin", h.workspace().join("code.py")).unwrap();
    std::fs::write(h.workspace().join("real.py"), "print('from a file')").unwrap();
    let pid = h
        .spawn(&["shell:python3=execute", "shell:perl=execute", "fs:**=read"])
        .await;
    for argv in [
        vec!["python3", "/dev/stdin"],
        vec!["perl", "/proc/self/fd/0"],
        vec!["python3", "-"],
    ] {
        let err = h
            .kernel
            .syscall(pid, run_with(&argv, Some("print(1)"), None))
            .await
            .unwrap_err();
        match err {
            SyscallError::PermissionDenied { resource, .. } => {
                assert!(resource.ends_with(" -"), "{resource}")
            }
            other => panic!("{argv:?}: {other:?}"),
        }
    }
    // A workspace symlink to stdin is caught when the command starts.
    let err = h
        .kernel
        .syscall(
            pid,
            run_with(&["python3", "code.py"], Some("print(1)"), None),
        )
        .await
        .unwrap_err();
    match err {
        SyscallError::PermissionDenied {
            resource, detail, ..
        } => {
            assert_eq!(resource, "shell:python3 -");
            assert!(detail.contains("not a regular file"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let out = ok(&h.kernel, pid, run(&["python3", "real.py"])).await;
    assert_eq!(out["stdout"], "from a file\n");
}

#[tokio::test]
async fn without_a_sandbox_the_shell_refuses_and_names_the_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let mut config = common::config(dir.path().join("state.db"), ws.clone());
    config.sandbox.assume_support = Some(SandboxSupport::none());
    let kernel = Kernel::open(config).await.unwrap();
    let spawn = |kernel: Kernel| async move {
        kernel
            .spawn_root(agent_libos::kernel::SpawnOptions {
                goal: "t".into(),
                grants: vec![agent_libos::kernel::CapabilitySpec::parse_grant(
                    "shell:echo=execute",
                )
                .unwrap()],
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let pid = spawn(kernel.clone()).await;
    let err = kernel.syscall(pid, run(&["echo", "hi"])).await.unwrap_err();
    assert_eq!(err.kind(), "IllegalState");
    let text = err.to_string();
    assert!(
        text.contains("Landlock") && text.contains("--unsandboxed-shell"),
        "{text}"
    );
    // With the operator's opt-out the command runs, and its audit record says so.
    let mut config = common::config(dir.path().join("state2.db"), ws);
    config.sandbox.assume_support = Some(SandboxSupport::none());
    config.sandbox.mode = SandboxMode::Unsandboxed;
    let kernel = Kernel::open(config).await.unwrap();
    let pid = spawn(kernel.clone()).await;
    let out = ok(&kernel, pid, run(&["echo", "hi"])).await;
    assert_eq!(out["stdout"], "hi\n");
    let detail = shell_audit(&kernel, &dir.path().join("state2.db")).await;
    assert_eq!(
        detail["result"]["sandbox"],
        "unsandboxed (operator opt-out: --unsandboxed-shell)"
    );
}

#[tokio::test]
async fn every_audit_record_names_its_sandbox() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:true=execute"]).await;
    ok(&h.kernel, pid, run(&["true"])).await;
    let detail = last_shell_audit(&h).await;
    let sandbox = detail["result"]["sandbox"].as_str().unwrap();
    assert!(
        sandbox.starts_with("landlock-abi")
            && sandbox.contains("seccomp")
            && sandbox.contains("pid"),
        "{sandbox}"
    );
    assert_eq!(
        detail["result"]["policy_sha256"].as_str().unwrap().len(),
        64
    );
}

/// A loopback HTTP server answering every request with `hello`.
fn http_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[tokio::test]
async fn granted_hosts_are_reached_through_the_proxy_and_nothing_else() {
    let port = http_server();
    let other = http_server();
    let h = common::host().await;
    let pid = h
        .spawn(&[
            "shell:python3 -c=execute",
            &format!("net:127.0.0.1:{port}=write"),
        ])
        .await;
    let fetch = |port: u16| {
        attempt(&format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).read())"
        ))
    };
    let (_, out) = py(&h.kernel, pid, &fetch(port)).await;
    assert!(out.contains("b'hello'") && out.contains("OK"), "{out}");
    let (_, out) = py(&h.kernel, pid, &fetch(other)).await;
    assert!(
        out.contains("HTTPError"),
        "another port is refused by the proxy: {out}"
    );
    let detail = last_shell_audit(&h).await;
    let connections = &detail["result"]["connections"];
    assert_eq!(connections[0]["allowed"], false, "{detail}");
    // Around the proxy: nothing listens inside the sandbox's own loopback.
    let (_, out) = py(
        &h.kernel,
        pid,
        &attempt(&format!(
            "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        )),
    )
    .await;
    assert!(out.contains("ConnectionRefusedError"), "{out}");
    // A name that resolves to loopback is not the literal address the capability names.
    let by_name = h
        .spawn(&[
            "shell:python3 -c=execute",
            &format!("net:localhost:{port}=write"),
        ])
        .await;
    let code = attempt(&format!(
        "import urllib.request; print(urllib.request.urlopen('http://localhost:{port}/', timeout=5).read())"
    ));
    let (_, out) = py(&h.kernel, by_name, &code).await;
    assert!(
        out.contains("HTTPError") && !out.contains("b'hello'"),
        "{out}"
    );
    let detail = last_shell_audit(&h).await;
    let reason = detail["result"]["connections"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("internal address"), "{detail}");
    // A read-only grant is a net.fetch right, not a tunnel.
    let reader = h
        .spawn(&[
            "shell:python3 -c=execute",
            &format!("net:127.0.0.1:{port}=read"),
        ])
        .await;
    let (_, out) = py(&h.kernel, reader, &fetch(port)).await;
    assert!(!out.contains("b'hello'"), "{out}");
}

#[tokio::test]
async fn a_net_deny_holds_for_every_spelling_of_the_destination_through_the_proxy() {
    let port = http_server();
    let h = common::host().await;
    let fetch = attempt(&format!(
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).read())"
    ));
    // Allowed by the literal address, denied by another name of the same machine: the deny
    // wins, whichever spelling each rule uses.
    for deny in [
        "net:localhost=write:deny",
        "net:loopback=write:deny",
        "net:[::1]=write:deny",
    ] {
        let pid = h
            .spawn(&[
                "shell:python3 -c=execute",
                &format!("net:127.0.0.1:{port}=write"),
                deny,
            ])
            .await;
        let (_, out) = py(&h.kernel, pid, &fetch).await;
        assert!(
            out.contains("HTTPError") && !out.contains("b'hello'"),
            "{deny}: {out}"
        );
        let detail = last_shell_audit(&h).await;
        let reason = detail["result"]["connections"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(reason.contains("denies"), "{deny}: {detail}");
    }
}

#[tokio::test]
async fn common_tools_work_inside_the_sandbox() {
    let h = common::host().await;
    std::fs::create_dir_all(h.workspace().join("proj")).unwrap();
    std::fs::write(
        h.workspace().join("proj/Makefile"),
        "all:\n\t@echo built > out.txt\n",
    )
    .unwrap();
    let pid = h
        .spawn(&[
            "shell:bash -c=execute",
            "shell:python3 -c=execute",
            "shell:make=execute",
            "shell:perl -e=execute",
            "shell:node -e=execute",
            "shell:git=execute",
            "fs:proj/**=read,write,delete",
        ])
        .await;
    let out = ok(
        &h.kernel,
        pid,
        run(&[
            "bash",
            "-c",
            "cat <(echo substituted) | tr a-z A-Z; ls /usr/bin/env",
        ]),
    )
    .await;
    assert_eq!(out["stdout"], "SUBSTITUTED\n/usr/bin/env\n", "{out}");
    let code = "import json, ssl, subprocess, multiprocessing as mp\nctx = ssl.create_default_context()\nprint(json.dumps({'certs': ctx.cert_store_stats()['x509_ca'] > 0}))\nprint(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())\nwith mp.get_context('fork').Pool(2) as p: print(sum(p.map(abs, [-1, -2])))";
    let out = ok(&h.kernel, pid, run(&["python3", "-c", code])).await;
    assert_eq!(out["stdout"], "{\"certs\": true}\nchild\n3\n", "{out}");
    let out = ok(&h.kernel, pid, run(&["make", "-C", "proj"])).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("proj/out.txt")).unwrap(),
        "built\n"
    );
    let out = ok(&h.kernel, pid, run(&["perl", "-e", "print 6*7"])).await;
    assert_eq!(out["stdout"], "42");
    if std::path::Path::new("/usr/bin/node").exists() {
        let js = "const {fork}=require('child_process'); if (process.send) { process.send('pong'); } else { const c=fork(__filename.endsWith('[eval]')?'-e':__filename); }";
        let _ = js;
        let out = ok(&h.kernel, pid, run(&["node", "-e", "const c=require('child_process').spawnSync('echo',['ipc']); console.log(c.stdout.toString().trim(), require('os').cpus().length>0)"])).await;
        assert_eq!(out["stdout"], "ipc true\n", "{out}");
    }
    let out = ok(
        &h.kernel,
        pid,
        Syscall::Shell(ShellCall::Run {
            argv: ["git", "-C", "proj", "init", "-q"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout_ms: None,
            stdin: None,
        }),
    )
    .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let out = ok(
        &h.kernel,
        pid,
        run(&[
            "git",
            "-C",
            "proj",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]),
    )
    .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let out = ok(
        &h.kernel,
        pid,
        run(&["git", "-C", "proj", "log", "--oneline"]),
    )
    .await;
    assert!(out["stdout"].as_str().unwrap().ends_with(" x\n"), "{out}");
}

#[tokio::test]
async fn killing_the_runtime_kills_the_command_tree() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let mark = marker();
    let tool = ws.join("hang.ts");
    std::fs::write(
        &tool,
        format!(
            r#"export const tool = {{ name: "hang", description: "Starts a tree and waits.", input: {{ type: "object" }}, output: {{}} }};
export default async function run(args: any, libos: any) {{
  return await libos.shell.run(["bash", "-c", "setsid sleep {mark} & sleep {mark}"], {{ timeoutMs: 60000 }});
}}
"#
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-libos"))
        .arg("--db")
        .arg(dir.path().join("state.db"))
        .arg("--workspace")
        .arg(&ws)
        .args([
            "tool",
            "run",
            "hang.ts",
            "--args",
            "{}",
            "--grant",
            "shell:bash -c=execute",
        ])
        .current_dir(&ws)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut started = false;
    for _ in 0..200 {
        if processes_with(&mark).len() >= 2 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started, "the command never started");
    // SAFETY: killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(gone(&mark).await, "survivors: {:?}", processes_with(&mark));
}

#[tokio::test]
async fn file_size_and_memory_limits_come_from_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let mut config = common::config(dir.path().join("state.db"), ws);
    config.sandbox.limits.file_bytes = 1 << 20;
    config.sandbox.limits.memory_bytes = 512 << 20;
    let kernel = Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "t".into(),
            grants: vec![agent_libos::kernel::CapabilitySpec::parse_grant(
                "shell:python3 -c=execute",
            )
            .unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, out) = py(
        &kernel,
        pid,
        &attempt("import os; open(os.environ['TMPDIR'] + '/big', 'wb').write(b'x' * (2 << 20))"),
    )
    .await;
    assert!(out.contains("OSError"), "{out}");
    let (_, out) = py(&kernel, pid, &attempt("bytearray(1 << 30)")).await;
    assert_eq!(out.trim(), "MemoryError");
    let (_, out) = py(&kernel, pid, &attempt("bytearray(64 << 20)")).await;
    assert_eq!(out.trim(), "OK");
}
