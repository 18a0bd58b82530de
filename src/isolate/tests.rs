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
    fn syscall(&self, ctx: &CallContext, call: Value) -> BoxFuture<'static, Result<Value, Value>> {
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
    IsolateHost::start(HostConfig {
        threads: 2,
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
        Err(CallError::Threw {
            error: Some(error),
            message,
            ..
        }) => {
            assert_eq!(error, denied);
            assert!(message.contains("PermissionDenied"), "{message}");
        }
        other => panic!("expected Threw with a wire error, got {other:?}"),
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
        Err(CallError::Threw {
            message,
            stack,
            error,
        }) => {
            assert!(message.contains("boom 1"), "{message}");
            assert!(
                stack.contains(":9:"),
                "stack should point at TS line 9: {stack}"
            );
            assert_eq!(error, None);
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
async fn a_call_its_caller_gave_up_on_keeps_its_place_until_it_ends() {
    let host = IsolateHost::start(HostConfig {
        threads: 1,
        pool_size: 1,
        max_queued: 1,
        ..HostConfig::default()
    });
    let spin = module("spin", "export default { run() { while (true) {} } };");
    let mut req = request(1, &spin, json!({}), TestPort::ok());
    req.limits.cpu_ms = 300;
    let gave_up = tokio::time::timeout(Duration::from_millis(20), host.call(1, req)).await;
    assert!(gave_up.is_err(), "the spin returned: {gave_up:?}");
    // The spin still runs on the worker: it still holds the only place.
    assert_eq!(host.queued(), 1);
    // The next call waits for it, then runs.
    assert_eq!(
        run(&host, 2, TRIVIAL, json!({"n": 4})).await.unwrap(),
        json!({"twice": 8})
    );
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
