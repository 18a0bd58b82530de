//! The exactly-once journal: a host that dies mid-invocation is resumed without repeating
//! any journaled effect; approvals bind to exact arguments and survive the restart.
//!
//! A "crash" here is a whole tokio runtime dropped mid-flight with its kernel: every task of
//! that host stops where it is, and only what reached the SQLite file survives.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, ClockCall, FsCall, HumanAnswer, HumanMode, JitCall, Kernel, KernelConfig,
    MemCall, Pid, RequestKind, SpawnOptions, Syscall, SyscallError,
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

async fn spawn(kernel: &Kernel, grants: &[&str]) -> Pid {
    kernel
        .spawn_root(SpawnOptions {
            goal: "journal".into(),
            grants: grants
                .iter()
                .map(|g| CapabilitySpec::parse_grant(g).unwrap())
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn install(kernel: &Kernel, pid: Pid, source: &str) -> String {
    let id = kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Propose {
                source: source.into(),
            }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let report = kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id }))
        .await
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string()
}

fn tool(name: &str, body: &str) -> String {
    format!(
        "import type {{ Libos }} from \"libos\";\nexport const tool = {{ name: \"{name}\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\nexport default async function run(args: any, libos: Libos) {{ {body} }}\n"
    )
}

async fn wait_pending(kernel: &Kernel) -> agent_libos::kernel::HumanRequest {
    for _ in 0..1000 {
        if let Some(r) = kernel
            .human_requests(false)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no pending human request appeared");
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    (dir, ws)
}

/// Runs `phase` on a runtime that is then dropped mid-flight (the crash).
fn crash_after<F, Fut, T>(dir: &Path, mode: HumanMode, phase: F) -> T
where
    F: FnOnce(Kernel) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = runtime();
    let out = rt.block_on(async {
        let kernel = Kernel::open(config(dir, mode)).await.unwrap();
        phase(kernel).await
    });
    rt.shutdown_background();
    out
}

#[test]
fn a_crash_after_an_append_does_not_repeat_it_on_resume() {
    let (dir, ws) = setup();
    let pid = crash_after(dir.path(), HumanMode::Wait, |kernel| async move {
        let pid = spawn(
            &kernel,
            &["tool:*=create", "fs:log.txt=write", "human:operator=write"],
        )
        .await;
        install(&kernel, pid, &tool("step", "await libos.fs.appendText(\"log.txt\", \"x\"); const a = await libos.human.ask(\"continue?\"); return { answer: a.answer };")).await;
        let k = kernel.clone();
        tokio::spawn(async move {
            k.syscall(
                pid,
                Syscall::Tool(JitCall::Call {
                    name: "step".into(),
                    args: json!({}),
                }),
            )
            .await
        });
        wait_pending(&kernel).await;
        pid
    });
    assert_eq!(std::fs::read_to_string(ws.join("log.txt")).unwrap(), "x");
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::Wait))
            .await
            .unwrap();
        // The request raised before the crash is still answerable, and the process waits.
        let pending = kernel.human_requests(false).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            kernel.process(pid).unwrap().status,
            agent_libos::kernel::Status::WaitingHuman
        );
        let k = kernel.clone();
        let resumed = tokio::spawn(async move { k.resume().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        kernel
            .human_respond(
                &pending[0].id,
                HumanAnswer::Answer { text: "yes".into() },
                "alice",
            )
            .await
            .unwrap();
        let report = resumed.await.unwrap().unwrap();
        assert_eq!(report.invocations.len(), 1);
        assert_eq!(
            report.invocations[0].outcome.as_ref().unwrap(),
            &json!({"answer": "yes"})
        );
        // Exactly one append, and a second resume has nothing to do.
        assert_eq!(std::fs::read_to_string(ws.join("log.txt")).unwrap(), "x");
        assert!(kernel.resume().await.unwrap().invocations.is_empty());
        assert_eq!(std::fs::read_to_string(ws.join("log.txt")).unwrap(), "x");
        assert_eq!(
            kernel.process(pid).unwrap().status,
            agent_libos::kernel::Status::Runnable
        );
        assert!(kernel.verify_audit().await.unwrap().is_ok());
    });
}

