//! Per-call limits.
//!
//! **Time** is the time the call's JavaScript runs: the watchdog (`watchdog.rs`) counts the
//! time spent inside the polls of the call's future, whether or not a syscall is pending,
//! and a total wall-clock cap bounds the call however it waits. Calls that interleave on one
//! worker thread are each charged only for their own polls; a poll also runs the synchronous
//! part of the syscalls it drives, which is charged to the call too.
//!
//! The other limits are enforced elsewhere: heap by the isolate's heap limit and its
//! near-heap-limit callback (`runtime.rs`), syscalls and console bytes by the ops crate's
//! per-call counters, result size by the JavaScript entry point before any copy to Rust.

/// Bounds of one tool call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallLimits {
    /// Time the call's JavaScript may run, in milliseconds (see the module docs).
    pub cpu_ms: u64,
    /// Total wall-clock time of the call, waiting included, in milliseconds.
    pub wall_ms: u64,
    /// The isolate's heap limit. A process keeps its isolate between calls, so this bounds
    /// everything the process's tools keep alive, not only one call's allocations.
    pub heap_bytes: usize,
    /// Syscalls one call may make.
    pub max_syscalls: u64,
    /// Bytes of the result's JSON text.
    pub max_result_bytes: usize,
    /// Bytes of `console.*` output of one call.
    pub max_console_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            cpu_ms: 1_000,
            wall_ms: 600_000,
            heap_bytes: 64 * 1024 * 1024,
            max_syscalls: 1_000,
            max_result_bytes: 1024 * 1024,
            max_console_bytes: 64 * 1024,
        }
    }
}
