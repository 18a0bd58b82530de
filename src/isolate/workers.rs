//! The kernel's isolate host: tools run in **worker processes**, never in the kernel's.
//!
//! A worker is the runtime binary started in its hidden mode (`worker_main.rs`); it runs an
//! in-process [`IsolateHost`](super::IsolateHost) and talks to the kernel over a Unix socket
//! (`wire.rs`, `conn.rs`). [`WorkerHost`] keeps process workers, each holding the isolates
//! of at most [`HostConfig::hot_per_worker`] processes, and one worker for declared tests
//! and other throwaway isolates; it places each pid whose isolate is (re-)created on the
//! process worker holding the fewest (starting one when all are full), and serves every
//! syscall of a call with the call's own port and context (`conn.rs`: attribution).
//!
//! **Recycling.** The engine leaks ~0.9 MiB per runtime created and has a per-thread
//! lifetime budget of ~150 creations (`shared/design/scale.md`); only ending the process
//! gives the memory back. After every answer the kernel looks at the worker's wear: the
//! runtimes it reports having created, and its resident memory, which the kernel reads
//! itself from `/proc/<pid>/statm`. Past [`HostConfig::worker_creations`] or
//! [`HostConfig::worker_rss_bytes`] the worker is **drained and replaced**: new work goes to
//! a fresh worker, calls in flight finish, then the old one is told to shut down and is
//! killed after [`SHUTDOWN_GRACE`]. A process whose worker was replaced (or died) gets a
//! fresh isolate at its next call: its JavaScript globals are gone, the same contract as
//! after a limit.
//!
//! **Hibernation** (`hibernation.rs`). After each call the host evicts, least recently used
//! first, the isolates of processes that are not in a call while more than
//! [`HostConfig::max_hot`] are hot, and a sweep on the host's thread evicts those idle past
//! [`HostConfig::idle_timeout`]. Eviction holds the process's call lock, so a call in
//! progress never loses its isolate; the next call re-creates one. A call that ends in a
//! way that may have poisoned its isolate (a time or memory limit, cancellation, an
//! internal error, a lost worker) drops it in the worker too, so the process is no longer
//! counted hot.
//!
//! **Sharing.** Several kernels may use one host ([`WorkerHost::share`]): each gets its own
//! pid space. The host turns every (space, pid) into a key of its own, never reused, and
//! only keys reach its tables and its workers; so two kernels' "pid 1" are two isolates,
//! two call locks, two cancellations. When a kernel's last handle goes, every isolate of
//! its space is dropped.
//!
//! Workers are spawned from the host's own thread, which lives as long as the host: their
//! parent-death signal fires when it ends, and each worker also exits when its socket
//! closes. Their sockets are served on the runtime the host was started on (the kernel's):
//! a frame from a worker wakes its call where it was read, and a frame to a worker is
//! written by the task that sends it (`providers::frame_writer`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::conn::{Conn, Mode};
use super::hibernation::HotSet;
use super::wire::WorkerSizes;
use super::{CallError, CallRequest, HostConfig, HostStats, IsolateError};

/// How long a drained worker may take to exit after `shutdown` before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often a draining worker is checked for calls still in flight.
const DRAIN_CHECK: Duration = Duration::from_millis(20);
/// How many workers a command tries before it gives up.
const MAX_ATTEMPTS: usize = 4;

/// Which worker a command goes to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Processes,
    Tests,
}

/// Hosts the isolates of all processes in worker processes. Cheap to clone (a clone is in
/// the same pid space); the workers stop when the last handle goes.
#[derive(Clone)]
pub struct WorkerHost {
    inner: Arc<Inner>,
    space: Arc<Space>,
}

/// One pid space on a host: the host key of each pid named through it.
struct Space {
    host: Weak<Inner>,
    keys: Mutex<HashMap<i64, i64>>,
}

impl Drop for Space {
    /// Drops the isolates of every pid of this space (its kernel is gone).
    fn drop(&mut self) {
        let Some(inner) = self.host.upgrade() else {
            return;
        };
        let keys: Vec<i64> = lock(&self.keys).drain().map(|(_, key)| key).collect();
        for key in keys {
            inner.release(key);
            lock(&inner.cancelled).remove(&key);
        }
    }
}

