//! The audit chain (tamper detection on the real SQLite file) and the human queue.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{
    HumanAnswer, HumanCall, HumanMode, Kernel, MemCall, ObjectSpec, RequestKind, RequestStatus,
    Status, Syscall, SyscallError,
};
use serde_json::json;

async fn some_activity(h: &common::TestHost) {
    let pid = h.spawn(&[]).await;
    for i in 0..5 {
        h.kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(ObjectSpec {
                    object_type: "n".into(),
                    payload: json!(i),
                    ..Default::default()
                })),
            )
            .await
            .unwrap();
    }
    h.kernel
        .syscall(pid, Syscall::Mem(MemCall::List { namespace: None }))
        .await
        .unwrap();
    h.kernel.store().flush().await.unwrap();
}

/// A connection of its own to the database file, as anyone who can write the file has.
async fn raw_database(h: &common::TestHost) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", h.db_path().display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

async fn tamper(h: &common::TestHost, sql: &'static str) -> agent_libos::audit::VerifyReport {
    let pool = raw_database(h).await;
    sqlx::query(sql).execute(&pool).await.unwrap();
    h.kernel.verify_audit().await.unwrap()
}

#[tokio::test]
async fn an_untouched_chain_verifies() {
    let h = common::host().await;
    some_activity(&h).await;
    let report = h.kernel.verify_audit().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.records >= 7);
    assert_eq!(report.head.len(), 64);
}

#[tokio::test]
async fn an_edited_record_is_found() {
    let h = common::host().await;
    some_activity(&h).await;
    let report = tamper(
        &h,
        "UPDATE audit SET decision = 'allow', detail = '{}' WHERE seq = 4",
    )
    .await;
    let broken = report.broken.expect("tamper detected");
    assert_eq!(broken.seq, 4);
    assert!(broken.reason.contains("edited"), "{}", broken.reason);
}

#[tokio::test]
async fn a_dropped_record_is_found() {
    let h = common::host().await;
    some_activity(&h).await;
    let report = tamper(&h, "DELETE FROM audit WHERE seq = 3").await;
    assert_eq!(report.broken.expect("drop detected").seq, 4);
}

#[tokio::test]
async fn reordered_records_are_found() {
    let h = common::host().await;
    some_activity(&h).await;
    // Swap the contents of records 2 and 3, keeping their sequence numbers.
    let pool = raw_database(&h).await;
    sqlx::query("UPDATE audit SET seq = -2 WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET seq = 2 WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap();
    let report = tamper(&h, "UPDATE audit SET seq = 3 WHERE seq = -2").await;
    let broken = report.broken.expect("reorder detected");
    assert_eq!(broken.seq, 2);
}

#[tokio::test]
async fn a_permission_request_parks_the_process_until_a_human_answers() {
    let h = common::host().await;
    let pid = h.spawn_requesting(&[], &["namespace:team=read"]).await;
    let kernel = h.kernel.clone();
    let request = tokio::spawn(async move {
        kernel
            .syscall(
                pid,
                Syscall::Human(HumanCall::RequestPermission {
                    resource: "namespace:team".into(),
                    rights: vec![agent_libos::kernel::Right::Read],
                    reason: "to read the team notes".into(),
                    channel: "operator".into(),
                }),
            )
            .await
    });
    let pending = wait_pending(&h.kernel).await;
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::WaitingHuman);
    assert_eq!(pending.kind, RequestKind::Permission);
    assert_eq!(pending.payload["reason"], "to read the team notes");
    h.kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    let out = request.await.unwrap().unwrap();
    assert_eq!(out["granted"], true);
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Runnable);
    // A request can be answered once.
    let again = h
        .kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap_err();
    assert_eq!(again.kind(), "IllegalState");
    // The grant is a one-shot for exactly that resource.
    let caps = h.kernel.capabilities(pid);
    assert!(caps
        .iter()
        .any(|c| c.resource == "namespace:team"
            && c.policy == agent_libos::kernel::Policy::AllowOnce));
}

