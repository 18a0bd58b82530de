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

/// The source of a tool like [`READS`] with `tests` declared tests: one validation runs each
/// in a runtime of its own.
fn reads_with_tests(tests: usize) -> String {
    let declared: Vec<String> = (0..tests)
        .map(|n| {
            format!(
                r#"{{ name: "reads {n}", args: {{}}, syscalls: [ {{ primitive: "fs.read_text", args: {{ path: "a.txt" }}, result: "hi" }} ], expect: {{ text: "hi" }} }}"#
            )
        })
        .collect();
    format!(
        r#"export const tool = {{
  name: "reads",
  description: "reads a file",
  input: {{ type: "object" }},
  output: {{}},
  tests: [ {} ],
}};
export default async function run(args: any, libos: any) {{ return {{ text: await libos.fs.readText("a.txt") }}; }}
"#,
        declared.join(",\n    ")
    )
}

/// This process's resident memory (the kernel's, in these tests).
fn own_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: a plain query.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// How many processes a churn starts and calls at once (the kernel's work overlaps the
/// workers').
const STREAMS: usize = 2;

/// How much the kernel's own resident memory may grow over a churn: the runtimes are
/// created and dropped in workers, so the kernel keeps only their records.
const KERNEL_GROWTH_CAP: u64 = 64 << 20;

/// Runtimes created through the kernel: `validations` validations of a tool with `tests`
/// declared tests (one runtime each), then `processes` processes each registering and
/// calling a tool (one runtime each); workers are replaced every `budget` creations. Every
/// call succeeds, workers are replaced along the way, no worker's memory reaches
/// [`RSS_CAP`] and the kernel's grows by less than [`KERNEL_GROWTH_CAP`].
async fn churn(validations: usize, tests: usize, processes: usize, budget: u64) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = std::time::Instant::now();
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
    let kernel_before = own_rss_bytes();

    // One validation at a time (its declared tests share one time limit, and they run on
    // the test worker's one thread); each declared test is one of the validating
    // process's tool calls: a new tester before its budget of 1,000 runs out.
    let source = reads_with_tests(tests);
    let per_tester = 500 / tests.max(1);
    let (mut tester, mut id) = (0, String::new());
    for n in 0..validations {
        if n % per_tester == 0 {
            tester = h.spawn(&["tool:*=create"]).await;
            id = propose(&h.kernel, tester, &source).await;
        }
        let report = validate(&h.kernel, tester, &id).await;
        assert_eq!(report["ok"], true, "validation {n}: {report}");
        assert_eq!(report["tests"].as_array().unwrap().len(), tests);
    }
    let after_tests = h.kernel.isolate_stats();
    if (validations * tests) as u64 >= 3 * budget {
        assert!(after_tests.workers_replaced >= 2, "{after_tests:?}");
    }

    let streams: Vec<_> = (0..STREAMS)
        .map(|stream| {
            let kernel = h.kernel.clone();
            tokio::spawn(async move {
                for n in (stream..processes).step_by(STREAMS) {
                    let pid = common::spawn_on(&kernel, &["tool:*=create", "fs:a.txt=read"]).await;
                    install(&kernel, pid, COUNTER).await.unwrap();
                    let got = call(&kernel, pid, "counter", json!({})).await;
                    assert_eq!(got.unwrap()["count"], 1, "process {n}");
                }
            })
        })
        .collect();
    for stream in streams {
        stream.await.unwrap();
    }
    let stats = h.kernel.isolate_stats();
    // Hot isolates are spread over process workers, at most `hot_per_worker` on each, so
    // holding them spends no worker's budget: more workers are started instead.
    assert!(
        stats.workers_started
            >= after_tests.workers_started + processes / agent_libos::isolate::HOT_PER_WORKER,
        "{stats:?}"
    );
    assert!(
        stats.runtimes_created >= (validations * tests + processes) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.workers_lost, 0, "{stats:?}");
    assert!(stats.max_worker_rss_bytes > 0, "{stats:?}");
    assert!(stats.max_worker_rss_bytes < RSS_CAP, "{stats:?}");
    let kernel_after = own_rss_bytes();
    assert!(
        kernel_after.saturating_sub(kernel_before) < KERNEL_GROWTH_CAP,
        "the kernel grew from {} to {} MiB",
        kernel_before >> 20,
        kernel_after >> 20
    );
    // The keeper's worker only held hot isolates, so it was never replaced: the keeper's
    // globals are still there.
    let got = call(&h.kernel, keeper, "counter", json!({})).await.unwrap();
    assert_eq!(got["count"], 3);
    // Drained workers were shut down: the process workers holding the hot isolates and
    // the current test worker are left (a worker drained by the last call is replaced at
    // the next one).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let hot_workers = (processes + 1).div_ceil(agent_libos::isolate::HOT_PER_WORKER);
    assert!(h.kernel.isolate_stats().workers_live <= hot_workers + 1);
    assert!(
        worker_pids().len() <= hot_workers + 1,
        "{:?}",
        worker_pids()
    );
    eprintln!(
        "{stats:?}; kernel {} -> {} MiB; {:?}",
        kernel_before >> 20,
        kernel_after >> 20,
        started.elapsed()
    );
}