struct Inner {
    config: HostConfig,
    binary: Option<PathBuf>,
    /// Environment of workers (`RUST_BACKTRACE`, and in debug builds the test switch of
    /// `worker_main.rs` when the configuration asks for it).
    env: Vec<(String, String)>,
    /// The host's own runtime thread: spawning, draining, reaping.
    runtime: tokio::runtime::Handle,
    /// Where worker sockets are served: the runtime the host was started on (the kernel's),
    /// else the host's own.
    io: tokio::runtime::Handle,
    /// Dropping it ends the host's thread (and with it, every worker).
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Process workers taking new placements (none draining).
    processes: tokio::sync::Mutex<Vec<Arc<Conn>>>,
    tests: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Workers not yet shut down (current and draining).
    live: Mutex<Vec<Arc<Conn>>>,
    placement: Mutex<HashMap<i64, Arc<Conn>>>,
    serial: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    cancelled: Mutex<HashSet<i64>>,
    /// Numbers given to workers (one per attempt to start one).
    numbers: AtomicU64,
    started: AtomicUsize,
    replaced: AtomicUsize,
    lost: AtomicUsize,
    /// Runtimes created by workers that have been shut down.
    created_before: AtomicU64,
    max_rss: AtomicU64,
    hot: Mutex<HotSet>,
    evicted: AtomicU64,
    recreated: AtomicU64,
    /// The last host key given to a (space, pid).
    last_key: AtomicI64,
}

impl Inner {
    /// Evicts isolates of processes not in a call (host keys, of every space): the least
    /// recently used while more than `max_hot` are hot, and every one idle past
    /// `idle_timeout`. Walks the hot set oldest first and stops at the first process it
    /// need not evict, so a call that evicts nothing costs one look at the oldest.
    fn hibernate_some(&self) {
        let now = Instant::now();
        let config = &self.config;
        let mut after = 0;
        loop {
            let (pid, stamp, over_cap, idle) = {
                let hot = lock(&self.hot);
                let Some((stamp, pid)) = hot.oldest_after(after) else {
                    return;
                };
                let idle = hot
                    .idle_for(pid, now)
                    .is_some_and(|idle| idle >= config.idle_timeout);
                (pid, stamp, hot.hot() > config.max_hot, idle)
            };
            if !over_cap && !idle {
                // Oldest first: no later one is idle either.
                return;
            }
            after = stamp;
            self.evict(pid);
        }
    }

