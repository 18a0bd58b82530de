//! `agent-libos checkpoint create|list|rollback|fork|export|import`.
//!
//! Thin wrappers over the kernel's operator API ([`Kernel::checkpoint_create`] and
//! friends). A rollback restores what the runtime owns; effects outside it (files written,
//! commands run, requests sent) are printed as NOT undone.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::args::CheckpointCommand;
use super::{exit, Ctx, Failure};
use crate::kernel::{CapabilitySpec, HumanMode, ImportOptions, RollbackReport};

pub async fn run(ctx: &Ctx, cmd: CheckpointCommand) -> Result<i32> {
    match cmd {
        CheckpointCommand::Create { pid, name } => {
            let kernel = ctx.open_existing().await?;
            let ck = kernel.checkpoint_create(pid, &name).await.map_err(|e| {
                not_found_hint(
                    Failure::from(e),
                    "list processes with `agent-libos ps --all`",
                )
            })?;
            let _ = kernel.store().flush().await;
            ctx.print(&json!(ck), || {
                let mut text = format!(
                    "checkpoint {} of process {}{}: {} object{}, {} capabilit{}, {} tool{}; audit #{}",
                    ck.id,
                    ck.pid,
                    if ck.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", ck.name)
                    },
                    ck.objects,
                    plural(ck.objects, "", "s"),
                    ck.capabilities,
                    plural(ck.capabilities, "y", "ies"),
                    ck.tools,
                    plural(ck.tools, "", "s"),
                    ck.audit_seq
                );
                if !ck.children.is_empty() {
                    let kids: Vec<String> = ck
                        .children
                        .iter()
                        .map(|c| format!("{} ({})", c.pid, c.status))
                        .collect();
                    text.push_str(&format!(
                        "\nchildren (recorded, not part of what a rollback restores): {}",
                        kids.join(", ")
                    ));
                }
                text
            });
        }
        CheckpointCommand::List { pid } => {
            let kernel = ctx.open_existing().await?;
            let list = kernel.checkpoints(pid).await.map_err(Failure::from)?;
            ctx.print(&json!(list), || {
                if list.is_empty() {
                    return "no checkpoints".into();
                }
                let mut out = format!(
                    "{:<38} {:>4}  {:<20} {:>6} {:>7}  {}\n",
                    "ID", "PID", "CREATED", "AUDIT", "OBJECTS", "NAME"
                );
                for c in &list {
                    out.push_str(&format!(
                        "{:<38} {:>4}  {:<20} {:>6} {:>7}  {}\n",
                        c.id,
                        c.pid,
                        utc(c.created_at),
                        c.audit_seq,
                        c.objects,
                        c.name
                    ));
                }
                out
            });
        }
        CheckpointCommand::Rollback { id } => {
            let kernel = ctx.open_existing().await?;
            let report = kernel
                .checkpoint_rollback(&id)
                .await
                .map_err(|e| not_found_hint(Failure::from(e), LIST_HINT))?;
            let _ = kernel.store().flush().await;
            ctx.print(&json!(report), || rollback_text(&report));
            if ctx.json && !report.external_effects.is_empty() {
                super::note(format!(
                    "{} effect{} outside the runtime since the checkpoint {} NOT undone",
                    report.external_effects.len(),
                    plural(report.external_effects.len() as u64, "", "s"),
                    if report.external_effects.len() == 1 {
                        "was"
                    } else {
                        "were"
                    }
                ));
            }
        }
        CheckpointCommand::Fork { id } => {
            let kernel = ctx.open_existing().await?;
            let pid = kernel
                .checkpoint_fork(&id)
                .await
                .map_err(|e| not_found_hint(Failure::from(e), LIST_HINT))?;
            let _ = kernel.store().flush().await;
            ctx.print(&json!({"checkpoint": id, "pid": pid}), || {
                format!("forked checkpoint {id} into process {pid}")
            });
        }
        CheckpointCommand::Export { id, out } => {
            let kernel = ctx.open_existing().await?;
            let doc = kernel
                .checkpoint_export(&id)
                .await
                .map_err(|e| not_found_hint(Failure::from(e), LIST_HINT))?;
            let _ = kernel.store().flush().await;
            let text = serde_json::to_string_pretty(&doc)?;
            if out == Path::new("-") {
                super::terminal::out(&text);
                return Ok(exit::OK);
            }
            std::fs::write(&out, format!("{text}\n")).map_err(|e| {
                Failure::new(
                    "InvalidArgument",
                    exit::INVALID,
                    format!("cannot write {}: {e}", out.display()),
                )
            })?;
            ctx.print(&json!({"checkpoint": id, "file": out}), || {
                format!("exported checkpoint {id} to {}", out.display())
            });
        }
        CheckpointCommand::Import {
            file,
            grants,
            register_image,
        } => {
            let mut specs = Vec::with_capacity(grants.len());
            for g in &grants {
                let spec = CapabilitySpec::parse_grant(g).map_err(|e| {
                    Failure::new(
                        "InvalidArgument",
                        exit::INVALID,
                        format!("--grant {g}: {e}"),
                    )
                })?;
                specs.push(spec);
            }
            let grants = specs;
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Failure::new(
                    "InvalidArgument",
                    exit::INVALID,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::new(
                    "InvalidArgument",
                    exit::INVALID,
                    format!("{} is not JSON: {e}", file.display()),
                )
                .hint("pass a file written by `agent-libos checkpoint export`")
            })?;
            let from = doc["checkpoint"]["id"].clone();
            let kernel = ctx.open(HumanMode::FailFast).await?;
            let report = kernel
                .checkpoint_import(
                    doc,
                    ImportOptions {
                        grants,
                        register_image,
                    },
                )
                .await
                .map_err(Failure::from)?;
            let _ = kernel.store().flush().await;
            let mut result = serde_json::to_value(&report).unwrap_or(Value::Null);
            result["checkpoint"] = from.clone();
            ctx.print(&result, || {
                let mut text = format!(
                    "imported checkpoint {} as process {} (granted: {})",
                    from.as_str().unwrap_or("?"),
                    report.pid,
                    ids(&report.granted)
                );
                if !report.not_granted.is_empty() {
                    let listed: Vec<String> = report
                        .not_granted
                        .iter()
                        .map(|c| {
                            let rights: Vec<&str> = c.rights.iter().map(|r| r.as_str()).collect();
                            format!("{}={}", c.resource, rights.join(","))
                        })
                        .collect();
                    text.push_str(&format!(
                        "\nthe document listed, NOT granted (grant with --grant): {}",
                        listed.join(" ")
                    ));
                }
                text
            });
        }
    }
    Ok(exit::OK)
}

