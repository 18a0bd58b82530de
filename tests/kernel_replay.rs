//! Replay matches every syscall of an invocation by its ordinal, primitive and arguments
//! hash, and a replay that leaves its journal stops with `NonDeterminism` on a human request
//! — never a fresh execution. The attacker here is a tool whose path depends on a value it
//! keeps in a global between calls of its process: a replay runs in a fresh isolate, so it
//! takes the other path.
//!
//! A "crash" is a whole tokio runtime dropped mid-flight with its kernel.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::Path;
use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, HumanAnswer, HumanMode, HumanRequest, JitCall, Kernel, KernelConfig, Pid,
    SpawnOptions, Syscall, WireError,
};
use serde_json::{json, Value};

fn config(dir: &Path, mode: HumanMode) -> KernelConfig {
    let mut config = KernelConfig::new(dir.join("state.db"), dir.join("ws"));
    // A crash here drops the first host's runtime: its leases are free at once.
    config.lease_ttl = Duration::ZERO;
    config.human_mode = mode;
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A tool that counts its calls in a module global (kept by its process's isolate between
/// calls): `{"warmup": true}` only counts; otherwise `warm` says whether an earlier call
/// ran in the same isolate, and `body` branches on it.
fn carried_tool(body: &str) -> String {
    format!(
        "import type {{ Libos }} from \"libos\";\n\
         export const tool = {{ name: \"shifty\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\n\
         let calls = 0;\n\
         export default async function run(args: any, libos: Libos) {{\n\
           calls += 1;\n\
           if (args.warmup) return {{ calls }};\n\
           const warm = calls > 1;\n\
           {body}\n\
         }}\n"
    )
}

fn call(args: Value) -> Syscall {
    Syscall::Tool(JitCall::Call {
        name: "shifty".into(),
        args,
    })
}

/// First host: installs `body`, warms the isolate with one call, then starts a second call
/// that parks on a question; the host dies there. Returns the pid.
fn first_run_then_crash(dir: &Path, body: &str) -> Pid {
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let rt = runtime();
    let source = carried_tool(body);
    let pid = rt.block_on(async {
        let kernel = Kernel::open(config(dir, HumanMode::Wait)).await.unwrap();
        let pid = kernel
            .spawn_root(SpawnOptions {
                goal: "replay".into(),
                grants: ["tool:*=create", "fs:**=read,write", "human:operator=write"]
                    .iter()
                    .map(|g| CapabilitySpec::parse_grant(g).unwrap())
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        common::install(&kernel, pid, &source).await.unwrap();
        let warmed = kernel.syscall(pid, call(json!({"warmup": true}))).await;
        assert_eq!(warmed.unwrap(), json!({"calls": 1}));
        let k = kernel.clone();
        tokio::spawn(async move { k.syscall(pid, call(json!({}))).await });
        common::wait_pending(&kernel).await;
        pid
    });
    rt.shutdown_background();
    pid
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ws/log.txt")).unwrap_or_default()
}

/// The one invocation `resume` re-ran, and its error.
fn resumed_error(report: &agent_libos::kernel::ResumeReport) -> WireError {
    assert_eq!(report.invocations.len(), 1, "{report:?}");
    report.invocations[0]
        .outcome
        .clone()
        .expect_err("the replay must not succeed")
}

async fn diverged_request(kernel: &Kernel, err: &WireError) -> HumanRequest {
    assert_eq!(err.kind, "NonDeterminism", "{err:?}");
    let id = err.request_id.clone().expect("parked on a request");
    let request = kernel.human_request(&id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(request.kind).unwrap(),
        "diverged",
        "{request:?}"
    );
    request
}

/// (a) Another call at a recorded ordinal: the first run appended "warm", the replay would
/// append "cold" at the same place.
const OTHER_CALL: &str =
    "await libos.fs.appendText(\"log.txt\", warm ? \"warm\\n\" : \"cold\\n\"); \
     if (warm) await libos.human.ask(\"continue?\"); return { warm };";

#[test]
fn a_replay_calling_something_else_at_a_recorded_place_stops_on_a_human_request() {
    let dir = tempfile::tempdir().unwrap();
    let pid = first_run_then_crash(dir.path(), OTHER_CALL);
    assert_eq!(log(dir.path()), "warm\n");
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        let request = diverged_request(&kernel, &err).await;
        assert_eq!(request.pid, pid);
        assert_eq!(request.payload["seq"], 0, "{request:?}");
        assert_eq!(request.payload["recorded"], "fs.append_text");
        assert_eq!(request.payload["called"], "fs.append_text");
        assert_eq!(
            request.payload["carried"], true,
            "the first run started in a warm isolate"
        );
        assert!(err.message.contains("globals"), "{err:?}");
        assert_eq!(log(dir.path()), "warm\n", "nothing ran fresh");
        // Parked: another resume without an answer still runs nothing.
        let again = resumed_error(&kernel.resume().await.unwrap());
        assert_eq!(again.kind, "HumanRequired", "{again:?}");
        assert_eq!(log(dir.path()), "warm\n");
    });
}

#[test]
fn approving_a_divergence_runs_the_invocation_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    first_run_then_crash(dir.path(), OTHER_CALL);
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        let request = diverged_request(&kernel, &err).await;
        kernel
            .human_respond(&request.id, HumanAnswer::ApproveOnce, "alice")
            .await
            .unwrap();
        // Approved: the journal is discarded and the tool runs fresh (in a fresh isolate,
        // so on the cold path); the human accepted that its effect happens again.
        let report = kernel.resume().await.unwrap();
        assert_eq!(
            report.invocations[0].outcome.as_ref().unwrap(),
            &json!({"warm": false}),
            "{report:?}"
        );
        assert_eq!(log(dir.path()), "warm\ncold\n");
        assert!(kernel.resume().await.unwrap().invocations.is_empty());
        assert_eq!(log(dir.path()), "warm\ncold\n");
        // The decision and the restart are in the audit log.
        kernel.store().flush().await.unwrap();
        let db = common::outside(&dir.path().join("state.db")).await;
        let restarts: Vec<(String, String)> = sqlx::query_as(
            "SELECT decision, correlation_id FROM audit WHERE action = 'invocation.restart'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(restarts, vec![("approved".to_string(), request.id.clone())]);
        assert!(kernel.verify_audit().await.unwrap().is_ok());
    });
}

