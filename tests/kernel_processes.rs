//! Processes: scheduling under a paused clock, signals, wait, events, budgets, exit.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::sync::{Arc, Mutex};

use agent_libos::kernel::{
    Budget, ClockCall, EventCall, MemCall, ProcCall, Signal, SpawnOptions, Status, Syscall,
    SyscallError,
};
use serde_json::json;

#[tokio::test(flavor = "current_thread")]
async fn sleeping_processes_interleave_deterministically_under_a_paused_clock() {
    let h = common::host().await;
    let a = h.spawn(&[]).await;
    let b = h.spawn(&[]).await;
    tokio::time::pause();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Both start sleeping at the same instant of the paused clock.
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let mut handles = Vec::new();
    for (pid, name, step) in [(a, "A", 30u64), (b, "B", 40u64)] {
        let log = log.clone();
        let start = start.clone();
        handles.push(
            h.kernel
                .run(pid, move |ctx| async move {
                    start.wait().await;
                    for i in 0..3 {
                        ctx.syscall(Syscall::Clock(ClockCall::Sleep { ms: step }))
                            .await?;
                        log.lock().unwrap().push(format!("{name}{i}"));
                    }
                    Ok(json!(name))
                })
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    // A wakes at 30, 60, 90; B at 40, 80, 120.
    assert_eq!(*log.lock().unwrap(), ["A0", "B0", "A1", "B1", "A2", "B2"]);
    tokio::time::resume();
    assert_eq!(h.kernel.process(a).unwrap().status, Status::Exited);
    assert_eq!(h.kernel.process(b).unwrap().exit_payload, Some(json!("B")));
}

#[tokio::test]
async fn a_parent_waiting_on_a_child_wakes_when_it_ends_and_gets_an_exit_event() {
    let h = common::host().await;
    let parent = h.spawn(&["image:base=execute"]).await;
    let child = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Spawn {
                image: "base".into(),
                goal: "work".into(),
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    let kernel = h.kernel.clone();
    let waiter = tokio::spawn(async move {
        kernel
            .syscall(
                parent,
                Syscall::Proc(ProcCall::Wait {
                    pid: child,
                    timeout_ms: Some(10_000),
                }),
            )
            .await
    });
    // The parent parks in WAITING_EVENT.
    for _ in 0..100 {
        if h.kernel.process(parent).unwrap().status == Status::WaitingEvent {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        h.kernel.process(parent).unwrap().status,
        Status::WaitingEvent
    );
    h.kernel
        .syscall(
            child,
            Syscall::Proc(ProcCall::Exit {
                payload: json!({"done": 1}),
            }),
        )
        .await
        .unwrap();
    let out = waiter.await.unwrap().unwrap();
    assert_eq!(out["status"], "EXITED");
    assert_eq!(out["exit"], json!({"done": 1}));
    assert_eq!(h.kernel.process(parent).unwrap().status, Status::Runnable);
    let event = h
        .kernel
        .syscall(
            parent,
            Syscall::Event(EventCall::Wait {
                name: "child.exit".into(),
                timeout_ms: Some(0),
            }),
        )
        .await
        .unwrap();
    assert_eq!(event["payload"]["pid"], child);
    // A terminated process makes no more syscalls.
    let err = h
        .kernel
        .syscall(child, Syscall::Clock(ClockCall::Now))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "IllegalState");
    // Only ancestors may wait.
    let stranger = h.spawn(&[]).await;
    let err = h
        .kernel
        .syscall(
            stranger,
            Syscall::Proc(ProcCall::Wait {
                pid: child,
                timeout_ms: None,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
}

#[tokio::test]
async fn events_posted_by_the_operator_wake_a_waiting_process_and_waits_time_out() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    let err = h
        .kernel
        .syscall(
            pid,
            Syscall::Event(EventCall::Wait {
                name: "go".into(),
                timeout_ms: Some(20),
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SyscallError::Timeout(_)), "{err:?}");
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Runnable);
    let kernel = h.kernel.clone();
    let waiter = tokio::spawn(async move {
        kernel
            .syscall(
                pid,
                Syscall::Event(EventCall::Wait {
                    name: "go".into(),
                    timeout_ms: None,
                }),
            )
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    h.kernel.post_event(pid, "other", json!(1)).await.unwrap();
    h.kernel
        .post_event(pid, "go", json!({"n": 2}))
        .await
        .unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got["payload"], json!({"n": 2}));
    // The unrelated event is still queued.
    let other = h
        .kernel
        .syscall(
            pid,
            Syscall::Event(EventCall::Wait {
                name: "other".into(),
                timeout_ms: Some(0),
            }),
        )
        .await
        .unwrap();
    assert_eq!(other["payload"], json!(1));
}

#[tokio::test]
async fn pause_blocks_syscalls_until_resume_and_kill_ends_a_running_body() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    h.kernel.signal(pid, Signal::Pause).await.unwrap();
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Paused);
    let kernel = h.kernel.clone();
    let call =
        tokio::spawn(async move { kernel.syscall(pid, Syscall::Clock(ClockCall::Now)).await });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(!call.is_finished(), "a paused process's syscall waits");
    h.kernel.signal(pid, Signal::Resume).await.unwrap();
    call.await.unwrap().unwrap();
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Runnable);

    let body = h
        .kernel
        .run(pid, |ctx| async move {
            loop {
                ctx.syscall(Syscall::Clock(ClockCall::Sleep { ms: 5 }))
                    .await?;
            }
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Running);
    h.kernel.signal(pid, Signal::Kill).await.unwrap();
    assert!(body.await.unwrap_err().is_cancelled());
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::Killed);
    assert_eq!(
        h.kernel
            .signal(pid, Signal::Resume)
            .await
            .unwrap_err()
            .kind(),
        "IllegalState"
    );
}

#[tokio::test]
async fn cancel_fails_the_next_syscall_and_ends_the_process() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    let body = h
        .kernel
        .run(pid, |ctx| async move {
            loop {
                ctx.syscall(Syscall::Clock(ClockCall::Sleep { ms: 5 }))
                    .await?;
            }
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    h.kernel.signal(pid, Signal::Cancel).await.unwrap();
    let err = body.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), "Cancelled");
    assert!(h.kernel.process(pid).unwrap().status.is_terminal());
}

#[tokio::test]
async fn budgets_are_divided_among_children_and_enforced() {
    let h = common::host().await;
    let parent = h
        .kernel
        .spawn_root(SpawnOptions {
            goal: "p".into(),
            budget: Some(Budget {
                tool_calls: 10,
                children: 2,
                syscalls: 100,
                wall_time_ms: 60_000,
            }),
            grants: vec![
                agent_libos::kernel::CapabilitySpec::parse_grant("image:base=execute").unwrap(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let spawn = || {
        Syscall::Proc(ProcCall::Spawn {
            image: "base".into(),
            goal: "c".into(),
            budget: None,
        })
    };
    let c1 = h.kernel.syscall(parent, spawn()).await.unwrap()["pid"]
        .as_i64()
        .unwrap();
    let child = h.kernel.process(c1).unwrap();
    assert_eq!(child.budget.tool_calls, 5);
    assert_eq!(child.budget.children, 1);
    h.kernel.syscall(parent, spawn()).await.unwrap();
    let err = h.kernel.syscall(parent, spawn()).await.unwrap_err();
    assert!(
        matches!(&err, SyscallError::LimitExceeded { limit, .. } if limit == "children"),
        "{err:?}"
    );
    // The child's syscall budget runs out.
    let mut last = Ok(json!(null));
    for _ in 0..=child.budget.syscalls {
        last = h.kernel.syscall(c1, Syscall::Clock(ClockCall::Now)).await;
    }
    assert!(
        matches!(&last, Err(SyscallError::LimitExceeded { limit, .. }) if limit == "syscalls"),
        "{last:?}"
    );
}

#[tokio::test]
async fn every_state_change_survives_reopening_the_database() {
    let h = common::host().await;
    let pid = h
        .spawn(&["namespace:shared=create,read,append", "image:base=execute"])
        .await;
    h.kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::CreateNamespace {
                name: "shared".into(),
            }),
        )
        .await
        .unwrap();
    let obj = h
        .kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::Create(agent_libos::kernel::ObjectSpec {
                namespace: Some("shared".into()),
                object_type: "log".into(),
                appendable: true,
                ..Default::default()
            })),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::Append {
                id: obj.clone(),
                item: json!("one"),
            }),
        )
        .await
        .unwrap();
    let child = h
        .kernel
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Spawn {
                image: "base".into(),
                goal: "c".into(),
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    h.kernel.signal(child, Signal::Pause).await.unwrap();
    h.kernel.post_event(pid, "later", json!(7)).await.unwrap();
    let before_caps = h.kernel.capabilities(pid);
    drop(h.kernel.clone());

    let k2 = h.reopen().await;
    assert_eq!(k2.process(child).unwrap().status, Status::Paused);
    assert_eq!(k2.process(child).unwrap().parent, Some(pid));
    assert_eq!(k2.capabilities(pid), before_caps);
    let read = k2
        .syscall(pid, Syscall::Mem(MemCall::Read { id: obj.clone() }))
        .await
        .unwrap();
    assert_eq!(read["items"], json!(["one"]));
    let ev = k2
        .syscall(
            pid,
            Syscall::Event(EventCall::Wait {
                name: "later".into(),
                timeout_ms: Some(0),
            }),
        )
        .await
        .unwrap();
    assert_eq!(ev["payload"], 7);
    // New ids do not collide with old ones.
    let next = k2
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Spawn {
                image: "base".into(),
                goal: "d".into(),
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert!(next > child);
    assert!(k2.verify_audit().await.unwrap().is_ok());
}
