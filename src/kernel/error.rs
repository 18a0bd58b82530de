//! Typed errors of the syscall boundary.
//!
//! Every primitive fails with one of these kinds. They cross every outer boundary (ops, CLI,
//! MCP, fixtures) by their `kind()` name, so the names are part of the public contract.

use serde::Serialize;

/// An error returned by [`crate::kernel::Kernel::syscall`] and the kernel's operator API.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SyscallError {
    /// No capability allows `right` on `resource`, or a deny rule matched.
    #[error("permission denied: {right} on {resource}{}", fmt_detail(.detail))]
    PermissionDenied {
        resource: String,
        right: String,
        detail: String,
    },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A budget or per-call limit was exhausted; `limit` names it.
    #[error("limit exceeded: {limit}: {detail}")]
    LimitExceeded { limit: String, detail: String },
    #[error("rejected by a human: {0}")]
    HumanRejected(String),
    /// The operation needs a human answer that cannot be obtained now (no human channel).
    #[error("waiting for a human: request {request_id}: {detail}")]
    HumanRequired { request_id: String, detail: String },
    #[error("illegal state: {0}")]
    IllegalState(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A replayed invocation left its journal (another call at a recorded place, an effect
    /// the journal does not have, or an end before a recorded effect); `request_id` names
    /// the human request the invocation is parked on, if it is.
    #[error("non-deterministic replay: {detail}")]
    NonDeterminism {
        detail: String,
        request_id: Option<String>,
    },
    /// The tool's own code failed (threw, returned bad output).
    #[error("tool error: {message}")]
    ToolError { message: String, stack: String },
    #[error("i/o error: {0}")]
    Io(String),
    /// An effect outside the runtime was carried out, but its record could not be
    /// committed: do not take the call as failed (nor as done) without checking.
    #[error("outcome uncertain: {0}")]
    Uncertain(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl SyscallError {
    /// Shorthand for a denial with no further detail.
    pub fn denied(resource: impl Into<String>, right: impl std::fmt::Display) -> Self {
        SyscallError::PermissionDenied {
            resource: resource.into(),
            right: right.to_string(),
            detail: String::new(),
        }
    }

    /// Shorthand for a denial that explains itself.
    pub fn denied_because(
        resource: impl Into<String>,
        right: impl std::fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        SyscallError::PermissionDenied {
            resource: resource.into(),
            right: right.to_string(),
            detail: detail.into(),
        }
    }

    pub fn limit(limit: impl Into<String>, detail: impl Into<String>) -> Self {
        SyscallError::LimitExceeded {
            limit: limit.into(),
            detail: detail.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        SyscallError::InvalidArgument(msg.into())
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        SyscallError::Internal(err.to_string())
    }

    /// The stable name of this error's kind, as seen by tools, the CLI and fixtures.
    pub fn kind(&self) -> &'static str {
        match self {
            SyscallError::PermissionDenied { .. } => "PermissionDenied",
            SyscallError::NotFound(_) => "NotFound",
            SyscallError::InvalidArgument(_) => "InvalidArgument",
            SyscallError::LimitExceeded { .. } => "LimitExceeded",
            SyscallError::HumanRejected(_) => "HumanRejected",
            SyscallError::HumanRequired { .. } => "HumanRequired",
            SyscallError::IllegalState(_) => "IllegalState",
            SyscallError::AlreadyExists(_) => "AlreadyExists",
            SyscallError::Timeout(_) => "Timeout",
            SyscallError::Cancelled(_) => "Cancelled",
            SyscallError::NonDeterminism { .. } => "NonDeterminism",
            SyscallError::ToolError { .. } => "ToolError",
            SyscallError::Io(_) => "IoError",
            SyscallError::Uncertain(_) => "Uncertain",
            SyscallError::Internal(_) => "InternalError",
        }
    }

    /// The wire form: `{"kind":..,"message":..,"detail"?:..,"resource"?:..,"right"?:..,
    /// "limit"?:..}`. `detail` is the message without its kind's prefix (for a denial: why
    /// it was denied), so that [`SyscallError::from_wire`] never parses `message`.
    pub fn to_wire(&self) -> WireError {
        let mut wire = WireError::new(self.kind(), self.to_string());
        let text = match self {
            SyscallError::PermissionDenied {
                resource,
                right,
                detail,
            } => {
                wire.resource = Some(resource.clone());
                wire.right = Some(right.clone());
                (!detail.is_empty()).then(|| detail.clone())
            }
            SyscallError::LimitExceeded { limit, detail } => {
                wire.limit = Some(limit.clone());
                Some(detail.clone())
            }
            SyscallError::HumanRequired { request_id, detail } => {
                wire.request_id = Some(request_id.clone());
                Some(detail.clone())
            }
            SyscallError::NonDeterminism { detail, request_id } => {
                wire.request_id = request_id.clone();
                Some(detail.clone())
            }
            SyscallError::ToolError { message, stack } => {
                wire.stack = (!stack.is_empty()).then(|| stack.clone());
                Some(message.clone())
            }
            SyscallError::NotFound(text)
            | SyscallError::InvalidArgument(text)
            | SyscallError::HumanRejected(text)
            | SyscallError::IllegalState(text)
            | SyscallError::AlreadyExists(text)
            | SyscallError::Timeout(text)
            | SyscallError::Cancelled(text)
            | SyscallError::Io(text)
            | SyscallError::Uncertain(text)
            | SyscallError::Internal(text) => Some(text.clone()),
        };
        wire.detail = text;
        wire
    }

    /// Rebuilds an error from its wire form (used by journal replay and the isolate bridge)
    /// from its structured fields. A record written before `detail` was on the wire falls
    /// back to the message after its first `": "`.
    pub fn from_wire(wire: &WireError) -> Self {
        let text = wire
            .detail
            .clone()
            .unwrap_or_else(|| legacy_detail(&wire.message));
        match wire.kind.as_str() {
            "PermissionDenied" => SyscallError::PermissionDenied {
                resource: wire.resource.clone().unwrap_or_default(),
                right: wire.right.clone().unwrap_or_default(),
                detail: wire.detail.clone().unwrap_or_default(),
            },
            "NotFound" => SyscallError::NotFound(text),
            "InvalidArgument" => SyscallError::InvalidArgument(text),
            "LimitExceeded" => SyscallError::LimitExceeded {
                limit: wire.limit.clone().unwrap_or_default(),
                detail: text,
            },
            "HumanRejected" => SyscallError::HumanRejected(text),
            "HumanRequired" => SyscallError::HumanRequired {
                request_id: wire.request_id.clone().unwrap_or_default(),
                detail: text,
            },
            "IllegalState" => SyscallError::IllegalState(text),
            "AlreadyExists" => SyscallError::AlreadyExists(text),
            "Timeout" => SyscallError::Timeout(text),
            "Cancelled" => SyscallError::Cancelled(text),
            "NonDeterminism" => SyscallError::NonDeterminism {
                detail: text,
                request_id: wire.request_id.clone(),
            },
            "ToolError" => SyscallError::ToolError {
                message: text,
                stack: wire.stack.clone().unwrap_or_default(),
            },
            "IoError" => SyscallError::Io(text),
            "Uncertain" => SyscallError::Uncertain(text),
            _ => SyscallError::Internal(text),
        }
    }
}

/// The detail of a wire error recorded before the wire form carried it.
fn legacy_detail(message: &str) -> String {
    match message.split_once(": ") {
        Some((_, rest)) => rest.to_string(),
        None => message.to_string(),
    }
}

/// Serializable form of [`SyscallError`] for every outer boundary.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct WireError {
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub right: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stack: Option<String>,
    /// The message without its kind's prefix; for a denial, why it was denied (e.g.
    /// "denied by capability #4").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl WireError {
    /// A wire error of `kind` saying `message`, with no other field.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> WireError {
        WireError {
            kind: kind.into(),
            message: message.into(),
            resource: None,
            right: None,
            limit: None,
            request_id: None,
            stack: None,
            detail: None,
        }
    }
}

impl From<sqlx::Error> for SyscallError {
    fn from(err: sqlx::Error) -> Self {
        SyscallError::Internal(format!("store: {err}"))
    }
}

pub type SysResult<T> = Result<T, SyscallError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_keeps_the_denial_reason_and_the_request() {
        let err = SyscallError::denied_because("fs:a", "write", "denied by capability #4");
        assert_eq!(SyscallError::from_wire(&err.to_wire()), err);
        let err = SyscallError::HumanRequired {
            request_id: "hr_1".into(),
            detail: "approve it".into(),
        };
        assert_eq!(SyscallError::from_wire(&err.to_wire()), err);
    }

    #[test]
    fn every_kind_survives_the_wire_unchanged() {
        let errors = [
            SyscallError::limit("wall_time", "process 3 ran 10 ms of its 5 ms"),
            SyscallError::NotFound("object 'a: b' in proc/1".into()),
            SyscallError::invalid("path: x"),
            SyscallError::HumanRejected("request hr_1 was rejected: no".into()),
            SyscallError::HumanRequired {
                request_id: "hr_2".into(),
                detail: "request hr_9: nested".into(),
            },
            SyscallError::IllegalState("process 4 is exited".into()),
            SyscallError::AlreadyExists("a.txt".into()),
            SyscallError::Timeout("no event 'go' within 5 ms".into()),
            SyscallError::Cancelled("process 2 was cancelled".into()),
            SyscallError::NonDeterminism {
                detail: "syscall #2: other arguments".into(),
                request_id: None,
            },
            SyscallError::NonDeterminism {
                detail: "syscall #1: fs.list where fs.read_text was".into(),
                request_id: Some("hr_3".into()),
            },
            SyscallError::ToolError {
                message: "Error: boom: bad".into(),
                stack: "at f (tool.ts:1:1)".into(),
            },
            SyscallError::Io("disk: full".into()),
            SyscallError::Internal("store: locked".into()),
            SyscallError::denied("fs:x", "read"),
        ];
        for err in errors {
            let wire = err.to_wire();
            let back = SyscallError::from_wire(&wire);
            assert_eq!(back, err, "{wire:?}");
            assert_eq!(back.to_string(), err.to_string());
            // Through JSON as well (journal outcomes, the isolate bridge).
            let json = serde_json::to_value(&wire).unwrap();
            let wire: WireError = serde_json::from_value(json).unwrap();
            assert_eq!(SyscallError::from_wire(&wire), err);
        }
    }

    #[test]
    fn a_limit_read_back_from_the_wire_names_its_limit_once() {
        let err = SyscallError::limit("syscalls", "process 1 used its budget of 5 syscalls");
        let back = SyscallError::from_wire(&err.to_wire()).to_string();
        assert_eq!(
            back,
            "limit exceeded: syscalls: process 1 used its budget of 5 syscalls"
        );
    }

    #[test]
    fn a_wire_error_recorded_without_detail_still_reads() {
        let wire = WireError::new("NotFound", "not found: object obj_1");
        assert_eq!(
            SyscallError::from_wire(&wire),
            SyscallError::NotFound("object obj_1".into())
        );
    }

    #[test]
    fn wire_round_trip_keeps_resource_and_right() {
        let err = SyscallError::denied("fs:secret.txt", "read");
        let back = SyscallError::from_wire(&err.to_wire());
        assert_eq!(back, err);
        assert_eq!(err.to_wire().resource.as_deref(), Some("fs:secret.txt"));
    }
}
