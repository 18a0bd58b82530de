//! `agent-libos ps`, `logs`, `kill`/`signal`, `resume` and `image register|list`.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::json;

use super::args::{ImageCommand, LogsArgs, PsArgs};
use super::{exit, terminal, Ctx, Failure};
use crate::kernel::{Budget, Image, Kernel, Pid, Process, Signal};

/// What each process used itself: its usage less the shares it handed its children (a
/// child's budget is taken from its parent's at spawn and counted there as used).
fn own_usage(all: &[Process]) -> HashMap<Pid, Budget> {
    let mut handed: HashMap<Pid, (u64, u64)> = HashMap::new();
    for child in all {
        if let Some(parent) = child.parent {
            let e = handed.entry(parent).or_default();
            e.0 = e.0.saturating_add(child.budget.syscalls);
            e.1 = e.1.saturating_add(child.budget.tool_calls);
        }
    }
    all.iter()
        .map(|p| {
            let (syscalls, tool_calls) = handed.get(&p.pid).copied().unwrap_or_default();
            let own = Budget {
                syscalls: p.usage.syscalls.saturating_sub(syscalls),
                tool_calls: p.usage.tool_calls.saturating_sub(tool_calls),
                ..p.usage
            };
            (p.pid, own)
        })
        .collect()
}

fn table(procs: &[Process], own: &HashMap<Pid, Budget>) -> String {
    let mut out = format!(
        "{:>4} {:>6}  {:<14} {:<20} {:>8}  {}\n",
        "PID", "PARENT", "STATUS", "IMAGE", "SYSCALLS", "GOAL"
    );
    for p in procs {
        out.push_str(&format!(
            "{:>4} {:>6}  {:<14} {:<20} {:>8}  {}\n",
            p.pid,
            p.parent
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            p.status.as_str(),
            format!("{}@{}", p.image_id, p.image_version),
            own.get(&p.pid).map_or(p.usage.syscalls, |u| u.syscalls),
            p.goal
        ));
    }
    out
}

/// Whether a process's isolate is hot in this host (`hot`) or must be created at its next
/// call (`hibernated`).
fn isolate_state(kernel: &crate::kernel::Kernel, pid: crate::kernel::Pid) -> &'static str {
    if kernel.isolate_hot(pid) {
        "hot"
    } else {
        "hibernated"
    }
}

fn process_json(p: &Process, own: &HashMap<Pid, Budget>) -> serde_json::Value {
    json!({
        "pid": p.pid,
        "parent": p.parent,
        "status": p.status,
        "image": p.image_id,
        "image_version": p.image_version,
        "goal": p.goal,
        "cwd": p.cwd,
        "usage": own.get(&p.pid).unwrap_or(&p.usage),
        "usage_with_children": p.usage,
        "budget": p.budget,
        "started_at": p.started_at,
        "exit": p.exit_payload,
    })
}

pub async fn ps(ctx: &Ctx, args: PsArgs) -> Result<i32> {
    let kernel = ctx.open_existing().await?;
    let all = kernel.processes();
    let own = own_usage(&all);
    let procs: Vec<Process> = all
        .into_iter()
        .filter(|p| args.all || !p.status.is_terminal())
        .collect();
    let values: Vec<_> = procs
        .iter()
        .map(|p| {
            let mut value = process_json(p, &own);
            value["isolate"] = json!(isolate_state(&kernel, p.pid));
            value
        })
        .collect();
    ctx.print(&json!(values), || {
        if procs.is_empty() {
            if args.all {
                "no processes".into()
            } else {
                "no live processes (use --all to include ended ones)".into()
            }
        } else {
            table(&procs, &own)
        }
    });
    Ok(exit::OK)
}

/// `agent-libos logs PID [--follow]`: the console lines of a process's tool calls.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<i32> {
    let kernel = ctx.open_existing().await?;
    let (lines, status) = read_log(&kernel, args.pid, 0).await?;
    let Some(mut status) = status else {
        return Err(Failure::new(
            "NotFound",
            exit::INVALID,
            format!("process {} not found", args.pid),
        )
        .hint("`agent-libos ps --all` lists the processes")
        .into());
    };
    if !args.follow {
        ctx.print(&json!(lines), || {
            if lines.is_empty() {
                return format!("process {} has written no log lines", args.pid);
            }
            lines.iter().map(log_text).collect::<Vec<_>>().join("\n")
        });
        return Ok(exit::OK);
    }
    let mut after = 0;
    let mut batch = lines;
    loop {
        for line in &batch {
            after = after.max(line.id);
            if ctx.json {
                terminal::out(json!(line).to_string());
            } else {
                terminal::out(log_text(line));
            }
        }
        if is_ended(&status) {
            return Ok(exit::OK);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (next, now) = read_log(&kernel, args.pid, after).await?;
        batch = next;
        status = now.unwrap_or(status);
    }
}

async fn read_log(
    kernel: &Kernel,
    pid: Pid,
    after: i64,
) -> Result<(Vec<crate::kernel::LogLine>, Option<String>)> {
    Ok(kernel
        .process_log_after(pid, after)
        .await
        .map_err(Failure::from)?)
}

fn is_ended(status: &str) -> bool {
    matches!(status, "EXITED" | "FAILED" | "KILLED")
}

fn log_text(line: &crate::kernel::LogLine) -> String {
    format!("console.{}: {}", line.level, line.text)
}