#[test]
fn rejecting_a_divergence_fails_the_invocation_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    first_run_then_crash(dir.path(), OTHER_CALL);
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        let request = diverged_request(&kernel, &err).await;
        kernel
            .human_respond(
                &request.id,
                HumanAnswer::Reject {
                    reason: "check the orders first".into(),
                },
                "alice",
            )
            .await
            .unwrap();
        let rejected = resumed_error(&kernel.resume().await.unwrap());
        assert_eq!(rejected.kind, "HumanRejected", "{rejected:?}");
        assert!(kernel.resume().await.unwrap().invocations.is_empty());
        assert_eq!(log(dir.path()), "warm\n", "nothing ran again");
        // Failed: its journal is gone.
        kernel.store().flush().await.unwrap();
        let db = common::outside(&dir.path().join("state.db")).await;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    });
}

#[test]
fn an_effect_where_the_journal_has_a_hole_before_recorded_calls_is_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    // Warm: a clock read, then the append. Cold: the append first.
    first_run_then_crash(
        dir.path(),
        "if (warm) await libos.clock.now(); await libos.fs.appendText(\"log.txt\", \"x\\n\"); \
         if (warm) await libos.human.ask(\"continue?\"); return { warm };",
    );
    assert_eq!(log(dir.path()), "x\n");
    runtime().block_on(async {
        // A journal with a hole where the read was (as hosts that did not journal the reads
        // before an invocation's first effect left them).
        let db = common::outside(&dir.path().join("state.db")).await;
        let removed = sqlx::query("DELETE FROM journal WHERE seq = 0 AND primitive = 'clock.now'")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(removed.rows_affected(), 1);
        db.close().await;
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        let request = diverged_request(&kernel, &err).await;
        assert_eq!(request.payload["seq"], 0, "{request:?}");
        assert_eq!(request.payload["called"], "fs.append_text");
        assert_eq!(request.payload["recorded"], "fs.append_text");
        assert_eq!(log(dir.path()), "x\n", "the append was not made again");
    });
}

#[test]
fn a_replay_that_ends_before_a_recorded_effect_is_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    // Warm: the append, then a question. Cold: returns at once.
    first_run_then_crash(
        dir.path(),
        "if (!warm) return { warm }; await libos.fs.appendText(\"log.txt\", \"x\\n\"); \
         await libos.human.ask(\"continue?\"); return { warm };",
    );
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        let request = diverged_request(&kernel, &err).await;
        assert_eq!(request.payload["seq"], 0, "{request:?}");
        assert_eq!(request.payload["recorded"], "fs.append_text");
        assert_eq!(request.payload["called"], "", "the tool ended");
        assert_eq!(log(dir.path()), "x\n");
    });
}

