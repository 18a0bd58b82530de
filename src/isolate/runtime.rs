//! One isolate: a `JsRuntime` with the ops and the libos bootstrap, and one call on it.
//!
//! A call puts a fresh [`CallBinding`] into `OpState`, loads the tool's module (once per
//! module hash), calls the bootstrap's entry point, which awaits `run(args, libos)` and
//! JSON-serializes the result *in JavaScript*, and turns the outcome into a value or a
//! [`CallError`]. The call's future is polled only through [`Governed`], which enters the
//! isolate, reports each poll to the call's [`Ticket`] and ends the call as soon as the
//! watchdog stops it or the heap limit is hit. After a time or memory limit the isolate is
//! [`Health::Poisoned`] and the caller replaces it; when the engine looks broken (a deadlock
//! its canary confirms) the whole thread is ([`Health::ThreadPoisoned`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use agent_libos_ops::CallBinding;
use deno_core::error::{CoreError, CoreErrorKind, JsError};
use deno_core::{v8, JsRuntime, PollEventLoopOptions, RuntimeOptions};
use serde_json::Value;

use super::loader::ToolLoader;
use super::slots;
use super::watchdog::{Stop, StopFlag, Ticket};
use super::{CallError, CallLimits, CallRequest, IsolateError, ToolModule};
use crate::jit::transpile::{transpile_with, StopChecks, Transpiled};

/// The JavaScript face of the ops, transpiled once per host process when isolates are not
/// restored from the startup snapshot.
const LIBOS_TS: &str = include_str!("../../ts/libos.ts");
/// The name the bootstrap script runs under (its source map is registered under it).
const BOOTSTRAP_NAME: &str = "libos:libos.ts";
/// The startup snapshot `build.rs` made: deno_core's built-ins, the ops and the libos
/// bootstrap, already evaluated. Empty when the build made none (see `build.rs`).
static SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libos.snapshot"));
/// The source map of the bootstrap inside [`SNAPSHOT`].
const SNAPSHOT_SOURCE_MAP: &str = include_str!(concat!(env!("OUT_DIR"), "/libos.js.map"));
/// Runs the bootstrap function a snapshot holds (uncalled: its hardening of the intrinsics
/// cannot be snapshotted on every engine), after deleting it from the global object, then
/// takes the entry point as [`TAKE_ENTRY`] does: one script instead of two (each script
/// the engine evaluates costs a walk of the heap for its heap-limit check).
const RUN_SNAPSHOT_BOOTSTRAP: &str =
    "(() => { const g = globalThis; const boot = g.__libos_boot__; \
    if (!delete g.__libos_boot__) throw new TypeError('the libos bootstrap stays visible'); \
    boot(g); const hooks = g.__libos_entry__; \
    if (!delete g.__libos_entry__) throw new TypeError('the libos entry point stays visible'); \
    return hooks; })()";
/// Takes the entry point the bootstrap left on the global object and deletes it there,
/// before any tool runs.
const TAKE_ENTRY: &str = "(() => { const g = globalThis; const hooks = g.__libos_entry__; \
    if (!delete g.__libos_entry__) throw new TypeError('the libos entry point stays visible'); \
    return hooks; })()";

/// Debug builds only: isolates created in this process keep `Atomics` and
/// `SharedArrayBuffer`, so a test can block a call in native code the engine cannot
/// interrupt (`Atomics.wait`) and watch the worker be killed for it. Release builds have no
/// such switch: the bootstrap always removes both (`ts/libos.ts`).
#[cfg(debug_assertions)]
static KEEP_ATOMICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the test switch above on for every isolate created later in this process.
#[cfg(debug_assertions)]
pub(crate) fn keep_atomics() {
    KEEP_ATOMICS.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn keeps_atomics() -> bool {
    #[cfg(debug_assertions)]
    return KEEP_ATOMICS.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(debug_assertions))]
    false
}

/// Evaluated before the bootstrap when [`keeps_atomics`]: captures both globals and returns
/// the function that puts them back once the bootstrap has removed them.
const KEEP_ATOMICS_SCRIPT: &str = "(() => { const A = Atomics, S = SharedArrayBuffer; return () => { globalThis.Atomics = A; globalThis.SharedArrayBuffer = S; }; })()";

