//! Benchmark harness: prints the figures the runtime's performance goals are stated in.
//!
//! Run with `scripts/bench [group]` (release build). Each figure is measured on a real
//! kernel with a real SQLite file in a temporary directory; percentiles are over individual
//! operations after a warm-up.
// An operator tool: benchmarks set up workspaces and databases on the host.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod replay;

use std::time::{Duration, Instant};

use agent_libos::kernel::{
    CapabilitySpec, FsCall, JitCall, Kernel, KernelConfig, MemCall, ObjectSpec, Pid, ProcCall,
    ShellCall, SpawnOptions, Syscall,
};
use serde_json::json;

mod scale;

fn main() -> anyhow::Result<()> {
    let groups: Vec<String> = std::env::args().skip(1).collect();
    let wants = |g: &str| groups.is_empty() || groups.iter().any(|x| x == g);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if wants("syscall") {
            syscall_round_trip().await?;
        }
        if wants("tool") {
            tool_calls().await?;
        }
        if wants("mcp") {
            mcp_calls().await?;
        }
        if wants("spawn") {
            spawn_until_ready().await?;
        }
        if wants("worker") {
            worker_costs().await?;
        }
        if wants("cold") {
            cold_start()?;
        }
        if wants("validate") {
            validate_and_transpile().await?;
        }
        if wants("memory") {
            idle_isolate_memory().await?;
        }
        if wants("checkpoint") {
            checkpoints().await?;
        }
        if wants("journal") {
            journal_overhead().await?;
            journaled_reads().await?;
        }
        if wants("restart") {
            restart_to_runnable().await?;
        }
        if wants("shell") {
            shell_sandbox_cost().await?;
        }
        if wants("check") {
            tool_check_with_types()?;
        }
        if wants("replay") {
            replay::replay_suites()?;
        }
        if wants("scale") {
            scale::scale().await?;
        }
        anyhow::Ok(())
    })
}

struct Bench {
    _dir: tempfile::TempDir,
    kernel: Kernel,
}

async fn bench_kernel() -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    std::fs::write(ws.join("notes.md"), "hello from the workspace\n")?;
    let kernel = Kernel::open(KernelConfig::new(dir.path().join("state.db"), ws)).await?;
    Ok(Bench { _dir: dir, kernel })
}

async fn spawn(kernel: &Kernel, grants: &[&str]) -> anyhow::Result<Pid> {
    let grants = grants
        .iter()
        .map(|g| CapabilitySpec::parse_grant(g).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    Ok(kernel
        .spawn_root(SpawnOptions {
            goal: "bench".into(),
            grants,
            budget: Some(lasting_budget()),
            ..Default::default()
        })
        .await?)
}

/// CPU time (user + system) this process has used so far: with wall-clock figures taken on
/// a shared machine, the kernel side's CPU per operation is the steadier one.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data (all zeroes is a valid value), and `getrusage` only
    // writes into the struct it is given.
    let (usage, status) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let status = libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        (usage, status)
    };
    if status != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Prints the kernel process's CPU per operation over `n` operations since `since`.
/// Warm calls measured after a warm-up: wall time per call, and the runtime process's CPU
/// per call over the measured ones.
struct WarmLoop {
    samples: Vec<Duration>,
    cpu_from: Duration,
}

impl WarmLoop {
    const WARMUP: usize = 300;
    const CALLS: usize = 3_000;

    fn new() -> WarmLoop {
        WarmLoop {
            samples: Vec::with_capacity(Self::CALLS - Self::WARMUP),
            cpu_from: Duration::ZERO,
        }
    }

    /// Starts call `i`; returns when it started.
    fn start(&mut self, i: usize) -> Instant {
        if i == Self::WARMUP {
            self.cpu_from = cpu_time();
        }
        Instant::now()
    }

    /// Ends call `i`, started at `started`.
    fn end(&mut self, i: usize, started: Instant) {
        if i >= Self::WARMUP {
            self.samples.push(started.elapsed());
        }
    }

    fn report(self, name: &str) {
        let measured = (Self::CALLS - Self::WARMUP) as u32;
        report(name, self.samples);
        println!(
            "{name:<58} {:>9.1?} CPU per call in the runtime's process (isolate workers not counted)",
            cpu_time().saturating_sub(self.cpu_from) / measured
        );
    }
}

