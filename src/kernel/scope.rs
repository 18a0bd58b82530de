//! Per-call bookkeeping: what a syscall's handlers add up while it runs ([`Scope`]) and what
//! a successful handler hands back for the audit record and the commit ([`Done`]).

use serde_json::Value;

use super::journal::Keyed;
use crate::store::WriteBatch;

/// Per-call bookkeeping handlers add to.
#[derive(Default)]
pub(crate) struct Scope {
    /// Capabilities that authorized the call (for the audit record).
    pub caps: Vec<i64>,
    /// `allow_once` capabilities reserved by this call: consumed on success, released on
    /// failure.
    pub once: Vec<i64>,
    /// The invocation this call belongs to (tool call id), if any.
    pub correlation: Option<String>,
    /// Audit seq of a human approval this call waited for.
    pub parent_seq: Option<i64>,
    /// A journal intent to make durable right before an external effect
    /// (invocation, seq, args hash); see `Kernel::intent_point`.
    pub intent: Option<(String, i64, String)>,
    /// For `tool.call` through `Kernel::syscall_once`: the invocation to run as.
    pub invocation_key: Option<Keyed>,
}

/// What a successful handler returns.
pub(crate) struct Done {
    pub value: Value,
    /// The resource acted on, for the audit record.
    pub target: String,
    /// Result summary for the audit record.
    pub detail: Value,
    /// State changes committed together with the audit record.
    pub batch: WriteBatch,
    /// The in-memory change that mirrors `batch`: applied only once the commit succeeded,
    /// dropped (undone) if it failed.
    pub on_commit: Option<Box<dyn FnOnce() + Send>>,
}

impl Done {
    pub fn new(value: Value, target: impl Into<String>) -> Done {
        Done {
            value,
            target: target.into(),
            detail: Value::Null,
            batch: WriteBatch::default(),
            on_commit: None,
        }
    }

    pub fn detail(mut self, detail: Value) -> Done {
        self.detail = detail;
        self
    }

    pub fn batch(mut self, batch: WriteBatch) -> Done {
        self.batch = batch;
        self
    }

    pub fn on_commit(mut self, apply: impl FnOnce() + Send + 'static) -> Done {
        self.on_commit = Some(Box::new(apply));
        self
    }
}
