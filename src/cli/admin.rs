//! `agent-libos ps`, `resume`, `image register|list` and `checkpoint …`.
//!
//! Checkpoints are not in the kernel yet: the subcommands parse, then fail with exit 2 and a
//! message saying so (nothing is faked).

use anyhow::Result;
use serde_json::json;

use super::args::{CheckpointCommand, ImageCommand, PsArgs};
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
    let values: Vec<_> = procs.iter().map(process_json).collect();
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

pub async fn resume(ctx: &Ctx) -> Result<i32> {
    let kernel = ctx.open(crate::kernel::HumanMode::FailFast).await?;
    let procs: Vec<Process> = kernel
        .processes()
        .into_iter()
        .filter(|p| !p.status.is_terminal())
        .collect();
    let values: Vec<_> = procs.iter().map(process_json).collect();
    ctx.print(&json!(values), || {
        if procs.is_empty() {
            format!("resumed {}: no live processes", ctx.db.display())
        } else {
            format!(
                "resumed {}: {} live process{}\n{}",
                ctx.db.display(),
                procs.len(),
                if procs.len() == 1 { "" } else { "es" },
                table(&procs)
            )
        }
    });
    Ok(exit::OK)
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

pub async fn checkpoint(_ctx: &Ctx, cmd: CheckpointCommand) -> Result<i32> {
    let what = match cmd {
        CheckpointCommand::Create { .. } => "create",
        CheckpointCommand::List => "list",
        CheckpointCommand::Rollback { .. } => "rollback",
        CheckpointCommand::Export { .. } => "export",
        CheckpointCommand::Import { .. } => "import",
    };
    Err(Failure::new(
        "Unsupported",
        exit::INVALID,
        "checkpoints are not available in this build yet",
    )
    .extra(json!({"subcommand": what}))
    .into())
}
