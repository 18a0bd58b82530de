//! Tests of the isolate host with a scripted port (the kernel is not involved).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::jit::transpile::transpile;
use agent_libos_ops::BoxFuture;

type Script = dyn Fn(&Value) -> Result<Value, Value> + Send + Sync;

/// Records every syscall and console line; answers syscalls with a script.
struct TestPort {
    calls: Mutex<Vec<(i64, Value)>>,
    console: Mutex<Vec<(String, String)>>,
    script: Box<Script>,
    delay: Duration,
}

impl TestPort {
    fn new(script: impl Fn(&Value) -> Result<Value, Value> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(TestPort {
            calls: Mutex::default(),
            console: Mutex::default(),
            script: Box::new(script),
            delay: Duration::ZERO,
        })
    }

    fn ok() -> Arc<Self> {
        Self::new(|_| Ok(json!("ok")))
    }

    fn calls(&self) -> Vec<(i64, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

impl SyscallPort for TestPort {
    fn syscall(
        &self,
        ctx: &CallContext,
        call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let call: Value = serde_json::from_str(call.get()).unwrap();
        let answer = (self.script)(&call);
        self.calls.lock().unwrap().push((ctx.pid, call));
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }

    fn console(&self, _ctx: &CallContext, level: &str, text: &str) {
        self.console
            .lock()
            .unwrap()
            .push((level.to_string(), text.to_string()));
    }
}

fn host() -> IsolateHost {
    host_with(2)
}

fn host_with(threads: usize) -> IsolateHost {
    IsolateHost::start(HostConfig {
        threads,
        pool_size: 1,
        ..HostConfig::default()
    })
}

fn module(name: &str, source: &str) -> Arc<ToolModule> {
    let out = transpile(name, source).expect("transpiles");
    Arc::new(ToolModule {
        specifier: format!("tool:{name}@{}.ts", &out.hash[..12]),
        code: out.code,
        source_map: out.source_map,
        hash: out.hash,
    })
}

fn request(pid: i64, module: &Arc<ToolModule>, args: Value, port: Arc<TestPort>) -> CallRequest {
    CallRequest {
        module: module.clone(),
        args,
        limits: CallLimits::default(),
        port,
        ctx: CallContext {
            pid,
            invocation_id: format!("inv-{pid}"),
        },
        start_time_ms: 1_700_000_000_000,
        random_seed: 42,
    }
}

async fn run(host: &IsolateHost, pid: i64, source: &str, args: Value) -> Result<Value, CallError> {
    let m = module("t", source);
    host.call(pid, request(pid, &m, args, TestPort::ok())).await
}

fn limit_of(result: Result<Value, CallError>) -> String {
    match result {
        Err(CallError::Limit { limit, .. }) => limit,
        other => panic!("expected a limit, got {other:?}"),
    }
}

const TRIVIAL: &str =
    "export default { run(args: { n: number }) { return { twice: args.n * 2 }; } };";

#[tokio::test]
async fn trivial_tool_returns_its_value() {
    let host = host();
    host.attach(1).await.unwrap();
    let out = run(&host, 1, TRIVIAL, json!({"n": 21})).await.unwrap();
    assert_eq!(out, json!({"twice": 42}));
    // A plain default function and `undefined` results work too.
    let out = run(
        &host,
        1,
        "export default async () => undefined;",
        json!(null),
    )
    .await;
    assert_eq!(out.unwrap(), Value::Null);
}

#[tokio::test]
async fn a_module_is_evaluated_once_per_hash() {
    let host = host();
    let m = module(
        "count",
        "globalThis.loads = (globalThis.loads ?? 0) + 1;\n\
         export default { run() { return globalThis.loads; } };",
    );
    for _ in 0..3 {
        let out = host
            .call(5, request(5, &m, json!({}), TestPort::ok()))
            .await;
        assert_eq!(out.unwrap(), json!(1));
    }
}

#[tokio::test]
async fn two_pids_do_not_share_globals() {
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        pool_size: 2,
        ..HostConfig::default()
    });
    let set = "export default { run() { globalThis.x = 7; return 1; } };";
    let get = "export default { run() { return typeof globalThis.x === 'undefined' ? 'absent' : globalThis.x; } };";
    run(&host, 1, set, json!({})).await.unwrap();
    assert_eq!(run(&host, 1, get, json!({})).await.unwrap(), json!(7));
    assert_eq!(
        run(&host, 2, get, json!({})).await.unwrap(),
        json!("absent")
    );
}