/// 2,000 runtime creations through the kernel with the default replacement budget: 1,600
/// declared-test runs (200 validations of a tool with 8 tests) and 400 processes each
/// running a tool. About 150 s of CPU in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_runtime_creations_through_the_kernel() {
    churn(200, 8, 400, agent_libos::isolate::WORKER_CREATIONS).await;
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

#[cfg(debug_assertions)]
/// Blocks in native code that ignores the engine's termination request (needs the
/// debug-only `HostConfig::test_keep_atomics`).
const BLOCKS: &str = "export const tool = { name: \"blocks\", description: \"d\", input: { type: \"object\" }, output: {}, limits: { cpu_ms: 300 } };\n\
    export default async function run() { const g = globalThis as any; g.Atomics.wait(new Int32Array(new g.SharedArrayBuffer(4)), 0, 0); return { woke: true }; }\n";

#[cfg(debug_assertions)]
/// POSTs before and after a syscall (a sleep long enough to be interrupted).
const POSTS: &str = r#"export const tool = {
  name: "posts",
  description: "d",
  input: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  output: {},
};
export default async function run(args: { url: string }, libos: any) {
  await libos.net.fetch(args.url + "/before", { method: "POST", body: "1" });
  await libos.clock.sleep(1500);
  await libos.net.fetch(args.url + "/after", { method: "POST", body: "2" });
  return { ok: true };
}
"#;

/// A host whose one process worker runs one isolate thread, and whose isolates keep
/// `Atomics` (debug builds only).
#[cfg(debug_assertions)]
async fn host_that_can_block() -> common::TestHost {
    host_with(HostConfig {
        threads: 1,
        pool_size: 1,
        test_keep_atomics: true,
        ..HostConfig::default()
    })
    .await
}

#[cfg(debug_assertions)]
/// Whether process `pid` still runs (a zombie does not).
fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

#[cfg(debug_assertions)]
async fn blocking_call(kernel: &Kernel, pid: Pid) -> agent_libos::kernel::SyscallError {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        call(kernel, pid, "blocks", json!({})),
    )
    .await
    .expect("a call blocked in native code ends");
    let err = outcome.unwrap_err();
    eprintln!("the blocked call ended after {:?}", started.elapsed());
    err
}

