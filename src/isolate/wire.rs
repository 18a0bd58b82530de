//! What the kernel and an isolate worker process say to each other over the worker's stdin,
//! a Unix stream socket, in the frames of [`crate::util::frame`].
//!
//! ```text
//! kernel → worker   start (sizes), module (once per hash), call, syscall_reply,
//!                   attach, detach, interrupt, shutdown
//! worker → kernel   syscall, console (both name the call), done, attached, stuck
//! ```
//!
//! Call ids are the kernel's. The worker names a call id in each syscall and console line;
//! the kernel serves it with its own record of that call (port and context), never with a
//! pid the worker could state, and refuses an id that is not running on that worker. The
//! socket is the worker's lifeline: it exits when the kernel's side closes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{CallError, CallLimits, IsolateError};

/// The largest frame the kernel reads from a worker: above any result or syscall request a
/// call's limits allow, and a bound on what a compromised worker can make it allocate.
pub const MAX_FROM_WORKER: usize = 256 << 20;
/// The largest frame a worker reads from the kernel (a syscall's answer can be as large as
/// the operator's fs and fetch limits allow; the kernel is trusted).
pub const MAX_TO_WORKER: usize = u32::MAX as usize;

/// The hidden argument that makes the runtime binary an isolate worker.
pub const WORKER_MODE: &str = "__isolate-worker";

/// Sizes of the isolate host inside a worker.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct WorkerSizes {
    pub threads: usize,
    pub pool_size: usize,
    pub warm: usize,
    pub heap_bytes: usize,
    pub max_queued: usize,
}

/// Kernel → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToWorker {
    /// The first frame.
    Start {
        sizes: WorkerSizes,
    },
    /// A tool module, sent once per hash before the first call that needs it.
    Module {
        hash: String,
        specifier: String,
        code: String,
        source_map: Option<String>,
    },
    /// Runs module `hash` with `args` in `pid`'s isolate, or in a fresh one if `ephemeral`.
    Call {
        call: u64,
        pid: i64,
        hash: String,
        args: Value,
        limits: CallLimits,
        start_time_ms: i64,
        random_seed: u64,
        ephemeral: bool,
        /// Drop `pid`'s isolate first (a replay starts from a fresh one).
        fresh: bool,
    },
    /// The answer to syscall `seq` of call `call`: `Ok(value)` or `Err(wire error)`.
    SyscallReply {
        call: u64,
        seq: u64,
        outcome: Result<Value, Value>,
    },
    Attach {
        id: u64,
        pid: i64,
    },
    Detach {
        pid: i64,
    },
    Interrupt {
        pid: i64,
    },
    Shutdown,
}

/// Worker → kernel. Externally tagged (`{"syscall": {...}}`), so a syscall's request is
/// read as the text the op wrote, without buffering, and decoded once by the kernel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    Syscall {
        call: u64,
        seq: u64,
        /// The wire form of the syscall, as JSON text (see `SyscallPort::syscall`).
        request: Box<RawValue>,
    },
    Console {
        call: u64,
        level: String,
        text: String,
    },
    Done {
        call: u64,
        outcome: Result<Value, CallError>,
        usage: WorkerUsage,
    },
    Attached {
        id: u64,
        outcome: Result<(), IsolateError>,
        usage: WorkerUsage,
    },
    /// Call `call` was stopped but keeps running in the engine: kill this worker.
    Stuck { call: u64 },
}

/// What a worker reports of its own wear, with every answer.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct WorkerUsage {
    /// Runtimes created in the worker so far.
    pub created: u64,
    /// Its threads retired (slot budget spent, canary failed, a stuck call).
    pub threads_retired: u64,
}
