//! The kernel's side of the worker protocol, driven by a fake worker on a socketpair: what a
//! compromised or broken worker can make the kernel do.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::*;
use crate::isolate::wire::MAX_FROM_WORKER;
use crate::isolate::wire::{FromWorker, ToWorker, WorkerUsage};
use crate::isolate::{BoxFuture, CallContext, CallLimits, CallRequest, SyscallPort, ToolModule};
use crate::providers::worker_process::{self, Reader, Writer};
use crate::util::frame;

/// A syscall request as the worker sends it: JSON text.
fn raw(request: Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&request).unwrap()
}

/// The test's end of a worker socket.
struct UnixStream {
    reader: Reader,
    writer: Writer,
}

/// Records the context and request of every syscall it serves.
#[derive(Default)]
struct RecordingPort {
    served: Mutex<Vec<(i64, String, Value)>>,
}

impl SyscallPort for RecordingPort {
    fn syscall(
        &self,
        ctx: &CallContext,
        call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let call: Value = serde_json::from_str(call.get()).unwrap();
        self.served
            .lock()
            .unwrap()
            .push((ctx.pid, ctx.invocation_id.clone(), call));
        Box::pin(async { Ok(json!("served")) })
    }

    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

fn request(pid: i64, port: Arc<RecordingPort>) -> CallRequest {
    CallRequest {
        module: Arc::new(ToolModule {
            specifier: "tool:t.ts".into(),
            code: "export default { run() { return 1 } }".into(),
            source_map: None,
            hash: "h".into(),
        }),
        args: json!({}),
        limits: CallLimits::default(),
        port,
        ctx: CallContext {
            pid,
            invocation_id: format!("inv-{pid}"),
        },
        start_time_ms: 0,
        random_seed: 0,
    }
}

/// A connection whose other end the test plays.
fn pair(number: u64) -> (Arc<Conn>, UnixStream) {
    pair_bounded(number, MAX_WAITING_TO_WORKER)
}

/// [`pair`], with at most `max_waiting` bytes waiting for the test's end to read.
fn pair_bounded(number: u64, max_waiting: usize) -> (Arc<Conn>, UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let conn = Conn::over_bounded(ours, number, None, None, max_waiting).unwrap();
    let (reader, writer) = worker_process::split(theirs).unwrap();
    (conn, UnixStream { reader, writer })
}

async fn next(worker: &mut UnixStream) -> ToWorker {
    frame::read(&mut worker.reader, frame::MAX_FRAME)
        .await
        .unwrap()
        .expect("a frame")
}

/// Reads frames until the call frame; returns its id.
async fn call_id(worker: &mut UnixStream) -> u64 {
    loop {
        if let ToWorker::Call { call, .. } = next(worker).await {
            return call;
        }
    }
}

async fn say(worker: &mut UnixStream, message: &FromWorker) {
    frame::write(&mut worker.writer, &frame::encode(message).unwrap())
        .await
        .unwrap();
}

fn start_call(
    conn: &Arc<Conn>,
    pid: i64,
    port: Arc<RecordingPort>,
) -> tokio::task::JoinHandle<Option<Result<Value, CallError>>> {
    let conn = conn.clone();
    tokio::spawn(async move { conn.call(pid, &request(pid, port), Mode::Process).await })
}

#[tokio::test]
async fn the_kernel_refuses_a_syscall_attributed_to_a_call_not_running_on_that_worker() {
    let (conn_a, mut worker_a) = pair(1);
    let (conn_b, mut worker_b) = pair(2);
    let (port_a, port_b) = (Arc::default(), Arc::<RecordingPort>::default());
    let running_a = start_call(&conn_a, 7, Arc::clone(&port_a));
    let running_b = start_call(&conn_b, 8, Arc::clone(&port_b));
    let call_a = call_id(&mut worker_a).await;
    let call_b = call_id(&mut worker_b).await;

    // Worker A names the call running on worker B, then a call that never existed.
    for (seq, call) in [(0, call_b), (1, call_a + call_b + 1000)] {
        say(
            &mut worker_a,
            &FromWorker::Syscall {
                call,
                seq,
                request: raw(json!({"primitive": "fs.read_text", "path": "secret"})),
            },
        )
        .await;
        match next(&mut worker_a).await {
            ToWorker::SyscallReply {
                call: got,
                seq: got_seq,
                outcome: Err(error),
            } => {
                assert_eq!((got, got_seq), (call, seq));
                assert_eq!(error["kind"], "PermissionDenied", "{error}");
                assert_eq!(error["resource"], format!("call:{call}"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(port_a.served.lock().unwrap().is_empty());
    assert!(port_b.served.lock().unwrap().is_empty());

    // Its own call is served with the kernel's record of it: pid 7, whatever it says.
    say(
        &mut worker_a,
        &FromWorker::Syscall {
            call: call_a,
            seq: 2,
            request: raw(json!({"primitive": "fs.read_text", "path": "a.txt", "pid": 8})),
        },
    )
    .await;
    match next(&mut worker_a).await {
        ToWorker::SyscallReply {
            seq: 2, outcome, ..
        } => {
            assert_eq!(outcome, Ok(json!("served")))
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    let served = port_a.served.lock().unwrap().clone();
    assert_eq!(served.len(), 1);
    assert_eq!((served[0].0, served[0].1.as_str()), (7, "inv-7"));

    for (worker, call) in [(&mut worker_a, call_a), (&mut worker_b, call_b)] {
        say(
            worker,
            &FromWorker::Done {
                call,
                outcome: Ok(json!(call)),
                usage: WorkerUsage::default(),
            },
        )
        .await;
    }
    assert_eq!(running_a.await.unwrap(), Some(Ok(json!(call_a))));
    assert_eq!(running_b.await.unwrap(), Some(Ok(json!(call_b))));

    // Once its call has ended, the same id is refused too.
    say(
        &mut worker_a,
        &FromWorker::Syscall {
            call: call_a,
            seq: 3,
            request: raw(json!({"primitive": "fs.read_text", "path": "a.txt"})),
        },
    )
    .await;
    assert!(matches!(
        next(&mut worker_a).await,
        ToWorker::SyscallReply {
            seq: 3,
            outcome: Err(_),
            ..
        }
    ));
    assert_eq!(port_a.served.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_that_sends_garbage_oversized_frames_or_dies_fails_only_its_own_calls() {
    let garbage: Vec<u8> = {
        let mut bytes = 5u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{{{{{");
        bytes
    };
    let oversized = ((MAX_FROM_WORKER + 1) as u32).to_le_bytes().to_vec();
    let unknown = frame::encode(&json!({"op": "take_over", "pid": 1})).unwrap();
    for (case, bytes) in [
        ("garbage", Some(garbage)),
        ("oversized", Some(oversized)),
        ("unknown message", Some(unknown)),
        ("death", None),
    ] {
        let (broken, mut broken_worker) = pair(1);
        let (healthy, mut healthy_worker) = pair(2);
        let port = Arc::<RecordingPort>::default();
        let doomed = start_call(&broken, 7, port.clone());
        let other = start_call(&broken, 9, port.clone());
        let fine = start_call(&healthy, 8, port.clone());
        call_id(&mut broken_worker).await;
        call_id(&mut broken_worker).await;
        let fine_id = call_id(&mut healthy_worker).await;
        match bytes {
            Some(bytes) => broken_worker.writer.write_all(&bytes).await.unwrap(),
            None => drop(broken_worker),
        }
        for running in [doomed, other] {
            match running.await.unwrap() {
                Some(Err(CallError::Retry(message))) => {
                    assert!(
                        message.contains("isolate worker 1 stopped"),
                        "{case}: {message}"
                    )
                }
                got => panic!("{case}: expected the call to fail, got {got:?}"),
            }
        }
        assert!(broken.ended().is_some(), "{case}");
        // The broken worker takes no more work; the other one is untouched.
        assert!(broken
            .call(7, &request(7, port.clone()), Mode::Process)
            .await
            .is_none());
        say(
            &mut healthy_worker,
            &FromWorker::Done {
                call: fine_id,
                outcome: Ok(json!("fine")),
                usage: WorkerUsage::default(),
            },
        )
        .await;
        assert_eq!(fine.await.unwrap(), Some(Ok(json!("fine"))), "{case}");
        assert!(healthy.ended().is_none(), "{case}");
    }
}

#[tokio::test]
async fn a_syscall_in_flight_when_the_worker_dies_is_finished_before_the_call_returns() {
    struct SlowPort(Mutex<Vec<&'static str>>);
    impl SyscallPort for SlowPort {
        fn syscall(
            &self,
            _: &CallContext,
            _: Box<serde_json::value::RawValue>,
        ) -> BoxFuture<'static, Result<Value, Value>> {
            self.0.lock().unwrap().push("started");
            Box::pin(async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Ok(json!("done"))
            })
        }
        fn console(&self, _: &CallContext, _: &str, _: &str) {}
    }
    let (conn, mut worker) = pair(1);
    let port = Arc::new(SlowPort(Mutex::default()));
    let mut req = request(7, Arc::default());
    req.port = port.clone();
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
    };
    let call = call_id(&mut worker).await;
    say(
        &mut worker,
        &FromWorker::Syscall {
            call,
            seq: 0,
            request: raw(json!({"primitive": "fs.write_text"})),
        },
    )
    .await;
    while port.0.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    drop(worker);
    let started = std::time::Instant::now();
    assert!(matches!(
        running.await.unwrap(),
        Some(Err(CallError::Retry(_)))
    ));
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn a_call_its_worker_never_answers_is_ended_by_killing_the_worker() {
    let (conn, mut worker) = pair(1);
    let port = Arc::<RecordingPort>::default();
    let mut hung = request(7, port.clone());
    hung.limits.wall_ms = 50;
    let hung = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &hung, Mode::Process).await })
    };
    let bystander = start_call(&conn, 9, port);
    call_id(&mut worker).await;
    call_id(&mut worker).await;
    let started = std::time::Instant::now();
    match hung.await.unwrap() {
        Some(Err(CallError::Limit { limit, .. })) => assert_eq!(limit, "cpu_time"),
        other => panic!("expected cpu_time, got {other:?}"),
    }
    assert!(started.elapsed() >= HANG_GRACE);
    assert!(conn.ended().is_some());
    match bystander.await.unwrap() {
        Some(Err(CallError::Retry(message))) => {
            assert!(message.contains("stopped while the call ran"), "{message}")
        }
        other => panic!("expected the worker's death, got {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_cannot_make_more_syscalls_or_console_output_than_the_call_allows() {
    struct Counting(Mutex<(usize, usize)>);
    impl SyscallPort for Counting {
        fn syscall(
            &self,
            _: &CallContext,
            _: Box<serde_json::value::RawValue>,
        ) -> BoxFuture<'static, Result<Value, Value>> {
            self.0.lock().unwrap().0 += 1;
            Box::pin(async { Ok(json!("served")) })
        }
        fn console(&self, _: &CallContext, _: &str, text: &str) {
            self.0.lock().unwrap().1 += text.len();
        }
    }
    let (conn, mut worker) = pair(1);
    let port = Arc::new(Counting(Mutex::default()));
    let mut req = request(7, Arc::default());
    req.port = port.clone();
    req.limits.max_syscalls = 3;
    req.limits.max_console_bytes = 10;
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
    };
    let call = call_id(&mut worker).await;
    for seq in 0..5 {
        say(
            &mut worker,
            &FromWorker::Console {
                call,
                level: "log".into(),
                text: "12345".into(),
            },
        )
        .await;
        say(
            &mut worker,
            &FromWorker::Syscall {
                call,
                seq,
                request: raw(json!({"primitive": "fs.write_text"})),
            },
        )
        .await;
        match next(&mut worker).await {
            ToWorker::SyscallReply { outcome, .. } if seq < 3 => {
                assert_eq!(outcome, Ok(json!("served")))
            }
            ToWorker::SyscallReply {
                outcome: Err(error),
                ..
            } => assert_eq!(error["limit"], "syscalls"),
            other => panic!("unexpected {other:?}"),
        }
    }
    say(
        &mut worker,
        &FromWorker::Done {
            call,
            outcome: Ok(json!(1)),
            usage: WorkerUsage::default(),
        },
    )
    .await;
    assert_eq!(running.await.unwrap(), Some(Ok(json!(1))));
    assert_eq!(*port.0.lock().unwrap(), (3, 10));
}

/// Records every console line it is given.
#[derive(Default)]
struct ConsolePort(Mutex<Vec<(String, String)>>);

impl SyscallPort for ConsolePort {
    fn syscall(
        &self,
        _: &CallContext,
        _: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        Box::pin(async { Ok(json!("served")) })
    }
    fn console(&self, _: &CallContext, level: &str, text: &str) {
        self.0
            .lock()
            .unwrap()
            .push((level.to_string(), text.to_string()));
    }
}

#[tokio::test]
async fn console_output_is_bounded_whatever_its_level_or_line_count() {
    let (conn, mut worker) = pair(1);
    let port = Arc::new(ConsolePort::default());
    let mut req = request(7, Arc::default());
    req.port = port.clone();
    req.limits.max_console_bytes = 100;
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
    };
    let call = call_id(&mut worker).await;
    let lines = [
        // The byte count must see every byte the kernel keeps, the level's too.
        ("x".repeat(10_000), "y".to_string()),
        ("log\u{1b}[2J".to_string(), "z".to_string()),
    ];
    for (level, text) in lines {
        say(&mut worker, &FromWorker::Console { call, level, text }).await;
    }
    // Empty lines cost nothing to the count but a row each.
    for _ in 0..1_000 {
        let (level, text) = ("log".to_string(), String::new());
        say(&mut worker, &FromWorker::Console { call, level, text }).await;
    }
    for level in ["log", "info", "warn", "error", "debug"] {
        let (level, text) = (level.to_string(), "ok".to_string());
        say(&mut worker, &FromWorker::Console { call, level, text }).await;
    }
    say(
        &mut worker,
        &FromWorker::Done {
            call,
            outcome: Ok(json!(1)),
            usage: WorkerUsage::default(),
        },
    )
    .await;
    assert_eq!(running.await.unwrap(), Some(Ok(json!(1))));
    let kept = port.0.lock().unwrap().clone();
    let levels: Vec<&str> = kept.iter().map(|(level, _)| level.as_str()).collect();
    assert_eq!(
        levels,
        ["log", "info", "warn", "error", "debug"],
        "{kept:?}"
    );
    assert!(kept.iter().all(|(_, text)| text == "ok"), "{kept:?}");
}

/// Serves every syscall after `delay`, counting them.
struct DelayedPort {
    delay: std::time::Duration,
    served: Mutex<usize>,
}

impl SyscallPort for DelayedPort {
    fn syscall(
        &self,
        _: &CallContext,
        _: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        *self.served.lock().unwrap() += 1;
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(json!("served"))
        })
    }
    fn console(&self, _: &CallContext, _: &str, _: &str) {}
}

/// The next syscall reply of `seq`, skipping other frames; `None` after `wait`.
async fn reply_to(worker: &mut UnixStream, seq: u64, wait: u64) -> Option<Result<Value, Value>> {
    let wait = std::time::Duration::from_millis(wait);
    tokio::time::timeout(wait, async {
        loop {
            if let ToWorker::SyscallReply {
                seq: got, outcome, ..
            } = next(worker).await
            {
                if got == seq {
                    return outcome;
                }
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_syscall_sent_after_its_call_was_answered_is_refused_not_held() {
    let (conn, mut worker) = pair(1);
    let port = Arc::new(DelayedPort {
        delay: std::time::Duration::from_millis(1_500),
        served: Mutex::default(),
    });
    let mut req = request(7, Arc::default());
    req.port = port.clone();
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
    };
    let call = call_id(&mut worker).await;
    let syscall = |seq| FromWorker::Syscall {
        call,
        seq,
        request: raw(json!({"primitive": "fs.write_text"})),
    };
    say(&mut worker, &syscall(0)).await;
    say(
        &mut worker,
        &FromWorker::Done {
            call,
            outcome: Ok(json!(1)),
            usage: WorkerUsage::default(),
        },
    )
    .await;
    // The call has its answer; its first syscall is still being served. Whatever comes
    // for it now is refused at once, neither served nor queued.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    say(&mut worker, &syscall(1)).await;
    match reply_to(&mut worker, 1, 1_000).await {
        Some(Err(error)) => assert_eq!(error["kind"], "PermissionDenied", "{error}"),
        other => panic!("expected a refusal at once, got {other:?}"),
    }
    assert_eq!(
        reply_to(&mut worker, 0, 5_000).await,
        Some(Ok(json!("served")))
    );
    assert_eq!(running.await.unwrap(), Some(Ok(json!(1))));
    assert_eq!(*port.served.lock().unwrap(), 1);
}

#[tokio::test]
async fn an_interrupted_call_ends_even_if_its_worker_ignores_the_interrupt() {
    let (conn, mut worker) = pair(1);
    let port = Arc::<RecordingPort>::default();
    let mut req = request(7, port.clone());
    req.limits.wall_ms = 600_000;
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
    };
    let bystander = start_call(&conn, 9, port.clone());
    let call = call_id(&mut worker).await;
    let other = call_id(&mut worker).await;
    conn.interrupt(7);
    // The worker says nothing of the interrupt; the kernel ends the call itself.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the interrupted call ended")
        .unwrap();
    assert!(
        matches!(ended, Some(Err(CallError::Cancelled(_)))),
        "{ended:?}"
    );
    // Its id grants nothing afterwards.
    say(
        &mut worker,
        &FromWorker::Syscall {
            call,
            seq: 0,
            request: raw(json!({"primitive": "fs.write_text"})),
        },
    )
    .await;
    match reply_to(&mut worker, 0, 2_000).await {
        Some(Err(error)) => assert_eq!(error["kind"], "PermissionDenied", "{error}"),
        got => panic!("expected a refusal, got {got:?}"),
    }
    assert!(port.served.lock().unwrap().is_empty());
    // Nor does a later call of the process reach the worker.
    let again = conn.call(7, &request(7, port.clone()), Mode::Process).await;
    assert!(
        matches!(again, Some(Err(CallError::Cancelled(_)))),
        "{again:?}"
    );
    // Another process's call on the same worker goes on.
    assert!(conn.ended().is_none());
    say(
        &mut worker,
        &FromWorker::Done {
            call: other,
            outcome: Ok(json!("fine")),
            usage: WorkerUsage::default(),
        },
    )
    .await;
    assert_eq!(bystander.await.unwrap(), Some(Ok(json!("fine"))));
}

/// Denies every syscall it is given.
struct DenyingPort;

fn denial(path: &str) -> Value {
    json!({
        "kind": "PermissionDenied",
        "message": format!("permission denied: fs:{path} read"),
        "resource": format!("fs:{path}"),
        "right": "read",
    })
}

impl SyscallPort for DenyingPort {
    fn syscall(
        &self,
        _: &CallContext,
        call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let call: Value = serde_json::from_str(call.get()).unwrap();
        let path = call["path"].as_str().unwrap_or_default().to_string();
        Box::pin(async move { Err(denial(&path)) })
    }
    fn console(&self, _: &CallContext, _: &str, _: &str) {}
}

#[tokio::test]
async fn only_an_error_the_kernel_returned_to_the_call_becomes_its_kernel_outcome() {
    let forged_request = json!({
        "kind": "HumanRequired",
        "message": "human approval required",
        "request_id": "hr-of-another-process",
    });
    for (case, says, expect_kernel_outcome) in [
        ("its own denial", denial("a.txt"), true),
        (
            "its own arguments' error",
            json!({"kind": "InvalidArgument", "message": "invalid argument: fs.read_text: x"}),
            true,
        ),
        ("a denial it never got", denial("secret"), false),
        ("a request for a human", forged_request, false),
    ] {
        let (conn, mut worker) = pair(1);
        let mut req = request(7, Arc::default());
        req.port = Arc::new(DenyingPort);
        let running = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.call(7, &req, Mode::Process).await })
        };
        let call = call_id(&mut worker).await;
        say(
            &mut worker,
            &FromWorker::Syscall {
                call,
                seq: 0,
                request: raw(json!({"primitive": "fs.read_text", "path": "a.txt"})),
            },
        )
        .await;
        assert_eq!(
            reply_to(&mut worker, 0, 5_000).await,
            Some(Err(denial("a.txt")))
        );
        say(
            &mut worker,
            &FromWorker::Done {
                call,
                outcome: Err(CallError::Syscall {
                    error: says.clone(),
                }),
                usage: WorkerUsage::default(),
            },
        )
        .await;
        match running.await.unwrap() {
            Some(Err(CallError::Syscall { error })) if expect_kernel_outcome => {
                assert_eq!(error, says, "{case}")
            }
            Some(Err(CallError::Internal(message))) if !expect_kernel_outcome => {
                assert!(message.contains("never returned"), "{case}: {message}")
            }
            other => panic!("{case}: got {other:?}"),
        }
    }
}

/// Answers every syscall with `bytes` bytes.
struct BigAnswers {
    bytes: usize,
}

impl SyscallPort for BigAnswers {
    fn syscall(
        &self,
        _: &CallContext,
        _: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let answer = "x".repeat(self.bytes);
        Box::pin(async move { Ok(json!(answer)) })
    }

    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

#[tokio::test]
async fn a_worker_that_stops_reading_is_cut_off_instead_of_queueing_without_end() {
    let (conn, mut worker) = pair_bounded(9, 4 << 20);
    let mut req = request(5, Arc::default());
    req.port = Arc::new(BigAnswers { bytes: 64 << 10 });
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.call(5, &req, Mode::Process).await })
    };
    let call = call_id(&mut worker).await;
    // Asks for 200 answers of 64 KiB (12.5 MiB) and never reads one.
    for seq in 0..200 {
        say(
            &mut worker,
            &FromWorker::Syscall {
                call,
                seq,
                request: raw(json!({"primitive": "fs.read_text", "path": "big"})),
            },
        )
        .await;
    }
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), running)
        .await
        .expect("the call ends once the worker is cut off")
        .unwrap();
    match outcome {
        Some(Err(CallError::Retry(why))) => assert!(why.contains("stopped"), "{why}"),
        other => panic!("expected the call to fail as its worker was cut off: {other:?}"),
    }
    let why = conn.ended().expect("the connection ended");
    assert!(why.contains("closed") || why.contains("read"), "{why}");
}

#[tokio::test(start_paused = true)]
async fn an_attach_its_worker_never_answers_ends_and_the_worker_is_killed() {
    let (conn, mut worker) = pair(1);
    let attaching = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.attach(7).await })
    };
    // The worker reads the request and never answers.
    assert!(matches!(
        next(&mut worker).await,
        ToWorker::Attach { pid: 7, .. }
    ));
    let started = tokio::time::Instant::now();
    match attaching.await.unwrap() {
        Some(Err(IsolateError::Create(why))) => {
            assert!(why.contains("did not bind an isolate"), "{why}");
            assert!(why.contains("killed"), "{why}");
        }
        other => panic!("expected the attach to fail, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited + std::time::Duration::from_secs(1) >= ATTACH_DEADLINE
            && waited <= ATTACH_DEADLINE + std::time::Duration::from_secs(1),
        "{waited:?}"
    );
    // The worker is ended, nothing waits on it, and it gets no more work.
    assert!(conn.ended().is_some());
    assert_eq!(conn.busy(), 0);
    assert!(conn.attach(8).await.is_none());
    let port = Arc::<RecordingPort>::default();
    assert!(conn
        .call(9, &request(9, port), Mode::Process)
        .await
        .is_none());
}

#[tokio::test]
async fn a_worker_that_reports_a_stuck_call_is_killed_and_only_that_call_is_a_limit() {
    let (conn, mut worker) = pair(1);
    let port = Arc::<RecordingPort>::default();
    let stuck = start_call(&conn, 7, port.clone());
    let stuck_id = call_id(&mut worker).await;
    let bystander = start_call(&conn, 9, port);
    call_id(&mut worker).await;
    say(&mut worker, &FromWorker::Stuck { call: stuck_id }).await;
    match stuck.await.unwrap() {
        Some(Err(CallError::Limit { limit, detail })) => {
            assert_eq!(limit, "cpu_time");
            assert!(detail.contains("was killed"), "{detail}");
        }
        other => panic!("expected cpu_time, got {other:?}"),
    }
    // The other call on that worker fails retryably (the kernel runs it again from its
    // journal), and the worker takes nothing more.
    assert!(matches!(
        bystander.await.unwrap(),
        Some(Err(CallError::Retry(_)))
    ));
    assert!(conn.ended().is_some());
}

#[tokio::test]
async fn a_worker_cannot_end_another_workers_call_by_reporting_it_stuck() {
    let (conn_a, mut worker_a) = pair(1);
    let (conn_b, mut worker_b) = pair(2);
    let on_b = start_call(&conn_b, 8, Arc::default());
    let call_b = call_id(&mut worker_b).await;
    // Worker A names worker B's call: A is the one killed.
    say(&mut worker_a, &FromWorker::Stuck { call: call_b }).await;
    let waited = std::time::Instant::now();
    while conn_a.ended().is_none() {
        assert!(waited.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // B's call goes on and ends with B's own answer.
    assert!(conn_b.ended().is_none());
    say(
        &mut worker_b,
        &FromWorker::Done {
            call: call_b,
            outcome: Ok(json!("fine")),
            usage: WorkerUsage::default(),
        },
    )
    .await;
    assert_eq!(on_b.await.unwrap(), Some(Ok(json!("fine"))));
}
