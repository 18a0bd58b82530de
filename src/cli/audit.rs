//! `agent-libos audit show|verify|export`: the hash-chained audit log.
//!
//! These open only the store (not the kernel), so they work on any database, including one
//! whose processes cannot be brought back.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::args::{AuditCommand, AuditShowArgs};
use super::{exit, Ctx, Failure};
use crate::audit::AuditRow;
use crate::store::{Durability, Store};

pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<i32> {
    let store = open_store(ctx).await?;
    match cmd {
        AuditCommand::Show(args) => show(ctx, &store, args).await,
        AuditCommand::Verify => verify(ctx, &store).await,
        AuditCommand::Export { out } => export(ctx, &store, &out).await,
    }
}

pub async fn open_store(ctx: &Ctx) -> Result<Store> {
    if !ctx.db.exists() {
        return Err(Failure::new(
            "NotFound",
            exit::INVALID,
            format!("no database at {}", ctx.db.display()),
        )
        .hint("pass --db PATH (or set AGENT_LIBOS_DB)")
        .into());
    }
    Store::open(&ctx.db, Durability::Normal)
        .await
        .with_context(|| format!("opening {}", ctx.db.display()))
}

async fn rows(store: &Store) -> Result<Vec<AuditRow>> {
    Ok(store.audit_records_after(0).await?)
}

/// A row as JSON, with its JSON columns decoded.
pub fn row_json(row: &AuditRow) -> Value {
    json!({
        "seq": row.seq,
        "ts": row.ts,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "decision": row.decision,
        "capability_refs": serde_json::from_str::<Value>(&row.capability_refs).unwrap_or(Value::Null),
        "correlation_id": row.correlation_id,
        "parent_seq": row.parent_seq,
        "detail": serde_json::from_str::<Value>(&row.detail).unwrap_or(Value::String(row.detail.clone())),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    })
}

async fn show(ctx: &Ctx, store: &Store, args: AuditShowArgs) -> Result<i32> {
    let actor = args.pid.map(|p| format!("pid:{p}"));
    let mut selected: Vec<AuditRow> = rows(store)
        .await?
        .into_iter()
        .filter(|r| actor.as_ref().is_none_or(|a| &r.actor == a))
        .filter(|r| args.action.as_ref().is_none_or(|a| &r.action == a))
        .collect();
    if let Some(limit) = args.limit {
        let skip = selected.len().saturating_sub(limit);
        selected.drain(..skip);
    }
    let values: Vec<Value> = selected.iter().map(row_json).collect();
    ctx.print(&json!(values), || {
        let mut out = format!(
            "{:>5}  {:<16} {:<24} {:<9} {}\n",
            "SEQ", "ACTOR", "ACTION", "DECISION", "TARGET"
        );
        for r in &selected {
            out.push_str(&format!(
                "{:>5}  {:<16} {:<24} {:<9} {}\n",
                r.seq, r.actor, r.action, r.decision, r.target
            ));
        }
        out
    });
    Ok(exit::OK)
}

async fn verify(ctx: &Ctx, store: &Store) -> Result<i32> {
    let report = store.verify_audit().await?;
    if let Some(broken) = &report.broken {
        return Err(Failure::new(
            "AuditBroken",
            exit::FAILED,
            format!(
                "audit chain broken at record {}: {}",
                broken.seq, broken.reason
            ),
        )
        .hint("the records from that one on cannot be trusted; restore the database from a backup or export the log for inspection")
        .extra(json!({"seq": broken.seq, "reason": broken.reason, "records": report.records}))
        .into());
    }
    ctx.print(&json!(report), || {
        format!(
            "audit chain ok: {} records, head {}",
            report.records, report.head
        )
    });
    Ok(exit::OK)
}

async fn export(ctx: &Ctx, store: &Store, out: &std::path::Path) -> Result<i32> {
    let rows = rows(store).await?;
    let mut text = String::new();
    for r in &rows {
        text.push_str(&row_json(r).to_string());
        text.push('\n');
    }
    if out.as_os_str() == "-" {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(exit::OK);
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    ctx.print(&json!({"records": rows.len(), "file": out}), || {
        format!("wrote {} records to {}", rows.len(), out.display())
    });
    Ok(exit::OK)
}
