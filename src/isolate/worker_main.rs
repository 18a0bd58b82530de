//! The isolate worker process: a hidden mode of the runtime binary ([`WORKER_MODE`]),
//! dispatched first thing in `main`, before any thread exists. It runs an in-process
//! [`IsolateHost`] (its lanes, slot budgets, canary and watchdog) and serves the kernel over
//! its stdin, a Unix socket ([`super::wire`]).
//!
//! Inside the worker, the [`SyscallPort`] of a call is an IPC client: each syscall and
//! console line goes to the kernel under the kernel's call id, and the kernel serves it with
//! its own record of that call. The worker holds no authority of its own.
//!
//! Before anything else the worker closes every descriptor but its stdio (the control
//! socket on 0) and confines itself (`confine.rs`: no filesystem, no TCP, a
//! seccomp allowlist, no new privileges, an address-space limit, parent-death signal).
//!
//! Lifeline: the worker exits when the kernel's side of the socket closes, when a frame from
//! the kernel cannot be read, and (parent-death signal) when the thread that started it
//! ends.
//!
//! A call that its thread's watchdog cannot stop (native code that ignores termination) is
//! reported to the kernel (`stuck`, naming the call), which answers it with
//! `LimitExceeded { limit: "cpu_time" }` and kills this worker: only ending the process
//! frees the thread it holds. The other calls running here fail retryably and the kernel
//! runs them again from their journals.
//!
//! Test switch, **debug builds only**: with [`KEEP_ATOMICS_ENV`]`=1` in its environment at
//! start (the kernel sets it when `HostConfig::test_keep_atomics` is on, a field that
//! exists only in debug builds), the worker's isolates keep `Atomics` and
//! `SharedArrayBuffer`, so a tool can block in native code (`Atomics.wait`). It can only
//! make this worker's own calls hang — what the kill above exists for — and grants nothing.
//! A release build neither reads the variable nor has the code that keeps the globals.

use std::collections::{HashMap, HashSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::wire::{FromWorker, ToWorker, WorkerUsage, MAX_TO_WORKER, WORKER_MODE};
use super::{
    slots, BoxFuture, CallContext, CallRequest, HostConfig, IsolateHost, SyscallPort, ToolModule,
};
use crate::providers::frame_writer::FrameWriter;
use crate::providers::worker_process;
use crate::util::frame;

/// Runs the worker if the process was started as one; returns its exit code.
pub fn run_hidden_mode() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WORKER_MODE {
        return None;
    }
    let parent = args.next().and_then(|p| p.to_str()?.parse::<i32>().ok());
    Some(main(parent))
}

/// The variable that turns the debug-only test switch on (see the module documentation).
#[cfg(debug_assertions)]
pub(crate) const KEEP_ATOMICS_ENV: &str = "AGENT_LIBOS_WORKER_KEEP_ATOMICS";

/// The invocation id the worker gives call `call` inside its isolate host.
fn invocation_of(call: u64) -> String {
    format!("call-{call}")
}

/// The call an invocation id of [`invocation_of`] names.
fn call_of(invocation: &str) -> Option<u64> {
    invocation.strip_prefix("call-")?.parse().ok()
}

fn main(parent: Option<i32>) -> i32 {
    #[cfg(debug_assertions)]
    if worker_process::passthrough_env(&[KEEP_ATOMICS_ENV])
        .iter()
        .any(|(_, value)| value == "1")
    {
        super::runtime::keep_atomics();
    }
    // Only the control socket and stdio are the worker's: any other descriptor came from
    // the runtime without close-on-exec (a library's, one its operator passed in), and the
    // confinement below does not stop reading or writing one already open.
    // SAFETY: closing descriptors nothing in this process uses yet.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } < 0 {
        eprintln!(
            "isolate worker: cannot close inherited descriptors: {}",
            std::io::Error::last_os_error()
        );
        return 2;
    }
    // First, while the process has one thread: the OS confinement (parent-death signal
    // included; see `confine.rs`).
    let confinement = super::confine::WorkerConfinement {
        parent,
        ..Default::default()
    };
    if let Err(e) = super::confine::confine_worker(&confinement) {
        eprintln!("isolate worker: cannot confine itself: {e}");
        return 2;
    }
    // SAFETY: duplicating our own stdin to a close-on-exec descriptor above the stdio range.
    let raw = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 10) };
    if raw < 0 {
        return 2;
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let control = unsafe { OwnedFd::from_raw_fd(raw) };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 2;
    };
    runtime.block_on(serve(control))
}

/// Frames to the kernel, written by the thread that sends them (a lane's syscall goes
/// straight to the socket). If the kernel stops taking them the socket is shut down and
/// the worker's read loop ends it.
#[derive(Clone)]
struct Outbox(Arc<FrameWriter>);

/// Bytes that may wait for the kernel to read them.
const MAX_WAITING_TO_KERNEL: usize = 512 << 20;

impl Outbox {
    fn send(&self, message: &FromWorker) {
        match frame::encode(message) {
            Ok(bytes) => {
                if let Err(e) = self.0.send(bytes) {
                    eprintln!("isolate worker: cannot write to the kernel: {e}");
                }
            }
            // Only a value serde cannot encode; the kernel's deadline ends the call.
            Err(e) => eprintln!("isolate worker: cannot encode a frame: {e}"),
        }
    }

    /// Sends call `call`'s answer.
    fn send_done(&self, call: u64, outcome: &Result<Value, super::CallError>, usage: WorkerUsage) {
        self.send(&FromWorker::Done {
            call,
            outcome: outcome.clone(),
            usage,
        });
    }
}