/// `agent-libos kill PID` and `agent-libos signal PID SIGNAL`, as the operator.
pub async fn signal(ctx: &Ctx, pid: Pid, signal: &str) -> Result<i32> {
    let parsed: Signal = signal
        .parse()
        .map_err(|e: String| Failure::new("InvalidArgument", exit::INVALID, e))?;
    let kernel = ctx.open_existing().await?;
    if kernel.process(pid).is_none() {
        return Err(Failure::new(
            "NotFound",
            exit::INVALID,
            format!("process {pid} not found"),
        )
        .hint("`agent-libos ps --all` lists the processes")
        .into());
    }
    let status = kernel.signal(pid, parsed).await.map_err(Failure::from)?;
    let _ = kernel.store().flush().await;
    ctx.print(
        &json!({"pid": pid, "signal": signal, "status": status}),
        || format!("process {pid}: {signal} sent; now {}", status.as_str()),
    );
    Ok(exit::OK)
}

/// Brings interrupted work back ([`crate::kernel::Kernel::resume`]): re-runs every tool
/// invocation that was running or waiting for a human from its journal, then lists the
/// non-terminal processes. A `tool run` process whose call now finished ends with the
/// call's outcome, as `tool run` would have ended it.
pub async fn resume(ctx: &Ctx) -> Result<i32> {
    let kernel = ctx.open_existing().await?;
    let report = kernel.resume().await.map_err(Failure::from)?;
    let mut ended = Vec::new();
    for inv in &report.invocations {
        // A call parked on a human (an approval, or a replay that left its journal) is
        // finished by a later `resume`: its process stays.
        let waiting = matches!(&inv.outcome, Err(e) if e.kind == "HumanRequired"
            || (e.kind == "NonDeterminism" && e.request_id.is_some()));
        let Some(p) = kernel.process(inv.pid) else {
            continue;
        };
        if waiting || p.status.is_terminal() || !super::tool::is_tool_run_goal(&p.goal) {
            continue;
        }
        let outcome = inv
            .outcome
            .clone()
            .map_err(|e| crate::kernel::SyscallError::from_wire(&e));
        if let Ok(handle) = kernel.run(inv.pid, move |_| async move { outcome }).await {
            let _ = handle.await;
            ended.push(inv.pid);
        }
    }
    let _ = kernel.store().flush().await;
    let procs: Vec<Process> = kernel
        .processes()
        .into_iter()
        .filter(|p| !p.status.is_terminal())
        .collect();
    let own = own_usage(&kernel.processes());
    let values: Vec<_> = procs.iter().map(|p| process_json(p, &own)).collect();
    let result = json!({
        "invocations": report.invocations,
        "ended": ended,
        "processes": values,
    });
    ctx.print(&result, || {
        let mut out = String::new();
        if report.invocations.is_empty() {
            out.push_str("no interrupted tool calls\n");
        } else {
            let n = report.invocations.len();
            out.push_str(&format!(
                "re-ran {n} interrupted tool call{} from {} journal{}:\n",
                if n == 1 { "" } else { "s" },
                if n == 1 { "its" } else { "their" },
                if n == 1 { "" } else { "s" },
            ));
            for inv in &report.invocations {
                let what = match &inv.outcome {
                    Ok(v) => format!("ok {}", excerpt(&v.to_string(), 200)),
                    Err(e) if e.kind == "HumanRequired" => format!(
                        "still waiting for a human: `agent-libos human approve {}`, then `agent-libos resume`",
                        e.request_id.as_deref().unwrap_or("ID")
                    ),
                    Err(e) => format!("{}: {}", e.kind, e.message),
                };
                out.push_str(&format!(
                    "  {} process {} tool {}: {what}\n",
                    inv.id, inv.pid, inv.tool
                ));
            }
            for pid in &ended {
                out.push_str(&format!(
                    "process {pid} (tool run) ended with its call's outcome\n"
                ));
            }
        }
        if procs.is_empty() {
            out.push_str("no live processes");
        } else {
            out.push_str(&format!(
                "{} live process{}\n{}",
                procs.len(),
                if procs.len() == 1 { "" } else { "es" },
                table(&procs, &own)
            ));
        }
        out
    });
    Ok(exit::OK)
}

fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

pub async fn image(ctx: &Ctx, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Register { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Failure::new(
                    "InvalidArgument",
                    exit::INVALID,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let image = Image::from_toml(&text).map_err(|e| {
                Failure::new(
                    "InvalidArgument",
                    exit::INVALID,
                    format!("{}: {e}", file.display()),
                )
                .hint("see `agent-libos image register --help` for the manifest format")
            })?;
            let kernel = ctx.open(crate::kernel::HumanMode::FailFast).await?;
            kernel.register_image(&image).await.map_err(|e| {
                let f = Failure::from_syscall(&e);
                if e.kind() == "AlreadyExists" {
                    f.hint("bump `version` in the manifest to register a new version")
                } else {
                    f
                }
            })?;
            ctx.print(&json!({"id": image.id, "version": image.version}), || {
                format!("registered image {}@{}", image.id, image.version)
            });
        }
        ImageCommand::List => {
            let kernel = ctx.open_existing().await?;
            let images = kernel.images().await.map_err(Failure::from)?;
            ctx.print(&json!(images), || {
                if images.is_empty() {
                    return "no images registered".into();
                }
                let mut out = format!(
                    "{:<20} {:<10} {:>5}  {}\n",
                    "ID", "VERSION", "CAPS", "PROMPT"
                );
                for i in &images {
                    let prompt: String = i.system_prompt.chars().take(50).collect();
                    out.push_str(&format!(
                        "{:<20} {:<10} {:>5}  {}\n",
                        i.id,
                        i.version,
                        i.capabilities.len(),
                        prompt.replace('\n', " ")
                    ));
                }
                out
            });
        }
    }
    Ok(exit::OK)
}