/// A budget no measurement runs out of.
fn lasting_budget() -> agent_libos::kernel::Budget {
    agent_libos::kernel::Budget {
        tool_calls: u64::MAX / 4,
        children: 1_000,
        syscalls: u64::MAX / 4,
        wall_time_ms: 24 * 3600 * 1000,
    }
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<58} n={:<6} p50={:>9.1?} p99={:>9.1?}",
        samples.len(),
        pct(0.50),
        pct(0.99)
    );
}

/// Capability check + audit append through `Kernel::syscall`, for a read (audit rides the
/// next group commit) and for an effect (waits for its commit).
async fn syscall_round_trip() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["fs:**=read", "namespace:bench=create,read"]).await?;
    let mut samples = Vec::new();
    for i in 0..6_000 {
        let t = Instant::now();
        b.kernel
            .syscall(pid, Syscall::Proc(ProcCall::GetCwd))
            .await?;
        if i >= 1_000 {
            samples.push(t.elapsed());
        }
    }
    report("syscall proc.getcwd (check + audit, no effect)", samples);
    let mut samples = Vec::new();
    for i in 0..3_000 {
        let t = Instant::now();
        b.kernel
            .syscall(
                pid,
                Syscall::Fs(FsCall::ReadText {
                    path: "notes.md".into(),
                }),
            )
            .await?;
        if i >= 500 {
            samples.push(t.elapsed());
        }
    }
    report("syscall fs.read_text (check + provider + audit)", samples);
    let mut samples = Vec::new();
    for i in 0..1_500 {
        let t = Instant::now();
        b.kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(agent_libos::kernel::ObjectSpec {
                    object_type: "n".into(),
                    payload: json!(i),
                    ..Default::default()
                })),
            )
            .await?;
        if i >= 200 {
            samples.push(t.elapsed());
        }
    }
    report("syscall mem.create (effect: waits for its commit)", samples);
    // Concurrent effects share group commits.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let kernel = b.kernel.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                kernel
                    .syscall(
                        pid,
                        Syscall::Mem(MemCall::Create(agent_libos::kernel::ObjectSpec {
                            object_type: "n".into(),
                            payload: json!(i),
                            ..Default::default()
                        })),
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let per = started.elapsed() / (16 * 200);
    println!(
        "{:<58} {per:>9.1?} per effect (16 concurrent writers)",
        "syscall mem.create, group commit"
    );
    let report = b.kernel.verify_audit().await?;
    println!(
        "{:<58} {} records, chain ok: {}",
        "audit",
        report.records,
        report.is_ok()
    );
    Ok(())
}

const TRIVIAL_TOOL: &str = r#"
export const tool = {
  name: "echo",
  description: "returns its input",
  input: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] },
  output: { type: "object" },
};
export default async function run(args: { n: number }) {
  return { n: args.n };
}
"#;

const READ_TOOL: &str = r#"
import type { Libos } from "libos";
export const tool = {
  name: "read_notes",
  description: "reads notes.md",
  input: { type: "object" },
  output: { type: "object" },
};
export default async function run(_args: unknown, libos: Libos) {
  const text = await libos.fs.readText("notes.md");
  return { bytes: text.length };
}
"#;

async fn register(kernel: &Kernel, pid: Pid, source: &str) -> anyhow::Result<String> {
    let proposed = kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Propose {
                source: source.into(),
            }),
        )
        .await?;
    let id = proposed["id"].as_str().unwrap_or_default().to_string();
    let report = kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await?;
    anyhow::ensure!(report["ok"] == true, "validation failed: {report}");
    let reg = kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id }))
        .await?;
    Ok(reg["name"].as_str().unwrap_or_default().to_string())
}

/// A tool with one declared test: each validation creates one runtime (in the test worker).
const TESTED_TOOL: &str = r#"
export const tool = {
  name: "tested",
  description: "returns its argument",
  input: { type: "object" },
  output: { type: "object" },
  tests: [ { name: "echo", args: { n: 1 }, expect: { n: 1 } } ],
};
export default async function run(args: { n: number }) {
  return { n: args.n };
}
"#;

