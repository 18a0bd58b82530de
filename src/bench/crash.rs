//! Crash workload and checker: `agent-libos-crash work DIR` runs processes that append to
//! files and objects through a JIT tool (one of them under `ask_each_time`, answered by a
//! scripted human through the real queue) until it is killed; `agent-libos-crash check DIR`
//! reopens the runtime, resumes it, and verifies that the audit chain holds, that every
//! acknowledged write is present, that no journaled effect happened twice, and that every
//! process is resumable. `scripts/crash-test` kills `work` with SIGKILL at random points.
// An operator tool: the crash workload drives and kills real host processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, HumanAnswer, HumanMode, JitCall, Kernel, KernelConfig, MemCall, ObjectSpec,
    Pid, SpawnOptions, Syscall,
};
use anyhow::{bail, Context};
use serde_json::json;

const PROCESSES: usize = 3;

const STEP_TOOL: &str = r#"
import type { Libos } from "libos";
export const tool = {
  name: "step",
  description: "appends one numbered line to the process's file and its log object",
  input: { type: "object", properties: { n: { type: "integer" }, file: { type: "string" }, log: { type: "string" } }, required: ["n", "file", "log"] },
  output: { type: "object" },
};
export default async function run(args: { n: number; file: string; log: string }, libos: Libos) {
  await libos.fs.appendText(args.file, `${args.n}\n`);
  await libos.memory.append(args.log, args.n);
  return { n: args.n };
}
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(dir)) = (args.get(1), args.get(2)) else {
        bail!("usage: agent-libos-crash work|check DIR");
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match mode.as_str() {
        "work" => rt.block_on(work(&dir)),
        "check" => rt.block_on(check(&dir)),
        other => bail!("unknown mode {other} (work or check)"),
    }
}

async fn open(dir: &Path) -> anyhow::Result<Kernel> {
    std::fs::create_dir_all(dir.join("ws"))?;
    let mut config = KernelConfig::new(dir.join("state.db"), dir.join("ws"));
    // One host at a time: the previous one was killed before this one starts, so its
    // leases need not age.
    config.lease_ttl = std::time::Duration::ZERO;
    config.human_mode = HumanMode::Wait;
    Ok(Kernel::open(config).await?)
}