#[test]
fn a_tool_that_catches_the_divergence_cannot_make_another_effect() {
    let dir = tempfile::tempdir().unwrap();
    first_run_then_crash(
        dir.path(),
        "try { await libos.fs.appendText(\"log.txt\", warm ? \"warm\\n\" : \"cold\\n\"); } \
         catch (e) { await libos.fs.appendText(\"log.txt\", \"after\\n\"); return { caught: true }; } \
         if (warm) await libos.human.ask(\"continue?\"); return { warm };",
    );
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let err = resumed_error(&kernel.resume().await.unwrap());
        diverged_request(&kernel, &err).await;
        assert_eq!(log(dir.path()), "warm\n");
    });
}

#[tokio::test]
async fn a_read_only_tool_writes_no_journal() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "a").unwrap();
    let pid = h.spawn(&["tool:*=create", "fs:**=read"]).await;
    common::install(
        &h.kernel,
        pid,
        &common::tool_source(
            "look",
            "const t = await libos.clock.now(); const l = await libos.fs.list(\".\"); \
             const a = await libos.fs.readText(\"a.txt\"); return { n: t > 0 ? a.length : 0 };",
        ),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let out = h
            .kernel
            .syscall(
                pid,
                Syscall::Tool(JitCall::Call {
                    name: "look".into(),
                    args: json!({}),
                }),
            )
            .await
            .unwrap();
        assert_eq!(out, json!({"n": 1}));
    }
    h.kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let (journal, invocations): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM journal), (SELECT COUNT(*) FROM invocations)")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((journal, invocations), (0, 0));
}

#[tokio::test]
async fn the_reads_before_the_first_effect_are_written_when_the_invocation_is_recorded() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "a").unwrap();
    let pid = h
        .spawn(&[
            "tool:*=create",
            "fs:a.txt=read",
            "fs:out.txt=write:ask",
            "human:operator=write",
        ])
        .await;
    common::install(
        &h.kernel,
        pid,
        &common::tool_source(
            "copy",
            "const t = await libos.clock.now(); const a = await libos.fs.readText(\"a.txt\"); \
             await libos.fs.writeText(\"out.txt\", a); return { t };",
        ),
    )
    .await
    .unwrap();
    let k = h.kernel.clone();
    let running = tokio::spawn(async move {
        k.syscall(
            pid,
            Syscall::Tool(JitCall::Call {
                name: "copy".into(),
                args: json!({}),
            }),
        )
        .await
    });
    // Parked on the approval of its write: the invocation is recorded, with its reads.
    let pending = common::wait_pending(&h.kernel).await;
    h.kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, primitive, status FROM journal ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (0, "clock.now".to_string(), "read".to_string()),
            (1, "fs.read_text".to_string(), "read".to_string()),
        ]
    );
    h.kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_in_host_retry_of_a_keyed_call_replays_in_a_fresh_isolate() {
    let h = common::host().await;
    let mut config = h.config();
    config.human_mode = HumanMode::FailFast;
    let kernel = Kernel::open(config).await.unwrap();
    let pid = common::spawn_on(&kernel, &["tool:*=create", "fs:out.txt=write:ask"]).await;
    common::install(
        &kernel,
        pid,
        &carried_tool("await libos.fs.writeText(\"out.txt\", \"x\"); return { calls };"),
    )
    .await
    .unwrap();
    kernel
        .syscall(pid, call(json!({"warmup": true})))
        .await
        .unwrap();
    // The keyed call's first run (the isolate's second call) waits for its approval.
    let err = kernel
        .syscall_once(pid, "turn-1", call(json!({})))
        .await
        .unwrap_err();
    let agent_libos::kernel::SyscallError::HumanRequired { request_id, .. } = err else {
        panic!("expected HumanRequired, got {err:?}")
    };
    // The process's isolate serves another call meanwhile: its global moves on.
    kernel
        .syscall(pid, call(json!({"warmup": true})))
        .await
        .unwrap();
    kernel
        .human_respond(&request_id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    // The retry replays from the journal in a fresh isolate: it sees none of the globals
    // the process's isolate kept (a warm isolate would have counted 4).
    let out = kernel
        .syscall_once(pid, "turn-1", call(json!({})))
        .await
        .unwrap();
    assert_eq!(out, json!({"calls": 1}));
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("out.txt")).unwrap(),
        "x"
    );
    kernel.store().flush().await.unwrap();
    let db = common::outside(&h.db_path()).await;
    let carried: i64 = sqlx::query_scalar("SELECT carried FROM invocations WHERE id = 'turn-1'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(carried, 1, "its first run started in a warm isolate");
}