/// Isolate worker processes: the start of one (spawn, confinement, host start, the first
/// isolate bound), and how many are replaced per 1,000 runtime creations. Warm calls across
/// the kernel ↔ worker boundary are the `tool` group.
async fn worker_costs() -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for _ in 0..10 {
        let b = bench_kernel().await?;
        let pid = spawn(&b.kernel, &[]).await?;
        let t = Instant::now();
        b.kernel.attach_isolate(pid).await?;
        samples.push(t.elapsed());
    }
    report("isolate worker start + first isolate bound", samples);
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["tool:*=create"]).await?;
    let proposed = b
        .kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Propose {
                source: TESTED_TOOL.into(),
            }),
        )
        .await?;
    let id = proposed["id"].as_str().unwrap_or_default().to_string();
    let mut samples = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let report = b
            .kernel
            .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
            .await?;
        anyhow::ensure!(report["ok"] == true, "validation failed: {report}");
        samples.push(t.elapsed());
    }
    report(
        "tool.validate, one declared test (a fresh runtime)",
        samples,
    );
    let stats = b.kernel.isolate_stats();
    println!(
        "{:<58} {:.1} ({} replaced, {} runtimes created, largest worker {} MiB)",
        "isolate workers replaced per 1,000 runtime creations",
        stats.workers_replaced as f64 * 1000.0 / stats.runtimes_created.max(1) as f64,
        stats.workers_replaced,
        stats.runtimes_created,
        stats.max_worker_rss_bytes >> 20
    );
    Ok(())
}

/// Cold start: creating one isolate (deno_core's built-ins, the ops and the libos
/// bootstrap) restored from the build's startup snapshot, and without it; a one-shot
/// `tool run` as a whole process.
fn cold_start() -> anyhow::Result<()> {
    use agent_libos::isolate::{time_creations, Boot};
    let mut boots = vec![Boot::Script];
    if Boot::preferred() == Boot::Snapshot {
        boots.insert(0, Boot::Snapshot);
    } else {
        println!("isolate creation from the startup snapshot: this build has none");
    }
    for boot in boots {
        let mut samples = time_creations(boot, 41)?;
        samples.remove(0); // the first creation on a thread warms the engine up
        let how = match boot {
            Boot::Snapshot => "from the startup snapshot",
            Boot::Script => "without a snapshot",
        };
        report(&format!("isolate creation + drop, {how}"), samples);
    }
    one_shot_processes()
}

/// `agent-libos tool run` of a trivial tool as a whole process (open the store, spawn, start
/// a worker, create one isolate, call, exit), next to `agent-libos --version`.
fn one_shot_processes() -> anyhow::Result<()> {
    let binary = std::env::current_exe()?.with_file_name("agent-libos");
    if !binary.exists() {
        println!(
            "agent-libos tool run: no {} beside the bench",
            binary.display()
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    let tool = ws.join("trivial.ts");
    std::fs::write(
        &tool,
        "export const tool = { name: \"trivial\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
         export default async function run() { return { ok: true }; }\n",
    )?;
    let db = dir.path().join("state.db");
    let time = |args: &[&std::ffi::OsStr]| -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::new();
        for run in 0..21 {
            let t = Instant::now();
            let out = std::process::Command::new(&binary)
                .args(args)
                .current_dir(&ws)
                .env_remove("AGENT_LIBOS_DB")
                .env_remove("RUST_LOG")
                .output()?;
            let took = t.elapsed();
            anyhow::ensure!(
                out.status.success(),
                "agent-libos {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if run > 0 {
                samples.push(took);
            }
        }
        Ok(samples)
    };
    let run = time(&[
        "--db".as_ref(),
        db.as_os_str(),
        "--workspace".as_ref(),
        ws.as_os_str(),
        "tool".as_ref(),
        "run".as_ref(),
        tool.as_os_str(),
    ])?;
    report("agent-libos tool run, a trivial tool (whole process)", run);
    report(
        "agent-libos --version (whole process)",
        time(&["--version".as_ref()])?,
    );
    Ok(())
}

/// Warm calls of a registered tool in the process's isolate.
async fn tool_calls() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["fs:**=read", "tool:*=create"]).await?;
    let echo = register(&b.kernel, pid, TRIVIAL_TOOL).await?;
    let read = register(&b.kernel, pid, READ_TOOL).await?;
    for (name, label) in [
        (echo, "tool.call trivial tool (warm)"),
        (read, "tool.call tool with one fs.read_text (warm)"),
    ] {
        let mut warm = WarmLoop::new();
        for i in 0..WarmLoop::CALLS {
            let t = warm.start(i);
            b.kernel
                .syscall(
                    pid,
                    Syscall::Tool(JitCall::Call {
                        name: name.clone(),
                        args: json!({"n": i}),
                    }),
                )
                .await?;
            warm.end(i, t);
        }
        warm.report(label);
    }
    Ok(())
}