#[test]
fn a_kill_while_waiting_for_approval_then_restart_then_approve_writes_exactly_once() {
    let (dir, ws) = setup();
    let pid = crash_after(dir.path(), HumanMode::Wait, |kernel| async move {
        let pid = spawn(&kernel, &["tool:*=create", "fs:report.md=write:ask"]).await;
        install(
            &kernel,
            pid,
            &tool(
                "publish",
                "return await libos.fs.writeText(\"report.md\", \"final\");",
            ),
        )
        .await;
        let k = kernel.clone();
        tokio::spawn(async move {
            k.syscall(
                pid,
                Syscall::Tool(JitCall::Call {
                    name: "publish".into(),
                    args: json!({}),
                }),
            )
            .await
        });
        let pending = wait_pending(&kernel).await;
        assert_eq!(pending.kind, RequestKind::Approval);
        assert_eq!(pending.payload["context"]["bytes"], 5);
        assert_eq!(pending.payload["context"]["overwrites"], false);
        pid
    });
    assert!(!ws.join("report.md").exists());
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::Wait))
            .await
            .unwrap();
        let pending = kernel.human_requests(false).await.unwrap();
        assert_eq!(pending.len(), 1);
        let k = kernel.clone();
        let resumed = tokio::spawn(async move { k.resume().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !ws.join("report.md").exists(),
            "nothing is written before the approval"
        );
        kernel
            .human_respond(&pending[0].id, HumanAnswer::ApproveOnce, "alice")
            .await
            .unwrap();
        let report = resumed.await.unwrap().unwrap();
        assert!(report.invocations[0].outcome.is_ok(), "{report:?}");
        assert_eq!(
            std::fs::read_to_string(ws.join("report.md")).unwrap(),
            "final"
        );
        // The approval was used by that call: a new identical call asks again.
        assert!(kernel.human_requests(false).await.unwrap().is_empty());
        let _ = pid;
    });
}

#[test]
fn an_approval_cannot_be_reused_for_different_arguments() {
    let (dir, ws) = setup();
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast)).await.unwrap();
        let pid = spawn(&kernel, &["fs:out.txt=write:ask"]).await;
        let write = |content: &str| Syscall::Fs(FsCall::WriteText { path: "out.txt".into(), content: content.into(), overwrite: true });
        let SyscallError::HumanRequired { request_id, .. } = kernel.syscall(pid, write("approved text")).await.unwrap_err() else {
            panic!("expected HumanRequired")
        };
        kernel.human_respond(&request_id, HumanAnswer::ApproveOnce, "alice").await.unwrap();
        // Different content: the approval does not apply; a new request is raised.
        let err = kernel.syscall(pid, write("something else")).await.unwrap_err();
        assert!(matches!(&err, SyscallError::HumanRequired { request_id: other, .. } if *other != request_id), "{err:?}");
        assert!(!ws.join("out.txt").exists());
        // The exact call it was given for proceeds, once.
        kernel.syscall(pid, write("approved text")).await.unwrap();
        assert_eq!(std::fs::read_to_string(ws.join("out.txt")).unwrap(), "approved text");
        let again = kernel.syscall(pid, write("approved text")).await.unwrap_err();
        assert_eq!(again.kind(), "HumanRequired");
    });
}

#[test]
fn preconditions_are_checked_before_prompting() {
    let (dir, ws) = setup();
    std::fs::write(ws.join("exists.txt"), "old").unwrap();
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let pid = spawn(&kernel, &["fs:**=write:ask"]).await;
        let err = kernel
            .syscall(
                pid,
                Syscall::Fs(FsCall::WriteText {
                    path: "exists.txt".into(),
                    content: "new".into(),
                    overwrite: false,
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "AlreadyExists");
        let err = kernel
            .syscall(
                pid,
                Syscall::Fs(FsCall::WriteText {
                    path: "no/such/dir.txt".into(),
                    content: "x".into(),
                    overwrite: false,
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "NotFound");
        assert!(
            kernel.human_requests(true).await.unwrap().is_empty(),
            "no human was asked"
        );
    });
}

#[test]
fn a_replay_reads_what_the_first_run_read_even_if_the_input_changed() {
    let (dir, ws) = setup();
    std::fs::write(ws.join("in.txt"), "first").unwrap();
    let pid = crash_after(dir.path(), HumanMode::Wait, |kernel| async move {
        let pid = spawn(
            &kernel,
            &["tool:*=create", "fs:**=read,write", "human:operator=write"],
        )
        .await;
        install(
            &kernel,
            pid,
            &tool("copy", "const t = await libos.fs.readText(\"in.txt\"); await libos.fs.appendText(\"out.txt\", t); await libos.human.ask(\"ok?\"); return {};"),
        )
        .await;
        let k = kernel.clone();
        tokio::spawn(async move {
            k.syscall(
                pid,
                Syscall::Tool(JitCall::Call {
                    name: "copy".into(),
                    args: json!({}),
                }),
            )
            .await
        });
        wait_pending(&kernel).await;
        pid
    });
    // The input changes while the host is down: the read before the append is journaled,
    // so the replay sees "first" again and the append matches its journal.
    std::fs::write(ws.join("in.txt"), "second").unwrap();
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let report = kernel.resume().await.unwrap();
        let outcome = &report.invocations[0].outcome;
        let err: &Value = &serde_json::to_value(outcome.as_ref().unwrap_err()).unwrap();
        assert_eq!(
            err["kind"], "HumanRequired",
            "the replay waits on its question: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("out.txt")).unwrap(),
            "first",
            "nothing repeated"
        );
        let _ = pid;
    });
}

