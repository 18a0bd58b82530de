//! Isolate worker processes through the kernel: tools run outside the kernel's process,
//! workers are recycled before the engine's limits, and a worker that dies fails only the
//! calls it was running.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::isolate::HostConfig;
use agent_libos::kernel::{JitCall, Kernel, Pid, Syscall};
use common::{call, install, propose};
use serde_json::json;

/// The resident memory no worker may reach in these tests: the default replacement cap.
const RSS_CAP: u64 = agent_libos::isolate::WORKER_RSS_BYTES;

const COUNTER: &str = "export const tool = { name: \"counter\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
    export default async function run() { const g = globalThis as any; g.count = (g.count ?? 0) + 1; return { count: g.count }; }\n";

const READS: &str = r#"export const tool = {
  name: "reads",
  description: "reads a file",
  input: { type: "object" },
  output: {},
  tests: [ { name: "reads", args: {}, syscalls: [ { primitive: "fs.read_text", args: { path: "a.txt" }, result: "hi" } ], expect: { text: "hi" } } ],
};
export default async function run(args: any, libos: any) { return { text: await libos.fs.readText("a.txt") }; }
"#;

async fn host_with(isolates: HostConfig) -> common::TestHost {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(dir.path().join("ws/a.txt"), "alpha").unwrap();
    let mut config = common::config(dir.path().join("state.db"), dir.path().join("ws"));
    config.isolates = isolates;
    let kernel = Kernel::open(config).await.unwrap();
    common::TestHost { dir, kernel }
}

/// OS pids of this process's isolate workers.
fn worker_pids() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == me && String::from_utf8_lossy(&cmdline).contains("__isolate-worker") {
            pids.push(pid);
        }
    }
    pids
}

/// Tests here count and kill this process's workers: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn validate(kernel: &Kernel, pid: Pid, id: &str) -> serde_json::Value {
    kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.into() }))
        .await
        .unwrap()
}

#[tokio::test]
async fn tools_run_in_worker_processes_and_their_syscalls_in_the_kernel() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create", "fs:a.txt=read"]).await;
    std::fs::write(h.workspace().join("a.txt"), "alpha").unwrap();
    install(&h.kernel, pid, READS).await.unwrap();
    assert_eq!(
        call(&h.kernel, pid, "reads", json!({})).await.unwrap(),
        json!({"text": "alpha"})
    );
    let stats = h.kernel.isolate_stats();
    assert!(stats.workers_started >= 2, "{stats:?}");
    assert!(stats.runtimes_created >= 2, "{stats:?}");
    // Every worker runs confined: no new privileges, a seccomp filter.
    let workers = worker_pids();
    assert!(!workers.is_empty());
    for pid in workers {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }
}

#[tokio::test]
async fn without_the_runtime_binary_tool_calls_fail_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config = common::config(dir.path().join("state.db"), dir.path().join("ws"));
    config.runtime_binary = Some(dir.path().join("no-such-binary"));
    let kernel = Kernel::open(config).await.unwrap();
    let pid = common::spawn_on(&kernel, &["tool:*=create"]).await;
    let id = propose(&kernel, pid, READS).await;
    let report = validate(&kernel, pid, &id).await;
    assert_eq!(report["ok"], false);
    let error = report["tests"][0]["error"].as_str().unwrap();
    assert!(error.contains("isolate workers: cannot start"), "{error}");
    assert!(error.contains("KernelConfig::runtime_binary"), "{error}");
    assert_eq!(kernel.isolate_stats().workers_started, 0);
}

