//! Filesystem, shell and network primitives through the kernel: confinement, denials that
//! reveal nothing, argv policy, limits.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{FsCall, NetCall, ProcCall, ShellCall, Syscall, SyscallError};
use serde_json::{json, Value};

fn denied(result: Result<Value, SyscallError>) -> (String, String, String) {
    match result {
        Err(SyscallError::PermissionDenied {
            resource,
            right,
            detail,
        }) => (resource, right, detail),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

fn read(path: &str) -> Syscall {
    Syscall::Fs(FsCall::ReadText { path: path.into() })
}

fn write(path: &str, content: &str) -> Syscall {
    Syscall::Fs(FsCall::WriteText {
        path: path.into(),
        content: content.into(),
        overwrite: false,
    })
}

#[tokio::test]
async fn reads_and_writes_need_their_own_right() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("notes.md"), "hello").unwrap();
    let pid = h.spawn(&["fs:notes.md=read", "fs:out/**=write"]).await;
    assert_eq!(
        h.kernel.syscall(pid, read("notes.md")).await.unwrap(),
        json!("hello")
    );
    let (resource, right, _) = denied(h.kernel.syscall(pid, write("notes.md", "x")).await);
    assert_eq!(
        (resource.as_str(), right.as_str()),
        ("fs:notes.md", "write")
    );
    std::fs::create_dir(h.workspace().join("out")).unwrap();
    let out = h
        .kernel
        .syscall(pid, write("out/a.txt", "data"))
        .await
        .unwrap();
    assert_eq!(out["bytes"], 4);
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("out/a.txt")).unwrap(),
        "data"
    );
    // Without overwrite an existing file is kept.
    let err = h
        .kernel
        .syscall(pid, write("out/a.txt", "again"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "AlreadyExists");
}

#[tokio::test]
async fn path_escapes_are_denied() {
    let h = common::host().await;
    let outside = h.dir.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    let pid = h.spawn(&["fs:**=read,write"]).await;
    let (resource, right, detail) = denied(h.kernel.syscall(pid, read("../secret.txt")).await);
    assert_eq!(
        (resource.as_str(), right.as_str()),
        ("fs:../secret.txt", "read")
    );
    assert!(detail.contains("above the workspace"), "{detail}");
    let (resource, ..) = denied(h.kernel.syscall(pid, read(outside.to_str().unwrap())).await);
    assert!(resource.starts_with("fs:/"), "{resource}");
    // A symlink pointing out of the workspace is not followed.
    std::os::unix::fs::symlink(&outside, h.workspace().join("link")).unwrap();
    let (resource, _, detail) = denied(h.kernel.syscall(pid, read("link")).await);
    assert_eq!(resource, "fs:link");
    assert!(detail.contains("symlink"), "{detail}");
    // Nor is one swapped in after the capability check: a directory replaced by a symlink.
    std::fs::create_dir(h.workspace().join("data")).unwrap();
    std::fs::write(h.workspace().join("data/f.txt"), "inside").unwrap();
    assert_eq!(
        h.kernel.syscall(pid, read("data/f.txt")).await.unwrap(),
        json!("inside")
    );
    let elsewhere = h.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("f.txt"), "outside").unwrap();
    std::fs::remove_dir_all(h.workspace().join("data")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, h.workspace().join("data")).unwrap();
    denied(h.kernel.syscall(pid, read("data/f.txt")).await);
    denied(
        h.kernel
            .syscall(
                pid,
                Syscall::Fs(FsCall::WriteText {
                    path: "data/g.txt".into(),
                    content: "x".into(),
                    overwrite: true,
                }),
            )
            .await,
    );
    assert!(!elsewhere.join("g.txt").exists());
}