    /// Drops `pid`'s isolate in its worker unless `pid` is in a call (whose lock it would
    /// need); true if evicted.
    fn evict(&self, pid: i64) -> bool {
        let serial = lock(&self.serial).get(&pid).cloned();
        let Some(serial) = serial else {
            lock(&self.hot).forget(pid);
            return false;
        };
        let Ok(_not_in_a_call) = serial.try_lock() else {
            return false;
        };
        let conn = lock(&self.placement).remove(&pid);
        if let Some(conn) = conn {
            conn.detach(pid);
        }
        lock(&self.hot).hibernate(pid);
        self.evicted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pid, "isolate hibernated");
        true
    }

    /// Drops `key`'s isolate (after its running call, if any, ends).
    fn release(&self, key: i64) {
        lock(&self.serial).remove(&key);
        lock(&self.hot).forget(key);
        let conn = lock(&self.placement).remove(&key);
        if let Some(conn) = conn {
            conn.detach(key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The variables of the runtime's environment a worker gets.
const WORKER_ENV: &[&str] = &["RUST_BACKTRACE"];

impl WorkerHost {
    /// Starts the host's thread; workers start on first use. `binary` is the runtime
    /// binary (see `providers::runtime_binary`); without it every call fails with an error
    /// that says how to set it.
    pub fn start(config: HostConfig, binary: Option<PathBuf>) -> WorkerHost {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("isolate-workers".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the isolate workers' runtime");
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .expect("spawn the isolate workers' thread");
        let runtime = handle_rx
            .recv()
            .expect("the isolate workers' thread starts its runtime");
        #[allow(unused_mut)]
        let mut env = crate::providers::worker_process::passthrough_env(WORKER_ENV);
        #[cfg(debug_assertions)]
        if config.test_keep_atomics {
            env.push((super::worker_main::KEEP_ATOMICS_ENV.into(), "1".into()));
        }
        let io = tokio::runtime::Handle::try_current().unwrap_or_else(|_| runtime.clone());
        let inner = Arc::new(Inner {
            config,
            binary,
            env,
            io,
            runtime,
            _stop: stop,
            processes: tokio::sync::Mutex::new(Vec::new()),
            tests: tokio::sync::Mutex::new(None),
            live: Mutex::new(Vec::new()),
            placement: Mutex::new(HashMap::new()),
            serial: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(HashSet::new()),
            numbers: AtomicU64::new(0),
            started: AtomicUsize::new(0),
            replaced: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            created_before: AtomicU64::new(0),
            max_rss: AtomicU64::new(0),
            hot: Mutex::new(HotSet::default()),
            evicted: AtomicU64::new(0),
            recreated: AtomicU64::new(0),
            last_key: AtomicI64::new(0),
        });
        let host = WorkerHost::in_new_space(inner);
        host.sweep_idle();
        host
    }

    /// A handle to the same host and workers with a pid space of its own: what it runs for
    /// a pid is never what another space runs for the same number (isolate, globals, call
    /// lock, cancellation). Give one to each kernel that shares the host.
    pub fn share(&self) -> WorkerHost {
        WorkerHost::in_new_space(self.inner.clone())
    }

    fn in_new_space(inner: Arc<Inner>) -> WorkerHost {
        let space = Arc::new(Space {
            host: Arc::downgrade(&inner),
            keys: Mutex::new(HashMap::new()),
        });
        WorkerHost { inner, space }
    }

    /// The host's key for `pid` of this space (made on first use; never another space's).
    /// The host's tables and workers know keys only: every private method takes one.
    fn key(&self, pid: i64) -> i64 {
        *lock(&self.space.keys)
            .entry(pid)
            .or_insert_with(|| self.inner.last_key.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Starts the process worker now, in the background, unless one runs: its start (and
    /// its warm isolates, `HostConfig::warm`) overlap whatever the caller does next. A
    /// failure is left for the first call to meet (and report) again.
    pub fn prestart(&self) {
        let host = self.clone();
        self.inner.runtime.spawn(async move {
            if let Err(e) = host.a_process_worker().await {
                tracing::debug!("isolate workers: starting ahead failed: {e}");
            }
        });
    }

    /// Evicts idle isolates every so often, on the host's thread, while the host lives.
    fn sweep_idle(&self) {
        let period = (self.inner.config.idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        self.inner.runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = inner.upgrade() else { return };
                inner.hibernate_some();
            }
        });
    }

    /// `pid`'s call ended in a way that may have poisoned its isolate (the worker then
    /// dropped it, or will): it is dropped on the worker and `pid` is no longer hot, so the
    /// host's count and the worker's agree. Its next call creates an isolate.
    fn drop_after(&self, pid: i64, conn: &Arc<Conn>, outcome: &Result<Value, CallError>) {
        if !outcome.as_ref().err().is_some_and(may_poison) {
            return;
        }
        conn.detach(pid);
        self.unplace(pid, conn);
        lock(&self.inner.hot).forget(pid);
        tracing::debug!(pid, "isolate dropped after its call failed");
    }

    /// `pid` starts or ends a call: its isolate is hot (again).
    fn touched(&self, pid: i64) {
        if lock(&self.inner.hot).touch(pid, Instant::now()) {
            self.inner.recreated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `pid` has a hot isolate in a worker that still serves it (else its next call
    /// creates one: it hibernates, was never called, or its worker was replaced).
    pub fn is_hot(&self, pid: i64) -> bool {
        // A pid this space never named has no isolate (and asking makes it no key).
        let Some(pid) = lock(&self.space.keys).get(&pid).copied() else {
            return false;
        };
        let placed = lock(&self.inner.placement).get(&pid).cloned();
        placed.is_some_and(|conn| conn.ended().is_none() && !conn.is_draining())
            && lock(&self.inner.hot).is_hot(pid)
    }

    /// Binds a pre-created isolate to `pid` (a no-op if it has one).
    pub async fn attach(&self, pid: i64) -> Result<(), IsolateError> {
        let pid = self.key(pid);
        let mut why = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let conn = self.worker_of(pid).await.map_err(IsolateError::Create)?;
            match conn.attach(pid).await {
                Some(Ok(())) => {
                    self.touched(pid);
                    self.check_wear(&conn);
                    self.inner.hibernate_some();
                    return Ok(());
                }
                Some(Err(e)) => {
                    self.forget_worker(&conn);
                    why = e.to_string();
                }
                None => self.unplace(pid, &conn),
            }
        }
        Err(IsolateError::Create(why))
    }

    /// Drops `pid`'s isolate (after its running call, if any, ends).
    pub async fn detach(&self, pid: i64) {
        self.inner.release(self.key(pid));
    }

    /// Stops `pid`'s running calls (and declared tests) at once, and every later one: they
    /// fail with [`CallError::Cancelled`]. Returns how many were running.
    pub fn interrupt(&self, pid: i64) -> usize {
        let pid = self.key(pid);
        lock(&self.inner.cancelled).insert(pid);
        let live = lock(&self.inner.live).clone();
        live.iter()
            .map(|conn| {
                let running = conn.calls_of(pid);
                conn.interrupt(pid);
                running
            })
            .sum()
    }

    /// Runs a tool call in `pid`'s isolate, attaching one first if needed.
    pub async fn call(&self, pid: i64, req: CallRequest) -> Result<Value, CallError> {
        // On the heap: this future is awaited deep inside the kernel's own.
        Box::pin(self.call_inner(pid, req, Mode::Process)).await
    }

    /// Runs a tool call in a fresh isolate for `pid`, which then stays `pid`'s isolate (a
    /// replay starts from nothing the interrupted run left behind).
    pub async fn call_fresh(&self, pid: i64, req: CallRequest) -> Result<Value, CallError> {
        Box::pin(self.call_inner(pid, req, Mode::Fresh)).await
    }

    async fn call_inner(&self, pid: i64, req: CallRequest, mode: Mode) -> Result<Value, CallError> {
        if req.ctx.pid != pid {
            return Err(CallError::Internal(format!(
                "a call for pid {pid} carries the context of pid {}",
                req.ctx.pid
            )));
        }
        let pid = self.key(pid);
        let serial = lock(&self.inner.serial).entry(pid).or_default().clone();
        let _one_at_a_time = serial.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            self.refuse_cancelled(pid)?;
            let conn = self.worker_of(pid).await.map_err(CallError::Internal)?;
            // Again once the worker is known: an interrupt that came in between reached
            // this worker (see `Conn::call`) or is seen here.
            self.refuse_cancelled(pid)?;
            // Hot from the start of the call: the call creates the isolate if needed.
            self.touched(pid);
            match conn.call(pid, &req, mode).await {
                Some(outcome) => {
                    self.touched(pid);
                    self.drop_after(pid, &conn, &outcome);
                    self.after_call(&conn);
                    self.inner.hibernate_some();
                    return outcome;
                }
                None => self.unplace(pid, &conn),
            }
        }
        Err(CallError::Internal(
            "no isolate worker took the call; try again".into(),
        ))
    }

    /// Runs a call in a fresh isolate that is dropped afterwards (declared tests, mock
    /// ports), on the test worker.
    pub async fn run_ephemeral(&self, req: CallRequest) -> Result<Value, CallError> {
        Box::pin(self.run_ephemeral_inner(req)).await
    }

    async fn run_ephemeral_inner(&self, req: CallRequest) -> Result<Value, CallError> {
        let pid = self.key(req.ctx.pid);
        for _ in 0..MAX_ATTEMPTS {
            self.refuse_cancelled(pid)?;
            let conn = self.tester().await.map_err(CallError::Internal)?;
            self.refuse_cancelled(pid)?;
            if let Some(outcome) = conn.call(pid, &req, Mode::Ephemeral).await {
                self.after_call(&conn);
                return outcome;
            }
        }
        Err(CallError::Internal(
            "no isolate worker took the call; try again".into(),
        ))
    }

    /// Calls and attaches in flight on the workers.
    pub fn queued(&self) -> usize {
        lock(&self.inner.live).iter().map(|c| c.busy()).sum()
    }

    /// Workers started, replaced and lost, runtimes they created, the largest worker
    /// memory seen.
    pub fn stats(&self) -> HostStats {
        let live = lock(&self.inner.live).clone();
        let usage = live.iter().map(|c| c.usage());
        // What workers report is theirs to say: counted without overflow.
        let (created, threads_retired) = usage.fold((0u64, 0u64), |(c, t), u| {
            (
                c.saturating_add(u.created),
                t.saturating_add(u.threads_retired),
            )
        });
        HostStats {
            threads_started: 0,
            threads_retired: usize::try_from(threads_retired).unwrap_or(usize::MAX),
            workers_started: self.inner.started.load(Ordering::Relaxed),
            workers_replaced: self.inner.replaced.load(Ordering::Relaxed),
            workers_lost: self.inner.lost.load(Ordering::Relaxed),
            workers_live: live.len(),
            runtimes_created: created
                .saturating_add(self.inner.created_before.load(Ordering::Relaxed)),
            max_worker_rss_bytes: self.inner.max_rss.load(Ordering::Relaxed),
            isolates_hot: lock(&self.inner.hot).hot(),
            isolates_evicted: self.inner.evicted.load(Ordering::Relaxed),
            isolates_recreated: self.inner.recreated.load(Ordering::Relaxed),
        }
    }

    fn refuse_cancelled(&self, pid: i64) -> Result<(), CallError> {
        if lock(&self.inner.cancelled).contains(&pid) {
            return Err(CallError::Cancelled(
                "the process was cancelled or killed".into(),
            ));
        }
        Ok(())
    }

    fn after_call(&self, conn: &Arc<Conn>) {
        if conn.ended().is_some() {
            self.forget_worker(conn);
        } else {
            self.check_wear(conn);
        }
    }

    /// The worker `pid` is placed on, placing it first on the process worker that holds the
    /// fewest placed processes, or on a new one when every worker holds
    /// [`HostConfig::hot_per_worker`].
    async fn worker_of(&self, pid: i64) -> Result<Arc<Conn>, String> {
        let placed = lock(&self.inner.placement).get(&pid).cloned();
        if let Some(conn) = placed {
            if conn.ended().is_none() && !conn.is_draining() {
                return Ok(conn);
            }
        }
        let mut workers = self.inner.processes.lock().await;
        workers.retain(|conn| {
            let serving = conn.ended().is_none() && !conn.is_draining();
            if !serving {
                self.forget_worker(conn);
            }
            serving
        });
        let least = {
            let placement = lock(&self.inner.placement);
            let mut load = vec![0usize; workers.len()];
            for conn in placement.values() {
                if let Some(at) = workers.iter().position(|w| Arc::ptr_eq(w, conn)) {
                    load[at] += 1;
                }
            }
            (0..workers.len())
                .min_by_key(|at| load[*at])
                .filter(|at| load[*at] < self.inner.config.hot_per_worker.max(1))
        };
        let conn = match least {
            Some(at) => workers[at].clone(),
            None => {
                let conn = self.start_worker(Kind::Processes).await?;
                workers.push(conn.clone());
                conn
            }
        };
        drop(workers);
        lock(&self.inner.placement).insert(pid, conn.clone());
        Ok(conn)
    }

    /// A serving process worker, started if there is none.
    async fn a_process_worker(&self) -> Result<Arc<Conn>, String> {
        let mut workers = self.inner.processes.lock().await;
        if let Some(conn) = workers
            .iter()
            .find(|conn| conn.ended().is_none() && !conn.is_draining())
        {
            return Ok(conn.clone());
        }
        let conn = self.start_worker(Kind::Processes).await?;
        workers.push(conn.clone());
        Ok(conn)
    }

    fn unplace(&self, pid: i64, conn: &Arc<Conn>) {
        let mut placement = lock(&self.inner.placement);
        if placement.get(&pid).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            placement.remove(&pid);
        }
    }

    /// The test worker, started if there is none (or it is draining or gone).
    async fn tester(&self) -> Result<Arc<Conn>, String> {
        let mut slot = self.inner.tests.lock().await;
        if let Some(conn) = slot.as_ref() {
            if conn.ended().is_none() && !conn.is_draining() {
                return Ok(conn.clone());
            }
            self.forget_worker(conn);
        }
        let conn = self.start_worker(Kind::Tests).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Starts a worker of `kind`.
    async fn start_worker(&self, kind: Kind) -> Result<Arc<Conn>, String> {
        let binary = self.inner.binary.clone().ok_or_else(|| {
            format!(
                "isolate workers: cannot find the {} binary that runs them; install it beside this program or set KernelConfig::runtime_binary",
                crate::providers::runtime_binary::NAME
            )
        })?;
        let number = self.inner.numbers.fetch_add(1, Ordering::Relaxed);
        let config = &self.inner.config;
        let sizes = match kind {
            Kind::Processes => WorkerSizes {
                threads: config.threads,
                pool_size: config.pool_size,
                warm: config.warm,
                heap_bytes: config.heap_bytes,
                max_queued: config.max_queued,
            },
            // Only the worker's test thread is used: no pool on its process lane.
            Kind::Tests => WorkerSizes {
                threads: 1,
                pool_size: 0,
                warm: 0,
                heap_bytes: config.heap_bytes,
                max_queued: config.max_queued,
            },
        };
        let env = self.inner.env.clone();
        let spawn_binary = binary.clone();
        let io = self.inner.io.clone();
        // Spawned on the host's thread: the worker's parent-death signal follows it.
        let conn = self
            .inner
            .runtime
            .spawn(async move { Conn::spawn(&spawn_binary, number, sizes, &env, &io) })
            .await
            .map_err(|e| format!("isolate workers: {e}"))?
            .map_err(|e| {
                format!(
                    "isolate workers: cannot start {}: {e}; check that it is the runtime binary or set KernelConfig::runtime_binary",
                    binary.display()
                )
            })?;
        tracing::info!(
            worker = number,
            ?kind,
            pid = conn.os_pid,
            "isolate worker started"
        );
        self.inner.started.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.live).push(conn.clone());
        Ok(conn)
    }

    /// Drains and replaces `conn` when it has created too many runtimes or holds too much
    /// memory.
    fn check_wear(&self, conn: &Arc<Conn>) {
        let usage = conn.usage();
        let rss = conn.rss_bytes().unwrap_or(0);
        self.inner.max_rss.fetch_max(rss, Ordering::Relaxed);
        let config = &self.inner.config;
        let why = if usage.created >= config.worker_creations {
            format!("it created {} runtimes", usage.created)
        } else if rss >= config.worker_rss_bytes {
            format!("its resident memory is {} MiB", rss >> 20)
        } else {
            return;
        };
        self.retire(conn, why);
    }

    /// Stops placing work on `conn`; once its calls are done it is shut down.
    fn retire(&self, conn: &Arc<Conn>, why: String) {
        if !conn.drain() {
            return;
        }
        tracing::info!(worker = conn.number, "isolate worker is replaced: {why}");
        self.inner.replaced.fetch_add(1, Ordering::Relaxed);
        let (inner, conn) = (self.inner.clone(), conn.clone());
        self.inner.runtime.spawn(async move {
            while !conn.close_if_idle() {
                tokio::time::sleep(DRAIN_CHECK).await;
            }
            conn.reap(SHUTDOWN_GRACE).await;
            let mut live = lock(&inner.live);
            if let Some(at) = live.iter().position(|c| Arc::ptr_eq(c, &conn)) {
                live.swap_remove(at);
                add_created(&inner.created_before, conn.usage().created);
            }
        });
    }

    /// Forgets a worker that ended on its own (it died or was killed).
    fn forget_worker(&self, conn: &Arc<Conn>) {
        if conn.ended().is_none() {
            return;
        }
        let mut live = lock(&self.inner.live);
        if let Some(at) = live.iter().position(|c| Arc::ptr_eq(c, conn)) {
            live.swap_remove(at);
            add_created(&self.inner.created_before, conn.usage().created);
            if !conn.is_draining() {
                self.inner.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a call that failed with `error` may have lost its isolate: the worker drops an
/// isolate after a time or memory limit, a cancellation or an internal failure, and a lost
/// worker holds none. (A tool's own error, a syscall's, a result too large or a stack
/// overflow leave it usable.)
fn may_poison(error: &CallError) -> bool {
    match error {
        CallError::Limit { limit, .. } => {
            matches!(limit.as_str(), "cpu_time" | "wall_clock" | "memory")
        }
        CallError::Cancelled(_) | CallError::Internal(_) | CallError::Retry(_) => true,
        CallError::Syscall { .. } | CallError::Threw { .. } | CallError::Module(_) => false,
    }
}

/// Adds a retired worker's reported runtime creations, without overflow.
fn add_created(total: &AtomicU64, created: u64) {
    let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
        Some(before.saturating_add(created))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::wire::{FromWorker, WorkerUsage};
    use crate::providers::worker_process;
    use crate::util::frame;

    #[tokio::test]
    async fn the_wear_workers_report_cannot_overflow_the_hosts_counts() {
        let host = WorkerHost::start(HostConfig::default(), None);
        let mut ends = Vec::new();
        for number in 0..2 {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let conn = Conn::over(ours, number, None, None).unwrap();
            let (reader, mut writer) = worker_process::split(theirs).unwrap();
            let boast = FromWorker::Attached {
                id: 0,
                outcome: Ok(()),
                usage: WorkerUsage {
                    created: u64::MAX,
                    threads_retired: u64::MAX,
                },
            };
            frame::write(&mut writer, &frame::encode(&boast).unwrap())
                .await
                .unwrap();
            while conn.usage().created != u64::MAX {
                tokio::task::yield_now().await;
            }
            lock(&host.inner.live).push(conn);
            ends.push((reader, writer));
        }
        add_created(&host.inner.created_before, u64::MAX);
        let stats = host.stats();
        assert_eq!(stats.runtimes_created, u64::MAX);
        assert_eq!(stats.threads_retired, usize::MAX);
    }
}
