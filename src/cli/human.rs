//! `agent-libos human …`: the human queue seen from a terminal, and the `--ask` prompt.
//!
//! Answers go through [`Kernel::human_respond`], the one entry point for humans; they are
//! recorded as answered by `cli:<user>`. An approval binds to the exact pending call it was
//! shown (the kernel checks this), so approving here cannot widen what the process asked.

use std::io::BufRead;

use anyhow::Result;
use serde_json::{json, Value};

use super::args::HumanCommand;
use super::terminal;
use super::{exit, note, Ctx, Failure};
use crate::kernel::{HumanAnswer, HumanRequest, Kernel, Pid, RequestKind, RequestStatus};

pub async fn run(ctx: &Ctx, cmd: HumanCommand) -> Result<i32> {
    let kernel = ctx.open_existing().await?;
    match cmd {
        HumanCommand::List { all } => {
            let requests = kernel.human_requests(all).await.map_err(Failure::from)?;
            ctx.print(&json!(requests), || {
                if requests.is_empty() {
                    return if all {
                        "no requests".into()
                    } else {
                        "no pending requests".into()
                    };
                }
                let mut out = format!(
                    "{:<36} {:>4} {:<10} {:<9} {}\n",
                    "ID", "PID", "KIND", "STATUS", "WHAT"
                );
                for r in &requests {
                    out.push_str(&format!(
                        "{:<36} {:>4} {:<10} {:<9} {}\n",
                        r.id,
                        r.pid,
                        r.kind,
                        r.status,
                        summary(r)
                    ));
                }
                out
            });
        }
        HumanCommand::Show { id } => {
            let request = find(&kernel, &id).await?;
            ctx.print(&json!(request), || describe(&request));
        }
        HumanCommand::Approve {
            id,
            always,
            pattern,
            by,
        } => {
            let answer = if pattern {
                HumanAnswer::ApprovePattern
            } else if always {
                HumanAnswer::ApproveAlways
            } else {
                HumanAnswer::ApproveOnce
            };
            respond(ctx, &kernel, &id, answer, by).await?;
        }
        HumanCommand::Reject { id, reason, by } => {
            respond(ctx, &kernel, &id, HumanAnswer::Reject { reason }, by).await?;
        }
        HumanCommand::Answer { id, text, by } => {
            respond(ctx, &kernel, &id, HumanAnswer::Answer { text }, by).await?;
        }
    }
    Ok(exit::OK)
}

async fn find(kernel: &Kernel, id: &str) -> Result<HumanRequest> {
    kernel
        .human_request(id)
        .await
        .map_err(Failure::from)?
        .ok_or_else(|| {
            Failure::new("NotFound", exit::INVALID, format!("no human request {id}"))
                .hint("list them with `agent-libos human list --all`")
                .into()
        })
}