#[tokio::test]
async fn a_denial_does_not_reveal_whether_the_path_exists() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("exists.txt"), "x").unwrap();
    let pid = h.spawn(&[]).await;
    let a = h.kernel.syscall(pid, read("exists.txt")).await.unwrap_err();
    let b = h
        .kernel
        .syscall(pid, read("missing.txt"))
        .await
        .unwrap_err();
    let strip = |e: SyscallError| {
        e.to_string()
            .replace("exists.txt", "P")
            .replace("missing.txt", "P")
    };
    assert_eq!(strip(a), strip(b));
    let a = h
        .kernel
        .syscall(pid, read("../ws/exists.txt"))
        .await
        .unwrap_err();
    let b = h
        .kernel
        .syscall(pid, read("../ws/missing.txt"))
        .await
        .unwrap_err();
    assert_eq!(strip(a), strip(b));
}

#[tokio::test]
async fn chdir_is_confined_to_the_workspace() {
    let h = common::host().await;
    std::fs::create_dir_all(h.workspace().join("src/deep")).unwrap();
    std::fs::write(h.workspace().join("src/deep/x.txt"), "x").unwrap();
    let pid = h.spawn(&["fs:**=read"]).await;
    assert_eq!(
        h.kernel
            .syscall(pid, Syscall::Proc(ProcCall::Chdir { path: "src".into() }))
            .await
            .unwrap(),
        json!("src")
    );
    assert_eq!(
        h.kernel.syscall(pid, read("deep/x.txt")).await.unwrap(),
        json!("x")
    );
    denied(
        h.kernel
            .syscall(
                pid,
                Syscall::Proc(ProcCall::Chdir {
                    path: "../..".into(),
                }),
            )
            .await,
    );
    assert_eq!(
        h.kernel
            .syscall(pid, Syscall::Proc(ProcCall::GetCwd))
            .await
            .unwrap(),
        json!("src")
    );
    let err = h
        .kernel
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Chdir {
                path: "nope".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotFound");
}

fn run(argv: &[&str]) -> Syscall {
    Syscall::Shell(ShellCall::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: None,
        stdin: None,
    })
}

#[tokio::test]
async fn shell_commands_are_matched_on_argv0_exactly() {
    let h = common::host().await;
    let pid = h
        .spawn(&["shell:echo=execute", "shell:/bin/cat=execute"])
        .await;
    let out = h.kernel.syscall(pid, run(&["echo", "hi"])).await.unwrap();
    assert_eq!(out["stdout"], "hi\n");
    let (resource, right, _) = denied(h.kernel.syscall(pid, run(&["/bin/echo", "hi"])).await);
    assert_eq!(
        (resource.as_str(), right.as_str()),
        ("shell:/bin/echo", "execute")
    );
    let (resource, ..) = denied(h.kernel.syscall(pid, run(&["cat", "x"])).await);
    assert_eq!(resource, "shell:cat");
    let (resource, ..) = denied(h.kernel.syscall(pid, run(&["ls"])).await);
    assert_eq!(resource, "shell:ls");
}

#[tokio::test]
async fn nested_interpreters_are_treated_as_their_inner_command_or_denied() {
    let h = common::host().await;
    let pid = h
        .spawn(&[
            "shell:bash=execute",
            "shell:echo=execute",
            "shell:env=execute",
            "shell:python3=execute",
        ])
        .await;
    let (resource, ..) = denied(
        h.kernel
            .syscall(pid, run(&["bash", "-c", "curl http://x"]))
            .await,
    );
    assert_eq!(resource, "shell:curl");
    let (resource, ..) = denied(
        h.kernel
            .syscall(pid, run(&["env", "FOO=1", "curl", "x"]))
            .await,
    );
    assert_eq!(resource, "shell:curl");
    let (resource, _, detail) = denied(
        h.kernel
            .syscall(pid, run(&["bash", "-c", "echo $(id)"]))
            .await,
    );
    assert_eq!(resource, "shell:bash -c");
    assert!(detail.contains("cannot be checked"), "{detail}");
    let (resource, ..) = denied(
        h.kernel
            .syscall(pid, run(&["python3", "-c", "print(1)"]))
            .await,
    );
    assert_eq!(resource, "shell:python3 -c");
    let out = h
        .kernel
        .syscall(pid, run(&["bash", "-c", "echo a && echo b"]))
        .await
        .unwrap();
    assert_eq!(out["stdout"], "a\nb\n");
}

