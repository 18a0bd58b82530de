//! What the runtime keeps is bounded and holds no credential in the clear: audit records
//! redact headers, URL secrets, stdin and bodies to length + SHA-256 and never grow without
//! bound; the journal stores a large outcome once, by hash, and forgets a finished
//! invocation's content.
//!
//! The attacker here is a tool or a model that puts secrets into calls, and reads whatever
//! the state files keep.
// Tests build their fixtures on the host and read the state files as an attacker would.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{
    FsCall, HumanAnswer, JitCall, Kernel, NetCall, ShellCall, Syscall, SyscallError,
};
use serde_json::json;

/// Every byte of the state files (database and WAL), as text.
fn state_bytes(db: &std::path::Path) -> String {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        if let Ok(bytes) = std::fs::read(&name) {
            all.extend(bytes);
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

async fn audit_text(h: &common::TestHost) -> String {
    h.kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT target, detail FROM audit")
        .fetch_all(&db)
        .await
        .unwrap();
    rows.iter()
        .map(|(t, d)| format!("{t}\n{d}\n"))
        .collect::<String>()
}

/// A loopback HTTP server that answers 200 and hands back each request it received.
async fn echo_server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 << 10];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    (port, rx)
}

#[tokio::test]
async fn credentials_in_a_fetch_never_reach_the_state_files() {
    let (port, mut received) = echo_server().await;
    let h = common::host().await;
    let fetch_of = |url: String| {
        Syscall::Net(NetCall::Fetch {
            url,
            method: "POST".into(),
            headers: vec![
                ("Authorization".into(), "Bearer SECRET_BEARER".into()),
                ("Cookie".into(), "sid=SECRET_COOKIE".into()),
                ("X-Api-Key".into(), "SECRET_APIKEY".into()),
                ("Accept".into(), "text/plain".into()),
            ],
            body: Some("password=SECRET_BODY".into()),
            max_bytes: None,
        })
    };
    let fetch = fetch_of(format!(
        "http://127.0.0.1:{port}/x?token=SECRET_QUERY&v=1#SECRET_FRAG"
    ));
    // Allowed: the request carries the credentials to the server, the record does not.
    let allowed = h
        .spawn(&[&format!("net:127.0.0.1:{port}=read,write")])
        .await;
    let out = h.kernel.syscall(allowed, fetch.clone()).await.unwrap();
    assert_eq!(out["status"], 200);
    let sent = received.recv().await.unwrap();
    assert!(
        sent.contains("SECRET_BEARER") && sent.contains("SECRET_QUERY"),
        "{sent}"
    );
    // Denied, and asked about: those are recorded too.
    let denied = h.spawn(&[]).await;
    h.kernel.syscall(denied, fetch.clone()).await.unwrap_err();
    // Refused as written (userinfo in a URL): recorded too.
    let err = h
        .kernel
        .syscall(
            allowed,
            fetch_of(format!("http://user:SECRET_PASS@127.0.0.1:{port}/x")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument");
    // Asked about: the request a human answers (kept as long as the request) holds no
    // secret either.
    let asking = h
        .spawn(&[&format!("net:127.0.0.1:{port}=read,write:ask")])
        .await;
    let k = h.kernel.clone();
    let asked = fetch.clone();
    let call = tokio::spawn(async move { k.syscall(asking, asked).await });
    let pending = common::wait_pending(&h.kernel).await;
    assert!(
        pending.payload.to_string().contains("/x?token="),
        "{}",
        pending.payload
    );
    h.kernel
        .human_respond(
            &pending.id,
            HumanAnswer::Reject {
                reason: "no".into(),
            },
            "alice",
        )
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap_err().kind(), "HumanRejected");
    let audit = audit_text(&h).await;
    assert!(
        audit.contains("net.fetch") && audit.contains("Accept"),
        "{audit}"
    );
    let everything = state_bytes(&h.db_path());
    for secret in [
        "SECRET_PASS",
        "SECRET_QUERY",
        "SECRET_FRAG",
        "SECRET_BEARER",
        "SECRET_COOKIE",
        "SECRET_APIKEY",
        "SECRET_BODY",
    ] {
        assert!(!audit.contains(secret), "{secret} is in the audit log");
        assert!(
            !everything.contains(secret),
            "{secret} is in the state files"
        );
    }
    // What is kept lets a holder of the secret check it: length and SHA-256.
    let bearer_hash = agent_libos::util::sha256_hex(b"Bearer SECRET_BEARER");
    assert!(audit.contains(&bearer_hash), "{audit}");
}

#[tokio::test]
async fn shell_stdin_and_argv_credentials_never_reach_the_audit_log() {
    let h = common::host().await;
    let pid = h.spawn(&["shell:cat=execute", "shell:echo=execute"]).await;
    let out = h
        .kernel
        .syscall(
            pid,
            Syscall::Shell(ShellCall::Run {
                argv: vec!["cat".into()],
                timeout_ms: None,
                stdin: Some("SECRET_STDIN".into()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], "SECRET_STDIN");
    h.kernel
        .syscall(
            pid,
            Syscall::Shell(ShellCall::Run {
                argv: vec![
                    "echo".into(),
                    "--password=SECRET_ARG".into(),
                    "API_TOKEN=SECRET_ENV".into(),
                    "Authorization: Bearer SECRET_HDR".into(),
                    "https://h.example/?key=SECRET_URL".into(),
                    "visible".into(),
                ],
                timeout_ms: None,
                stdin: None,
            }),
        )
        .await
        .unwrap();
    let audit = audit_text(&h).await;
    assert!(audit.contains("visible"), "{audit}");
    for secret in [
        "SECRET_STDIN",
        "SECRET_ARG",
        "SECRET_ENV",
        "SECRET_HDR",
        "SECRET_URL",
    ] {
        assert!(!audit.contains(secret), "{secret} is in the audit log");
    }
}

#[tokio::test]
async fn an_audit_record_is_bounded_whatever_the_call_holds() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    let argv: Vec<String> = (0..5000).map(|i| format!("{i:0>200}")).collect();
    h.kernel
        .syscall(
            pid,
            Syscall::Shell(ShellCall::Run {
                argv,
                timeout_ms: None,
                stdin: None,
            }),
        )
        .await
        .unwrap_err();
    h.kernel
        .syscall(
            pid,
            Syscall::Fs(FsCall::WriteText {
                path: format!("{}.txt", "p".repeat(4000)),
                content: "c".repeat(1 << 20),
                overwrite: false,
            }),
        )
        .await
        .unwrap_err();
    h.kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let (detail, target): (i64, i64) =
        sqlx::query_as("SELECT MAX(length(detail)), MAX(length(target)) FROM audit")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(detail <= 8 << 10, "an audit detail of {detail} bytes");
    assert!(target <= 520, "an audit target of {target} characters");
    // Still a valid, verifiable chain.
    let report = h.kernel.verify_audit().await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
}

#[tokio::test]
async fn a_large_outcome_is_journaled_once_and_forgotten_when_the_call_ends() {
    let h = common::host().await;
    let secret = format!("SECRET_FILE{}", "x".repeat(20_000));
    std::fs::write(h.workspace().join("big.txt"), &secret).unwrap();
    let pid = h
        .spawn(&[
            "tool:*=create",
            "fs:big.txt=read",
            "fs:log.txt=write",
            "fs:out.txt=write:ask",
        ])
        .await;
    common::install(
        &h.kernel,
        pid,
        &common::tool_source(
            "copy",
            "await libos.fs.appendText(\"log.txt\", \"started\"); \
             const a = await libos.fs.readText(\"big.txt\"); \
             const b = await libos.fs.readText(\"big.txt\"); \
             await libos.fs.writeText(\"out.txt\", String(a.length + b.length)); \
             return { ok: true };",
        ),
    )
    .await
    .unwrap();
    let k = h.kernel.clone();
    let call = tokio::spawn(async move {
        k.syscall(
            pid,
            Syscall::Tool(JitCall::Call {
                name: "copy".into(),
                args: json!({"api_token": "SECRET_ARGS"}),
            }),
        )
        .await
    });
    let pending = common::wait_pending(&h.kernel).await;
    h.kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    // While the call waits, its reads are journaled: the content once, by hash.
    let blobs: Vec<(String, i64)> = sqlx::query_as("SELECT sha256, bytes FROM journal_blobs")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(blobs.len(), 1, "two identical outcomes, one blob");
    let rows: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT blob, outcome FROM journal WHERE primitive = 'fs.read_text'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for (blob, outcome) in &rows {
        assert_eq!(blob.as_deref(), Some(blobs[0].0.as_str()));
        assert!(!outcome.as_deref().unwrap_or("").contains("SECRET_FILE"));
    }
    h.kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    let out = call.await.unwrap().unwrap();
    assert_eq!(out, json!({"ok": true}));
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("out.txt")).unwrap(),
        (2 * secret.len()).to_string()
    );
    h.kernel.store().flush().await.unwrap();
    // Finished: neither its journal, nor the blob, nor its arguments are kept.
    let (journal, blobs, args): (i64, i64, String) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM journal), (SELECT COUNT(*) FROM journal_blobs), \
         (SELECT group_concat(args) FROM invocations)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((journal, blobs), (0, 0));
    assert!(!args.contains("SECRET_ARGS"), "{args}");
}