/// The scripted human: approves pending write approvals after a short delay; refuses to
/// repeat an effect whose outcome was lost (`uncertain`) or to run again an invocation whose
/// replay left its journal (`diverged`), so nothing is ever done twice.
fn spawn_human(kernel: Kernel) {
    tokio::spawn(async move {
        loop {
            if let Ok(pending) = kernel.human_requests(false).await {
                for request in pending {
                    use agent_libos::kernel::RequestKind::{Diverged, Uncertain};
                    let answer = if matches!(request.kind, Uncertain | Diverged) {
                        HumanAnswer::Reject {
                            reason: "do not repeat".into(),
                        }
                    } else {
                        HumanAnswer::ApproveOnce
                    };
                    let _ = kernel
                        .human_respond(&request.id, answer, "crash-test")
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// (pid, file, log object id) of each workload process, creating them the first time.
async fn processes(kernel: &Kernel) -> anyhow::Result<Vec<(Pid, String, String)>> {
    let mut out = Vec::new();
    let existing: Vec<Pid> = kernel
        .processes()
        .iter()
        .filter(|p| p.goal == "crash-workload")
        .map(|p| p.pid)
        .collect();
    for pid in existing {
        let log = kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Find {
                    namespace: None,
                    name: "log".into(),
                }),
            )
            .await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((pid, format!("out-{pid}.log"), log));
    }
    while out.len() < PROCESSES {
        let ask = out.is_empty();
        let pid = kernel
            .spawn_root(SpawnOptions {
                goal: "crash-workload".into(),
                ..Default::default()
            })
            .await?;
        let file = format!("out-{pid}.log");
        let policy = if ask { "ask_each_time" } else { "always_allow" };
        for grant in [
            format!("fs:{file}=write:{policy}"),
            "tool:step=create".to_string(),
        ] {
            kernel
                .grant(
                    pid,
                    CapabilitySpec::parse_grant(&grant).map_err(anyhow::Error::msg)?,
                )
                .await?;
        }
        let log = kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(ObjectSpec {
                    name: Some("log".into()),
                    object_type: "crash.log".into(),
                    appendable: true,
                    ..Default::default()
                })),
            )
            .await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = kernel
            .syscall(
                pid,
                Syscall::Tool(JitCall::Propose {
                    source: STEP_TOOL.into(),
                }),
            )
            .await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let report = kernel
            .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
            .await?;
        if report["ok"] != true {
            bail!("the step tool does not validate: {report}");
        }
        kernel
            .syscall(pid, Syscall::Tool(JitCall::Register { id }))
            .await?;
        out.push((pid, file, log));
    }
    Ok(out)
}

fn lines_of(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn work(dir: &Path) -> anyhow::Result<()> {
    let kernel = open(dir).await?;
    spawn_human(kernel.clone());
    kernel.resume().await?;
    let procs = processes(&kernel).await?;
    let acks = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("acks.log"))?,
    ));
    let mut tasks = Vec::new();
    for (pid, file, log) in procs {
        let kernel = kernel.clone();
        let acks = acks.clone();
        let ws = dir.join("ws");
        tasks.push(tokio::spawn(async move {
            let mut n = lines_of(&ws.join(&file)).into_iter().max().unwrap_or(0) + 1;
            loop {
                let args = json!({"n": n, "file": file, "log": log});
                match kernel
                    .syscall(
                        pid,
                        Syscall::Tool(JitCall::Call {
                            name: "step".into(),
                            args,
                        }),
                    )
                    .await
                {
                    Ok(_) => {
                        let mut f = acks.lock().unwrap();
                        writeln!(f, "{pid} {n}")?;
                        f.sync_data()?;
                    }
                    Err(e) => eprintln!("pid {pid} step {n}: {e}"),
                }
                n += 1;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn check(dir: &Path) -> anyhow::Result<()> {
    let kernel = open(dir).await?;
    spawn_human(kernel.clone());
    let resumed = tokio::time::timeout(Duration::from_secs(60), kernel.resume())
        .await
        .context("resume did not finish within 60 s")??;
    let failed_resumes = resumed
        .invocations
        .iter()
        .filter(|i| i.outcome.is_err())
        .count();
    let audit = kernel.verify_audit().await?;
    let mut acked: BTreeMap<Pid, BTreeSet<i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("acks.log"))
        .unwrap_or_default()
        .lines()
    {
        let mut parts = line.split_whitespace();
        if let (Some(pid), Some(n)) = (parts.next(), parts.next()) {
            if let (Ok(pid), Ok(n)) = (pid.parse(), n.parse()) {
                acked.entry(pid).or_default().insert(n);
            }
        }
    }
    let (mut lines_total, mut dups, mut missing, mut acked_total, mut items_total) =
        (0, 0, 0, 0, 0);
    let procs = processes(&kernel).await?;
    for (pid, file, log) in &procs {
        let lines = lines_of(&dir.join("ws").join(file));
        let unique: BTreeSet<i64> = lines.iter().copied().collect();
        lines_total += lines.len();
        dups += lines.len() - unique.len();
        let object = kernel
            .syscall(*pid, Syscall::Mem(MemCall::Read { id: log.clone() }))
            .await?;
        let items: Vec<i64> = object["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default();
        let unique_items: BTreeSet<i64> = items.iter().copied().collect();
        items_total += items.len();
        dups += items.len() - unique_items.len();
        for n in acked.get(pid).into_iter().flatten() {
            acked_total += 1;
            if !unique.contains(n) || !unique_items.contains(n) {
                missing += 1;
            }
        }
        // Resumable: the process takes a fresh call.
        let next = unique.iter().max().copied().unwrap_or(0) + 1_000_000;
        kernel
            .syscall(
                *pid,
                Syscall::Tool(JitCall::Call {
                    name: "step".into(),
                    args: json!({"n": next, "file": file, "log": log}),
                }),
            )
            .await
            .with_context(|| format!("process {pid} is not resumable"))?;
    }
    println!(
        "crash check: audit records {} chain {} | acknowledged {acked_total} | file lines {lines_total} | object items {items_total} | missing {missing} | duplicated {dups} | resumed invocations {} ({failed_resumes} ended with an error)",
        audit.records,
        if audit.is_ok() { "ok" } else { "BROKEN" },
        resumed.invocations.len()
    );
    if !audit.is_ok() || missing > 0 || dups > 0 {
        bail!("crash check failed: {:?}", audit.broken);
    }
    Ok(())
}