#[tokio::test]
async fn shell_timeouts_and_output_caps_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config = common::config(dir.path().join("db"), dir.path().join("ws"));
    config.shell_limits.timeout_ms = 300;
    config.shell_limits.max_output_bytes = 1000;
    let kernel = agent_libos::kernel::Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "t".into(),
            grants: ["shell:sleep=execute", "shell:seq=execute"]
                .iter()
                .map(|g| agent_libos::kernel::CapabilitySpec::parse_grant(g).unwrap())
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = kernel.syscall(pid, run(&["sleep", "30"])).await.unwrap();
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["exit_code"], Value::Null);
    let out = kernel.syscall(pid, run(&["seq", "100000"])).await.unwrap();
    assert_eq!(out["stdout_truncated"], true);
    assert_eq!(out["stdout"].as_str().unwrap().len(), 1000);
}

#[tokio::test]
async fn network_fetches_need_the_host_on_the_allowlist() {
    let port = hello_server().await;
    let h = common::host().await;
    let url = format!("http://127.0.0.1:{port}/x");
    let fetch = |method: &str| {
        Syscall::Net(NetCall::Fetch {
            url: url.clone(),
            method: method.into(),
            headers: vec![],
            body: None,
            max_bytes: None,
        })
    };
    let none = h.spawn(&[]).await;
    let (resource, right, _) = denied(h.kernel.syscall(none, fetch("GET")).await);
    assert_eq!(
        (resource.as_str(), right.as_str()),
        (format!("net:127.0.0.1:{port}").as_str(), "read")
    );
    let other_port = h.spawn(&["net:127.0.0.1:1=read"]).await;
    denied(h.kernel.syscall(other_port, fetch("GET")).await);
    let reader = h.spawn(&[&format!("net:127.0.0.1:{port}=read")]).await;
    let out = h.kernel.syscall(reader, fetch("GET")).await.unwrap();
    assert_eq!(
        (out["status"].as_u64(), out["body"].as_str()),
        (Some(200), Some("hello"))
    );
    let (_, right, _) = denied(h.kernel.syscall(reader, fetch("POST")).await);
    assert_eq!(right, "write");
    let any_port = h.spawn(&["net:127.0.0.1=read"]).await;
    h.kernel.syscall(any_port, fetch("GET")).await.unwrap();
}

/// An HTTP server answering "hello" on every address of this machine, IPv4 and IPv6;
/// returns its port.
async fn hello_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                )
                .await;
        }
    });
    port
}

fn get(url: &str) -> Syscall {
    Syscall::Net(NetCall::Fetch {
        url: url.into(),
        method: "GET".into(),
        headers: vec![],
        body: None,
        max_bytes: None,
    })
}

/// Every spelling of this machine a URL can use.
fn loopback_spellings(port: u16) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_string(),
        "LOCALHOST.".into(),
        "127.0.0.1".into(),
        "127.1".into(),
        "127.0.0.2".into(),
        "0x7f000001".into(),
        "2130706433".into(),
        "0.0.0.0".into(),
        "[::1]".into(),
        "[::ffff:127.0.0.1]".into(),
        "[::]".into(),
    ];
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        hosts.push(name.trim().to_string());
    }
    hosts
        .into_iter()
        .map(|h| format!("http://{h}:{port}/x"))
        .collect()
}

#[tokio::test]
async fn deny_localhost_also_denies_ipv6_loopback() {
    let port = hello_server().await;
    let h = common::host().await;
    let denied_by_name = h
        .spawn(&["net:**=read", "net:localhost=read:always_deny"])
        .await;
    let denied_by_address = h
        .spawn(&["net:**=read", "net:127.0.0.1=read:always_deny"])
        .await;
    let denied_by_class = h
        .spawn(&["net:**=read", "net:loopback=read:always_deny"])
        .await;
    for url in loopback_spellings(port) {
        for pid in [denied_by_name, denied_by_address, denied_by_class] {
            let (_, right, detail) = denied(h.kernel.syscall(pid, get(&url)).await);
            assert_eq!(right, "read", "{url}");
            assert!(detail.contains("denied by capability"), "{url}: {detail}");
        }
    }
    // Without the deny the same URLs are reachable, so the denials above are the rule's.
    let allowed = h.spawn(&["net:**=read"]).await;
    let out = h
        .kernel
        .syscall(allowed, get(&format!("http://[::ffff:127.0.0.1]:{port}/x")))
        .await
        .unwrap();
    assert_eq!(out["body"], "hello");
}

