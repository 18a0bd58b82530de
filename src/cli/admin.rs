//! `agent-libos ps`, `resume` and `image register|list`.

use anyhow::Result;
use serde_json::json;

use super::args::{ImageCommand, PsArgs};
use super::{exit, Ctx, Failure};
use crate::kernel::{Image, Process};

fn table(procs: &[Process]) -> String {
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
            p.usage.syscalls,
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

fn process_json(p: &Process) -> serde_json::Value {
    json!({
        "pid": p.pid,
        "parent": p.parent,
        "status": p.status,
        "image": p.image_id,
        "image_version": p.image_version,
        "goal": p.goal,
        "cwd": p.cwd,
        "usage": p.usage,
        "budget": p.budget,
        "started_at": p.started_at,
        "exit": p.exit_payload,
    })
}

pub async fn ps(ctx: &Ctx, args: PsArgs) -> Result<i32> {
    let kernel = ctx.open_existing().await?;
    let procs: Vec<Process> = kernel
        .processes()
        .into_iter()
        .filter(|p| args.all || !p.status.is_terminal())
        .collect();
    let values: Vec<_> = procs
        .iter()
        .map(|p| {
            let mut value = process_json(p);
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
            table(&procs)
        }
    });
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
    let values: Vec<_> = procs.iter().map(process_json).collect();
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
                table(&procs)
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