#[tokio::test]
async fn an_ask_each_time_call_runs_only_after_approval_and_a_rejection_means_no_effect() {
    let h = common::host().await;
    let pid = h
        .spawn(&["namespace:team=create:ask_each_time", "namespace:team=read"])
        .await;
    let admin = h.spawn(&["namespace:team=create"]).await;
    h.kernel
        .syscall(
            admin,
            Syscall::Mem(MemCall::CreateNamespace {
                name: "team".into(),
            }),
        )
        .await
        .unwrap();
    let create = Syscall::Mem(MemCall::Create(ObjectSpec {
        namespace: Some("team".into()),
        object_type: "report".into(),
        payload: json!("x"),
        ..Default::default()
    }));
    // Deny first: nothing is created.
    let kernel = h.kernel.clone();
    let call = create.clone();
    let attempt = tokio::spawn(async move { kernel.syscall(pid, call).await });
    let pending = wait_pending(&h.kernel).await;
    assert_eq!(pending.kind, RequestKind::Approval);
    assert_eq!(pending.payload["resource"], "namespace:team");
    assert_eq!(pending.args_hash.len(), 64);
    h.kernel
        .human_respond(
            &pending.id,
            HumanAnswer::Reject {
                reason: "not now".into(),
            },
            "alice",
        )
        .await
        .unwrap();
    let err = attempt.await.unwrap().unwrap_err();
    assert!(
        matches!(err, SyscallError::HumanRejected(ref m) if m.contains("not now")),
        "{err:?}"
    );
    let list = h
        .kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::List {
                namespace: Some("team".into()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    // Approve once: exactly that call runs; the next one asks again.
    let kernel = h.kernel.clone();
    let call = create.clone();
    let attempt = tokio::spawn(async move { kernel.syscall(pid, call).await });
    let pending = wait_pending(&h.kernel).await;
    h.kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    attempt.await.unwrap().unwrap();
    let kernel = h.kernel.clone();
    let call = create.clone();
    let attempt = tokio::spawn(async move { kernel.syscall(pid, call).await });
    let pending = wait_pending(&h.kernel).await;
    // Approve always: this call and later ones run without asking.
    h.kernel
        .human_respond(&pending.id, HumanAnswer::ApproveAlways, "alice")
        .await
        .unwrap();
    attempt.await.unwrap().unwrap();
    h.kernel.syscall(pid, create).await.unwrap();
    let list = h
        .kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::List {
                namespace: Some("team".into()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(h.kernel.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn without_a_human_the_request_fails_fast_and_stays_answerable() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let kernel = Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "ask".into(),
            grants: vec![
                agent_libos::kernel::CapabilitySpec::parse_grant("human:operator=write").unwrap(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = kernel
        .syscall(
            pid,
            Syscall::Human(HumanCall::Ask {
                question: "which branch?".into(),
                choices: vec!["main".into(), "dev".into()],
                channel: "operator".into(),
            }),
        )
        .await
        .unwrap_err();
    let SyscallError::HumanRequired { request_id, detail } = err else {
        panic!("{err:?}")
    };
    assert!(
        detail.contains(&format!("agent-libos human show {request_id}")),
        "{detail}"
    );
    let wrong = kernel
        .human_respond(
            &request_id,
            HumanAnswer::Answer {
                text: "feature".into(),
            },
            "bob",
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), "InvalidArgument");
    let done = kernel
        .human_respond(
            &request_id,
            HumanAnswer::Answer { text: "dev".into() },
            "bob",
        )
        .await
        .unwrap();
    assert_eq!(done.status, RequestStatus::Answered);
    assert_eq!(done.answered_by.as_deref(), Some("bob"));
}

async fn wait_pending(kernel: &Kernel) -> agent_libos::kernel::HumanRequest {
    for _ in 0..400 {
        if let Some(r) = kernel
            .human_requests(false)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no pending human request appeared");
}

/// A kernel that fails fast on a human request, and a process holding `grants`.
async fn fail_fast(h: &common::TestHost, grants: &[&str]) -> (Kernel, i64) {
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let kernel = Kernel::open(config).await.unwrap();
    let grants = grants
        .iter()
        .map(|g| agent_libos::kernel::CapabilitySpec::parse_grant(g).unwrap())
        .collect();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "ask".into(),
            grants,
            ..Default::default()
        })
        .await
        .unwrap();
    (kernel, pid)
}

async fn chdir(kernel: &Kernel, pid: i64, path: &str) {
    let call = agent_libos::kernel::ProcCall::Chdir { path: path.into() };
    kernel.syscall(pid, Syscall::Proc(call)).await.unwrap();
}

fn request_of(err: SyscallError) -> String {
    match err {
        SyscallError::HumanRequired { request_id, .. } => request_id,
        other => panic!("expected HumanRequired, got {other:?}"),
    }
}

#[tokio::test]
async fn an_approval_cannot_be_redirected_by_chdir() {
    let h = common::host().await;
    std::fs::create_dir(h.workspace().join("victim")).unwrap();
    std::fs::write(h.workspace().join("victim/config.txt"), "original").unwrap();
    let (kernel, pid) = fail_fast(&h, &["fs:**=read", "fs:**=write:ask"]).await;
    let write = Syscall::Fs(agent_libos::kernel::FsCall::WriteText {
        path: "config.txt".into(),
        content: "new settings".into(),
        overwrite: true,
    });
    let approved = request_of(kernel.syscall(pid, write.clone()).await.unwrap_err());
    let request = kernel.human_request(&approved).await.unwrap().unwrap();
    assert_eq!(request.payload["context"]["path"], "config.txt");
    kernel
        .human_respond(&approved, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    // The same call, after a chdir, is another effect: it needs its own approval.
    chdir(&kernel, pid, "victim").await;
    let other = request_of(kernel.syscall(pid, write.clone()).await.unwrap_err());
    assert_ne!(other, approved);
    let request = kernel.human_request(&other).await.unwrap().unwrap();
    assert_eq!(request.payload["resource"], "fs:victim/config.txt");
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("victim/config.txt")).unwrap(),
        "original"
    );
    // Back where it was approved, the approval applies, once.
    chdir(&kernel, pid, "..").await;
    kernel.syscall(pid, write.clone()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("config.txt")).unwrap(),
        "new settings"
    );
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("victim/config.txt")).unwrap(),
        "original"
    );
}

#[tokio::test]
async fn a_command_approval_is_bound_to_its_directory() {
    let h = common::host().await;
    std::fs::create_dir(h.workspace().join("victim")).unwrap();
    let (kernel, pid) = fail_fast(&h, &["fs:**=read", "shell:touch=execute:ask"]).await;
    let touch = Syscall::Shell(agent_libos::kernel::ShellCall::Run {
        argv: vec!["touch".into(), "marker".into()],
        timeout_ms: None,
        stdin: None,
    });
    let approved = request_of(kernel.syscall(pid, touch.clone()).await.unwrap_err());
    let request = kernel.human_request(&approved).await.unwrap().unwrap();
    assert_eq!(request.payload["context"]["cwd"], ".");
    kernel
        .human_respond(&approved, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    chdir(&kernel, pid, "victim").await;
    let other = request_of(kernel.syscall(pid, touch).await.unwrap_err());
    assert_ne!(other, approved);
    assert!(!h.workspace().join("victim/marker").exists());
}

#[tokio::test]
async fn mem_to_file_approval_shows_hash_and_preview() {
    let h = common::host().await;
    let (kernel, pid) = fail_fast(&h, &["fs:**=write:ask"]).await;
    let content = "line one\nline two\n";
    let id = kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::Create(ObjectSpec {
                object_type: "text".into(),
                payload: json!(content),
                ..Default::default()
            })),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::ToFile {
                id: id.clone(),
                path: "out.txt".into(),
                overwrite: false,
            }),
        )
        .await
        .unwrap_err();
    let request = kernel
        .human_request(&request_of(err))
        .await
        .unwrap()
        .unwrap();
    let context = &request.payload["context"];
    assert_eq!(context["path"], "out.txt");
    assert_eq!(context["bytes"], content.len());
    assert_eq!(
        context["sha256"],
        agent_libos::util::sha256_hex(content.as_bytes())
    );
    assert_eq!(context["preview"], content);
    assert_eq!(context["overwrites"], false);
    assert_eq!(context["from_object"], id.as_str());
}