const LIST_HINT: &str = "list checkpoints with `agent-libos checkpoint list`";

fn not_found_hint(f: Failure, hint: &str) -> Failure {
    if f.wire.kind == "NotFound" {
        f.hint(hint)
    } else {
        f
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn ids(list: &[i64]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|i| format!("#{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable rollback report: what was restored, then what was NOT undone.
pub fn rollback_text(r: &RollbackReport) -> String {
    let mut out = format!(
        "rolled back process {} to checkpoint {}\n  objects: {} (removed {} created since)\n  capabilities revoked: {}; not restored (revoked or used since): {}\n  tools: {}\n",
        r.pid,
        r.checkpoint,
        r.objects,
        r.objects_removed,
        ids(&r.capabilities_revoked),
        ids(&r.capabilities_not_restored),
        r.tools
    );
    if !r.children_since.is_empty() {
        let kids: Vec<String> = r.children_since.iter().map(|p| p.to_string()).collect();
        out.push_str(&format!(
            "  children spawned since (left as they are): {}\n",
            kids.join(", ")
        ));
    }
    if r.external_effects.is_empty() {
        out.push_str("no effects outside the runtime since the checkpoint\n");
    } else {
        out.push_str(&format!(
            "NOT undone: {} effect{} outside the runtime since the checkpoint (files, commands, requests):\n",
            r.external_effects.len(),
            plural(r.external_effects.len() as u64, "", "s")
        ));
        for e in &r.external_effects {
            let detail = match &e.detail {
                Value::Null => String::new(),
                Value::Object(m) if m.is_empty() => String::new(),
                d => format!("  {d}"),
            };
            out.push_str(&format!(
                "  #{:<5} {:<16} {}{detail}\n",
                e.seq, e.action, e.target
            ));
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SSZ` for milliseconds since the Unix epoch (UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_the_epoch_and_a_leap_day() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20Z");
    }
}