/// One MCP client's side of a session with the server, speaking newline-delimited
/// JSON-RPC over an in-memory pipe.
struct McpClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    next: u64,
}

impl McpClient {
    async fn send(&mut self, message: serde_json::Value) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut line = serde_json::to_vec(&message)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// Sends a request and returns its result (notifications in between are skipped).
    async fn request(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.next += 1;
        let id = self.next;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the MCP server closed the session"))?;
            let reply: serde_json::Value = serde_json::from_str(&line)?;
            if reply["id"] == id {
                anyhow::ensure!(reply.get("error").is_none(), "{method}: {reply}");
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Calls an MCP tool and returns its JSON answer.
    async fn tool(
        &mut self,
        name: &str,
        arguments: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let result = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        anyhow::ensure!(result["isError"] != true, "{name}: {text}");
        Ok(serde_json::from_str(text)?)
    }
}

/// A warm tool call through the MCP server (`agent-libos mcp`'s server, in process over an
/// in-memory pipe): JSON-RPC framing, the session, the kernel and the isolate worker.
async fn mcp_calls() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let config = agent_libos::mcp::McpConfig {
        grants: ["fs:**=read", "tool:*=create"]
            .iter()
            .map(|g| CapabilitySpec::parse_grant(g).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?,
        budget: Some(lasting_budget()),
        ..Default::default()
    };
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let kernel = b.kernel.clone();
    tokio::spawn(async move { agent_libos::mcp::serve_mcp(kernel, config, server_io).await });
    let (reader, writer) = tokio::io::split(client_io);
    let mut client = McpClient {
        lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(reader)),
        writer,
        next: 0,
    };
    client
        .request(
            "initialize",
            json!({
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "agent-libos-bench", "version": "1"},
            }),
        )
        .await?;
    client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await?;
    let pid = client
        .tool("spawn_process", json!({"goal": "bench"}))
        .await?["pid"]
        .clone();
    let proposed = client
        .tool("propose_tool", json!({"pid": pid, "source": TRIVIAL_TOOL}))
        .await?;
    let id = proposed["id"].clone();
    let validated = client
        .tool("validate_tool", json!({"pid": pid, "id": id}))
        .await?;
    anyhow::ensure!(validated["ok"] == true, "validation failed: {validated}");
    client
        .tool("register_tool", json!({"pid": pid, "id": id}))
        .await?;
    let mut warm = WarmLoop::new();
    for i in 0..WarmLoop::CALLS {
        let t = warm.start(i);
        let out = client
            .tool(
                "call_tool",
                json!({"pid": pid, "name": "echo", "args": {"n": i}}),
            )
            .await?;
        warm.end(i, t);
        anyhow::ensure!(out["n"] == i, "unexpected answer: {out}");
    }
    warm.report("MCP tools/call of a trivial tool (warm, in-process pipe)");
    Ok(())
}

/// Spawn a process and bind an isolate from the pool.
async fn spawn_until_ready() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let warm = spawn(&b.kernel, &["tool:*=create"]).await?;
    register(&b.kernel, warm, TRIVIAL_TOOL).await?;
    let mut samples = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        let pid = spawn(&b.kernel, &[]).await?;
        b.kernel.attach_isolate(pid).await?;
        if i >= 10 {
            samples.push(t.elapsed());
        }
        // Let the pool refill between spawns, as it would between real spawns.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    report("spawn + isolate ready (from the pool)", samples);
    Ok(())
}

/// Validation and transpile of a 300-line tool, cold and cached.
async fn validate_and_transpile() -> anyhow::Result<()> {
    let mut source = String::from(
        "export const tool = { name: \"big\", description: \"many helpers\", input: { type: \"object\" }, output: { type: \"object\" } };\n",
    );
    for i in 0..145 {
        source.push_str(&format!(
            "function helper{i}(x: number): number {{\n  return x * {i} + {i};\n}}\n",
        ));
    }
    source.push_str("export default async function run() {\n  return { v: helper1(2) };\n}\n");
    let lines = source.lines().count();
    let mut samples = Vec::new();
    for i in 0..40 {
        let variant = format!("{source}// {i}\n");
        let t = Instant::now();
        agent_libos::jit::analyze("tool:big.ts", &variant, &Default::default())
            .map_err(|f| anyhow::anyhow!("{f:?}"))?;
        samples.push(t.elapsed());
    }
    report(
        &format!("validate + transpile, {lines}-line tool (cold)"),
        samples,
    );
    let cache = agent_libos::jit::TranspileCache::default();
    cache.get_or_transpile("tool:big.ts", &source)?;
    let mut samples = Vec::new();
    for _ in 0..5_000 {
        let t = Instant::now();
        cache.get_or_transpile("tool:big.ts", &source)?;
        samples.push(t.elapsed());
    }
    report(
        &format!("transpile, {lines}-line tool (cached by hash)"),
        samples,
    );
    Ok(())
}

