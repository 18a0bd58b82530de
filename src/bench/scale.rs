//! The `scale` group: many processes on one host.
//!
//! - resident memory (the kernel's process and every isolate worker, summed from `/proc`)
//!   and warm tool-call latency at 10 / 100 / 1,000 hot processes, called round-robin by
//!   2 × cores concurrent callers;
//! - the same with 100,000 registered processes of which 1,000 are hot, and the memory and
//!   spawn rate of registering them;
//! - evictions and re-creations per second when the working set is larger than the cap;
//! - restart with 100,000 processes: open the store and restore every process to RUNNABLE,
//!   then the first call served.
//!
//! Sizes come from the environment so that a debug build can run small ones:
//! `SCALE_HOT=10,100,1000`, `SCALE_REGISTERED=100000`, `SCALE_REGISTERED_HOT=1000`,
//! `SCALE_CALLS=5000` (measured calls per figure, at least twice the hot processes),
//! `SCALE_CHURN_CAP=100` (the cap of the churn figure; its working set is twice that).
//! A size of 0 skips its figure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_libos::isolate::HostConfig;
use agent_libos::kernel::{JitCall, Kernel, KernelConfig, Pid, Status, Syscall};
use serde_json::json;

use super::{register, report, spawn, TRIVIAL_TOOL};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().replace('_', "").parse().ok())
                .collect()
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn env_size(name: &str, default: usize) -> usize {
    env_list(name, &[default])[0]
}

/// Concurrent callers: twice the machine's cores.
fn callers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident bytes of this process and all its descendants (the isolate workers), from
/// `/proc/<pid>/stat` and `/proc/<pid>/statm`.
pub(super) fn resident_with_children() -> u64 {
    let me = std::process::id();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let page = 4096u64;
    let mut total = 0;
    let mut todo = vec![me];
    while let Some(pid) = todo.pop() {
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            let pages: u64 = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            total += pages * page;
        }
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// CPU time this process has used so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

struct ScaleKernel {
    _dir: tempfile::TempDir,
    config: KernelConfig,
    kernel: Kernel,
}

async fn scale_kernel(max_hot: usize) -> anyhow::Result<ScaleKernel> {
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    let mut config = KernelConfig::new(dir.path().join("state.db"), ws);
    config.isolates = HostConfig {
        max_hot,
        ..HostConfig::default()
    };
    let kernel = Kernel::open(config.clone()).await?;
    Ok(ScaleKernel {
        _dir: dir,
        config,
        kernel,
    })
}

/// Spawns `n` processes with a few grants, `concurrency` spawns at a time; returns their
/// pids in order.
async fn spawn_many(kernel: &Kernel, n: usize, concurrency: usize) -> anyhow::Result<Vec<Pid>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (kernel, next) = (kernel.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut pids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                pids.push(spawn(&kernel, &["fs:**=read", "namespace:shared=read"]).await?);
            }
            anyhow::Ok(pids)
        }));
    }
    let mut pids = Vec::with_capacity(n);
    for t in tasks {
        pids.extend(t.await??);
    }
    pids.sort();
    Ok(pids)
}

/// Gives each of `pids` the trivial tool (`tool:*=create` granted first).
async fn give_tool(kernel: &Kernel, pids: &[Pid]) -> anyhow::Result<String> {
    let mut name = String::new();
    for chunk in pids.chunks(64) {
        let mut tasks = Vec::new();
        for &pid in chunk {
            let kernel = kernel.clone();
            tasks.push(tokio::spawn(async move {
                kernel
                    .grant(
                        pid,
                        agent_libos::kernel::CapabilitySpec::parse_grant("tool:*=create")
                            .map_err(anyhow::Error::msg)?,
                    )
                    .await?;
                register(&kernel, pid, TRIVIAL_TOOL).await
            }));
        }
        for t in tasks {
            name = t.await??;
        }
    }
    Ok(name)
}

/// `calls` calls of `tool` over `pids` round-robin by `callers()` concurrent callers;
/// the latency of each.
async fn round_robin(
    kernel: &Kernel,
    pids: &[Pid],
    tool: &str,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    let pids: Arc<Vec<Pid>> = Arc::new(pids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers() {
        let (kernel, pids, next, tool) =
            (kernel.clone(), pids.clone(), next.clone(), tool.to_string());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return anyhow::Ok(samples);
                }
                let pid = pids[i % pids.len()];
                let t = Instant::now();
                kernel
                    .syscall(
                        pid,
                        Syscall::Tool(JitCall::Call {
                            name: tool.clone(),
                            args: json!({"n": i}),
                        }),
                    )
                    .await?;
                samples.push(t.elapsed());
            }
        }));
    }
    let mut samples = Vec::with_capacity(calls);
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok(samples)
}

/// Calls each of `pids` once (creating its isolate), then measures warm calls.
async fn warm_calls(kernel: &Kernel, pids: &[Pid], tool: &str, label: &str) -> anyhow::Result<()> {
    round_robin(kernel, pids, tool, pids.len()).await?;
    let calls = env_size("SCALE_CALLS", 5_000).max(2 * pids.len());
    let samples = round_robin(kernel, pids, tool, calls).await?;
    let stats = kernel.isolate_stats();
    report(&format!("{label}: warm tool.call"), samples);
    println!(
        "{:<58} {:>9.1} MiB ({} hot, {} workers, {} runtimes created)",
        format!("{label}: resident, kernel + workers"),
        mib(resident_with_children()),
        stats.isolates_hot,
        stats.workers_live,
        stats.runtimes_created
    );
    Ok(())
}

