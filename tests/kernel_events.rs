//! Events are bounded: payload size, queue length, who may post, and what outlives a process.
// Tests build their fixtures on the host.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::kernel::{EventCall, ProcCall, Signal, Syscall, SyscallError};
use serde_json::{json, Value};

fn post(name: &str, payload: Value, target: Option<i64>) -> Syscall {
    Syscall::Event(EventCall::Post {
        name: name.into(),
        payload,
        target,
    })
}

fn limit_of(err: &SyscallError) -> &str {
    match err {
        SyscallError::LimitExceeded { limit, .. } => limit,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

async fn rows(h: &common::TestHost, target: i64) -> i64 {
    h.kernel.store().flush().await.unwrap();
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(h.db_path()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE target = ?")
        .bind(target)
        .fetch_one(&db)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_are_bounded() {
    let h = common::host().await;
    let k = &h.kernel;
    let pid = h.spawn(&[]).await;
    // Payload size.
    let big = json!("x".repeat(70 << 10));
    let err = k.syscall(pid, post("big", big, None)).await.unwrap_err();
    assert_eq!(limit_of(&err), "event_bytes");
    let err = k
        .syscall(pid, post(&"n".repeat(200), json!(1), None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument");
    // Queue length: a zero-grant process fills its own queue, then is stopped.
    for i in 0..1024 {
        k.syscall(pid, post("tick", json!(i), None)).await.unwrap();
    }
    let err = k
        .syscall(pid, post("tick", json!("one more"), None))
        .await
        .unwrap_err();
    assert_eq!(limit_of(&err), "events");
    // Taking one makes room for one.
    let got = k
        .syscall(
            pid,
            Syscall::Event(EventCall::Wait {
                name: "tick".into(),
                timeout_ms: Some(100),
            }),
        )
        .await
        .unwrap();
    assert_eq!(got["payload"], 0);
    k.syscall(pid, post("tick", json!("fits"), None))
        .await
        .unwrap();
    // A restart does not load more than a queue holds, nor lose the bound.
    let again = h.reopen().await;
    let err = again
        .syscall(pid, post("tick", json!("still full"), None))
        .await
        .unwrap_err();
    assert_eq!(limit_of(&err), "events");
}

#[tokio::test]
async fn posting_to_another_process_needs_a_capability() {
    let h = common::host().await;
    let k = &h.kernel;
    let parent = h.spawn(&["image:base=execute"]).await;
    let stranger = h.spawn(&[]).await;
    let child = k
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Spawn {
                image: "base".into(),
                goal: "child".into(),
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    // Down the tree: allowed, as signals are.
    k.syscall(parent, post("work", json!(1), Some(child)))
        .await
        .unwrap();
    // Up the tree and across: a capability on the target.
    for (from, to) in [(child, parent), (parent, stranger), (stranger, parent)] {
        let err = k
            .syscall(from, post("spam", json!(1), Some(to)))
            .await
            .unwrap_err();
        match err {
            SyscallError::PermissionDenied {
                resource, right, ..
            } => {
                assert_eq!(resource, format!("process:{to}"));
                assert_eq!(right, "signal");
            }
            other => panic!("{other:?}"),
        }
    }
    let granted = h.spawn(&[&format!("process:{parent}=signal")]).await;
    k.syscall(granted, post("hello", json!(1), Some(parent)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_process_keeps_no_events() {
    let h = common::host().await;
    let k = &h.kernel;
    let pid = h.spawn(&[]).await;
    let poster = h.spawn(&[&format!("process:{pid}=signal")]).await;
    for i in 0..5 {
        k.syscall(poster, post("e", json!(i), Some(pid)))
            .await
            .unwrap();
    }
    assert_eq!(rows(&h, pid).await, 5);
    k.signal(pid, Signal::Kill).await.unwrap();
    assert_eq!(rows(&h, pid).await, 0);
    let err = k
        .syscall(poster, post("e", json!("late"), Some(pid)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "IllegalState", "{err:?}");
    assert_eq!(rows(&h, pid).await, 0);
    // Old backlogs of ended processes are cleared at open.
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(h.db_path()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (id, target, name, payload, source, created_at) \
         SELECT 100000 + value, ?, 'old', '1', 'x', 0 FROM json_each('[1,2,3]')",
    )
    .bind(pid)
    .execute(&db)
    .await
    .unwrap();
    let _reopened = h.reopen().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    _reopened.store().flush().await.unwrap();
    assert_eq!(rows(&h, pid).await, 0);
}