#[tokio::test]
async fn an_outcome_too_large_to_journal_is_read_again_on_replay() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = agent_libos::kernel::HumanMode::FailFast;
    config.fs_limits.call_bytes = 64 << 20;
    let kernel = Kernel::open(config).await.unwrap();
    let big = "z".repeat(17 << 20);
    std::fs::write(h.workspace().join("big.txt"), &big).unwrap();
    let pid = common::spawn_on(
        &kernel,
        &[
            "tool:*=create",
            "fs:big.txt=read",
            "fs:log.txt=write",
            "fs:out.txt=write:ask",
        ],
    )
    .await;
    common::install(
        &kernel,
        pid,
        &common::tool_source(
            "measure",
            "await libos.fs.appendText(\"log.txt\", \"once\"); \
             const a = await libos.fs.readText(\"big.txt\"); \
             await libos.fs.writeText(\"out.txt\", String(a.length)); \
             return { ok: true };",
        ),
    )
    .await
    .unwrap();
    let err = kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Call {
                name: "measure".into(),
                args: json!({}),
            }),
        )
        .await
        .unwrap_err();
    let SyscallError::HumanRequired { request_id, .. } = err else {
        panic!("expected HumanRequired, got {err:?}")
    };
    kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let (largest, blobs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(length(outcome)) FROM journal), (SELECT COUNT(*) FROM journal_blobs)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(largest < 1000, "a journal row of {largest} bytes");
    assert_eq!(blobs, 0, "over the cap: not stored at all");
    kernel
        .human_respond(&request_id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    // Unchanged, the read made again hashes as recorded: the replay goes on, the append is
    // not repeated, and the approved write is made.
    let report = kernel.resume().await.unwrap();
    assert!(report.invocations[0].outcome.is_ok(), "{report:?}");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("out.txt")).unwrap(),
        (17 << 20).to_string()
    );
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("log.txt")).unwrap(),
        "once"
    );
}