fn bootstrap() -> Result<&'static Transpiled, IsolateError> {
    static BOOTSTRAP: OnceLock<Result<Transpiled, String>> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            transpile_with(BOOTSTRAP_NAME, LIBOS_TS, StopChecks::Omitted).map_err(|d| d.to_string())
        })
        .as_ref()
        .map_err(|e| IsolateError::Create(format!("libos.ts does not transpile: {e}")))
}

/// How an isolate gets deno_core's built-ins and the libos bootstrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Restored from the startup snapshot `build.rs` made (cheaper to create, about twice
    /// the engine slots: `slots.rs`); the bootstrap function it holds is then called.
    Snapshot,
    /// deno_core's built-in scripts and the bootstrap run at creation.
    Script,
}

impl Boot {
    /// The snapshot when the build made one.
    pub fn preferred() -> Boot {
        if SNAPSHOT.is_empty() {
            Boot::Script
        } else {
            Boot::Snapshot
        }
    }

    /// Engine slots one creation takes this way (`slots.rs`).
    pub(crate) fn slots(self) -> u32 {
        match self {
            Boot::Snapshot => slots::PER_SNAPSHOT_RUNTIME,
            Boot::Script => slots::PER_RUNTIME,
        }
    }
}

/// Whether an isolate may serve its process's next call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    /// Stopped, out of memory or in an unknown state: drop it and take a fresh one.
    Poisoned,
    /// The engine on this thread looks broken: drop the isolate and retire the thread.
    ThreadPoisoned(String),
}

/// Many isolates share a worker thread, and the engine keeps a per-thread "current isolate"
/// (QuickJS-ng's facade switches its module caches and contexts on it; V8 requires
/// `Isolate::Enter` likewise). deno_core assumes one isolate per thread, so every use of an
/// isolate here is bracketed by [`Entered`]: on creation, on each poll of a call, on drop.
struct Entered(v8::Isolate);

impl Entered {
    fn enter(raw: v8::UnsafeRawIsolatePtr) -> Entered {
        // SAFETY: `raw` points at the live isolate of an `Isolate` that outlives this guard.
        let isolate = unsafe { v8::Isolate::from_raw_isolate_ptr(raw) };
        // SAFETY: entering a live isolate on its owning thread; paired with `exit` in drop.
        unsafe { isolate.enter() };
        Entered(isolate)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: pairs the `enter` above, on the same thread.
        unsafe { self.0.exit() };
    }
}

/// Polls a call's future with the isolate entered, under the watchdog: each poll is
/// reported to the ticket, and once the ticket says stop (or the heap limit was hit) the
/// future is dropped, entered, without another poll. Resolves to `None` when stopped.
struct Governed<'t, F: Future> {
    raw: v8::UnsafeRawIsolatePtr,
    ticket: &'t Ticket,
    heap_hit: Rc<Cell<bool>>,
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> Governed<'_, F> {
    fn must_stop(&self) -> bool {
        self.heap_hit.get() || self.ticket.stopped().is_some()
    }

    fn discard(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _entered = Entered::enter(self.raw);
            drop(inner);
        }
    }
}