#[tokio::test]
async fn a_syscall_reaches_the_port_with_the_pid_and_the_wire_form() {
    let host = host();
    let port = TestPort::new(|call| match call["primitive"].as_str() {
        Some("fs.read_text") => Ok(json!("hello\nworld\n")),
        _ => Ok(Value::Null),
    });
    let m = module(
        "lines",
        "export default { async run(args: { path: string }, libos: any) {\n\
           const text = await libos.fs.readText(args.path);\n\
           await libos.fs.writeText('out.txt', 'x', { overwrite: true });\n\
           await libos.proc.wait(9, { timeoutMs: 5 });\n\
           return text.split('\\n').length - 1;\n\
         } };",
    );
    let mut req = request(7, &m, json!({"path": "a.txt"}), port.clone());
    req.args = json!({"path": "a.txt", "pid": 99});
    let out = host.call(7, req).await.unwrap();
    assert_eq!(out, json!(2));
    assert_eq!(
        port.calls(),
        vec![
            (7, json!({"primitive": "fs.read_text", "path": "a.txt"})),
            (
                7,
                json!({"primitive": "fs.write_text", "path": "out.txt", "content": "x", "overwrite": true})
            ),
            (
                7,
                json!({"primitive": "proc.wait", "pid": 9, "timeout_ms": 5})
            ),
        ]
    );
}

#[tokio::test]
async fn a_port_error_becomes_permission_denied() {
    let host = host();
    let denied = json!({
        "kind": "PermissionDenied",
        "message": "permission denied: read on fs:secret.txt",
        "resource": "fs:secret.txt",
        "right": "read",
    });
    let answer = denied.clone();
    let port = TestPort::new(move |_| Err(answer.clone()));
    let caught = module(
        "caught",
        "export default { async run(_a: unknown, libos: any) {\n\
           try { await libos.fs.readText('secret.txt'); return 'no'; }\n\
           catch (e) { return [e instanceof PermissionDenied, e instanceof libos.LibosError,\n\
                              e instanceof Error, e.kind, e.resource, e.right, e.name]; }\n\
         } };",
    );
    let out = host
        .call(3, request(3, &caught, json!({}), port.clone()))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!([
            true,
            true,
            true,
            "PermissionDenied",
            "fs:secret.txt",
            "read",
            "PermissionDenied"
        ])
    );

    let uncaught = module(
        "uncaught",
        "export default { async run(_a: unknown, libos: any) { return await libos.fs.readText('secret.txt'); } };",
    );
    match host.call(3, request(3, &uncaught, json!({}), port)).await {
        Err(CallError::Syscall { error }) => assert_eq!(error, denied),
        other => panic!("expected the port's error, got {other:?}"),
    }
}

#[tokio::test]
async fn deno_and_the_ops_are_unreachable() {
    let host = host();
    let probe = "export default { async run() {\n\
        const g: any = globalThis;\n\
        let dynamicImport = 'resolved';\n\
        try { await import('ext:core/ops'); } catch (_) { dynamicImport = 'refused'; }\n\
        return [typeof g.Deno, typeof g.__bootstrap, typeof g.__infra, dynamicImport,\n\
                Object.getOwnPropertyNames(g).filter((k) => /deno|op_|bootstrap|infra/i.test(k))];\n\
      } };";
    let out = run(&host, 1, probe, json!({})).await.unwrap();
    assert_eq!(
        out,
        json!(["undefined", "undefined", "undefined", "refused", []])
    );
    let direct = "export default { run() { return (globalThis as any).Deno.core.ops; } };";
    assert!(matches!(
        run(&host, 1, direct, json!({})).await,
        Err(CallError::Threw { .. })
    ));
    let import = "import { op_fs_read_text } from 'ext:core/ops';\nexport default { run() { return typeof op_fs_read_text; } };";
    assert!(matches!(
        run(&host, 1, import, json!({})).await,
        Err(CallError::Module(_))
    ));
}

#[tokio::test]
async fn an_infinite_loop_hits_the_time_limit_and_the_next_call_works() {
    let host = host();
    let m = module("spin", "export default { run() { while (true) {} } };");
    let mut req = request(1, &m, json!({}), TestPort::ok());
    req.limits.cpu_ms = 200;
    let started = Instant::now();
    assert_eq!(limit_of(host.call(1, req).await), "cpu_time");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 1})).await.unwrap(),
        json!({"twice": 2})
    );
}

#[tokio::test]
async fn an_async_infinite_loop_hits_the_time_limit() {
    let host = host();
    let m = module(
        "aspin",
        "export default { async run() { while (true) { await Promise.resolve(); } } };",
    );
    let mut req = request(1, &m, json!({}), TestPort::ok());
    req.limits.cpu_ms = 200;
    assert_eq!(limit_of(host.call(1, req).await), "cpu_time");
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 2})).await.unwrap(),
        json!({"twice": 4})
    );
}

#[tokio::test]
async fn time_waiting_for_syscalls_does_not_count() {
    let host = host();
    let port = Arc::new(TestPort {
        calls: Mutex::default(),
        console: Mutex::default(),
        script: Box::new(|_| Ok(Value::Null)),
        delay: Duration::from_millis(150),
    });
    let m = module(
        "sleepy",
        "export default { async run(_a: unknown, libos: any) {\n\
           for (let i = 0; i < 3; i++) await libos.clock.sleep(150);\n\
           return 'woke';\n\
         } };",
    );
    let mut req = request(1, &m, json!({}), port);
    req.limits.cpu_ms = 200;
    assert_eq!(host.call(1, req).await.unwrap(), json!("woke"));
}