#[tokio::test]
async fn an_allow_names_the_destination_in_any_spelling_and_nothing_else() {
    let port = hello_server().await;
    let h = common::host().await;
    let pid = h.spawn(&[&format!("net:localhost:{port}=read")]).await;
    for url in [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://[::1]:{port}/x"),
        format!("http://localhost:{port}/x"),
    ] {
        let out = h.kernel.syscall(pid, get(&url)).await.unwrap();
        assert_eq!(out["body"], "hello", "{url}");
    }
    // Another port of the same host is another resource.
    denied(
        h.kernel
            .syscall(
                pid,
                get(&format!("http://127.0.0.1:{}/x", port.wrapping_add(1))),
            )
            .await,
    );
    // A class can be allowed and denied by name.
    let private = h
        .spawn(&[
            "net:**=read",
            "net:private=read:always_deny",
            "net:metadata=read:always_deny",
        ])
        .await;
    for url in [
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://[fd00::1]/",
        "http://169.254.169.254/latest",
    ] {
        let (_, _, detail) = denied(h.kernel.syscall(private, get(url)).await);
        assert!(detail.contains("denied by capability"), "{url}: {detail}");
    }
}

#[tokio::test]
async fn a_process_without_a_network_grant_triggers_no_lookup() {
    let h = common::host().await;
    let none = h.spawn(&[]).await;
    // `.invalid` never resolves: were it looked up, the error would be an I/O error.
    let (resource, _, _) = denied(h.kernel.syscall(none, get("http://exfil.invalid/")).await);
    assert_eq!(resource, "net:exfil.invalid:80");
    let other = h.spawn(&["net:example.org=read"]).await;
    let (resource, _, _) = denied(h.kernel.syscall(other, get("http://exfil.invalid/")).await);
    assert_eq!(resource, "net:exfil.invalid:80");
}

fn delete_dir(path: &str) -> Syscall {
    Syscall::Fs(FsCall::DeleteDir {
        path: path.into(),
        recursive: true,
    })
}

#[tokio::test]
async fn recursive_delete_respects_denies_inside() {
    let h = common::host().await;
    let ws = h.workspace();
    std::fs::create_dir_all(ws.join("build/keep")).unwrap();
    std::fs::write(ws.join("build/a.o"), "a").unwrap();
    std::fs::write(ws.join("build/keep/key.pem"), "key").unwrap();
    // An explicit deny deep inside: nothing is removed.
    let pid = h
        .spawn(&[
            "fs:build=delete",
            "fs:build/**=delete",
            "fs:build/keep/key.pem=delete:always_deny",
        ])
        .await;
    let (resource, right, detail) = denied(h.kernel.syscall(pid, delete_dir("build")).await);
    assert_eq!(
        (resource.as_str(), right.as_str()),
        ("fs:build/keep/key.pem", "delete")
    );
    assert!(detail.contains("not deleted"), "{detail}");
    assert!(ws.join("build/a.o").exists() && ws.join("build/keep/key.pem").exists());
    // No delete right on the contents at all: nothing is removed either.
    let dir_only = h.spawn(&["fs:build=delete"]).await;
    let (resource, _, _) = denied(h.kernel.syscall(dir_only, delete_dir("build")).await);
    assert!(resource.starts_with("fs:build/"), "{resource}");
    assert!(ws.join("build/a.o").exists());
    // A right on only part of the tree: still nothing.
    let part = h.spawn(&["fs:build=delete", "fs:build/*=delete"]).await;
    let (resource, _, _) = denied(h.kernel.syscall(part, delete_dir("build")).await);
    assert_eq!(resource, "fs:build/keep/key.pem");
    assert!(ws.join("build/keep").exists());
    // Rights on everything: it all goes.
    let all = h.spawn(&["fs:build=delete", "fs:build/**=delete"]).await;
    h.kernel.syscall(all, delete_dir("build")).await.unwrap();
    assert!(!ws.join("build").exists());
}