/// Resident memory added per idle process isolate, in the process worker (as the kernel
/// reads it after each answer).
async fn idle_isolate_memory() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let first = spawn(&b.kernel, &[]).await?;
    b.kernel.attach_isolate(first).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = spawn(&b.kernel, &[]).await?;
    b.kernel.attach_isolate(warm).await?;
    let before = b.kernel.isolate_stats().max_worker_rss_bytes;
    let n = 100;
    for _ in 0..n {
        let pid = spawn(&b.kernel, &[]).await?;
        b.kernel.attach_isolate(pid).await?;
    }
    let after = b.kernel.isolate_stats().max_worker_rss_bytes;
    println!(
        "{:<58} {:.2} MiB per isolate ({n} isolates)",
        "memory per idle process isolate (worker resident)",
        (after.saturating_sub(before)) as f64 / n as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Checkpoint create and rollback of a process with 10,000 objects (one in ten appendable,
/// with three items each).
async fn checkpoints() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["fs:**=read"]).await?;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let kernel = b.kernel.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..10_000).step_by(16) {
                let appendable = i % 10 == 0;
                let made = kernel
                    .syscall(pid, Syscall::Mem(MemCall::Create(ObjectSpec {
                        name: Some(format!("note-{i}")),
                        object_type: "note".into(),
                        payload: json!({"text": format!("observation {i}: the build failed at step {}", i % 7), "n": i}),
                        tags: vec!["bench".into()],
                        appendable,
                        ..Default::default()
                    })))
                    .await?;
                if appendable {
                    let id = made["id"].as_str().unwrap_or_default().to_string();
                    for s in 0..3 {
                        kernel.syscall(pid, Syscall::Mem(MemCall::Append { id: id.clone(), item: json!({"step": s}) })).await?;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (mut create, mut rollback) = (Vec::new(), Vec::new());
    for run in 0..7 {
        let t = Instant::now();
        let ckpt = b
            .kernel
            .checkpoint_create(pid, &format!("bench-{run}"))
            .await?;
        let took = t.elapsed();
        anyhow::ensure!(
            ckpt.objects == 10_000,
            "checkpoint holds {} objects",
            ckpt.objects
        );
        b.kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(ObjectSpec {
                    object_type: "note".into(),
                    payload: json!(run),
                    ..Default::default()
                })),
            )
            .await?;
        b.kernel
            .grant(
                pid,
                CapabilitySpec::parse_grant("fs:tmp/**=write").map_err(anyhow::Error::msg)?,
            )
            .await?;
        let t = Instant::now();
        b.kernel.checkpoint_rollback(&ckpt.id).await?;
        let took_back = t.elapsed();
        if run >= 2 {
            create.push(took);
            rollback.push(took_back);
        }
    }
    report("checkpoint create (10,000 objects)", create);
    report("checkpoint rollback (10,000 objects)", rollback);
    Ok(())
}

/// Journal cost per syscall inside a tool invocation: a tool making 200 object appends,
/// against the same appends made directly (no invocation, so no journal).
async fn journal_overhead() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["tool:*=create"]).await?;
    let log = b
        .kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::Create(ObjectSpec {
                object_type: "log".into(),
                appendable: true,
                ..Default::default()
            })),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tool = r#"