#[tokio::test]
async fn a_process_has_at_most_a_few_pending_requests() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let kernel = Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "flood".into(),
            requestable: vec![
                agent_libos::kernel::CapabilitySpec::parse_grant("fs:**=read").unwrap(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let ask = |n: usize| {
        Syscall::Human(HumanCall::RequestPermission {
            resource: format!("fs:file{n}.txt"),
            rights: vec![agent_libos::kernel::Right::Read],
            reason: "r".into(),
            channel: "operator".into(),
        })
    };
    for n in 0..agent_libos::kernel::human::MAX_PENDING_REQUESTS as usize {
        let err = kernel.syscall(pid, ask(n)).await.unwrap_err();
        assert_eq!(err.kind(), "HumanRequired", "{err:?}");
    }
    let err = kernel.syscall(pid, ask(100)).await.unwrap_err();
    match err {
        SyscallError::LimitExceeded { limit, .. } => assert_eq!(limit, "human_requests"),
        other => panic!("{other:?}"),
    }
    assert_eq!(kernel.human_requests(false).await.unwrap().len(), 8);
    // Answering one makes room for one.
    let first = kernel.human_requests(false).await.unwrap()[0].id.clone();
    kernel
        .human_respond(
            &first,
            HumanAnswer::Reject {
                reason: "no".into(),
            },
            "op",
        )
        .await
        .unwrap();
    let err = kernel.syscall(pid, ask(101)).await.unwrap_err();
    assert_eq!(err.kind(), "HumanRequired", "{err:?}");
}
