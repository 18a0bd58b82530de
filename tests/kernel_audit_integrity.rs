//! The audit trail cannot be cut, recomputed or lost silently, and a human request is
//! answered at most once, taking effect only once durable.
//!
//! The attacker edits the database file directly (as anything with a path to it could).
// Tests edit the state files on the host, as an attacker with their path would.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::audit::AuditRow;
use agent_libos::kernel::{
    CapabilitySpec, FsCall, HumanAnswer, HumanCall, HumanMode, Kernel, MemCall, ObjectSpec, Pid,
    Right, SpawnOptions, Syscall,
};
use serde_json::json;

async fn outside(h: &common::TestHost) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(h.db_path())
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

async fn activity(h: &common::TestHost, pid: Pid, n: usize) {
    for i in 0..n {
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
    h.kernel.store().flush().await.unwrap();
}

async fn last_seq(db: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT MAX(seq) FROM audit")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn deleting_the_last_audit_records_is_detected() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    activity(&h, pid, 6).await;
    assert!(h.kernel.verify_audit().await.unwrap().is_ok());
    let db = outside(&h).await;
    let last = last_seq(&db).await;
    sqlx::query("DELETE FROM audit WHERE seq > ?")
        .bind(last - 2)
        .execute(&db)
        .await
        .unwrap();
    let report = h.kernel.verify_audit().await.unwrap();
    let broken = report.broken.expect("a cut tail is found");
    assert!(broken.reason.contains("deleted"), "{}", broken.reason);
    // Later records do not paper over the cut: the anchor stays where it was.
    activity(&h, pid, 3).await;
    let report = h.kernel.verify_audit().await.unwrap();
    let broken = report.broken.expect("still found after more records");
    assert!(broken.reason.contains("anchored head"), "{}", broken.reason);
    // A reopened runtime sees it too.
    assert!(!h.reopen().await.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn a_recomputed_chain_is_detected() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    activity(&h, pid, 5).await;
    let db = outside(&h).await;
    // Edit record 3 and recompute every hash after it, as one reading the source would.
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, ts, actor, action, target, decision, capability_refs, correlation_id, \
         parent_seq, detail, prev_hash, hash, mac FROM audit ORDER BY seq",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut prev = rows[1].hash.clone();
    for mut row in rows.into_iter().skip(2) {
        if row.seq == 3 {
            row.decision = "deny".into();
        }
        row.prev_hash = prev.clone();
        row.hash = row.compute_hash();
        prev = row.hash.clone();
        sqlx::query("UPDATE audit SET decision = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&row.decision)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.seq)
            .execute(&db)
            .await
            .unwrap();
    }
    let report = h.kernel.verify_audit().await.unwrap();
    let broken = report.broken.expect("a recomputed chain is found");
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("not sealed"), "{}", broken.reason);
}

#[tokio::test]
async fn a_missing_or_edited_anchor_is_detected() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    activity(&h, pid, 2).await;
    let head = h.db_path().with_file_name("state.db.head");
    let text = std::fs::read_to_string(&head).unwrap();
    std::fs::write(&head, text.replace("\"seq\":", "\"seq\":1")).unwrap();
    let report = h.kernel.verify_audit().await.unwrap();
    assert!(report.broken.unwrap().reason.contains("does not verify"));
    std::fs::remove_file(&head).unwrap();
    let report = h.kernel.verify_audit().await.unwrap();
    assert!(report.broken.unwrap().reason.contains("missing"));
    // The runtime does not quietly make a new one.
    activity(&h, pid, 1).await;
    assert!(!head.exists());
}

#[tokio::test]
async fn a_failed_commit_loses_no_audit_record_and_reports_no_success() {
    let h = common::host().await;
    let pid = h.spawn(&["fs:**=read,write"]).await;
    std::fs::write(h.workspace().join("notes.txt"), "n").unwrap();
    let db = outside(&h).await;
    sqlx::query(
        "CREATE TRIGGER fail_boom BEFORE INSERT ON audit WHEN NEW.target = 'fs:boom.txt' \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    .execute(&db)
    .await
    .unwrap();
    let write = |path: &str| {
        Syscall::Fs(FsCall::WriteText {
            path: path.into(),
            content: "x".into(),
            overwrite: false,
        })
    };
    // The effect happened, its record could not be committed: not a success.
    let err = h.kernel.syscall(pid, write("boom.txt")).await.unwrap_err();
    assert_eq!(err.kind(), "Uncertain", "{err:?}");
    assert!(err.to_string().contains("fs.write_text"), "{err}");
    assert!(h.workspace().join("boom.txt").exists());
    // While the store fails, a read does not outrun its record either.
    let read = Syscall::Fs(FsCall::ReadText {
        path: "notes.txt".into(),
    });
    let err = h.kernel.syscall(pid, read.clone()).await.unwrap_err();
    assert_eq!(err.kind(), "InternalError", "{err:?}");
    // The store recovers: the kept records are written before the next acknowledgement.
    sqlx::query("DROP TRIGGER fail_boom")
        .execute(&db)
        .await
        .unwrap();
    h.kernel.syscall(pid, write("after.txt")).await.unwrap();
    let boom: Vec<(String, String)> = sqlx::query_as(
        "SELECT decision, detail FROM audit WHERE target = 'fs:boom.txt' AND action = 'fs.write_text'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(boom.len(), 1, "{boom:?}");
    assert_eq!(boom[0].0, "allow");
    assert!(boom[0].1.contains("recorded later"), "{}", boom[0].1);
    let reads: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit WHERE action = 'fs.read_text' AND decision = 'error'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(reads, 1);
    h.kernel.syscall(pid, read).await.unwrap();
    assert!(h.kernel.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn two_concurrent_answers_to_one_request_grant_once() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let k = Kernel::open(config).await.unwrap();
    let pid = k
        .spawn_root(SpawnOptions {
            goal: "ask".into(),
            requestable: vec![CapabilitySpec::parse_grant("fs:**=write").unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let other = h.reopen().await;
    for round in 0..10 {
        let resource = format!("fs:out{round}.txt");
        let err = k
            .syscall(
                pid,
                Syscall::Human(HumanCall::RequestPermission {
                    resource: resource.clone(),
                    rights: vec![Right::Write],
                    reason: "r".into(),
                    channel: "operator".into(),
                }),
            )
            .await
            .unwrap_err();
        let id = match err {
            agent_libos::kernel::SyscallError::HumanRequired { request_id, .. } => request_id,
            other => panic!("{other:?}"),
        };
        // Two humans at once, through one runtime and through another.
        let (a, b, c) = tokio::join!(
            k.human_respond(&id, HumanAnswer::ApproveAlways, "alice"),
            k.human_respond(&id, HumanAnswer::ApproveAlways, "bob"),
            other.human_respond(&id, HumanAnswer::ApproveOnce, "carol"),
        );
        let results = [a, b, c];
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        for lost in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(lost.kind(), "IllegalState", "{lost:?}");
            assert!(
                lost.to_string().contains("answered meanwhile")
                    || lost.to_string().contains("already"),
                "{lost}"
            );
        }
        let granted = h
            .reopen()
            .await
            .capabilities(pid)
            .into_iter()
            .filter(|c| c.resource == resource)
            .count();
        assert_eq!(granted, 1, "round {round}");
    }
}

#[tokio::test]
async fn an_answer_takes_effect_only_after_its_commit() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let k = Kernel::open(config).await.unwrap();
    let pid = k
        .spawn_root(SpawnOptions {
            goal: "ask".into(),
            grants: vec![CapabilitySpec::parse_grant("human:operator=write").unwrap()],
            requestable: vec![CapabilitySpec::parse_grant("fs:**=read").unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = k
        .syscall(
            pid,
            Syscall::Human(HumanCall::RequestPermission {
                resource: "fs:**".into(),
                rights: vec![Right::Read],
                reason: "r".into(),
                channel: "operator".into(),
            }),
        )
        .await
        .unwrap_err();
    let agent_libos::kernel::SyscallError::HumanRequired { request_id, .. } = err else {
        panic!("{err:?}")
    };
    let db = outside(&h).await;
    sqlx::query(
        "CREATE TRIGGER no_grants BEFORE INSERT ON capabilities \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&db)
    .await
    .unwrap();
    let err = k
        .human_respond(&request_id, HumanAnswer::ApproveAlways, "alice")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InternalError", "{err:?}");
    // Neither the grant nor the answer exists, in memory or in the store.
    assert!(k.capabilities(pid).iter().all(|c| c.resource != "fs:**"));
    assert_eq!(
        k.human_request(&request_id).await.unwrap().unwrap().status,
        agent_libos::kernel::RequestStatus::Pending
    );
    sqlx::query("DROP TRIGGER no_grants")
        .execute(&db)
        .await
        .unwrap();
    k.human_respond(&request_id, HumanAnswer::ApproveAlways, "alice")
        .await
        .unwrap();
    assert!(k.capabilities(pid).iter().any(|c| c.resource == "fs:**"));
}