import type { Libos } from "libos";
export const tool = { name: "appender", description: "appends n items", input: { type: "object" }, output: { type: "object" }, limits: { syscalls: 1000 } };
export default async function run(args: { id: string; n: number }, libos: Libos) {
  for (let i = 0; i < args.n; i++) { await libos.memory.append(args.id, i); }
  return { n: args.n };
}
"#;
    let name = register(&b.kernel, pid, tool).await?;
    let n = 200;
    let mut direct = Vec::new();
    let mut journaled = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n {
            b.kernel
                .syscall(
                    pid,
                    Syscall::Mem(MemCall::Append {
                        id: log.clone(),
                        item: json!(i),
                    }),
                )
                .await?;
        }
        direct.push(t.elapsed() / n);
        let t = Instant::now();
        b.kernel
            .syscall(
                pid,
                Syscall::Tool(JitCall::Call {
                    name: name.clone(),
                    args: json!({"id": log, "n": n}),
                }),
            )
            .await?;
        journaled.push(t.elapsed() / n);
    }
    report("mem.append, direct (per syscall)", direct.clone());
    report(
        "mem.append from a tool, journaled (per syscall)",
        journaled.clone(),
    );
    direct.sort();
    journaled.sort();
    println!(
        "{:<58} {:>9.1?} per syscall (p50 difference, incl. the isolate round trip)",
        "journal + isolate overhead",
        journaled[journaled.len() / 2].saturating_sub(direct[direct.len() / 2])
    );
    Ok(())
}

/// A tool making `n` reads (`clock.now` or `fs.read_text`) with its one effect
/// (`mem.append`) before them, after them, or none at all.
const READER_TOOL: &str = r#"
import type { Libos } from "libos";
export const tool = { name: "reader", description: "reads n times around one append", input: { type: "object" }, output: { type: "object" }, limits: { syscalls: 1000 } };
export default async function run(args: { id: string; n: number; effect: string; read: string }, libos: Libos) {
  if (args.effect === "first") { await libos.memory.append(args.id, 0); }
  let seen = 0;
  for (let i = 0; i < args.n; i++) {
    if (args.read === "clock") { seen += await libos.clock.now(); } else { seen += (await libos.fs.readText("notes.md")).length; }
  }
  if (args.effect === "last") { await libos.memory.append(args.id, 0); }
  return { seen };
}
"#;

/// The added cost of a read (`clock.now`, `fs.read_text`) inside an invocation, by where it
/// falls: before the tool's first effect (journaled, its rows held in memory until the
/// effect's intent writes them), after it (queued to the writer), or in a tool that makes
/// no effect (nothing written). Each figure is one call's time less the same call without
/// its reads, divided by the reads.
async fn journaled_reads() -> anyhow::Result<()> {
    const READS: u32 = 50;
    let b = bench_kernel().await?;
    let pid = spawn(&b.kernel, &["tool:*=create", "fs:**=read"]).await?;
    let log = b
        .kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::Create(ObjectSpec {
                object_type: "log".into(),
                appendable: true,
                ..Default::default()
            })),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = register(&b.kernel, pid, READER_TOOL).await?;
    for (read, primitive) in [("clock", "clock.now"), ("fs", "fs.read_text")] {
        let mut p50 = std::collections::BTreeMap::new();
        for (effect, n, shape) in [
            ("last", 0, "one effect, no reads"),
            ("last", READS, "50 reads, then one effect"),
            ("first", READS, "one effect, then 50 reads"),
            ("none", 0, "read-only, no reads"),
            ("none", READS, "read-only, 50 reads"),
        ] {
            let mut samples = Vec::new();
            for i in 0..120 {
                let t = Instant::now();
                b.kernel
                    .syscall(
                        pid,
                        Syscall::Tool(JitCall::Call {
                            name: name.clone(),
                            args: json!({"id": log, "n": n, "effect": effect, "read": read}),
                        }),
                    )
                    .await?;
                if i >= 20 {
                    samples.push(t.elapsed());
                }
            }
            samples.sort();
            p50.insert((effect, n), samples[samples.len() / 2]);
            report(&format!("tool.call {primitive}: {shape}"), samples);
        }
        let per_read = |with: (&str, u32), without: (&str, u32)| {
            p50[&with].saturating_sub(p50[&without]) / READS
        };
        for (place, cost) in [
            (
                "before the first effect",
                per_read(("last", READS), ("last", 0)),
            ),
            (
                "after the first effect",
                per_read(("first", READS), ("last", 0)),
            ),
            (
                "in a read-only tool",
                per_read(("none", READS), ("none", 0)),
            ),
        ] {
            println!(
                "{:<58} {cost:>9.1?} per read (p50 difference)",
                format!("{primitive}, {place}")
            );
        }
    }
    Ok(())
}