pub(super) async fn scale() -> anyhow::Result<()> {
    println!(
        "scale: {} concurrent callers; sizes from SCALE_HOT, SCALE_REGISTERED, SCALE_REGISTERED_HOT, SCALE_CALLS, SCALE_CHURN_CAP",
        callers()
    );
    for hot in env_list("SCALE_HOT", &[10, 100, 1_000]) {
        if hot == 0 {
            continue;
        }
        let b = scale_kernel(hot).await?;
        let pids = spawn_many(&b.kernel, hot, 16).await?;
        let tool = give_tool(&b.kernel, &pids).await?;
        warm_calls(&b.kernel, &pids, &tool, &format!("{hot} hot")).await?;
    }
    churn().await?;
    registered().await
}

/// A working set twice the cap, called round-robin: every call evicts one isolate and
/// re-creates another.
async fn churn() -> anyhow::Result<()> {
    let cap = env_size("SCALE_CHURN_CAP", 100);
    if cap == 0 {
        return Ok(());
    }
    let b = scale_kernel(cap).await?;
    let pids = spawn_many(&b.kernel, 2 * cap, 16).await?;
    let tool = give_tool(&b.kernel, &pids).await?;
    round_robin(&b.kernel, &pids, &tool, pids.len()).await?;
    let before = b.kernel.isolate_stats();
    let started = Instant::now();
    let calls = env_size("SCALE_CALLS", 5_000).max(2 * pids.len());
    let samples = round_robin(&b.kernel, &pids, &tool, calls).await?;
    let took = started.elapsed().as_secs_f64();
    let after = b.kernel.isolate_stats();
    report(
        &format!("cap {cap}, working set {}: tool.call", pids.len()),
        samples,
    );
    println!(
        "{:<58} {:>9.1} evictions/s, {:.1} re-creations/s ({} workers replaced)",
        format!("cap {cap}, working set {}: churn", pids.len()),
        (after.isolates_evicted - before.isolates_evicted) as f64 / took,
        (after.isolates_recreated - before.isolates_recreated) as f64 / took,
        after.workers_replaced - before.workers_replaced
    );
    Ok(())
}

/// 100,000 registered processes: spawn rate and memory per process; warm calls with 1,000
/// of them hot; restart.
async fn registered() -> anyhow::Result<()> {
    let n = env_size("SCALE_REGISTERED", 100_000);
    if n == 0 {
        return Ok(());
    }
    let hot = env_size("SCALE_REGISTERED_HOT", 1_000).min(n);
    let b = scale_kernel(hot).await?;
    let before = resident_with_children();
    let started = Instant::now();
    let pids = spawn_many(&b.kernel, n, 64).await?;
    let took = started.elapsed();
    let after = resident_with_children();
    println!(
        "{:<58} {:>9.0} per second ({n} in {took:.1?}, 64 concurrent)",
        "spawn, registered processes",
        n as f64 / took.as_secs_f64()
    );
    println!(
        "{:<58} {:>9.2} KiB per process ({:.1} MiB for {n})",
        "resident memory per registered process (kernel)",
        (after.saturating_sub(before)) as f64 / n as f64 / 1024.0,
        mib(after.saturating_sub(before))
    );
    let hot_pids: Vec<Pid> = pids
        .iter()
        .step_by((n / hot.max(1)).max(1))
        .take(hot)
        .copied()
        .collect();
    let tool = give_tool(&b.kernel, &hot_pids).await?;
    warm_calls(
        &b.kernel,
        &hot_pids,
        &tool,
        &format!("{n} registered, {} hot", hot_pids.len()),
    )
    .await?;
    b.kernel.store().flush().await?;
    let config = b.config.clone();
    drop(b.kernel);
    // Let the workers of the dropped kernel go.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut open = Vec::new();
    let mut open_cpu = Vec::new();
    let mut first_call = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let cpu = cpu_time();
        let kernel = Kernel::open(config.clone()).await?;
        kernel.resume().await?;
        let runnable = kernel
            .processes()
            .iter()
            .filter(|p| p.status == Status::Runnable)
            .count();
        open.push(t.elapsed());
        open_cpu.push(cpu_time().saturating_sub(cpu));
        anyhow::ensure!(runnable == n, "{runnable} of {n} processes runnable");
        kernel
            .syscall(
                hot_pids[0],
                Syscall::Tool(JitCall::Call {
                    name: tool.clone(),
                    args: json!({"n": 1}),
                }),
            )
            .await?;
        first_call.push(t.elapsed());
        drop(kernel);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report(
        &format!("restart to RUNNABLE, {n} processes (open + resume)"),
        open,
    );
    report(
        &format!("restart to RUNNABLE, {n} processes: CPU time (all threads)"),
        open_cpu,
    );
    report(
        &format!("restart, {n} processes, until a first tool call is served"),
        first_call,
    );
    drop(b._dir);
    Ok(())
}
