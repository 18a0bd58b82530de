//! Hibernation through the kernel: a process's isolate is a cache. Past the host's cap of
//! hot isolates, or idle past its timeout, a process not in a call loses its isolate; its
//! next call re-creates one. Globals are gone; tools, object memory and the journal are not.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::isolate::HostConfig;
use agent_libos::kernel::{JitCall, Kernel, MemCall, ObjectSpec, Pid, Syscall};
use common::{call, install, tool_source};
use serde_json::{json, Value};

/// Counts its calls in a global; appends the count to `args.log` if given.
fn remember() -> String {
    tool_source(
        "remember",
        "const g = globalThis as any; g.count = (g.count ?? 0) + 1; \
         if (args.log) await libos.memory.append(args.log, g.count); return { count: g.count };",
    )
}

async fn host_with(max_hot: usize, idle_timeout: Duration) -> common::TestHost {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config = common::config(dir.path().join("state.db"), dir.path().join("ws"));
    config.isolates = HostConfig {
        max_hot,
        idle_timeout,
        ..HostConfig::default()
    };
    let kernel = Kernel::open(config).await.unwrap();
    common::TestHost { dir, kernel }
}

async fn count(kernel: &Kernel, pid: Pid, args: Value) -> i64 {
    let out = call(kernel, pid, "remember", args).await.unwrap();
    out["count"].as_i64().unwrap()
}

async fn new_log(kernel: &Kernel, pid: Pid) -> String {
    let spec = ObjectSpec {
        object_type: "log".into(),
        appendable: true,
        ..Default::default()
    };
    let made = kernel
        .syscall(pid, Syscall::Mem(MemCall::Create(spec)))
        .await
        .unwrap();
    made["id"].as_str().unwrap().to_string()
}

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn an_evicted_isolate_loses_its_globals_but_not_its_tools_or_object_memory() {
    let h = host_with(1, LONG).await;
    let a = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, a, &remember()).await.unwrap();
    let log = new_log(&h.kernel, a).await;
    assert_eq!(count(&h.kernel, a, json!({"log": log})).await, 1);
    assert_eq!(count(&h.kernel, a, json!({"log": log})).await, 2);
    assert!(h.kernel.isolate_hot(a));

    // A second hot process over a cap of one: the first hibernates.
    let b = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, b, &remember()).await.unwrap();
    assert_eq!(count(&h.kernel, b, json!({})).await, 1);
    assert!(!h.kernel.isolate_hot(a), "a hibernates");
    assert!(h.kernel.isolate_hot(b));
    let stats = h.kernel.isolate_stats();
    assert!(stats.isolates_evicted >= 1, "{stats:?}");
    assert_eq!(stats.isolates_hot, 1, "{stats:?}");

    // Its next call re-creates an isolate: the global counter starts again, the tool and
    // the object it wrote to are intact.
    assert_eq!(count(&h.kernel, a, json!({"log": log})).await, 1);
    assert!(h.kernel.isolate_hot(a));
    let object = h
        .kernel
        .syscall(a, Syscall::Mem(MemCall::Read { id: log }))
        .await
        .unwrap();
    assert_eq!(object["items"], json!([1, 2, 1]));
    let stats = h.kernel.isolate_stats();
    assert!(stats.isolates_recreated >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_keyed_tool_call_across_an_eviction_runs_once() {
    let h = host_with(1, LONG).await;
    let a = h.spawn(&["tool:*=create", "fs:log.txt=write"]).await;
    let note = tool_source(
        "note",
        "await libos.fs.appendText(\"log.txt\", \"tool\\n\"); return { ok: true };",
    );
    install(&h.kernel, a, &note).await.unwrap();
    let keyed = |key: &'static str| {
        let kernel = h.kernel.clone();
        async move {
            let call = Syscall::Tool(JitCall::Call {
                name: "note".into(),
                args: json!({}),
            });
            kernel.syscall_once(a, key, call).await.unwrap()
        }
    };
    assert_eq!(keyed("step-1").await, json!({"ok": true}));
    let b = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, b, &remember()).await.unwrap();
    count(&h.kernel, b, json!({})).await;
    assert!(!h.kernel.isolate_hot(a), "a hibernates");

    // The same key after the eviction answers from the journal: the effect is not repeated.
    assert_eq!(keyed("step-1").await, json!({"ok": true}));
    let log = h.workspace().join("log.txt");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "tool\n");
    // A new key runs in a re-created isolate.
    assert_eq!(keyed("step-2").await, json!({"ok": true}));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "tool\ntool\n");
}

#[tokio::test]
async fn a_working_set_larger_than_the_cap_keeps_working() {
    let cap = 3;
    let h = host_with(cap, LONG).await;
    let mut pids = Vec::new();
    for _ in 0..9 {
        let pid = h.spawn(&["tool:*=create"]).await;
        install(&h.kernel, pid, &remember()).await.unwrap();
        pids.push(pid);
    }
    // Round robin over three times the cap: every process was evicted since its last call.
    for round in 0..3 {
        for pid in &pids {
            assert_eq!(count(&h.kernel, *pid, json!({})).await, 1, "round {round}");
        }
        let stats = h.kernel.isolate_stats();
        assert!(stats.isolates_hot <= cap, "{stats:?}");
    }
    let stats = h.kernel.isolate_stats();
    assert!(stats.isolates_evicted >= 27 - cap as u64, "{stats:?}");
    assert!(stats.isolates_recreated >= 18, "{stats:?}");
    assert_eq!(stats.workers_lost, 0, "{stats:?}");
}

