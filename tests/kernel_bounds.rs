//! Queues the host keeps per process are bounded with backpressure: a full one fails the
//! caller with a clear error and never drops what it holds.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::kernel::{EventCall, HumanAnswer, HumanCall, Syscall, SyscallError};
use serde_json::json;

fn post(name: &str) -> Syscall {
    Syscall::Event(EventCall::Post {
        name: name.into(),
        payload: json!(null),
        target: None,
    })
}

#[tokio::test]
async fn a_full_event_queue_refuses_posts_and_drops_nothing() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    for _ in 0..1024 {
        h.kernel.syscall(pid, post("tick")).await.unwrap();
    }
    let err = h.kernel.syscall(pid, post("tick")).await.unwrap_err();
    assert!(
        matches!(&err, SyscallError::LimitExceeded { limit, detail } if limit == "events" && detail.contains("1024")),
        "{err:?}"
    );
    // Taking one makes room for one; every queued event is still there.
    let wait = || {
        Syscall::Event(EventCall::Wait {
            name: "tick".into(),
            timeout_ms: Some(0),
        })
    };
    h.kernel.syscall(pid, wait()).await.unwrap();
    h.kernel.syscall(pid, post("tick")).await.unwrap();
    for _ in 0..1024 {
        h.kernel.syscall(pid, wait()).await.unwrap();
    }
    let err = h.kernel.syscall(pid, wait()).await.unwrap_err();
    assert!(matches!(err, SyscallError::Timeout(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_parks_a_bounded_number_of_calls_on_humans() {
    let h = common::host().await;
    let pid = h.spawn(&["human:operator=write"]).await;
    let bound = agent_libos::kernel::human::MAX_PENDING_REQUESTS as usize;
    let asks: Vec<_> = (0..=bound)
        .map(|i| {
            let kernel = h.kernel.clone();
            tokio::spawn(async move {
                kernel
                    .syscall(
                        pid,
                        Syscall::Human(HumanCall::Ask {
                            question: format!("question {i}?"),
                            choices: vec![],
                            channel: "operator".into(),
                        }),
                    )
                    .await
            })
        })
        .collect();
    // As many as a process may have pending park; the next is refused at once, with no
    // request raised for it.
    let mut refused = None;
    for _ in 0..100 {
        if let Some(done) = asks.iter().position(|a| a.is_finished()) {
            refused = Some(done);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("one call is refused");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pending = h.kernel.human_requests(false).await.unwrap();
    assert_eq!(pending.len(), bound, "{pending:?}");
    assert_eq!(asks.iter().filter(|a| a.is_finished()).count(), 1);
    // Answering releases the parked calls.
    for request in pending {
        h.kernel
            .human_respond(
                &request.id,
                HumanAnswer::Reject {
                    reason: "no".into(),
                },
                "test",
            )
            .await
            .unwrap();
    }
    for (i, ask) in asks.into_iter().enumerate() {
        let outcome = ask.await.unwrap();
        if i == refused {
            let err = outcome.unwrap_err();
            assert!(
                matches!(&err, SyscallError::LimitExceeded { limit, .. } if limit == "human_waits"),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(outcome, Err(SyscallError::HumanRejected(_))),
                "{outcome:?}"
            );
        }
    }
}