#[cfg(debug_assertions)]
#[tokio::test]
async fn a_call_blocked_in_native_code_is_ended_by_killing_its_worker() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = host_that_can_block().await;
    let blocker = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, blocker, BLOCKS).await.unwrap();
    install(&h.kernel, blocker, COUNTER).await.unwrap();
    let other = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, other, COUNTER).await.unwrap();
    assert_eq!(
        call(&h.kernel, other, "counter", json!({})).await.unwrap()["count"],
        1
    );
    let before = worker_pids();
    assert!(!before.is_empty());

    let err = blocking_call(&h.kernel, blocker).await;
    match &err {
        agent_libos::kernel::SyscallError::LimitExceeded { limit, .. } => {
            assert_eq!(limit, "cpu_time", "{err}")
        }
        other => panic!("expected cpu_time, got {other}"),
    }
    // Its worker was killed (the test worker, which ran only validations, was not).
    let waited = std::time::Instant::now();
    while before.iter().filter(|pid| running(**pid)).count() == before.len() {
        assert!(waited.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        before.iter().filter(|pid| !running(**pid)).count(),
        1,
        "{before:?}"
    );
    let stats = h.kernel.isolate_stats();
    assert_eq!(stats.workers_lost, 1, "{stats:?}");
    // The host goes on: the same process and another one call again, in a fresh worker
    // (and fresh isolates).
    assert_eq!(
        call(&h.kernel, blocker, "counter", json!({}))
            .await
            .unwrap()["count"],
        1
    );
    assert_eq!(
        call(&h.kernel, other, "counter", json!({})).await.unwrap()["count"],
        1
    );
    // Blocking again costs another worker, nothing more.
    let again = blocking_call(&h.kernel, blocker).await;
    assert!(
        matches!(&again, agent_libos::kernel::SyscallError::LimitExceeded { limit, .. } if limit == "cpu_time"),
        "{again}"
    );
    assert_eq!(h.kernel.isolate_stats().workers_lost, 2);
}

#[cfg(debug_assertions)]
#[tokio::test]
async fn a_call_interrupted_by_another_process_blocking_its_worker_finishes_exactly_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = common::CountingServer::start();
    let h = host_that_can_block().await;
    let blocker = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, blocker, BLOCKS).await.unwrap();
    let poster = h
        .spawn(&[
            "tool:*=create",
            &format!("net:127.0.0.1:{}=read,write", server.port),
        ])
        .await;
    install(&h.kernel, poster, POSTS).await.unwrap();

    // The keyed call POSTs, then sleeps in a syscall, on the worker's one isolate thread.
    let posting = tokio::spawn({
        let (kernel, url) = (h.kernel.clone(), server.url());
        async move {
            kernel
                .syscall_once(
                    poster,
                    "posts-1",
                    Syscall::Tool(JitCall::Call {
                        name: "posts".into(),
                        args: json!({ "url": url }),
                    }),
                )
                .await
        }
    });
    let waited = std::time::Instant::now();
    while server.count("POST /before") == 0 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Meanwhile another process blocks that thread in native code: the worker is killed.
    let err = blocking_call(&h.kernel, blocker).await;
    assert!(
        matches!(&err, agent_libos::kernel::SyscallError::LimitExceeded { limit, .. } if limit == "cpu_time"),
        "{err}"
    );
    // The keyed call was still running there (its second POST not sent)...
    assert_eq!(server.count("POST /after"), 0);
    // ... and finishes once, from its journal, in a fresh worker: each effect happened once.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), posting)
        .await
        .expect("the interrupted call ended")
        .unwrap();
    assert_eq!(outcome.unwrap(), json!({"ok": true}));
    assert_eq!(server.count("POST /before"), 1);
    assert_eq!(server.count("POST /after"), 1);
    let stats = h.kernel.isolate_stats();
    assert_eq!(stats.workers_lost, 1, "{stats:?}");
    // Asked again under its key, it is answered from its record: nothing is sent.
    let again = h
        .kernel
        .syscall_once(
            poster,
            "posts-1",
            Syscall::Tool(JitCall::Call {
                name: "posts".into(),
                args: json!({ "url": server.url() }),
            }),
        )
        .await
        .unwrap();
    assert_eq!(again, json!({"ok": true}));
    assert_eq!(server.count("POST /before"), 1);
    assert_eq!(server.count("POST /after"), 1);
}
