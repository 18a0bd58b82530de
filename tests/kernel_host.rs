//! Filesystem, shell and network primitives through the kernel: confinement, denials that
//! reveal nothing, argv policy, limits.

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
