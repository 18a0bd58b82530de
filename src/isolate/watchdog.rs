//! The watchdog: stops calls that run past their time, and calls that are cancelled.
//!
//! Each running call holds a [`Ticket`]. JavaScript runs only inside polls of the call's
//! future (module evaluation included), so the call's time is the time spent inside those
//! polls: [`Ticket::poll`] brackets each one, and the watchdog thread adds the poll in
//! progress ("a poll has been running since T") to the time of the finished ones. Pending
//! syscalls neither stop nor start this clock: a tool that leaves a sleep pending and spins
//! is counted like any other. Every call also has a total wall-clock cap, and
//! [`Watchdog::cancel`] stops the calls of a process (its `cancel` and `kill` signals).
//!
//! When a call must stop, the watchdog records why (the host reports the limit from that
//! record, not from the engine's answer, which may be `Ok` after a termination), asks the
//! engine to terminate execution, raises the isolate's [`StopFlag`] (read by the stop check
//! at every function entry of a tool, `ts/libos.ts`) and wakes the call's task, which then
//! drops the call and its isolate without polling it again. While a poll of a stopped call
//! keeps running, the request is repeated every [`RETRY`]; a poll still running
//! [`ABANDON_AFTER`] after the stop is one the engine cannot interrupt (a long native call):
//! the watchdog then answers the caller itself (the ticket's [`Abandon`]) and retires the
//! worker thread the poll holds (see `worker.rs`), so a stop always ends the call. Only
//! ending the process frees that thread: in an isolate worker the abandon also reports the
//! call to the kernel, which kills the worker (`worker_main.rs`, `conn/`).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use deno_core::v8;
use futures::task::AtomicWaker;

use super::worker::Health;

/// How often the watchdog looks at running calls.
const TICK: Duration = Duration::from_millis(5);
/// How long the watchdog keeps ticking without tickets before it sleeps until the next.
const IDLE_LINGER: Duration = Duration::from_secs(1);
/// How often a termination request is repeated while the stopped call's poll still runs.
const RETRY: Duration = Duration::from_millis(20);
/// How long a stopped call's poll may keep running before its thread is given up.
const ABANDON_AFTER: Duration = Duration::from_secs(2);

/// Why the watchdog stopped a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Its JavaScript ran longer than `cpu_ms`.
    CpuTime,
    /// It ran longer than `wall_ms` in total.
    WallClock,
    /// Its process was cancelled or killed.
    Cancelled,
}

/// The `Int32Array` element through which an isolate's JavaScript learns that its call was
/// stopped.
#[derive(Clone, Copy)]
pub(crate) struct StopFlag(usize);

impl StopFlag {
    /// # Safety
    /// `element` points at an aligned `i32` that stays valid until every ticket given this
    /// flag has finished (the isolate that owns it outlives its calls' tickets).
    pub(crate) unsafe fn new(element: *mut i32) -> StopFlag {
        StopFlag(element as usize)
    }

    /// A flag nothing reads (before an isolate's bootstrap ran).
    pub(crate) fn unused() -> StopFlag {
        static NOBODY: AtomicI32 = AtomicI32::new(0);
        StopFlag(NOBODY.as_ptr() as usize)
    }

    fn raise(self) {
        // SAFETY: valid while the ticket is unfinished (see `new`), which the caller holds
        // the ticket's lock to know; written atomically, read by the engine's thread.
        unsafe { AtomicI32::from_ptr(self.0 as *mut i32) }.store(1, Ordering::SeqCst);
    }
}

/// What ends a call whose poll the engine never gives back: it answers the caller with the
/// stop. Called at most once, from the watchdog's thread.
pub(crate) type Abandon = Box<dyn FnOnce(Stop) + Send>;

/// One running call, as the watchdog sees it.
pub(crate) struct Ticket {
    pid: i64,
    handle: v8::IsolateHandle,
    flag: StopFlag,
    cpu: Duration,
    wall: Duration,
    started: Instant,
    health: Arc<Health>,
    waker: AtomicWaker,
    abandon: Mutex<Option<Abandon>>,
    state: Mutex<TicketState>,
}

#[derive(Default)]
struct TicketState {
    /// Time inside finished polls.
    used: Duration,
    /// When the poll in progress started.
    polling_since: Option<Instant>,
    stop: Option<Stop>,
    last_request: Option<Instant>,
    done: bool,
}

impl Ticket {
    fn lock(&self) -> MutexGuard<'_, TicketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the call must stop, if it must.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        self.lock().stop
    }

    /// Marks a poll of the call as running until the guard drops; `waker` is woken when the
    /// call must stop while no poll runs.
    pub(crate) fn poll(&self, waker: &std::task::Waker) -> Polling<'_> {
        self.waker.register(waker);
        let now = Instant::now();
        self.lock().polling_since = Some(now);
        self.health.busy_since(now);
        Polling { ticket: self }
    }

    /// Ends the watch; returns why the call was stopped, if it was.
    pub(crate) fn finish(&self) -> Option<Stop> {
        let mut state = self.lock();
        state.done = true;
        state.stop
    }

    /// Records `stop` (the first reason wins), asks the engine to terminate and wakes the
    /// call's task.
    fn stop(&self, state: &mut TicketState, stop: Stop, now: Instant) {
        if state.stop.is_none() {
            state.stop = Some(stop);
        }
        state.last_request = Some(now);
        self.handle.terminate_execution();
        self.flag.raise();
        self.waker.wake();
    }

    /// One look at the call; false once it is finished.
    fn check(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.done {
            return false;
        }
        let in_poll = state
            .polling_since
            .map(|s| now.saturating_duration_since(s));
        match state.stop {
            None => {
                let cpu = state.used + in_poll.unwrap_or_default();
                let wall = now.saturating_duration_since(self.started);
                let stop = if cpu >= self.cpu {
                    Some(Stop::CpuTime)
                } else if wall >= self.wall {
                    Some(Stop::WallClock)
                } else {
                    None
                };
                if let Some(stop) = stop {
                    self.stop(&mut state, stop, now);
                }
            }
            Some(_) => {
                if let Some(running) = in_poll {
                    let asked = state.last_request.unwrap_or(now);
                    if now.saturating_duration_since(asked) >= RETRY {
                        state.last_request = Some(now);
                        self.handle.terminate_execution();
                    }
                    if running >= ABANDON_AFTER {
                        self.health
                            .retire("a stopped call kept running in the engine");
                        let abandon = self
                            .abandon
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take();
                        if let (Some(abandon), Some(stop)) = (abandon, state.stop) {
                            abandon(stop);
                        }
                    }
                }
            }
        }
        true
    }
}