/// Syscalls waiting for the kernel's answer, by (call, seq).
type Pending = Arc<Mutex<HashMap<(u64, u64), oneshot::Sender<Result<Value, Value>>>>>;

/// Calls whose `done` a worker thread already sent.
type Answered = Arc<Mutex<HashSet<u64>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(control: OwnedFd) -> i32 {
    let stream = std::os::unix::net::UnixStream::from(control);
    let Ok((mut reader, writer)) = worker_process::split(stream) else {
        return 2;
    };
    let out = Outbox(FrameWriter::start(writer, MAX_WAITING_TO_KERNEL));
    let report = out.clone();
    super::worker::on_stuck(Box::new(move |ctx| {
        if let Some(call) = call_of(&ctx.invocation_id) {
            report.send(&FromWorker::Stuck { call });
        }
    }));
    let sizes = match frame::read::<ToWorker>(&mut reader, MAX_TO_WORKER).await {
        Ok(Some(ToWorker::Start { sizes })) => sizes,
        _ => return 2,
    };
    let host = IsolateHost::start(HostConfig {
        threads: sizes.threads,
        pool_size: sizes.pool_size,
        warm: sizes.warm,
        heap_bytes: sizes.heap_bytes,
        max_queued: sizes.max_queued,
        ..HostConfig::default()
    });
    // A call's `done` is written by the thread that has its outcome; the calls answered
    // that way are noted so that the task awaiting the host's answer does not send another.
    let answered: Answered = Arc::default();
    {
        let (out, answered, host) = (out.clone(), answered.clone(), host.clone());
        super::worker::on_answer(Box::new(move |ctx, outcome| {
            let Some(call) = call_of(&ctx.invocation_id) else {
                return;
            };
            lock(&answered).insert(call);
            out.send_done(call, outcome, usage(&host));
        }));
    }
    let pending: Pending = Arc::default();
    let mut modules: HashMap<String, Arc<ToolModule>> = HashMap::new();
    loop {
        let message = match frame::read::<ToWorker>(&mut reader, MAX_TO_WORKER).await {
            Ok(Some(message)) => message,
            // The kernel closed the socket, or its frames cannot be trusted: stop.
            Ok(None) | Err(_) => return 0,
        };
        match message {
            ToWorker::Start { .. } => {}
            ToWorker::Module {
                hash,
                specifier,
                code,
                source_map,
            } => {
                let module = ToolModule {
                    specifier,
                    code,
                    source_map,
                    hash: hash.clone(),
                };
                modules.insert(hash, Arc::new(module));
            }
            ToWorker::Call {
                call,
                pid,
                hash,
                args,
                limits,
                start_time_ms,
                random_seed,
                ephemeral,
                fresh,
            } => {
                let Some(module) = modules.get(&hash).cloned() else {
                    out.send(&FromWorker::Done {
                        call,
                        outcome: Err(super::CallError::Internal(format!(
                            "isolate worker: module {hash} was never sent"
                        ))),
                        usage: usage(&host),
                    });
                    continue;
                };
                let port = Arc::new(IpcPort {
                    call,
                    out: out.clone(),
                    pending: pending.clone(),
                    next: AtomicU64::new(0),
                });
                let req = CallRequest {
                    module,
                    args,
                    limits,
                    port,
                    ctx: CallContext {
                        pid,
                        invocation_id: invocation_of(call),
                    },
                    start_time_ms,
                    random_seed,
                };
                let (host, out, pending) = (host.clone(), out.clone(), pending.clone());
                let answered = answered.clone();
                tokio::spawn(async move {
                    let outcome = if ephemeral {
                        host.run_ephemeral(req).await
                    } else if fresh {
                        host.call_fresh(pid, req).await
                    } else {
                        host.call(pid, req).await
                    };
                    lock(&pending).retain(|(of, _), _| *of != call);
                    // An outcome from a worker thread was sent there; one the host made
                    // itself (it shut down, no thread could run the call) is sent here.
                    if !lock(&answered).remove(&call) {
                        out.send_done(call, &outcome, usage(&host));
                    }
                });
            }
            ToWorker::SyscallReply { call, seq, outcome } => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(call, seq));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            ToWorker::Attach { id, pid } => {
                let (host, out) = (host.clone(), out.clone());
                tokio::spawn(async move {
                    let outcome = host.attach(pid).await;
                    out.send(&FromWorker::Attached {
                        id,
                        outcome,
                        usage: usage(&host),
                    });
                });
            }
            ToWorker::Detach { pid } => {
                let host = host.clone();
                tokio::spawn(async move { host.detach(pid).await });
            }
            ToWorker::Interrupt { pid } => {
                host.interrupt(pid);
            }
            ToWorker::Shutdown => return 0,
        }
    }
}

fn usage(host: &IsolateHost) -> WorkerUsage {
    WorkerUsage {
        created: slots::runtimes_created(),
        threads_retired: host.stats().threads_retired as u64,
    }
}

/// The port of one call inside the worker: forwards to the kernel under the call's id.
struct IpcPort {
    call: u64,
    out: Outbox,
    pending: Pending,
    next: AtomicU64,
}

impl SyscallPort for IpcPort {
    fn syscall(
        &self,
        _ctx: &CallContext,
        request: Box<RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self.call, seq), tx);
        self.out.send(&FromWorker::Syscall {
            call: self.call,
            seq,
            request,
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(json!({
                    "kind": "InternalError",
                    "message": "internal error: the kernel did not answer this syscall",
                    "detail": "the kernel did not answer this syscall",
                }))
            })
        })
    }

    fn console(&self, _ctx: &CallContext, level: &str, text: &str) {
        self.out.send(&FromWorker::Console {
            call: self.call,
            level: level.to_string(),
            text: text.to_string(),
        });
    }
}