#[test]
fn a_keyed_call_runs_at_most_once_per_key() {
    let (dir, ws) = setup();
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let pid = spawn(&kernel, &["tool:*=create", "fs:log.txt=write"]).await;
        install(
            &kernel,
            pid,
            &tool(
                "note",
                "await libos.fs.appendText(\"log.txt\", \"tool\\n\"); return { ok: true };",
            ),
        )
        .await;
        let log = kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(agent_libos::kernel::ObjectSpec {
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
        for _ in 0..3 {
            kernel
                .syscall_once(
                    pid,
                    "step-1",
                    Syscall::Mem(MemCall::Append {
                        id: log.clone(),
                        item: json!("once"),
                    }),
                )
                .await
                .unwrap();
            let out = kernel
                .syscall_once(
                    pid,
                    "step-2",
                    Syscall::Tool(JitCall::Call {
                        name: "note".into(),
                        args: json!({}),
                    }),
                )
                .await
                .unwrap();
            assert_eq!(out, json!({"ok": true}));
        }
        let object = kernel
            .syscall(pid, Syscall::Mem(MemCall::Read { id: log }))
            .await
            .unwrap();
        assert_eq!(object["items"], json!(["once"]));
        assert_eq!(
            std::fs::read_to_string(ws.join("log.txt")).unwrap(),
            "tool\n"
        );
        // Another process cannot use someone else's key.
        let other = spawn(&kernel, &[]).await;
        let err = kernel
            .syscall_once(other, "step-1", Syscall::Clock(ClockCall::Now))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied");
        assert_eq!(
            kernel
                .syscall_once(pid, "bad key!", Syscall::Clock(ClockCall::Now))
                .await
                .unwrap_err()
                .kind(),
            "InvalidArgument"
        );
    });
}

/// A keyed call asked again right after it finished — while its final record is still on
/// its way to the store, and with leases that expire at once — returns its outcome: a
/// finished invocation is never taken over and run again.
#[test]
fn a_finished_keyed_call_is_never_taken_over_and_run_again() {
    let (dir, ws) = setup();
    let rt = runtime();
    rt.block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::FailFast))
            .await
            .unwrap();
        let pid = spawn(&kernel, &["tool:*=create", "fs:log.txt=write"]).await;
        install(
            &kernel,
            pid,
            &tool(
                "note",
                "await libos.fs.appendText(\"log.txt\", `${args.n}\\n`); return { n: args.n };",
            ),
        )
        .await;
        let rounds = 60;
        for n in 0..rounds {
            let key = format!("k-{n}");
            for _ in 0..2 {
                let out = kernel
                    .syscall_once(
                        pid,
                        &key,
                        Syscall::Tool(JitCall::Call {
                            name: "note".into(),
                            args: json!({ "n": n }),
                        }),
                    )
                    .await
                    .unwrap();
                assert_eq!(out, json!({ "n": n }));
            }
        }
        let written = std::fs::read_to_string(ws.join("log.txt")).unwrap();
        let expected: String = (0..rounds).map(|n| format!("{n}\n")).collect();
        assert_eq!(written, expected, "a keyed call ran more than once");
    });
}

#[test]
fn a_reused_key_with_other_arguments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(dir.path().join("ws/a.txt"), "A").unwrap();
    std::fs::write(dir.path().join("ws/b.txt"), "B").unwrap();
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::Wait))
            .await
            .unwrap();
        let pid = spawn(&kernel, &["fs:*=read"]).await;
        let read = |path: &str| Syscall::Fs(FsCall::ReadText { path: path.into() });
        let a = kernel.syscall_once(pid, "k", read("a.txt")).await.unwrap();
        assert_eq!(a, "A");
        // The same key for another call is not answered with the first call's outcome.
        let err = kernel
            .syscall_once(pid, "k", read("b.txt"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "NonDeterminism", "{err:?}");
        assert_eq!(
            kernel.syscall_once(pid, "k", read("a.txt")).await.unwrap(),
            "A"
        );
    });
}

#[test]
fn after_a_rollback_a_keyed_call_is_not_answered_from_before() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(dir.path().join("ws/secret.txt"), "the secret").unwrap();
    runtime().block_on(async {
        let kernel = Kernel::open(config(dir.path(), HumanMode::Wait))
            .await
            .unwrap();
        let pid = spawn(&kernel, &[]).await;
        let ckpt = kernel.checkpoint_create(pid, "start").await.unwrap();
        let grant = kernel
            .grant(
                pid,
                CapabilitySpec::parse_grant("fs:secret.txt=read").unwrap(),
            )
            .await
            .unwrap();
        let read = Syscall::Fs(FsCall::ReadText {
            path: "secret.txt".into(),
        });
        let first = kernel.syscall_once(pid, "turn-1", read.clone()).await;
        assert_eq!(first.unwrap(), "the secret");
        // The operator takes the grant back and rolls the process (its transcript) back.
        kernel.revoke(grant).await.unwrap();
        kernel.checkpoint_rollback(&ckpt.id).await.unwrap();
        assert_eq!(kernel.process(pid).unwrap().generation, 1);
        // The resumed conversation issues the same call at the same place: it is a new call.
        for k in [
            kernel.clone(),
            Kernel::open(config(dir.path(), HumanMode::Wait))
                .await
                .unwrap(),
        ] {
            let err = k
                .syscall_once(pid, "turn-1", read.clone())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), "PermissionDenied", "{err:?}");
        }
    });
}