impl<F: Future> Future for Governed<'_, F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = &mut *self;
        if this.must_stop() {
            this.discard();
            return Poll::Ready(None);
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = {
            let _entered = Entered::enter(this.raw);
            let _polling = this.ticket.poll(cx.waker());
            let polled = inner.as_mut().poll(cx);
            if polled.is_ready() {
                this.inner = None;
            }
            polled
        };
        match polled {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if this.must_stop() => {
                this.discard();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Future> Drop for Governed<'_, F> {
    fn drop(&mut self) {
        self.discard();
    }
}

pub(crate) struct Isolate {
    /// Dropped by hand, entered, after the handles below (see `Drop`).
    runtime: ManuallyDrop<JsRuntime>,
    raw: v8::UnsafeRawIsolatePtr,
    /// The bootstrap's `call(ns, argsJson, startMs, seedHi, seedLo, maxResult, call)`.
    entry: Option<v8::Global<v8::Function>>,
    loader: Rc<ToolLoader>,
    /// Module namespaces by module hash.
    namespaces: HashMap<String, v8::Global<v8::Value>>,
    handle: v8::IsolateHandle,
    heap_bytes: usize,
    /// Set by the near-heap-limit callback.
    heap_hit: Rc<Cell<bool>>,
    /// Calls made so far (each call's number, so a late syscall error of an earlier call is
    /// never taken for one of the current call).
    calls: u64,
    /// The bootstrap's stop flag (an `Int32Array` kept alive by `stop_array`).
    stop_flag: StopFlag,
    stop_array: Option<v8::Global<v8::Int32Array>>,
}

/// What the entry point resolved to.
enum Completed {
    /// The result's JSON text.
    Value(Value),
    /// The tool let the error of this call's syscall number `seq` escape.
    SyscallError(usize),
}

impl Isolate {
    /// Creates a runtime with the ops extension, a heap limit of `heap_bytes`, and the libos
    /// bootstrap evaluated (after which `Deno` is unreachable from JavaScript), restored from
    /// the startup snapshot when the build made one; then runs the canary. An error here
    /// means the thread should not create more runtimes.
    pub(crate) fn new(heap_bytes: usize) -> Result<Isolate, IsolateError> {
        Isolate::new_with(heap_bytes, Boot::preferred())
    }

    /// [`Isolate::new`], booted the way `boot` says (an unavailable snapshot is an error).
    pub(crate) fn new_with(heap_bytes: usize, boot: Boot) -> Result<Isolate, IsolateError> {
        let loader = Rc::new(ToolLoader::default());
        let script = match boot {
            Boot::Snapshot if SNAPSHOT.is_empty() => {
                return Err(IsolateError::Create(
                    "this build has no startup snapshot".into(),
                ))
            }
            Boot::Snapshot => {
                loader.insert_source_map(BOOTSTRAP_NAME, SNAPSHOT_SOURCE_MAP.into());
                None
            }
            Boot::Script => {
                let boot = bootstrap()?;
                if let Some(map) = &boot.source_map {
                    loader.insert_source_map(BOOTSTRAP_NAME, map.clone());
                }
                Some(boot.code.clone())
            }
        };
        slots::charge(boot.slots());
        slots::count_runtime();
        let mut runtime = JsRuntime::try_new(RuntimeOptions {
            module_loader: Some(loader.clone()),
            extensions: vec![agent_libos_ops::libos_ops::init()],
            startup_snapshot: (boot == Boot::Snapshot).then_some(SNAPSHOT),
            create_params: Some(v8::CreateParams::default().heap_limits(0, heap_bytes)),
            ..Default::default()
        })
        .map_err(|e| IsolateError::Create(e.to_string()))?;
        let handle = runtime.v8_isolate().thread_safe_handle();
        // SAFETY: only used while `runtime` lives (see `Entered`).
        let raw = unsafe { runtime.v8_isolate().as_raw_isolate_ptr() };
        let mut isolate = Isolate {
            runtime: ManuallyDrop::new(runtime),
            raw,
            entry: None,
            loader,
            namespaces: HashMap::new(),
            handle,
            heap_bytes,
            heap_hit: Rc::new(Cell::new(false)),
            calls: 0,
            stop_flag: StopFlag::unused(),
            stop_array: None,
        };
        let _entered = Entered::enter(raw);
        let (flag, terminate) = (isolate.heap_hit.clone(), isolate.handle.clone());
        isolate
            .runtime
            .add_near_heap_limit_callback(move |current, _initial| {
                // The first time: stop the script and leave a quarter more room for it to
                // unwind. Never again: an engine that polls for termination only every so
                // many instructions could otherwise keep doubling the limit (a loop of large
                // native allocations did, to the host's whole memory), so later allocations
                // must fail.
                if flag.replace(true) {
                    return current;
                }
                terminate.terminate_execution();
                current.saturating_add(current / 4)
            });
        let restore_atomics = match keeps_atomics() {
            true => Some(
                isolate
                    .runtime
                    .execute_script("libos:keep-atomics.js", KEEP_ATOMICS_SCRIPT)
                    .map_err(|e| IsolateError::Create(format!("keep-atomics switch: {e}")))?,
            ),
            false => None,
        };
        let booted = match script {
            Some(code) => isolate.runtime.execute_script(BOOTSTRAP_NAME, code),
            None => isolate
                .runtime
                .execute_script("libos:boot", RUN_SNAPSHOT_BOOTSTRAP),
        };
        let booted =
            booted.map_err(|e| IsolateError::Create(format!("libos bootstrap failed: {e}")))?;
        let hooks = match boot {
            // The snapshot's boot script returned the entry point already.
            Boot::Snapshot => booted,
            Boot::Script => isolate
                .runtime
                .execute_script("libos:entry", TAKE_ENTRY)
                .map_err(|e| IsolateError::Create(format!("libos entry point: {e}")))?,
        };
        if let Some(restore) = restore_atomics {
            let runtime = &mut *isolate.runtime;
            deno_core::scope!(scope, runtime);
            let restore = v8::Local::new(scope, restore);
            let undefined = v8::undefined(scope).cast::<v8::Value>();
            restore
                .try_cast::<v8::Function>()
                .ok()
                .and_then(|restore| restore.call(scope, undefined, &[]))
                .ok_or_else(|| IsolateError::Create("keep-atomics switch failed".into()))?;
        }
        let (entry, stop_array, stop_flag) = {
            let runtime = &mut *isolate.runtime;
            deno_core::scope!(scope, runtime);
            let hooks = v8::Local::new(scope, hooks);
            #[cfg(feature = "v8")]
            scope
                .get_current_context()
                .set_allow_generation_from_strings(false);
            let hook = |name: &str| {
                let hooks = hooks.try_cast::<v8::Object>().ok()?;
                let key = v8::String::new(scope, name)?;
                hooks.get(scope, key.into())
            };
            let missing =
                |what: &str| IsolateError::Create(format!("libos bootstrap returned no {what}"));
            let call = hook("call")
                .and_then(|call| call.try_cast::<v8::Function>().ok())
                .ok_or_else(|| missing("call function"))?;
            let stopped = hook("stopped")
                .and_then(|array| array.try_cast::<v8::Int32Array>().ok())
                .ok_or_else(|| missing("stop flag"))?;
            let element = stopped
                .buffer(scope)
                .and_then(|buffer| buffer.data())
                .ok_or_else(|| missing("stop flag memory"))?;
            // SAFETY: the element is the first of a live Int32Array that `stop_array` keeps
            // alive as long as this isolate, which outlives its calls' tickets.
            let flag = unsafe { StopFlag::new(element.as_ptr().cast::<i32>()) };
            (
                v8::Global::new(scope, call),
                v8::Global::new(scope, stopped),
                flag,
            )
        };
        isolate.entry = Some(entry);
        isolate.stop_array = Some(stop_array);
        isolate.stop_flag = stop_flag;
        if !isolate.canary() {
            return Err(IsolateError::Create(
                "the engine's native-function table of this thread is exhausted".into(),
            ));
        }
        Ok(isolate)
    }

    /// Creates a native function whose data cannot be shared with any other function, calls
    /// it and checks it answers its own data: a function created past the engine's
    /// per-thread table limit answers `undefined` instead (`slots.rs`).
    fn canary(&mut self) -> bool {
        slots::charge(slots::PER_CANARY);
        let runtime = &mut *self.runtime;
        deno_core::scope!(scope, runtime);
        let marker = v8::Integer::new(scope, 0x5eed_1e55).cast::<v8::Value>();
        let Some(function) = v8::Function::builder(
            |_scope: &mut v8::PinScope,
             args: v8::FunctionCallbackArguments,
             mut rv: v8::ReturnValue| { rv.set(args.data()) },
        )
        .data(marker)
        .build(scope) else {
            return false;
        };
        let undefined = v8::undefined(scope).cast::<v8::Value>();
        function
            .call(scope, undefined, &[])
            .is_some_and(|answer| answer.strict_equals(marker))
    }

    /// Takes `count` slots of this thread's native-function table without counting them,
    /// as a miscount in `slots.rs` would (tests of the canary).
    #[cfg(test)]
    pub(crate) fn spend_uncounted_native_functions(&mut self, count: usize) {
        let _entered = Entered::enter(self.raw);
        let runtime = &mut *self.runtime;
        deno_core::scope!(scope, runtime);
        for n in 0..count {
            // With data of its own: a function without data may share a slot.
            let data = v8::Integer::new(scope, n as i32).cast::<v8::Value>();
            let built = v8::Function::builder(
                |_scope: &mut v8::PinScope,
                 _args: v8::FunctionCallbackArguments,
                 _rv: v8::ReturnValue| {},
            )
            .data(data)
            .build(scope);
            assert!(built.is_some());
        }
    }

    /// Whether the engine on this thread still answers a new native function correctly.
    #[cfg(test)]
    pub(crate) fn canary_passes(&mut self) -> bool {
        let _entered = Entered::enter(self.raw);
        self.canary()
    }

    /// How many more native functions this thread's engine can create that still work (the
    /// slots left in its table, `slots.rs`); leaves the thread unusable. Measures the budget.
    #[cfg(test)]
    pub(crate) fn probe_free_slots(&mut self) -> u32 {
        let mut free = 0;
        while free < 70_000 && self.canary() {
            free += 1;
        }
        free
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap_bytes
    }

    /// What the watchdog stops this isolate's JavaScript with: the engine's handle and the
    /// bootstrap's stop flag.
    pub(crate) fn stop_handles(&self) -> (v8::IsolateHandle, StopFlag) {
        (self.handle.clone(), self.stop_flag)
    }

    /// Runs one call to completion under the request's limits and `ticket`'s watch.
    pub(crate) async fn call(
        &mut self,
        req: &CallRequest,
        ticket: &Ticket,
    ) -> (Result<Value, CallError>, Health) {
        self.calls += 1;
        let binding = CallBinding::new(
            req.port.clone(),
            req.ctx.clone(),
            self.calls,
            req.limits.max_syscalls,
            req.limits.max_console_bytes,
        );
        self.runtime.op_state().borrow_mut().put(binding);
        self.heap_hit.set(false);
        slots::charge(slots::PER_CALL);

        let governed = Governed {
            raw: self.raw,
            ticket,
            heap_hit: self.heap_hit.clone(),
            inner: Some(Box::pin(self.run(req))),
        };
        let outcome = governed.await;

        if let Some(stop) = ticket.finish() {
            return (Err(stopped(stop, &req.limits)), Health::Poisoned);
        }
        if self.heap_hit.get() {
            let detail = format!("the isolate's heap passed {} bytes", self.heap_bytes);
            return (Err(limit("memory", detail)), Health::Poisoned);
        }
        let binding = self
            .runtime
            .op_state()
            .borrow_mut()
            .try_take::<CallBinding>();
        let Some(binding) = binding else {
            return (
                Err(CallError::Internal("the call lost its binding".into())),
                Health::Poisoned,
            );
        };
        let usage = binding.usage();
        if usage.syscalls_exceeded {
            let detail = format!(
                "the call tried more than {} syscalls",
                req.limits.max_syscalls
            );
            return (Err(limit("syscalls", detail)), Health::Healthy);
        }
        if usage.console_exceeded {
            let detail = format!(
                "the call wrote more than {} bytes of console output",
                req.limits.max_console_bytes
            );
            return (Err(limit("console_output", detail)), Health::Healthy);
        }
        match outcome {
            None => (
                Err(CallError::Internal("the call was stopped".into())),
                Health::Poisoned,
            ),
            Some(Ok(Completed::Value(value))) => (Ok(value), Health::Healthy),
            Some(Ok(Completed::SyscallError(seq))) => match binding.error(seq) {
                Some(error) => (Err(CallError::Syscall { error }), Health::Healthy),
                None => (
                    Err(CallError::Internal(format!(
                        "no syscall error number {seq} in this call"
                    ))),
                    Health::Healthy,
                ),
            },
            Some(Err(Failure::Call(err))) => (Err(err), Health::Healthy),
            Some(Err(Failure::Broken(err))) => (Err(err), Health::Poisoned),
            Some(Err(Failure::Suspect(err, tool_view))) => {
                if self.canary() {
                    (Err(tool_view), Health::Poisoned)
                } else {
                    (
                        Err(CallError::Internal(err.clone())),
                        Health::ThreadPoisoned(err),
                    )
                }
            }
        }
    }

    async fn run(&mut self, req: &CallRequest) -> Result<Completed, Failure> {
        let ns = self.namespace(&req.module).await?;
        let args = serde_json::to_string(&req.args)
            .map_err(|e| Failure::Call(CallError::Internal(format!("arguments: {e}"))))?;
        let max_result = req.limits.max_result_bytes;
        let Some(entry) = self.entry.as_ref() else {
            return Err(Failure::Broken(CallError::Internal(
                "no entry point".into(),
            )));
        };
        let call = {
            let runtime = &mut *self.runtime;
            deno_core::scope!(scope, runtime);
            let args = v8::String::new(scope, &args).ok_or_else(|| {
                Failure::Call(limit("result_size", "the arguments are too large".into()))
            })?;
            let numbers = [
                req.start_time_ms as f64,
                (req.random_seed >> 32) as f64,
                (req.random_seed & 0xffff_ffff) as f64,
                max_result as f64,
                self.calls as f64,
            ]
            .map(|n| v8::Global::new(scope, v8::Number::new(scope, n).cast::<v8::Value>()));
            let args = v8::Global::new(scope, args.cast::<v8::Value>());
            let [start, hi, lo, max, call] = numbers;
            JsRuntime::scoped_call_with_args(scope, entry, &[ns, args, start, hi, lo, max, call])
        };
        let value = self
            .runtime
            .with_event_loop_promise(Box::pin(call), PollEventLoopOptions::default())
            .await
            .map_err(|e| {
                call_failure(
                    e,
                    "the tool's result never settles: it awaits something nothing will resolve",
                )
            })?;

        let runtime = &mut *self.runtime;
        deno_core::scope!(scope, runtime);
        let value = v8::Local::new(scope, value);
        if value.is_number() {
            let n = value.number_value(scope).unwrap_or(0.0);
            if n < 0.0 {
                return Ok(Completed::SyscallError((-n - 1.0) as usize));
            }
            return Err(Failure::Call(too_large(n as u64, max_result)));
        }
        let text = value.to_rust_string_lossy(scope);
        if text.len() > max_result {
            return Err(Failure::Call(too_large(text.len() as u64, max_result)));
        }
        serde_json::from_str(&text)
            .map(Completed::Value)
            .map_err(|e| Failure::Call(CallError::Internal(format!("result JSON: {e}"))))
    }

    /// The tool's module namespace, loading and evaluating it on first use.
    async fn namespace(
        &mut self,
        module: &Arc<ToolModule>,
    ) -> Result<v8::Global<v8::Value>, Failure> {
        if let Some(ns) = self.namespaces.get(&module.hash) {
            return Ok(ns.clone());
        }
        slots::charge(slots::PER_MODULE);
        let url = self
            .loader
            .insert(module.clone())
            .map_err(|e| Failure::Call(CallError::Module(e)))?;
        let id = self
            .runtime
            .load_side_es_module(&url)
            .await
            .map_err(|e| Failure::Call(CallError::Module(e.to_string())))?;
        let evaluation = self.runtime.mod_evaluate(id);
        self.runtime
            .with_event_loop_promise(Box::pin(evaluation), PollEventLoopOptions::default())
            .await
            .map_err(|e| call_failure(e, "the tool module's evaluation never settles"))?;
        let ns = self
            .runtime
            .get_module_namespace(id)
            .map_err(|e| Failure::Call(CallError::Module(e.to_string())))?;
        let ns = {
            let runtime = &mut *self.runtime;
            deno_core::scope!(scope, runtime);
            let ns = v8::Local::new(scope, ns);
            v8::Global::new(scope, ns.cast::<v8::Value>())
        };
        self.namespaces.insert(module.hash.clone(), ns.clone());
        Ok(ns)
    }
}

impl Drop for Isolate {
    fn drop(&mut self) {
        let entered = Entered::enter(self.raw);
        self.namespaces.clear();
        self.entry = None;
        self.stop_array = None;
        // SAFETY: dropped exactly once, here, after every handle into it.
        unsafe { ManuallyDrop::drop(&mut self.runtime) };
        // Disposing the isolate already took it off the thread's stack of entered isolates.
        std::mem::forget(entered);
    }
}

/// Why a call failed, and whether the isolate survived it.
enum Failure {
    Call(CallError),
    Broken(CallError),
    /// The engine reported a deadlock: the tool's doing (the second error) unless the
    /// canary says the thread's engine is broken (the first, a description).
    Suspect(String, CallError),
}

fn limit(limit: &str, detail: String) -> CallError {
    CallError::Limit {
        limit: limit.into(),
        detail,
    }
}

fn too_large(size: u64, max: usize) -> CallError {
    limit(
        "result_size",
        format!("the result's JSON is {size} long; the limit is {max} bytes"),
    )
}

/// The error of a call the watchdog stopped.
pub(crate) fn stopped(stop: Stop, limits: &CallLimits) -> CallError {
    match stop {
        Stop::CpuTime => limit(
            "cpu_time",
            format!("the call ran JavaScript longer than {} ms", limits.cpu_ms),
        ),
        Stop::WallClock => limit(
            "wall_clock",
            format!("the call took longer than {} ms in total", limits.wall_ms),
        ),
        Stop::Cancelled => CallError::Cancelled("the process was cancelled or killed".into()),
    }
}

fn call_failure(err: CoreError, never_settles: &str) -> Failure {
    match *err.0 {
        CoreErrorKind::Js(js) => Failure::Call(thrown(*js)),
        CoreErrorKind::ExecutionTerminated => {
            Failure::Broken(CallError::Internal("execution terminated".into()))
        }
        kind @ (CoreErrorKind::PendingPromiseResolution
        | CoreErrorKind::ModuleEvaluationDeadlock) => Failure::Suspect(
            kind.to_string(),
            CallError::Threw {
                message: never_settles.into(),
                stack: String::new(),
            },
        ),
        other => Failure::Broken(CallError::Internal(other.to_string())),
    }
}

/// A JavaScript exception that escaped the tool: the tool's own error, unless it is the
/// engine's out-of-memory or stack-overflow error, which is reported as that limit. (A tool
/// can construct an error of the same class and message; that only changes the kind of its
/// own failure: such a limit carries no request id, resource or right.)
fn thrown(js: JsError) -> CallError {
    let message = match (&js.name, &js.message) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        _ => js.exception_message.clone(),
    };
    match engine_limit(js.name.as_deref(), js.message.as_deref()) {
        Some(which) => limit(which, message),
        None => CallError::Threw {
            stack: js.to_string(),
            message,
        },
    }
}

/// The limit an engine error stands for, by its class and message.
fn engine_limit(name: Option<&str>, message: Option<&str>) -> Option<&'static str> {
    match (name?, message?) {
        ("InternalError", "out of memory") => Some("memory"),
        ("RangeError", "Maximum call stack size exceeded")
        | ("InternalError", "stack overflow") => Some("stack"),
        _ => None,
    }
}

/// Creates and drops `count` isolates booted as `boot`, one after another on a fresh thread,
/// and times each creation (the benchmark's figure; a thread's budget allows ~75 snapshot
/// creations, so `count` is capped at 64).
pub fn time_creations(boot: Boot, count: usize) -> Result<Vec<std::time::Duration>, IsolateError> {
    let heap = super::CallLimits::default().heap_bytes;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IsolateError::Create(e.to_string()))?;
        let _entered = rt.enter();
        (0..count.min(64))
            .map(|_| {
                let started = std::time::Instant::now();
                let isolate = Isolate::new_with(heap, boot)?;
                let took = started.elapsed();
                drop(isolate);
                Ok(took)
            })
            .collect()
    })
    .join()
    .unwrap_or_else(|_| Err(IsolateError::Create("the timing thread panicked".into())))
}