#[tokio::test]
async fn an_isolate_in_a_call_is_never_evicted() {
    let h = host_with(1, LONG).await;
    let a = h.spawn(&["tool:*=create"]).await;
    let slow = tool_source(
        "slow",
        "const g = globalThis as any; g.count = (g.count ?? 0) + 1; \
         if (args.wait) await libos.clock.sleep(args.wait); return { count: g.count };",
    );
    install(&h.kernel, a, &slow).await.unwrap();
    let b = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, b, &remember()).await.unwrap();

    let long = {
        let kernel = h.kernel.clone();
        tokio::spawn(async move { call(&kernel, a, "slow", json!({"wait": 1500})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Calls of another process over a cap of one, while `a` is in its call.
    for _ in 0..5 {
        count(&h.kernel, b, json!({})).await;
        assert!(h.kernel.isolate_hot(a), "a is in a call");
    }
    assert_eq!(long.await.unwrap().unwrap(), json!({"count": 1}));
    // Its isolate (and global) survived the call; the other process's did not.
    let again = call(&h.kernel, a, "slow", json!({})).await.unwrap();
    assert_eq!(again, json!({"count": 2}));
    assert!(!h.kernel.isolate_hot(b));
}

#[tokio::test]
async fn an_idle_isolate_hibernates_after_the_timeout() {
    let h = host_with(1_000, Duration::from_millis(200)).await;
    let a = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, a, &remember()).await.unwrap();
    assert_eq!(count(&h.kernel, a, json!({})).await, 1);
    let mut waited = Duration::ZERO;
    while h.kernel.isolate_hot(a) && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(
        !h.kernel.isolate_hot(a),
        "idle past the timeout: hibernated"
    );
    assert!(h.kernel.isolate_stats().isolates_evicted >= 1);
    assert_eq!(count(&h.kernel, a, json!({})).await, 1);
}

#[tokio::test]
async fn a_call_that_poisons_its_isolate_leaves_its_process_no_longer_hot() {
    let h = host_with(8, LONG).await;
    let a = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, a, &remember()).await.unwrap();
    install(
        &h.kernel,
        a,
        &tool_source("fails", "throw new Error(\"no\");"),
    )
    .await
    .unwrap();
    let spin = "import type { Libos } from \"libos\";\n\
        export const tool = { name: \"spin\", description: \"d\", input: { type: \"object\" }, output: {}, limits: { cpu_ms: 100 } };\n\
        export default async function run(args: any, libos: Libos) { let x = 0; while (true) { x++; } }\n";
    install(&h.kernel, a, spin).await.unwrap();
    assert_eq!(count(&h.kernel, a, json!({})).await, 1);

    // The tool's own error leaves the isolate as it was.
    call(&h.kernel, a, "fails", json!({})).await.unwrap_err();
    assert!(h.kernel.isolate_hot(a));
    assert_eq!(count(&h.kernel, a, json!({})).await, 2);

    // A time limit poisons it: the worker drops it, and so does the host's count.
    let err = call(&h.kernel, a, "spin", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("cpu_time"), "{err}");
    assert!(!h.kernel.isolate_hot(a), "a poisoned isolate is not hot");
    assert_eq!(h.kernel.isolate_stats().isolates_hot, 0);

    // The next call gets a fresh isolate, and the process is hot again.
    assert_eq!(count(&h.kernel, a, json!({})).await, 1);
    assert!(h.kernel.isolate_hot(a));
    assert_eq!(h.kernel.isolate_stats().isolates_hot, 1);
}

#[tokio::test]
async fn hot_isolates_are_spread_over_workers_and_stay_hot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config = common::config(dir.path().join("state.db"), dir.path().join("ws"));
    config.isolates = HostConfig {
        max_hot: 16,
        hot_per_worker: 2,
        ..HostConfig::default()
    };
    let h = common::TestHost {
        kernel: Kernel::open(config).await.unwrap(),
        dir,
    };
    let mut pids = Vec::new();
    for _ in 0..5 {
        let pid = h.spawn(&["tool:*=create"]).await;
        install(&h.kernel, pid, &remember()).await.unwrap();
        assert_eq!(count(&h.kernel, pid, json!({})).await, 1);
        pids.push(pid);
    }
    let stats = h.kernel.isolate_stats();
    assert!(stats.workers_live >= 3, "at most 2 per worker: {stats:?}");
    // Placing more processes never moved a hot one: every global survived.
    for &pid in &pids {
        assert_eq!(count(&h.kernel, pid, json!({})).await, 2);
        assert!(h.kernel.isolate_hot(pid));
    }
    let stats = h.kernel.isolate_stats();
    assert_eq!(stats.isolates_hot, 5, "{stats:?}");
    assert_eq!(stats.isolates_evicted, 0, "{stats:?}");
}