#[tokio::test]
async fn an_allocation_bomb_hits_the_memory_limit() {
    let host = host();
    let m = module(
        "bomb",
        "export default { run() { const keep: any[] = [];\n\
           while (true) { keep.push(new Array(100000).fill(keep.length)); } } };",
    );
    let mut req = request(1, &m, json!({}), TestPort::ok());
    req.limits.heap_bytes = 32 * 1024 * 1024;
    req.limits.cpu_ms = 20_000;
    assert_eq!(limit_of(host.call(1, req).await), "memory");
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 3})).await.unwrap(),
        json!({"twice": 6})
    );
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_limit() {
    let host = host();
    let m = module(
        "deep",
        "function f(): number { return f() + 1; }\nexport default { run() { return f(); } };",
    );
    let req = request(1, &m, json!({}), TestPort::ok());
    assert_eq!(limit_of(host.call(1, req).await), "stack");
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 4})).await.unwrap(),
        json!({"twice": 8})
    );
}

#[tokio::test]
async fn a_syscall_flood_hits_the_syscall_limit() {
    let host = host();
    let port = TestPort::ok();
    let m = module(
        "flood",
        "export default { async run(_a: unknown, libos: any) {\n\
           for (let i = 0; i < 100; i++) { try { await libos.clock.now(); } catch (e) { if (i < 10) throw e; } }\n\
           return 'done';\n\
         } };",
    );
    let mut req = request(1, &m, json!({}), port.clone());
    req.limits.max_syscalls = 10;
    assert_eq!(limit_of(host.call(1, req).await), "syscalls");
    assert_eq!(port.calls().len(), 10);
}

#[tokio::test]
async fn a_huge_result_hits_the_result_size_limit() {
    let host = host();
    let m = module(
        "big",
        "export default { run() { return 'x'.repeat(100 * 1000 * 1000); } };",
    );
    let mut req = request(1, &m, json!({}), TestPort::ok());
    req.limits.heap_bytes = 1024 * 1024 * 1024;
    req.limits.cpu_ms = 20_000;
    assert_eq!(limit_of(host.call(1, req).await), "result_size");
    // Multi-byte text just over the limit in bytes (but not in UTF-16 units) is caught too.
    let m = module(
        "wide",
        "export default { run() { return 'é'.repeat(600 * 1024); } };",
    );
    let mut req = request(2, &m, json!({}), TestPort::ok());
    req.limits.cpu_ms = 20_000;
    assert_eq!(limit_of(host.call(2, req).await), "result_size");
}

#[tokio::test]
async fn a_console_flood_hits_the_console_limit() {
    let host = host();
    let port = TestPort::ok();
    let m = module(
        "chatty",
        "export default { run() { for (let i = 0; i < 100000; i++) { console.log('line', i); } return 1; } };",
    );
    let mut req = request(1, &m, json!({}), port.clone());
    req.limits.max_console_bytes = 1000;
    assert_eq!(limit_of(host.call(1, req).await), "console_output");
    let written: usize = port
        .console
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.len())
        .sum();
    assert_eq!(written, 1000);
}

#[tokio::test]
async fn console_goes_to_the_port() {
    let host = host();
    let port = TestPort::ok();
    let m = module(
        "talk",
        "export default { run() { console.log('hi', 1, { a: 2 }); console.error('bad'); return 0; } };",
    );
    host.call(1, request(1, &m, json!({}), port.clone()))
        .await
        .unwrap();
    assert_eq!(
        *port.console.lock().unwrap(),
        vec![
            ("log".to_string(), "hi 1 {\"a\":2}".to_string()),
            ("error".to_string(), "bad".to_string())
        ]
    );
}

#[tokio::test]
async fn a_thrown_error_points_at_the_typescript_line() {
    let host = host();
    let source = "interface Args {\n  n: number;\n}\n\ntype Out = number;\n\nexport default {\n  run(args: Args): Out {\n    throw new Error('boom ' + args.n);\n  },\n};\n";
    match run(&host, 1, source, json!({"n": 1})).await {
        Err(CallError::Threw { message, stack }) => {
            assert!(message.contains("boom 1"), "{message}");
            assert!(
                stack.contains(":9:"),
                "stack should point at TS line 9: {stack}"
            );
        }
        other => panic!("expected Threw, got {other:?}"),
    }
}

#[tokio::test]
async fn date_and_random_are_deterministic_per_seed() {
    let host = host();
    let m = module(
        "dice",
        "export default { run() { return [Date.now(), new Date().getTime(), Math.random(), Math.random(),\n\
           new Date(0).getTime(), new Date() instanceof Date]; } };",
    );
    let call = |pid: i64, seed: u64| {
        let mut req = request(pid, &m, json!({}), TestPort::ok());
        req.random_seed = seed;
        host.call(pid, req)
    };
    let a = call(1, 7).await.unwrap();
    let b = call(2, 7).await.unwrap();
    let c = call(1, 8).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a[2], c[2]);
    assert_eq!(a[0], json!(1_700_000_000_000i64));
    assert_eq!(a[1], json!(1_700_000_000_001i64));
    assert_eq!(a[4], json!(0));
    assert_eq!(a[5], json!(true));
    let r = a[2].as_f64().unwrap();
    assert!((0.0..1.0).contains(&r));
}