#[tokio::test]
async fn fs_list_does_not_reveal_denied_entries() {
    let h = common::host().await;
    let ws = h.workspace();
    std::fs::create_dir(ws.join("d")).unwrap();
    std::fs::write(ws.join("d/public.txt"), "12345").unwrap();
    std::fs::write(ws.join("d/secret.env"), "TOKEN=x").unwrap();
    std::fs::write(ws.join("d/other.txt"), "x").unwrap();
    let list = |path: &str| Syscall::Fs(FsCall::List { path: path.into() });
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let pid = h
        .spawn(&[
            "fs:d=read",
            "fs:d/**=read",
            "fs:d/secret.env=read:always_deny",
        ])
        .await;
    assert_eq!(
        names(h.kernel.syscall(pid, list("d")).await.unwrap()),
        ["other.txt", "public.txt"]
    );
    // Only the entries the caller may read are listed.
    let narrow = h.spawn(&["fs:d=read", "fs:d/public.txt=read"]).await;
    let listed = h.kernel.syscall(narrow, list("d")).await.unwrap();
    assert_eq!(names(listed.clone()), ["public.txt"]);
    assert_eq!(listed[0]["size"], 5);
}

#[tokio::test]
async fn reads_and_writes_are_bounded_per_call_and_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // 1.5 GB, sparse: read whole it would cost that much memory.
    std::fs::File::create(ws.join("huge.bin"))
        .unwrap()
        .set_len(1_500_000_000)
        .unwrap();
    std::fs::write(ws.join("small.txt"), "x".repeat(600)).unwrap();
    let mut config = agent_libos::kernel::KernelConfig::new(dir.path().join("state.db"), &ws);
    config.fs_limits = agent_libos::providers::FsLimits {
        call_bytes: 1000,
        process_bytes: 2000,
    };
    let kernel = agent_libos::kernel::Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "p".into(),
            grants: vec![
                agent_libos::kernel::CapabilitySpec::parse_grant("fs:**=read,write").unwrap(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let limit = |r: Result<Value, SyscallError>| match r {
        Err(SyscallError::LimitExceeded { limit, detail }) => {
            assert_eq!(limit, "fs_bytes", "{detail}");
            detail
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    };
    let detail = limit(kernel.syscall(pid, read("huge.bin")).await);
    assert!(detail.contains("1000"), "{detail}");
    limit(
        kernel
            .syscall(pid, write("big.txt", &"y".repeat(1001)))
            .await,
    );
    assert!(!ws.join("big.txt").exists());
    // Within the call limit, until the process's total runs out.
    kernel.syscall(pid, read("small.txt")).await.unwrap();
    kernel.syscall(pid, read("small.txt")).await.unwrap();
    kernel
        .syscall(pid, write("w.txt", &"z".repeat(500)))
        .await
        .unwrap();
    let detail = limit(kernel.syscall(pid, read("small.txt")).await);
    assert!(detail.contains(&format!("process {pid}")), "{detail}");
    // Another process has its own allowance.
    let other = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "q".into(),
            grants: vec![agent_libos::kernel::CapabilitySpec::parse_grant("fs:**=read").unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    kernel.syscall(other, read("small.txt")).await.unwrap();
}

/// The host filesystem, noting which thread each effect ran on.
struct ThreadRecorder {
    inner: agent_libos::providers::CapFs,
    threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
}

impl ThreadRecorder {
    fn note(&self) {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
}

mod recorder {
    use super::ThreadRecorder;
    use agent_libos::kernel::authz::CheckedPath;
    use agent_libos::kernel::SysResult;
    use agent_libos::providers::{DirEntry, FileSystem};

    impl FileSystem for ThreadRecorder {
        fn read(&self, p: &CheckedPath, max: u64) -> SysResult<Vec<u8>> {
            self.note();
            self.inner.read(p, max)
        }
        fn write(&self, p: &CheckedPath, c: &[u8], o: bool) -> SysResult<bool> {
            self.note();
            self.inner.write(p, c, o)
        }
        fn append(&self, p: &CheckedPath, c: &[u8]) -> SysResult<()> {
            self.note();
            self.inner.append(p, c)
        }
        fn list(&self, p: &CheckedPath) -> SysResult<Vec<DirEntry>> {
            self.note();
            self.inner.list(p)
        }
        fn mkdir(&self, p: &CheckedPath, r: bool) -> SysResult<()> {
            self.note();
            self.inner.mkdir(p, r)
        }
        fn delete_file(&self, p: &CheckedPath) -> SysResult<()> {
            self.note();
            self.inner.delete_file(p)
        }
        fn walk_tree(&self, p: &CheckedPath, max: usize) -> SysResult<Vec<String>> {
            self.note();
            self.inner.walk_tree(p, max)
        }
        fn delete_dir(&self, p: &CheckedPath, c: &[CheckedPath]) -> SysResult<()> {
            self.note();
            self.inner.delete_dir(p, c)
        }
        fn file_size(&self, p: &CheckedPath) -> SysResult<Option<u64>> {
            self.inner.file_size(p)
        }
        fn is_dir(&self, p: &CheckedPath) -> SysResult<bool> {
            self.note();
            self.inner.is_dir(p)
        }
        fn parent_is_dir(&self, p: &CheckedPath) -> SysResult<bool> {
            self.inner.parent_is_dir(p)
        }
    }
}

/// A current-thread runtime, as on an isolate worker: its one thread must never block on a
/// file.
#[tokio::test(flavor = "current_thread")]
async fn filesystem_effects_run_off_the_async_thread() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let recorder = std::sync::Arc::new(ThreadRecorder {
        inner: agent_libos::providers::CapFs::open(&ws).unwrap(),
        threads: std::sync::Mutex::new(Vec::new()),
    });
    let mut providers = agent_libos::providers::Providers::host(&ws, &[]).unwrap();
    providers.fs = recorder.clone();
    let mut config = agent_libos::kernel::KernelConfig::new(dir.path().join("state.db"), &ws);
    config.providers = Some(providers);
    let kernel = agent_libos::kernel::Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "p".into(),
            grants: vec![agent_libos::kernel::CapabilitySpec::parse_grant(
                "fs:**=read,write,delete",
            )
            .unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let calls = [
        Syscall::Fs(FsCall::Mkdir {
            path: "d".into(),
            recursive: false,
        }),
        write("d/a.txt", "hello"),
        Syscall::Fs(FsCall::AppendText {
            path: "d/a.txt".into(),
            content: "!".into(),
        }),
        read("d/a.txt"),
        Syscall::Fs(FsCall::ReadBytes {
            path: "d/a.txt".into(),
        }),
        Syscall::Fs(FsCall::List { path: "d".into() }),
        Syscall::Proc(ProcCall::Chdir { path: "d".into() }),
        Syscall::Fs(FsCall::DeleteFile {
            path: "a.txt".into(),
        }),
        Syscall::Proc(ProcCall::Chdir { path: "..".into() }),
        Syscall::Fs(FsCall::DeleteDir {
            path: "d".into(),
            recursive: true,
        }),
    ];
    for call in calls {
        kernel
            .syscall(pid, call.clone())
            .await
            .unwrap_or_else(|e| panic!("{call:?}: {e}"));
    }
    let here = std::thread::current().id();
    let threads = recorder.threads.lock().unwrap();
    assert!(threads.len() >= 10, "{threads:?}");
    assert!(
        threads.iter().all(|t| *t != here),
        "a filesystem effect ran on the async thread"
    );
}
