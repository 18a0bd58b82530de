//! `agent-libos ps`, `resume` and `image register|list`.

use anyhow::Result;
use serde_json::{json, Value};

use super::args::{ImageCommand, PsArgs};
use super::{exit, note, Ctx, Failure};
use crate::kernel::{HumanAnswer, Image, Process};

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

/// Brings interrupted work back ([`crate::kernel::Kernel::resume`]): re-runs every tool
/// invocation that was running or waiting for a human from its journal, then lists the
/// non-terminal processes. A `tool run` process whose call now finished ends with the
/// call's outcome, as `tool run` would have ended it.
pub async fn resume(ctx: &Ctx) -> Result<i32> {
    let mut kernel = ctx.open_existing().await?;
    let mut report = kernel.resume().await.map_err(Failure::from)?;
    let confirmed = confirm_spurious_uncertain(&kernel, &report).await?;
    if !confirmed.is_empty() {
        for (request, approval) in &confirmed {
            note(format!(
                "{request}: the call never ran (the audit log shows it stopped for approval {approval}); confirmed as {RESUME_BY}"
            ));
        }
        // Again, in a fresh runtime (a runtime does not reuse a request it has waited on).
        let _ = kernel.store().flush().await;
        drop(kernel);
        kernel = ctx.open_existing().await?;
        report = kernel.resume().await.map_err(Failure::from)?;
    }
    let mut ended = Vec::new();
    for inv in &report.invocations {
        let waiting = matches!(&inv.outcome, Err(e) if e.kind == "HumanRequired");
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

/// The "uncertain" requests `resume` may confirm itself, confirmed: `(request, approval)`.
///
/// Works around a kernel journal gap: a syscall that stops at authorization with
/// `HumanRequired` leaves its journal *intent* without an outcome, so on resume the kernel
/// takes it for an effect the host may have died in, and asks an `uncertain` question before
/// the call even reaches its approval. `resume` answers such a question itself only when the
/// audit log proves the effect never ran in that invocation:
///
/// - every earlier `uncertain` request of the invocation was confirmed this way;
/// - every record of that exact call in the invocation is an `ask` (never allowed, never
///   failed otherwise);
/// - the last of them waits on an `approval` request for the same process and call hash
///   that no call has used yet, and comes after the last earlier confirmation (so the pass
///   that confirmed it stopped at authorization, before the effect).
///
/// Anything else is left to a human. The approval itself is never answered here.
async fn confirm_spurious_uncertain(
    kernel: &crate::kernel::Kernel,
    report: &crate::kernel::ResumeReport,
) -> Result<Vec<(String, String)>> {
    use sqlx::Row;
    let pool = kernel.store().pool();
    let mut confirmed = Vec::new();
    for inv in &report.invocations {
        let Err(err) = &inv.outcome else { continue };
        let Some(request_id) = err
            .request_id
            .as_deref()
            .filter(|_| err.kind == "HumanRequired")
        else {
            continue;
        };
        let Some(request) = kernel
            .human_request(request_id)
            .await
            .map_err(Failure::from)?
        else {
            continue;
        };
        if request.kind != "uncertain"
            || request.status != "pending"
            || request.payload["invocation"].as_str() != Some(inv.id.as_str())
        {
            continue;
        }
        let earlier = sqlx::query(
            "SELECT id, answered_by FROM human_requests WHERE kind = 'uncertain' AND id != ? \
             AND json_extract(payload, '$.invocation') = ?",
        )
        .bind(&request.id)
        .bind(&inv.id)
        .fetch_all(pool)
        .await?;
        let mut earlier_ids = Vec::new();
        let mut all_ours = true;
        for row in earlier {
            let by: Option<String> = row.try_get("answered_by")?;
            all_ours &= by.as_deref() == Some(RESUME_BY);
            earlier_ids.push(row.try_get::<String, _>("id")?);
        }
        if !all_ours {
            continue;
        }
        let last_confirmation: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM audit WHERE action = 'human.respond' \
             AND correlation_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(earlier_ids).to_string())
        .fetch_one(pool)
        .await?;
        let primitive = request.payload["primitive"].as_str().unwrap_or_default();
        let call = &request.payload["request"];
        let rows = sqlx::query(
            "SELECT seq, decision, detail FROM audit WHERE actor = ? AND action = ? \
             AND correlation_id = ? ORDER BY seq",
        )
        .bind(format!("pid:{}", request.pid))
        .bind(primitive)
        .bind(&inv.id)
        .fetch_all(pool)
        .await?;
        let mut records = Vec::new();
        for row in rows {
            let detail: String = row.try_get("detail")?;
            let detail: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
            if &detail["request"] == call {
                let seq: i64 = row.try_get("seq")?;
                let decision: String = row.try_get("decision")?;
                records.push((seq, decision, detail));
            }
        }
        if records.iter().any(|(_, d, _)| d != "ask") {
            continue;
        }
        // The last stop at authorization, on an approval request (not an uncertain one).
        let mut last_approval = None;
        for (seq, _, detail) in records.iter().rev() {
            let Some(id) = detail["error"]["request_id"].as_str() else {
                continue;
            };
            let kind: Option<String> =
                sqlx::query_scalar("SELECT kind FROM human_requests WHERE id = ?")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            if kind.as_deref() == Some("approval") {
                last_approval = Some((*seq, id.to_string()));
                break;
            }
        }
        let Some((ask_seq, approval_id)) = last_approval else {
            continue;
        };
        if ask_seq <= last_confirmation {
            continue;
        }
        let approval = sqlx::query("SELECT pid, args_hash, used FROM human_requests WHERE id = ?")
            .bind(&approval_id)
            .fetch_one(pool)
            .await?;
        let ok = approval.try_get::<i64, _>("pid")? == request.pid
            && approval.try_get::<String, _>("args_hash")? == request.args_hash
            && approval.try_get::<i64, _>("used")? == 0;
        if !ok {
            continue;
        }
        kernel
            .human_respond(&request.id, HumanAnswer::ApproveOnce, RESUME_BY)
            .await
            .map_err(Failure::from)?;
        confirmed.push((request.id.clone(), approval_id));
    }
    Ok(confirmed)
}

/// Who `resume` answers as when it confirms a spurious `uncertain` request.
const RESUME_BY: &str = "cli:resume";

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