/// `cli:<user>` for the answering human.
pub fn answered_by(by: Option<String>) -> String {
    let user = by
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

async fn respond(
    ctx: &Ctx,
    kernel: &Kernel,
    id: &str,
    answer: HumanAnswer,
    by: Option<String>,
) -> Result<()> {
    find(kernel, id).await?;
    let by = answered_by(by);
    let request = kernel
        .human_respond(id, answer, &by)
        .await
        .map_err(Failure::from)?;
    let _ = kernel.store().flush().await;
    ctx.print(&json!(request), || {
        let mut text = format!("{} {} by {by}", request.id, request.status);
        let alive = kernel
            .process(request.pid)
            .is_some_and(|p| !p.status.is_terminal());
        if !alive && request.kind == RequestKind::Approval {
            text.push_str(&format!(
                "\nnote: process {} has ended; run the tool again (approve with --always to keep the permission, or grant it up front)",
                request.pid
            ));
        }
        text
    });
    Ok(())
}

/// A one-line summary of what a request asks (control characters and newlines escaped).
pub fn summary(r: &HumanRequest) -> String {
    let p = &r.payload;
    let text = match r.kind {
        RequestKind::Approval => format!(
            "{} {} on {}",
            p["primitive"].as_str().unwrap_or("?"),
            p["right"].as_str().unwrap_or("?"),
            p["resource"].as_str().unwrap_or("?")
        ),
        RequestKind::Permission => format!(
            "{} on {}: {}",
            p["rights"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            p["resource"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("")
        ),
        RequestKind::Question => p["question"].as_str().unwrap_or("?").to_string(),
        RequestKind::Uncertain => format!(
            "repeat {} (invocation {} #{})? the host stopped during it; it may have happened",
            p["primitive"].as_str().unwrap_or("?"),
            p["invocation"].as_str().unwrap_or("?"),
            p["seq"]
        ),
        RequestKind::Diverged => format!(
            "invocation {} left its journal at #{} ({}): approve runs it again from the start (its effects may repeat), reject fails it",
            p["invocation"].as_str().unwrap_or("?"),
            p["seq"],
            p["why"].as_str().unwrap_or("?")
        ),
        RequestKind::Output => p["message"].as_str().unwrap_or("").to_string(),
    };
    terminal::line(&text).into_owned()
}

/// A multi-line description: everything the human decides on. Every value a process
/// controls is shown on its own line with control characters escaped, so none can erase,
/// rewrite or add a line of what the human reads.
pub fn describe(r: &HumanRequest) -> String {
    let mut out = format!(
        "request {} ({}) from process {}, {}\n  {}\n",
        r.id,
        r.kind,
        r.pid,
        r.status,
        summary(r)
    );
    let context = match r.kind {
        RequestKind::Approval => r.payload.get("context"),
        _ => None,
    };
    if let Some(Value::Object(map)) = context {
        for (key, value) in map {
            if key == "preview" {
                out.push_str("  preview:\n");
                for line in value.as_str().unwrap_or("").split('\n').take(20) {
                    out.push_str(&format!("    | {}\n", terminal::line(line)));
                }
            } else {
                let v = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!(
                    "  {}: {}\n",
                    terminal::line(key),
                    terminal::line(&v)
                ));
            }
        }
    }
    if r.kind == RequestKind::Question {
        if let Some(choices) = r.payload["choices"].as_array().filter(|c| !c.is_empty()) {
            let c: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!("  choices: {}\n", terminal::line(&c.join(", "))));
        }
    }
    if let Some(by) = &r.answered_by {
        let answer = r.answer.clone().unwrap_or(Value::Null).to_string();
        out.push_str(&format!(
            "  answered by {}: {}\n",
            terminal::line(by),
            terminal::line(&answer)
        ));
    }
    if r.status == RequestStatus::Pending {
        out.push_str(&format!(
            "  answer with: agent-libos human approve {0} [--always] | reject {0} | answer {0} TEXT\n",
            r.id
        ));
    }
    out
}

/// Whether `pid` is `root` or one of its descendants.
fn in_tree(kernel: &Kernel, root: Pid, mut pid: Pid) -> bool {
    for _ in 0..64 {
        if pid == root {
            return true;
        }
        match kernel.process(pid).and_then(|p| p.parent) {
            Some(parent) => pid = parent,
            None => return false,
        }
    }
    false
}

/// Prompts on stderr/stdin for every pending request of `root`'s process tree, until aborted.
pub async fn prompt_loop(kernel: Kernel, root: Pid) {
    let mut seen = std::collections::HashSet::new();
    loop {
        let pending = kernel.human_requests(false).await.unwrap_or_default();
        for r in pending {
            if seen.contains(&r.id) || !in_tree(&kernel, root, r.pid) {
                continue;
            }
            seen.insert(r.id.clone());
            let text = describe(&r);
            let kind = r.kind;
            let pattern = asking_pattern(&kernel, &r);
            let answer = tokio::task::spawn_blocking(move || ask_terminal(&text, kind, pattern))
                .await
                .ok()
                .flatten();
            let answer = answer.unwrap_or(HumanAnswer::Reject {
                reason: "no answer on the terminal".into(),
            });
            if let Err(e) = kernel
                .human_respond(&r.id, answer, &answered_by(None))
                .await
            {
                note(format!("answering {}: {e}", r.id));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The resource of the ask capability behind approval `r`, when it is a pattern wider than
/// the resource shown (what `p` at the prompt would grant).
fn asking_pattern(kernel: &Kernel, r: &HumanRequest) -> Option<String> {
    if r.kind != RequestKind::Approval {
        return None;
    }
    let cap_id = r.payload["capability"].as_i64()?;
    let cap = kernel
        .capabilities(r.pid)
        .into_iter()
        .find(|c| c.id == cap_id)?;
    (Some(cap.resource.as_str()) != r.payload["resource"].as_str()).then_some(cap.resource)
}

fn ask_terminal(text: &str, kind: RequestKind, pattern: Option<String>) -> Option<HumanAnswer> {
    let stdin = std::io::stdin();
    terminal::prompt(format!("\n{text}"));
    loop {
        let prompt = match (kind, &pattern) {
            (RequestKind::Question, _) => "  your answer (empty line rejects): ".to_string(),
            (_, Some(p)) => format!(
                "  allow? [y]es once / [a]lways (this resource) / [p]attern: always for all of {} / [n]o: ",
                terminal::line(p)
            ),
            _ => "  allow? [y]es once / [a]lways / [n]o: ".to_string(),
        };
        terminal::prompt(prompt);
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim();
        if kind == RequestKind::Question {
            return Some(if line.is_empty() {
                HumanAnswer::Reject {
                    reason: String::new(),
                }
            } else {
                HumanAnswer::Answer { text: line.into() }
            });
        }
        match line {
            "y" | "Y" | "yes" => return Some(HumanAnswer::ApproveOnce),
            "a" | "A" | "always" => return Some(HumanAnswer::ApproveAlways),
            "p" | "P" | "pattern" if pattern.is_some() => return Some(HumanAnswer::ApprovePattern),
            "n" | "N" | "no" => {
                return Some(HumanAnswer::Reject {
                    reason: "rejected on the terminal".into(),
                })
            }
            _ => {}
        }
    }
}
