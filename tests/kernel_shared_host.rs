//! Kernels sharing one isolate host (`KernelConfig::isolate_host`), as the cases of a
//! replay do: each kernel has a pid space of its own on the host, so two kernels' "pid 1"
//! never share an isolate, its globals, its call lock or its cancellation.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::isolate::{HostConfig, WorkerHost};
use agent_libos::kernel::{Kernel, Pid, Signal};
use common::{call, install, tool_source};
use serde_json::{json, Value};

/// Counts its calls in a global and in a module variable.
fn remember() -> String {
    tool_source(
        "remember",
        "const g = globalThis as any; g.count = (g.count ?? 0) + 1; return { count: g.count };",
    )
}

fn shared_host() -> WorkerHost {
    WorkerHost::start(
        HostConfig::default(),
        Some(env!("CARGO_BIN_EXE_agent-libos").into()),
    )
}

/// A kernel on a database and workspace of its own, using `host`.
async fn kernel_on(host: &WorkerHost) -> (tempfile::TempDir, Kernel, Pid) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config = common::config(dir.path().join("state.db"), dir.path().join("ws"));
    config.isolate_host = Some(host.clone());
    let kernel = Kernel::open(config).await.unwrap();
    let pid = common::spawn_on(&kernel, &["tool:*=create"]).await;
    install(&kernel, pid, &remember()).await.unwrap();
    (dir, kernel, pid)
}

async fn count(kernel: &Kernel, pid: Pid) -> Result<i64, String> {
    let out: Value = call(kernel, pid, "remember", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    Ok(out["count"].as_i64().unwrap())
}

#[tokio::test]
async fn two_kernels_with_the_same_pid_and_tool_never_share_an_isolate() {
    let host = shared_host();
    let (_a_dir, a, pa) = kernel_on(&host).await;
    let (_b_dir, b, pb) = kernel_on(&host).await;
    assert_eq!(pa, pb, "the attack needs both kernels to name the same pid");

    assert_eq!(count(&a, pa).await, Ok(1));
    assert_eq!(count(&a, pa).await, Ok(2));
    // The same pid, tool and hash on the same host: a fresh isolate, no globals of `a`.
    assert_eq!(count(&b, pb).await, Ok(1));
    assert_eq!(count(&a, pa).await, Ok(3));

    // Concurrent calls of both: each kernel sees only its own count, in order.
    for round in 0..5 {
        let (x, y) = tokio::join!(count(&a, pa), count(&b, pb));
        assert_eq!((x, y), (Ok(4 + round), Ok(2 + round)));
    }
    // Both kernels' isolates live in the one worker the host started.
    assert_eq!(host.stats().workers_started, 1, "{:?}", host.stats());
}

#[tokio::test]
async fn killing_a_pid_in_one_kernel_stops_nothing_in_another() {
    let host = shared_host();
    let (_a_dir, a, pa) = kernel_on(&host).await;
    let (_b_dir, b, pb) = kernel_on(&host).await;
    assert_eq!(count(&a, pa).await, Ok(1));
    assert_eq!(count(&b, pb).await, Ok(1));
    a.signal(pa, Signal::Kill).await.unwrap();
    assert!(
        count(&a, pa).await.is_err(),
        "a killed process calls nothing"
    );
    // The host cancelled `a`'s pid 1, not `b`'s.
    assert_eq!(count(&b, pb).await, Ok(2));
}

#[tokio::test]
async fn a_dropped_kernel_leaves_no_isolate_on_the_shared_host() {
    let host = shared_host();
    let (_b_dir, b, pb) = kernel_on(&host).await;
    assert_eq!(count(&b, pb).await, Ok(1));
    for _ in 0..3 {
        let (_dir, a, pa) = kernel_on(&host).await;
        assert_eq!(count(&a, pa).await, Ok(1));
        assert_eq!(host.stats().isolates_hot, 2, "{:?}", host.stats());
    }
    // Each ended kernel's isolate is gone; `b` keeps its own, globals and all.
    assert_eq!(host.stats().isolates_hot, 1, "{:?}", host.stats());
    assert_eq!(count(&b, pb).await, Ok(2));
}