#[tokio::test]
async fn a_read_too_large_to_journal_that_reads_differently_on_replay_is_a_divergence() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = agent_libos::kernel::HumanMode::FailFast;
    config.fs_limits.call_bytes = 64 << 20;
    let kernel = Kernel::open(config).await.unwrap();
    std::fs::write(h.workspace().join("big.txt"), "z".repeat(17 << 20)).unwrap();
    let pid = common::spawn_on(
        &kernel,
        &[
            "tool:*=create",
            "fs:big.txt=read",
            "fs:log.txt=write",
            "fs:out.txt=write:ask",
        ],
    )
    .await;
    common::install(
        &kernel,
        pid,
        &common::tool_source(
            "measure",
            "await libos.fs.appendText(\"log.txt\", \"once\"); \
             const a = await libos.fs.readText(\"big.txt\"); \
             if (a.length > 10) await libos.fs.writeText(\"out.txt\", String(a.length)); \
             else await libos.fs.appendText(\"log.txt\", \"short\"); \
             return { ok: true };",
        ),
    )
    .await
    .unwrap();
    let err = kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Call {
                name: "measure".into(),
                args: json!({}),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "HumanRequired", "{err:?}");
    // The file changes before the replay: the read cannot be answered from the journal, is
    // made again, and reads another content — the replay stops rather than take a path the
    // first run did not take.
    std::fs::write(h.workspace().join("big.txt"), "short").unwrap();
    let report = kernel.resume().await.unwrap();
    let err = report.invocations[0].outcome.as_ref().unwrap_err();
    assert_eq!(err.kind, "NonDeterminism", "{err:?}");
    let request = kernel
        .human_request(err.request_id.as_deref().expect("a request"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_value(request.kind).unwrap(), "diverged");
    assert_eq!(request.payload["seq"], 1, "{request:?}");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("log.txt")).unwrap(),
        "once"
    );
    assert!(!h.workspace().join("out.txt").exists());
}