#[tokio::test]
async fn an_ephemeral_call_runs_in_a_fresh_isolate() {
    let host = host();
    let set = "export default { run() { globalThis.y = 1; return 1; } };";
    let get = "export default { run() { return typeof (globalThis as any).y; } };";
    let (s, g) = (module("s", set), module("g", get));
    host.run_ephemeral(request(1, &s, json!({}), TestPort::ok()))
        .await
        .unwrap();
    let out = host
        .run_ephemeral(request(1, &g, json!({}), TestPort::ok()))
        .await;
    assert_eq!(out.unwrap(), json!("undefined"));
}

#[tokio::test]
async fn a_flood_of_calls_waits_for_room_and_none_is_dropped() {
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        pool_size: 1,
        max_queued: 3,
        ..HostConfig::default()
    });
    let busy = module(
        "busy",
        "export default { run(args: { n: number }) { let x = 0; for (let i = 0; i < 20000; i++) { x += i % 7; } return { n: args.n, x }; } };",
    );
    let calls: Vec<_> = (1..=24)
        .map(|pid| {
            let (host, busy) = (host.clone(), busy.clone());
            tokio::spawn(async move {
                let req = request(pid, &busy, json!({"n": pid}), TestPort::ok());
                host.call(pid, req).await
            })
        })
        .collect();
    let mut most = 0;
    while calls.iter().any(|call| !call.is_finished()) {
        most = most.max(host.queued());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(most <= 3, "{most} commands queued on a worker bounded at 3");
    assert!(most >= 2, "the flood never queued: {most}");
    for (pid, call) in (1..=24).zip(calls) {
        assert_eq!(call.await.unwrap().unwrap()["n"], json!(pid));
    }
    assert_eq!(host.queued(), 0);
}

#[tokio::test]
async fn the_call_context_must_match_the_pid() {
    let host = host();
    let m = module("t", TRIVIAL);
    let req = request(2, &m, json!({"n": 1}), TestPort::ok());
    assert!(matches!(
        host.call(1, req).await,
        Err(CallError::Internal(_))
    ));
}

// ---- the boundary: time that cannot be paused ---------------------------------------------

/// A port whose `clock.sleep` waits for real (the tool's unawaited sleep stays pending).
fn sleeping_port() -> Arc<TestPort> {
    Arc::new(TestPort {
        calls: Mutex::default(),
        console: Mutex::default(),
        script: Box::new(|_| Ok(Value::Null)),
        delay: Duration::from_secs(30),
    })
}

#[tokio::test]
async fn an_unawaited_sleep_does_not_pause_the_cpu_limit() {
    let host = host();
    let spin = module(
        "sleepspin",
        "export default { run(_a: unknown, libos: any) { libos.clock.sleep(30000); for (;;) {} } };",
    );
    let mut req = request(1, &spin, json!({}), sleeping_port());
    req.limits.cpu_ms = 300;
    let started = Instant::now();
    assert_eq!(limit_of(host.call(1, req).await), "cpu_time");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Heavy awaited work while a long sleep is pending counts too.
    let heavy = module(
        "sleepwork",
        "export default { async run(_a: unknown, libos: any) {\n\
           libos.clock.sleep(30000);\n\
           for (;;) { for (let i = 0; i < 100000; i++) {} await libos.clock.now(); }\n\
         } };",
    );
    let port = Arc::new(TestPort {
        calls: Mutex::default(),
        console: Mutex::default(),
        script: Box::new(|_| Ok(json!(1))),
        delay: Duration::ZERO,
    });
    let mut req = request(1, &heavy, json!({}), port);
    req.limits.cpu_ms = 300;
    req.limits.max_syscalls = u64::MAX;
    assert_eq!(limit_of(host.call(1, req).await), "cpu_time");
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 5})).await.unwrap(),
        json!({"twice": 10})
    );
}