/// Runtimes created: `validations` declared-test validations, then `processes` processes
/// each registering and calling a tool; workers are replaced every `budget` creations.
async fn churn(validations: usize, processes: usize, budget: u64) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = host_with(HostConfig {
        worker_creations: budget,
        pool_size: 1,
        ..HostConfig::default()
    })
    .await;
    // A process whose isolate keeps a global, until its worker is replaced.
    let keeper = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, keeper, COUNTER).await.unwrap();
    for expected in 1..=2 {
        let got = call(&h.kernel, keeper, "counter", json!({})).await.unwrap();
        assert_eq!(got["count"], expected);
    }

    let tester = h.spawn(&["tool:*=create"]).await;
    let id = propose(&h.kernel, tester, READS).await;
    for n in 0..validations {
        let report = validate(&h.kernel, tester, &id).await;
        assert_eq!(report["ok"], true, "validation {n}: {report}");
    }
    let after_tests = h.kernel.isolate_stats();
    if validations as u64 >= 3 * budget {
        assert!(after_tests.workers_replaced >= 2, "{after_tests:?}");
    }

    for n in 0..processes {
        let pid = h.spawn(&["tool:*=create", "fs:a.txt=read"]).await;
        install(&h.kernel, pid, COUNTER).await.unwrap();
        let got = call(&h.kernel, pid, "counter", json!({})).await;
        assert_eq!(got.unwrap()["count"], 1, "process {n}");
    }
    let stats = h.kernel.isolate_stats();
    assert!(
        stats.workers_replaced >= after_tests.workers_replaced + 2,
        "{stats:?}"
    );
    assert!(
        stats.runtimes_created >= (validations + processes) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.workers_lost, 0, "{stats:?}");
    assert!(stats.max_worker_rss_bytes > 0, "{stats:?}");
    assert!(stats.max_worker_rss_bytes < RSS_CAP, "{stats:?}");
    // The keeper's worker was replaced: its next call gets a fresh isolate.
    let got = call(&h.kernel, keeper, "counter", json!({})).await.unwrap();
    assert_eq!(got["count"], 1);
    // Drained workers were shut down: at most the current process and test workers are
    // left (a worker drained by the last call is replaced at the next one).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(h.kernel.isolate_stats().workers_live <= 2);
    assert!(worker_pids().len() <= 2, "{:?}", worker_pids());
    eprintln!("{stats:?}");
}

#[tokio::test]
async fn workers_are_replaced_along_the_way_and_every_call_succeeds() {
    churn(120, 100, 24).await;
}

#[tokio::test]
#[ignore = "2,000 validations and 1,000 processes: minutes in a debug build on 2 cores"]
async fn two_thousand_runtime_creations_through_the_kernel() {
    churn(2_000, 1_000, agent_libos::isolate::WORKER_CREATIONS).await;
}

const APPEND_THEN_SLEEP: &str = "export const tool = { name: \"append\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
    export default async function run(args: any, libos: any) { await libos.fs.appendText(\"log.txt\", \"x\"); await libos.clock.sleep(1500); return { ok: true }; }\n";

#[tokio::test]
async fn a_call_whose_worker_dies_runs_again_from_its_journal_exactly_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = common::host().await;
    let writer = h.spawn(&["tool:*=create", "fs:log.txt=write"]).await;
    install(&h.kernel, writer, APPEND_THEN_SLEEP).await.unwrap();
    let other = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, other, COUNTER).await.unwrap();
    assert_eq!(
        call(&h.kernel, other, "counter", json!({})).await.unwrap()["count"],
        1
    );
    let running = tokio::spawn({
        let kernel = h.kernel.clone();
        async move { call(&kernel, writer, "append", json!({})).await }
    });
    // Kill every worker while the call sleeps, after its append.
    let log = h.workspace().join("log.txt");
    let waited = std::time::Instant::now();
    while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        assert!(waited.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let killed = worker_pids();
    assert!(!killed.is_empty());
    for pid in killed {
        // SAFETY: signalling a child process of this test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), running)
        .await
        .expect("the call ended")
        .unwrap();
    assert_eq!(outcome.unwrap(), json!({"ok": true}));
    // The append ran once: the second run was answered from the journal.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "x");
    // The host and the other process carry on, in a fresh worker (and a fresh isolate).
    assert_eq!(
        call(&h.kernel, other, "counter", json!({})).await.unwrap()["count"],
        1
    );
    let stats = h.kernel.isolate_stats();
    assert!(stats.workers_lost >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_worker_inherits_no_descriptor_of_the_runtime() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = common::host().await;
    // A descriptor the runtime holds without close-on-exec (one its operator passed in, or
    // a library opened): a worker must not hold it, whatever it is.
    let secret = h.dir.path().join("secret.txt");
    std::fs::write(&secret, "the runtime's").unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: clearing close-on-exec on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let pid = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, pid, COUNTER).await.unwrap();
    call(&h.kernel, pid, "counter", json!({})).await.unwrap();
    let workers = worker_pids();
    assert!(!workers.is_empty());
    for worker in workers {
        for entry in std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .flatten()
        {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            assert_ne!(target, secret, "worker {worker} holds descriptor {entry:?}");
        }
    }
    drop(file);
}