/// A watched call; finishes the watch when dropped, so the watchdog never touches an
/// isolate after its call ended, however the call's task ended.
pub(crate) struct Watch(Arc<Ticket>);

impl std::ops::Deref for Watch {
    type Target = Ticket;
    fn deref(&self) -> &Ticket {
        &self.0
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A poll in progress (see [`Ticket::poll`]).
pub(crate) struct Polling<'t> {
    ticket: &'t Ticket,
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let mut state = self.ticket.lock();
        if let Some(since) = state.polling_since.take() {
            state.used += since.elapsed();
        }
        drop(state);
        self.ticket.health.idle();
    }
}

struct Shared {
    tickets: Mutex<Vec<Arc<Ticket>>>,
    /// Processes cancelled or killed: their calls stop as soon as they start. Kept for the
    /// host's life (a cancelled process never runs again, and pids are never reused): a call
    /// still on its way to a worker when its process is killed must not slip through.
    cancelled: Mutex<std::collections::HashSet<i64>>,
    wake: Condvar,
    /// The watchdog waits without a timeout (it has been idle for [`IDLE_LINGER`]); only
    /// then does a new ticket wake it. Read and written under `tickets`' lock.
    asleep: AtomicBool,
    stop: AtomicBool,
}

/// A thread that stops calls that run past their time or are cancelled.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    pub(crate) fn start() -> Watchdog {
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Vec::new()),
            cancelled: Mutex::new(Default::default()),
            wake: Condvar::new(),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let inner = shared.clone();
        thread::Builder::new()
            .name("isolate-watchdog".into())
            .spawn(move || watch(inner))
            .expect("spawn the isolate watchdog thread");
        Watchdog { shared }
    }

    fn tickets(&self) -> MutexGuard<'_, Vec<Arc<Ticket>>> {
        self.shared
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching a call of `pid` on the isolate of `handle` (whose stop flag is
    /// `flag`), running on the worker thread of `health`; `abandon` answers the caller if a
    /// stopped call's poll never returns. The watch ends when the returned guard drops, or
    /// earlier with [`Ticket::finish`].
    pub(crate) fn watch(
        &self,
        pid: i64,
        (handle, flag): (v8::IsolateHandle, StopFlag),
        (cpu_ms, wall_ms): (u64, u64),
        health: Arc<Health>,
        abandon: Abandon,
    ) -> Watch {
        let ticket = Arc::new(Ticket {
            pid,
            handle,
            flag,
            cpu: Duration::from_millis(cpu_ms),
            wall: Duration::from_millis(wall_ms),
            started: Instant::now(),
            health,
            waker: AtomicWaker::new(),
            abandon: Mutex::new(Some(abandon)),
            state: Mutex::new(TicketState::default()),
        });
        if self.cancelled().contains(&pid) {
            let mut state = ticket.lock();
            ticket.stop(&mut state, Stop::Cancelled, Instant::now());
        }
        let mut tickets = self.tickets();
        // A ticking watchdog sees the new ticket within a tick; only a sleeping one needs
        // waking (back-to-back calls cost the watchdog no wake-up each).
        if self.shared.asleep.load(Ordering::Relaxed) {
            self.shared.wake.notify_one();
        }
        tickets.push(ticket.clone());
        Watch(ticket)
    }

    fn cancelled(&self) -> MutexGuard<'_, std::collections::HashSet<i64>> {
        self.shared
            .cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every running call of `pid` (declared tests it runs included) and every call of
    /// it that starts later; returns how many were running.
    pub(crate) fn cancel(&self, pid: i64) -> usize {
        self.cancelled().insert(pid);
        let now = Instant::now();
        let tickets = self.tickets();
        let mut stopped = 0;
        for ticket in tickets.iter().filter(|t| t.pid == pid) {
            let mut state = ticket.lock();
            if !state.done {
                ticket.stop(&mut state, Stop::Cancelled, now);
                stopped += 1;
            }
        }
        stopped
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
    let mut idle_since = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        tickets = if tickets.is_empty() && idle_since.elapsed() >= IDLE_LINGER {
            shared.asleep.store(true, Ordering::Relaxed);
            let tickets = shared.wake.wait(tickets).unwrap_or_else(|e| e.into_inner());
            shared.asleep.store(false, Ordering::Relaxed);
            tickets
        } else {
            shared
                .wake
                .wait_timeout(tickets, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
        let now = Instant::now();
        tickets.retain(|ticket| ticket.check(now));
        if !tickets.is_empty() {
            idle_since = now;
        }
    }
}
