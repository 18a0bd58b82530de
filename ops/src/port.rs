//! The port: the only door from an isolate to the host.
//!
//! The kernel implements [`SyscallPort`]; the isolate host puts a [`CallBinding`] (port, caller
//! context, per-call counters) into the runtime's `OpState` before each tool call and takes it
//! out afterwards. Ops read the caller's pid from that binding, never from JavaScript.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

/// A boxed, sendable future (the same type as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Implemented by the kernel; the only door from an isolate to the host.
pub trait SyscallPort: Send + Sync {
    /// `call` is the wire form of a kernel `Syscall`, e.g.
    /// `{"primitive":"fs.read_text","path":"a.txt"}`. `Ok(value)`, or `Err(wire error object)`
    /// shaped like the kernel's `WireError` (`kind`, `message`, `resource`?, `right`?, ...).
    fn syscall(&self, ctx: &CallContext, call: Value) -> BoxFuture<'static, Result<Value, Value>>;

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
    pub(crate) in_flight: Arc<AtomicUsize>,
}

impl CallBinding {
    pub fn new(
        port: Arc<dyn SyscallPort>,
        ctx: CallContext,
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
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many syscalls of this call are waiting for the port right now. A watchdog can
    /// read it from another thread to stop a call's clock while it waits for the kernel.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
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

/// Decrements the in-flight gauge when the port's future ends or is dropped.
pub(crate) struct InFlight(pub(crate) Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn enter(gauge: Arc<AtomicUsize>) -> InFlight {
        gauge.fetch_add(1, Ordering::SeqCst);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
