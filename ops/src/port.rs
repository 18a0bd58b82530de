//! The port: the only door from an isolate to the host.
//!
//! The kernel implements [`SyscallPort`]; the isolate host puts a [`CallBinding`] (port, caller
//! context, per-call counters, the record of errors returned) into the runtime's `OpState`
//! before each tool call and takes it out afterwards. Ops read the caller's pid from that
//! binding, never from JavaScript.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{json, Value};

/// A boxed, sendable future (the same type as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Implemented by the kernel; the only door from an isolate to the host.
pub trait SyscallPort: Send + Sync {
    /// `call` is the wire form of a kernel `Syscall` as JSON text, e.g.
    /// `{"primitive":"fs.read_text","path":"a.txt"}`, passed on as it is (not re-parsed on
    /// the way). `Ok(value)`, or `Err(wire error object)` shaped like the kernel's
    /// `WireError` (`kind`, `message`, `resource`?, `right`?, ...).
    fn syscall(
        &self,
        ctx: &CallContext,
        call: Box<RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>>;

    /// `console.*` output of the tool (goes to the process's event log, never host stdout).
    fn console(&self, ctx: &CallContext, level: &str, text: &str);
}

/// Who is calling: set by the host, never by tool code.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub pid: i64,
    pub invocation_id: String,
}

/// The current call's binding, kept in `OpState` while a call runs.
///
/// Counters are per call: the host makes a new binding for each call.
pub struct CallBinding {
    pub(crate) port: Arc<dyn SyscallPort>,
    pub(crate) ctx: CallContext,
    pub(crate) max_syscalls: u64,
    pub(crate) max_console_bytes: usize,
    pub(crate) syscalls: u64,
    pub(crate) console_bytes: usize,
    pub(crate) syscalls_exceeded: bool,
    pub(crate) console_exceeded: bool,
    pub(crate) errors: ErrorRecord,
}

impl CallBinding {
    /// The binding of call number `call` of an isolate (numbers never repeat in an isolate).
    pub fn new(
        port: Arc<dyn SyscallPort>,
        ctx: CallContext,
        call: u64,
        max_syscalls: u64,
        max_console_bytes: usize,
    ) -> CallBinding {
        CallBinding {
            port,
            ctx,
            max_syscalls,
            max_console_bytes,
            syscalls: 0,
            console_bytes: 0,
            syscalls_exceeded: false,
            console_exceeded: false,
            errors: ErrorRecord {
                call,
                errors: Rc::default(),
            },
        }
    }

    /// What the call used, read by the host when the call ends.
    pub fn usage(&self) -> CallUsage {
        CallUsage {
            syscalls: self.syscalls,
            console_bytes: self.console_bytes,
            syscalls_exceeded: self.syscalls_exceeded,
            console_exceeded: self.console_exceeded,
        }
    }

    /// Error number `seq` that this call's syscalls were answered with: the host's own
    /// record, which tool code cannot write.
    pub fn error(&self, seq: usize) -> Option<Value> {
        self.errors.errors.borrow().get(seq).cloned()
    }
}

/// The errors returned to one call's syscalls, in order. An op keeps the record of the call
/// it started in, so an error that arrives after its call ended is never filed under a later
/// call.
#[derive(Clone)]
pub(crate) struct ErrorRecord {
    call: u64,
    errors: Rc<RefCell<Vec<Value>>>,
}

impl ErrorRecord {
    /// Records `error` and returns the op's failure reply, which names the call and the
    /// error's number in the record (the JavaScript face reports those, never the error's
    /// fields, when the error escapes a tool).
    pub(crate) fn failure(&self, error: Value) -> Value {
        let seq = {
            let mut errors = self.errors.borrow_mut();
            errors.push(error.clone());
            errors.len() - 1
        };
        json!({ "ok": false, "error": error, "call": self.call, "seq": seq })
    }
}

/// Counters of one call, as seen when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallUsage {
    pub syscalls: u64,
    pub console_bytes: usize,
    /// A syscall was refused because the call had used its `max_syscalls`.
    pub syscalls_exceeded: bool,
    /// Console output was cut because the call had used its `max_console_bytes`.
    pub console_exceeded: bool,
}