#[tokio::test]
async fn a_stuck_call_does_not_stall_another_process_on_its_thread() {
    // One lane: the second process waits only until the first one's limit stops it.
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        pool_size: 2,
        ..HostConfig::default()
    });
    let spin = module(
        "sleepspin",
        "export default { run(_a: unknown, libos: any) { libos.clock.sleep(30000); for (;;) {} } };",
    );
    let mut req = request(1, &spin, json!({}), sleeping_port());
    req.limits.cpu_ms = 1_000;
    let stuck = tokio::spawn({
        let host = host.clone();
        async move { host.call(1, req).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(
        run(&host, 2, TRIVIAL, json!({"n": 1})).await.unwrap(),
        json!({"twice": 2})
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(limit_of(stuck.await.unwrap()), "cpu_time");

    // Two lanes, both processes on the first: the second moves to the other lane at once,
    // although the first may run for a minute.
    let host = host_with(2);
    for pid in [1, 2, 3] {
        host.attach(pid).await.unwrap();
    }
    let mut req = request(1, &spin, json!({}), sleeping_port());
    req.limits.cpu_ms = 60_000;
    let stuck = tokio::spawn({
        let host = host.clone();
        async move { host.call(1, req).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for n in 0..3 {
        assert_eq!(
            run(&host, 3, TRIVIAL, json!({"n": n})).await.unwrap(),
            json!({"twice": n * 2})
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    host.interrupt(1);
    assert!(matches!(stuck.await.unwrap(), Err(CallError::Cancelled(_))));
}

/// A port whose syscalls hold the worker thread inside the call's poll, as a native call
/// the engine cannot interrupt would.
struct BlockingPort(Duration);

impl SyscallPort for BlockingPort {
    fn syscall(
        &self,
        _ctx: &CallContext,
        _call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let hold = self.0;
        Box::pin(async move {
            std::thread::sleep(hold);
            Ok(Value::Null)
        })
    }

    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

#[tokio::test]
async fn a_stop_ends_the_call_even_when_the_engine_never_returns() {
    let host = host_with(1);
    let m = module(
        "held",
        "export default { async run(_a: unknown, libos: any) { await libos.clock.now(); return 1; } };",
    );
    let mut req = request(1, &m, json!({}), TestPort::ok());
    req.port = Arc::new(BlockingPort(Duration::from_secs(20)));
    req.limits.wall_ms = 300;
    let started = Instant::now();
    let outcome = host.call(1, req).await;
    assert!(
        matches!(&outcome, Err(CallError::Limit { limit, .. }) if limit == "wall_clock" || limit == "cpu_time"),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The held thread retired; the process and others are served by its replacement.
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 2})).await.unwrap(),
        json!({"twice": 4})
    );
    assert_eq!(
        run(&host, 2, TRIVIAL, json!({"n": 3})).await.unwrap(),
        json!({"twice": 6})
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(host.stats().threads_retired >= 1, "{:?}", host.stats());
}

#[tokio::test]
async fn a_call_has_a_wall_clock_cap() {
    let host = host();
    let m = module(
        "waits",
        "export default { async run(_a: unknown, libos: any) { await libos.clock.sleep(30000); return 1; } };",
    );
    let mut req = request(1, &m, json!({}), sleeping_port());
    req.limits.wall_ms = 300;
    let started = Instant::now();
    assert_eq!(limit_of(host.call(1, req).await), "wall_clock");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        run(&host, 1, TRIVIAL, json!({"n": 2})).await.unwrap(),
        json!({"twice": 4})
    );
}

#[tokio::test]
async fn a_promise_chain_loop_is_terminated() {
    let host = host();
    for (name, source) in [
        (
            "chain",
            "export default { async run() { const loop = (): any => Promise.resolve().then(loop); loop(); await new Promise(() => {}); } };",
        ),
        (
            "thenable",
            "export default { async run() { const t: any = { then(r: any) { Promise.resolve().then(() => r(t)); } }; await t; } };",
        ),
        (
            "fanout",
            "export default { async run() { const loop = (): any => { Promise.resolve().then(loop); Promise.resolve().then(loop); }; loop(); await new Promise(() => {}); } };",
        ),
    ] {
        let m = module(name, source);
        let mut req = request(1, &m, json!({}), TestPort::ok());
        req.limits.cpu_ms = 300;
        eprintln!("case {name}");
        let started = Instant::now();
        assert_eq!(limit_of(host.call(1, req).await), "cpu_time", "{name}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert_eq!(
            run(&host, 1, TRIVIAL, json!({"n": 3})).await.unwrap(),
            json!({"twice": 6}),
            "{name}"
        );
    }
}

#[tokio::test]
async fn cancelling_a_process_stops_its_running_call() {
    let host = host();
    let m = module("spin", "export default { run() { while (true) {} } };");
    let mut req = request(4, &m, json!({}), TestPort::ok());
    req.limits.cpu_ms = 60_000;
    let running = tokio::spawn({
        let host = host.clone();
        async move { host.call(4, req).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    host.interrupt(4);
    assert!(matches!(
        running.await.unwrap(),
        Err(CallError::Cancelled(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A later call of the cancelled process is stopped too (one still on its way to a
    // worker when the signal came); other processes are not.
    let m = module("t", TRIVIAL);
    let req = request(4, &m, json!({"n": 1}), TestPort::ok());
    assert!(matches!(
        host.call(4, req).await,
        Err(CallError::Cancelled(_))
    ));
    assert_eq!(
        run(&host, 5, TRIVIAL, json!({"n": 1})).await.unwrap(),
        json!({"twice": 2})
    );
}

// ---- the boundary: the engine's surface -----------------------------------------------------

#[tokio::test]
async fn atomics_wait_is_not_available() {
    let host = host();
    let probe = "export default { run() {\n\
        const g: any = globalThis;\n\
        let waited = 'threw';\n\
        try { const A = g.Atomics; A.wait(new Int32Array(new g.SharedArrayBuffer(4)), 0, 0); waited = 'waited'; } catch (_) {}\n\
        return [typeof g.Atomics, waited, Object.getOwnPropertyNames(g).filter((k) => /atomic/i.test(k))];\n\
      } };";
    let out = run(&host, 1, probe, json!({})).await.unwrap();
    assert_eq!(out, json!(["undefined", "threw", []]));
}

#[tokio::test]
async fn shared_array_buffer_is_not_available() {
    let host = host();
    let probe = "export default { run() {\n\
        const g: any = globalThis;\n\
        let viaWasm = 'absent';\n\
        try { viaWasm = typeof new g.WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer; } catch (_) {}\n\
        return [typeof g.SharedArrayBuffer, typeof g.WebAssembly, viaWasm];\n\
      } };";
    let out = run(&host, 1, probe, json!({})).await.unwrap();
    assert_eq!(out, json!(["undefined", "undefined", "absent"]));
}

#[tokio::test]
async fn eval_is_unavailable_at_run_time() {
    let host = host();
    let attempts = [
        "return (globalThis as any)['ev' + 'al']('1 + 1');",
        "const e = (globalThis as any)['ev' + 'al']; return e('1 + 1');",
        "return Reflect.construct((function () {}).constructor, ['return 1'])();",
        "return new ((function () {}).constructor as any)('return 1')();",
        "const F: any = Object.getPrototypeOf(async function () {})['constr' + 'uctor']; return await F('return 1')();",
        "const G: any = Object.getPrototypeOf(function* () {}).constructor; return G('yield 1')().next().value;",
        "const H: any = Object.getPrototypeOf(async function* () {}).constructor; return (await H('yield 1')().next()).value;",
        "return (globalThis as any)['Func' + 'tion']('return 1')();",
        "return Function.prototype.constructor.call(null, 'return 1')();",
        "return ((() => 1).constructor as any).apply(null, ['return 1'])();",
        "return Reflect.construct(Object.getPrototypeOf(class {}).constructor, ['return 1'])();",
    ];
    for (i, body) in attempts.iter().enumerate() {
        let source = format!(
            "export default {{ async run() {{ try {{ {body} }} catch (e) {{ return ['refused', (e as any).name]; }} }} }};"
        );
        let out = run(&host, 1, &source, json!({})).await.unwrap();
        assert_eq!(out, json!(["refused", "EvalError"]), "attempt {i}: {body}");
    }
    // The constructors still answer `instanceof`.
    let shapes = "export default { run() { return [(() => 1) instanceof Function, (async () => 1) instanceof Function, typeof Function.prototype.call]; } };";
    assert_eq!(
        run(&host, 1, shapes, json!({})).await.unwrap(),
        json!([true, true, "function"])
    );
}

/// Every name on `globalThis` after the bootstrap (the documented ones only).
const GLOBALS: &[&str] = &[
    "AggregateError",
    "Array",
    "ArrayBuffer",
    "AsyncDisposableStack",
    "BigInt",
    "BigInt64Array",
    "BigUint64Array",
    "Boolean",
    "DataView",
    "Date",
    "DisposableStack",
    "Error",
    "EvalError",
    "Float16Array",
    "Float32Array",
    "Float64Array",
    "Function",
    "HumanRejected",
    "Infinity",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "InvalidArgument",
    "Iterator",
    "JSON",
    "LibosError",
    "LimitExceeded",
    "Map",
    "Math",
    "NaN",
    "NotFound",
    "Number",
    "Object",
    "PermissionDenied",
    "Promise",
    "Proxy",
    "RangeError",
    "ReferenceError",
    "Reflect",
    "RegExp",
    "Set",
    "String",
    "SuppressedError",
    "Symbol",
    "SyntaxError",
    "SyscallError",
    "TypeError",
    "URIError",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "WeakMap",
    "WeakSet",
    "console",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "eval",
    "globalThis",
    "isFinite",
    "isNaN",
    "parseFloat",
    "parseInt",
    "undefined",
    "unescape",
    "__libos_gate__",
];

#[tokio::test]
async fn the_global_object_holds_only_documented_names() {
    let host = host();
    let probe = r#"export default { run() {
        const g: any = globalThis;
        const names = Object.getOwnPropertyNames(g).sort();
        const symbols = Object.getOwnPropertySymbols(g).length;
        // Everything reachable from the global object: no engine or host name anywhere,
        // every object frozen.
        const seen = new Set<any>();
        const queue: any[] = [g];
        const suspicious: string[] = [];
        const mutable: string[] = [];
        while (queue.length > 0) {
            const o = queue.pop();
            if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) continue;
            seen.add(o);
            if (o !== g && !Object.isFrozen(o)) mutable.push(String(o.name ?? Object.prototype.toString.call(o)));
            queue.push(Object.getPrototypeOf(o));
            for (const key of Reflect.ownKeys(o)) {
                const name = String(key);
                if (/deno|v8x|bootstrap|infra|intrinsic|snapshot|^op_|core/i.test(name)) suspicious.push(name);
                const d: any = Object.getOwnPropertyDescriptor(o, key);
                queue.push(d.value, d.get, d.set);
            }
        }
        return { names, symbols, suspicious, mutable: mutable.slice(0, 5), proto: Object.getPrototypeOf(g) === Object.prototype,
                 date: [Date.now(), Date.now()], random: Math.random() };
    } };"#;
    let out = run(&host, 1, probe, json!({})).await.unwrap();
    let mut want: Vec<&str> = GLOBALS.to_vec();
    want.sort();
    assert_eq!(out["names"], json!(want));
    assert_eq!(out["symbols"], json!(0));
    assert_eq!(out["suspicious"], json!([]));
    assert_eq!(out["mutable"], json!([]));
    assert_eq!(out["proto"], json!(true));
    assert_eq!(
        out["date"],
        json!([1_700_000_000_000i64, 1_700_000_000_001i64])
    );
}

#[tokio::test]
async fn prototype_pollution_does_not_change_another_tools_options() {
    let host = host();
    let polluter = module(
        "polluter",
        r#"export default { run() {
            const tried: string[] = [];
            const attempt = (what: string, f: () => void) => { try { f(); tried.push(what + ":changed"); } catch (_) { tried.push(what + ":refused"); } };
            attempt("recursive", () => { (Object.prototype as any).recursive = true; });
            attempt("overwrite", () => { Object.defineProperty(Object.prototype, "overwrite", { value: true }); });
            attempt("then", () => { (Promise.prototype as any).then = function () {}; });
            attempt("map", () => { (Array.prototype as any).map = () => []; });
            attempt("stringify", () => { (JSON as any).stringify = () => "{}"; });
            attempt("keys", () => { (Object as any).keys = () => []; });
            // A global can be replaced; the libos layer never reads it again.
            (globalThis as any).JSON = { stringify: () => "{}", parse: () => ({}) };
            return tried;
        } };"#,
    );
    let port = TestPort::ok();
    let tried = host
        .call(1, request(1, &polluter, json!({}), port.clone()))
        .await
        .unwrap();
    assert_eq!(
        tried,
        json!([
            "recursive:refused",
            "overwrite:refused",
            "then:refused",
            "map:refused",
            "stringify:refused",
            "keys:refused"
        ])
    );
    let victim = module(
        "victim",
        r#"export default { async run(_a: unknown, libos: any) {
            await libos.fs.deleteDir("build");
            await libos.fs.writeText("notes.txt", "x");
            await libos.fs.writeText("other.txt", "y", Object.create({ overwrite: true }));
            await libos.net.fetch("https://example.org/", { headers: { a: "1" } });
            return "done";
        } };"#,
    );
    let out = host
        .call(1, request(1, &victim, json!({}), port.clone()))
        .await
        .unwrap();
    assert_eq!(out, json!("done"));
    let calls: Vec<Value> = port.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls[0],
        json!({"primitive": "fs.delete_dir", "path": "build", "recursive": false})
    );
    assert_eq!(calls[1]["overwrite"], json!(false));
    assert_eq!(calls[2]["overwrite"], json!(false));
    assert_eq!(calls[3]["headers"], json!([["a", "1"]]));
}

#[tokio::test]
async fn a_forged_human_required_is_a_tool_error() {
    let host = host();
    let forged = module(
        "forged",
        r#"export default { run(_a: unknown, libos: any) {
            throw new libos.SyscallError("HumanRequired", "waiting for a human", { requestId: "hr_VICTIM" });
        } };"#,
    );
    match host
        .call(1, request(1, &forged, json!({}), TestPort::ok()))
        .await
    {
        Err(CallError::Threw { message, .. }) => {
            assert!(message.contains("HumanRequired"), "{message}")
        }
        other => panic!("expected the tool's own error, got {other:?}"),
    }
    // An error the port really returned escapes as that error, even when the tool edits its
    // copy; the same error rethrown in a later call is the tool's own.
    let denied = json!({"kind": "PermissionDenied", "message": "permission denied: read on fs:a", "resource": "fs:a", "right": "read"});
    let answer = denied.clone();
    let port = TestPort::new(move |_| Err(answer.clone()));
    let keeper = module(
        "keeper",
        r#"let kept: any;
        export default { async run(args: { again: boolean }, libos: any) {
            if (args.again) throw kept;
            try { await libos.fs.readText("a"); } catch (e) { kept = e; (e as any).requestId = "hr_VICTIM"; (e as any).kind = "HumanRequired"; throw e; }
        } };"#,
    );
    match host
        .call(
            1,
            request(1, &keeper, json!({"again": false}), port.clone()),
        )
        .await
    {
        Err(CallError::Syscall { error }) => assert_eq!(error, denied),
        other => panic!("expected the port's error, got {other:?}"),
    }
    assert!(matches!(
        host.call(1, request(1, &keeper, json!({"again": true}), port))
            .await,
        Err(CallError::Threw { .. })
    ));
}

#[tokio::test]
async fn a_worker_thread_is_retired_before_its_slot_budget() {
    // 1,000 runtime creations on one lane (each pid gets a fresh isolate, then detaches):
    // the lane's thread retires by its budget and is replaced, and every call succeeds.
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        pool_size: 1,
        ..HostConfig::default()
    });
    let m = module("t", TRIVIAL);
    for pid in 1..=1_000 {
        let out = host
            .call(pid, request(pid, &m, json!({"n": pid}), TestPort::ok()))
            .await;
        assert_eq!(out, Ok(json!({"twice": pid * 2})), "call {pid}");
        host.detach(pid).await;
    }
    let stats = host.stats();
    assert!(stats.threads_retired >= 5, "{stats:?}");
}

/// Prints the latency of a warm call (run with `--ignored --nocapture`; use a release build
/// for meaningful numbers).
#[tokio::test]
#[ignore]
async fn warm_call_latency() {
    let host = host();
    let m = module("t", TRIVIAL);
    let port = TestPort::ok();
    host.call(1, request(1, &m, json!({"n": 1}), port.clone()))
        .await
        .unwrap();
    let n = 2000;
    let started = Instant::now();
    for i in 0..n {
        host.call(1, request(1, &m, json!({"n": i}), port.clone()))
            .await
            .unwrap();
    }
    eprintln!("warm call: {:?} per call", started.elapsed() / n);
}

/// The canary catches a slot count that fell behind the engine's table: once the table of
/// a thread is past its limit (here by functions the count never saw), no runtime created
/// on that thread is handed out, and the thread's existing runtimes fail their canary.
#[cfg(not(feature = "v8"))]
#[test]
fn a_runtime_on_a_thread_past_its_budget_is_never_used() {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| {
            let heap = CallLimits::default().heap_bytes;
            let mut first = runtime::Isolate::new(heap).expect("a fresh thread creates runtimes");
            assert!(first.canary_passes());
            let counted = slots::spent();
            // Past the table's 32 768 slots, but short of the wrap at 65 536.
            first.spend_uncounted_native_functions(34_000);
            assert_eq!(slots::spent(), counted, "the count did not see them");
            assert!(!slots::exhausted(), "only the canary can tell");
            assert!(!first.canary_passes());
            for attempt in 0..3 {
                match runtime::Isolate::new(heap) {
                    Err(IsolateError::Create(_)) => {}
                    Ok(_) => {
                        panic!("attempt {attempt}: a runtime past the table's limit was handed out")
                    }
                    Err(other) => panic!("attempt {attempt}: {other}"),
                }
            }
        })
        .unwrap()
        .join()
        .expect("the thread ends without a panic");
}

/// Slots one runtime creation takes, measured on a fresh thread: the functions still
/// creatable after it, subtracted from the table's 32 768 working slots.
fn measured_creation_slots(boot: runtime::Boot) -> u32 {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let mut isolate = runtime::Isolate::new_with(CallLimits::default().heap_bytes, boot)
            .expect("a runtime on a fresh thread");
        32_768 - isolate.probe_free_slots()
    })
    .join()
    .unwrap()
}

