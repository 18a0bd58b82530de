//! The engine's per-thread budget of native-function slots.
//!
//! On QuickJS, the engine facade keeps a per-thread, never-freed table of native functions
//! whose slot number is stored in a 16-bit signed field: past slot 32 767 new native
//! functions silently do nothing, past 65 535 they run *another runtime's* callback with that
//! runtime's data (`shared/design/scale.md`). A worker thread therefore has a lifetime
//! budget. This module counts what the thread spends, by the measured upper bounds below,
//! and says when the thread must retire: well before the table's limit, so that the calls
//! still in flight when it retires cannot reach it. A canary (`runtime.rs`) checks after
//! each runtime creation that the count has not fallen behind the table.
//!
//! With the `v8` engine there is no such table; the count is kept anyway (it costs nothing)
//! so both engines retire threads alike.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots taken by creating a runtime with the ops extension (no startup snapshot).
pub(crate) const PER_RUNTIME: u32 = 160;
/// Slots taken by restoring a runtime from the startup snapshot (which re-creates every op
/// function and the bootstrap's natives); the test `snapshot_runtime_slots_are_budgeted`
/// measures the real figure and checks this one covers it.
pub(crate) const PER_SNAPSHOT_RUNTIME: u32 = 300;
/// Slots taken by loading and evaluating one tool module.
pub(crate) const PER_MODULE: u32 = 2;
/// Slots taken by one call (the two promise callbacks of its result).
pub(crate) const PER_CALL: u32 = 2;
/// Slots taken by one canary.
pub(crate) const PER_CANARY: u32 = 1;
/// A thread retires once it has spent this many; the table breaks at 32 768.
pub(crate) const RETIRE_AT: u32 = 24_000;

/// Runtimes created in this process, on every thread (the process-wide leak of the engine
/// grows with it; isolate workers report it so the kernel can recycle them).
static CREATED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SPENT: Cell<u32> = const { Cell::new(0) };
}

/// Counts `slots` spent on this thread.
pub(crate) fn charge(slots: u32) {
    SPENT.with(|spent| spent.set(spent.get().saturating_add(slots)));
}

/// Slots spent on this thread so far.
pub(crate) fn spent() -> u32 {
    SPENT.with(Cell::get)
}

/// Whether this thread has spent its budget.
pub(crate) fn exhausted() -> bool {
    spent() >= RETIRE_AT
}

/// Whether this thread can still afford to create a runtime.
pub(crate) fn can_create() -> bool {
    spent().saturating_add(PER_SNAPSHOT_RUNTIME.max(PER_RUNTIME) + PER_CANARY) < RETIRE_AT
}

/// Counts one runtime creation in this process.
pub(crate) fn count_runtime() {
    CREATED.fetch_add(1, Ordering::Relaxed);
}

/// Runtimes created in this process so far.
pub(crate) fn runtimes_created() -> u64 {
    CREATED.load(Ordering::Relaxed)
}
