//! The audit log: append-only, hash-chained records of every syscall request, decision and
//! result, and its verifier.
//!
//! Each record's hash is SHA-256 over the previous record's hash and a canonical encoding of
//! the record's fields exactly as stored, so an edited, dropped or reordered row breaks the
//! chain at that row. Each record is also sealed (an HMAC of its hash) and the chain's head
//! is anchored outside the database ([`anchor`]), so cutting the last records or
//! recomputing the chain is found too. Records are written by the store's group-commit
//! writer, which owns the chain head. What a record may hold is redacted and bounded
//! ([`redact`], applied to every entry as it is queued).

pub mod anchor;
pub mod chain;
pub mod redact;
pub mod verify;

pub use chain::{AuditEntry, AuditRow, Decision, GENESIS_HASH};
pub use verify::{verify, VerifyReport};
