//! Per-call limits and the watchdog that enforces the time limit.
//!
//! **Time is wall time, not CPU time.** The watchdog counts the wall time a call spends
//! *outside* the kernel: while at least one of its syscalls is waiting for the port (a human
//! answer, a sleep, a slow fetch) its clock is stopped. When the count passes `cpu_ms` it calls
//! `terminate_execution` on the call's isolate and records that it did, because after an
//! async-loop termination deno_core's event loop may still return `Ok` (see
//! `shared/design/engine.md`): the host reports `Limit { limit: "cpu_time" }` from this record,
//! not from the engine's answer. Calls that interleave on one worker thread count each other's
//! JavaScript time as their own, so the limit is a bound, not an accounting.
//!
//! The other limits are enforced elsewhere: heap by the isolate's heap limit and its
//! near-heap-limit callback (`runtime.rs`), syscalls and console bytes by the ops crate's
//! per-call counters, result size by the JavaScript entry point before any copy to Rust.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use deno_core::v8;

/// Bounds of one tool call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall time outside syscalls, in milliseconds (see the module docs).
    pub cpu_ms: u64,
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
            heap_bytes: 64 * 1024 * 1024,
            max_syscalls: 1_000,
            max_result_bytes: 1024 * 1024,
            max_console_bytes: 64 * 1024,
        }
    }
}

/// How often the watchdog looks at running calls.
const TICK: Duration = Duration::from_millis(5);

/// One running call, as the watchdog sees it.
pub(crate) struct Ticket {
    handle: v8::IsolateHandle,
    budget: Duration,
    in_flight: Arc<AtomicUsize>,
    state: Mutex<TicketState>,
}

struct TicketState {
    used: Duration,
    last: Instant,
    done: bool,
    fired: bool,
}

impl Ticket {
    /// Ends the watch; true if the watchdog terminated the call.
    pub(crate) fn finish(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.done = true;
        state.fired
    }
}

struct Shared {
    tickets: Mutex<Vec<Arc<Ticket>>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A thread that terminates calls that run past their time.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    pub(crate) fn start() -> Watchdog {
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let inner = shared.clone();
        thread::Builder::new()
            .name("isolate-watchdog".into())
            .spawn(move || watch(inner))
            .expect("spawn the isolate watchdog thread");
        Watchdog { shared }
    }

    /// Starts watching a call. Call [`Ticket::finish`] when it ends.
    pub(crate) fn watch(
        &self,
        handle: v8::IsolateHandle,
        cpu_ms: u64,
        in_flight: Arc<AtomicUsize>,
    ) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            handle,
            budget: Duration::from_millis(cpu_ms),
            in_flight,
            state: Mutex::new(TicketState {
                used: Duration::ZERO,
                last: Instant::now(),
                done: false,
                fired: false,
            }),
        });
        let mut tickets = self
            .shared
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A ticking watchdog sees the new ticket within a tick; only an idle one needs waking.
        if tickets.is_empty() {
            self.shared.wake.notify_one();
        }
        tickets.push(ticket.clone());
        ticket
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

fn watch(shared: Arc<Shared>) {
    let mut tickets = shared.tickets.lock().unwrap_or_else(|e| e.into_inner());
    while !shared.stop.load(Ordering::SeqCst) {
        tickets = if tickets.is_empty() {
            shared.wake.wait(tickets).unwrap_or_else(|e| e.into_inner())
        } else {
            shared
                .wake
                .wait_timeout(tickets, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
        let now = Instant::now();
        tickets.retain(|ticket| {
            let mut guard = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            if state.done {
                return false;
            }
            if ticket.in_flight.load(Ordering::SeqCst) == 0 {
                state.used += now.saturating_duration_since(state.last);
            }
            state.last = now;
            if state.used >= ticket.budget && !state.fired {
                state.fired = true;
                ticket.handle.terminate_execution();
            }
            true
        });
    }
}