/// Reopening a runtime with 1,000 registered processes until all are back and RUNNABLE.
async fn restart_to_runnable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    let config = KernelConfig::new(dir.path().join("state.db"), ws);
    {
        let kernel = Kernel::open(config.clone()).await?;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let kernel = kernel.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..125 {
                    spawn(&kernel, &["fs:**=read", "namespace:shared=read"]).await?;
                }
                let _ = w;
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        kernel.store().flush().await?;
    }
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let kernel = Kernel::open(config.clone()).await?;
        kernel.resume().await?;
        let runnable = kernel
            .processes()
            .iter()
            .filter(|p| p.status == agent_libos::kernel::Status::Runnable)
            .count();
        samples.push(t.elapsed());
        anyhow::ensure!(runnable == 1_000, "{runnable} processes runnable");
    }
    report(
        "restart to RUNNABLE, 1,000 processes (open + resume)",
        samples,
    );
    Ok(())
}

/// `shell.run(["true"])` through the kernel, sandboxed (the launcher builds namespaces,
/// masks, Landlock and seccomp) and under the operator's opt-out, interleaved; then the
/// sandboxed figure again with 1 GiB of touched heap in the runtime, which would show a
/// regression from `posix_spawn` to `fork` (whose cost grows with the parent's memory).
async fn shell_sandbox_cost() -> anyhow::Result<()> {
    let sandboxed = bench_kernel().await?;
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    let mut config = KernelConfig::new(dir.path().join("state.db"), ws);
    config.sandbox.mode = agent_libos::providers::SandboxMode::Unsandboxed;
    let unsandboxed = Kernel::open(config).await?;
    let pid_sandboxed = spawn(&sandboxed.kernel, &["shell:true=execute"]).await?;
    let pid_unsandboxed = spawn(&unsandboxed, &["shell:true=execute"]).await?;
    let call = || {
        Syscall::Shell(ShellCall::Run {
            argv: vec!["true".into()],
            timeout_ms: None,
            stdin: None,
        })
    };
    let time = |kernel: Kernel, pid: Pid| async move {
        let start = Instant::now();
        let out = kernel.syscall(pid, call()).await?;
        anyhow::ensure!(out["exit_code"] == 0, "true failed: {out}");
        anyhow::Ok(start.elapsed())
    };
    for _ in 0..20 {
        time(sandboxed.kernel.clone(), pid_sandboxed).await?;
        time(unsandboxed.clone(), pid_unsandboxed).await?;
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        with.push(time(sandboxed.kernel.clone(), pid_sandboxed).await?);
        without.push(time(unsandboxed.clone(), pid_unsandboxed).await?);
    }
    report("shell.run([\"true\"]) sandboxed", with);
    report(
        "shell.run([\"true\"]) unsandboxed (--unsandboxed-shell)",
        without,
    );
    let heap: Vec<u8> = vec![1u8; 1 << 30];
    let mut big = Vec::new();
    for _ in 0..100 {
        big.push(time(sandboxed.kernel.clone(), pid_sandboxed).await?);
    }
    report(
        "shell.run([\"true\"]) sandboxed, 1 GiB resident runtime",
        big,
    );
    drop(std::hint::black_box(heap));
    Ok(())
}

/// `agent-libos tool check` on the skeleton `tool init` writes (23 lines), end to end through
/// the binary beside this one: parse, static rules, TypeScript's type check, declared test.
fn tool_check_with_types() -> anyhow::Result<()> {
    let Some(checker) = agent_libos::cli::typecheck::find_checker() else {
        println!(
            "tool check with type checking: skipped (no TypeScript checker; run scripts/setup)"
        );
        return Ok(());
    };
    let bin = std::env::current_exe()?.with_file_name("agent-libos");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("count_lines.ts");
    std::fs::write(&file, agent_libos::cli::tool_init::skeleton("count_lines"))?;
    let mut samples = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let out = std::process::Command::new(&bin)
            .args(["tool", "check"])
            .arg(&file)
            .env("AGENT_LIBOS_TSC", &checker)
            .output()?;
        samples.push(t.elapsed());
        anyhow::ensure!(out.status.success(), "tool check failed: {out:?}");
    }
    report("tool check, 23-line tool, with tsc type check", samples);
    let mut samples = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        agent_libos::cli::typecheck::check(&file, &checker);
        samples.push(t.elapsed());
    }
    report("  of which the tsc type check alone", samples);
    Ok(())
}