#[test]
fn a_runtime_creation_never_takes_more_slots_than_its_budget() {
    // The budget of a worker thread (`slots.rs`) holds only if each creation is charged at
    // least what it really takes in the engine's table, from the snapshot and without.
    let mut boots = vec![runtime::Boot::Script];
    if runtime::Boot::preferred() == runtime::Boot::Snapshot {
        boots.push(runtime::Boot::Snapshot);
    }
    for boot in boots {
        let taken = measured_creation_slots(boot);
        println!("{boot:?}: {taken} slots per runtime creation");
        if cfg!(feature = "quickjs") {
            assert!(taken > 0, "{boot:?}: the probe measured nothing");
        }
        // `Isolate::new_with` runs one canary, charged on its own.
        let charged = boot.slots() + slots::PER_CANARY;
        assert!(
            taken <= charged,
            "{boot:?}: a creation takes {taken} slots but is charged {charged}"
        );
    }
}

/// What a tool sees of its isolate: the bootstrap's hardening, and a global left by an
/// earlier call (`x`).
const PROBE_AND_MARK: &str = "export default { run() {\n\
      let fromString = 'refused';\n\
      try { Function('return 1'); fromString = 'allowed'; } catch (_) {}\n\
      const seen = {\n\
        deno: typeof (globalThis as any).Deno,\n\
        boot: typeof (globalThis as any).__libos_boot__,\n\
        entry: typeof (globalThis as any).__libos_entry__,\n\
        frozen: Object.isFrozen(Array.prototype) && Object.isFrozen(Object),\n\
        fromString,\n\
        x: typeof (globalThis as any).x === 'undefined' ? 'absent' : (globalThis as any).x,\n\
      };\n\
      (globalThis as any).x = 7;\n\
      return seen;\n\
    } };";

#[tokio::test]
async fn a_warm_isolate_is_hardened_carries_nothing_and_serves_one_process() {
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        warm: 1,
        ..HostConfig::default()
    });
    // Let the lane make its warm isolate before the first call takes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = json!({
        "deno": "undefined", "boot": "undefined", "entry": "undefined",
        "frozen": true, "fromString": "refused", "x": "absent",
    });
    assert_eq!(
        run(&host, 1, PROBE_AND_MARK, json!({})).await.unwrap(),
        fresh
    );
    // Another process on the same lane gets an isolate of its own, as fresh.
    assert_eq!(
        run(&host, 2, PROBE_AND_MARK, json!({})).await.unwrap(),
        fresh
    );
    // The first process kept the warm isolate: its global is still there.
    let again = run(&host, 1, PROBE_AND_MARK, json!({})).await.unwrap();
    assert_eq!(again["x"], json!(7));
}
