//! Benchmark harness: prints the figures the runtime's performance goals are stated in.
//!
//! Run with `scripts/bench [group]` (release build). Each figure is measured on a real
//! kernel with a real SQLite file in a temporary directory; percentiles are over individual
//! operations after a warm-up.

use std::time::{Duration, Instant};

use agent_libos::kernel::{CapabilitySpec, Kernel, KernelConfig, Pid, SpawnOptions, Syscall};
use serde_json::json;

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
        if wants("spawn") {
            spawn_until_ready().await?;
        }
        if wants("validate") {
            validate_and_transpile().await?;
        }
        if wants("memory") {
            idle_isolate_memory().await?;
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
            ..Default::default()
        })
        .await?)
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
        b.kernel.syscall(pid, Syscall::ProcGetCwd).await?;
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
                Syscall::FsReadText {
                    path: "notes.md".into(),
                },
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
                Syscall::MemCreate(agent_libos::kernel::ObjectSpec {
                    object_type: "n".into(),
                    payload: json!(i),
                    ..Default::default()
                }),
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
                        Syscall::MemCreate(agent_libos::kernel::ObjectSpec {
                            object_type: "n".into(),
                            payload: json!(i),
                            ..Default::default()
                        }),
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
            Syscall::ToolPropose {
                source: source.into(),
            },
        )
        .await?;
    let id = proposed["id"].as_str().unwrap_or_default().to_string();
    let report = kernel
        .syscall(pid, Syscall::ToolValidate { id: id.clone() })
        .await?;
    anyhow::ensure!(report["ok"] == true, "validation failed: {report}");
    let reg = kernel.syscall(pid, Syscall::ToolRegister { id }).await?;
    Ok(reg["name"].as_str().unwrap_or_default().to_string())
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
        let mut samples = Vec::new();
        for i in 0..3_000 {
            let t = Instant::now();
            b.kernel
                .syscall(
                    pid,
                    Syscall::ToolCall {
                        name: name.clone(),
                        args: json!({"n": i}),
                    },
                )
                .await?;
            if i >= 300 {
                samples.push(t.elapsed());
            }
        }
        report(label, samples);
    }
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

/// Resident memory added per idle process isolate.
async fn idle_isolate_memory() -> anyhow::Result<()> {
    let b = bench_kernel().await?;
    let first = spawn(&b.kernel, &[]).await?;
    b.kernel.attach_isolate(first).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_bytes();
    let n = 100;
    for _ in 0..n {
        let pid = spawn(&b.kernel, &[]).await?;
        b.kernel.attach_isolate(pid).await?;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = resident_bytes();
    println!(
        "{:<58} {:.2} MiB per isolate ({n} isolates)",
        "memory per idle process isolate",
        (after.saturating_sub(before)) as f64 / n as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
