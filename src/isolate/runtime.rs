//! One isolate: a `JsRuntime` with the ops and the libos bootstrap, and one call on it.
//!
//! A call puts a fresh [`CallBinding`] into `OpState`, starts the watchdog, loads the tool's
//! module (once per module hash), calls the bootstrap's entry point, which awaits
//! `run(args, libos)` and JSON-serializes the result *in JavaScript*, and turns the outcome
//! into a value or a [`CallError`]. After a time or memory limit the isolate is
//! [`Health::Poisoned`] and the caller replaces it.

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

use super::limits::Watchdog;
use super::loader::ToolLoader;
use super::{CallError, CallRequest, IsolateError, ToolModule};
use crate::jit::transpile::{transpile, Transpiled};

/// The JavaScript face of the ops, transpiled once per host process.
const LIBOS_TS: &str = include_str!("../../ts/libos.ts");
/// The name the bootstrap script runs under (its source map is registered under it).
const BOOTSTRAP_NAME: &str = "libos:libos.ts";

fn bootstrap() -> Result<&'static Transpiled, IsolateError> {
    static BOOTSTRAP: OnceLock<Result<Transpiled, String>> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| transpile(BOOTSTRAP_NAME, LIBOS_TS).map_err(|d| d.to_string()))
        .as_ref()
        .map_err(|e| IsolateError::Create(format!("libos.ts does not transpile: {e}")))
}

/// Whether an isolate may serve its process's next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    /// Terminated or out of memory: drop it and take a fresh one.
    Poisoned,
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

/// Polls `inner` with the isolate entered.
struct EnteredFuture<F> {
    raw: v8::UnsafeRawIsolatePtr,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for EnteredFuture<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = Entered::enter(self.raw);
        self.inner.as_mut().poll(cx)
    }
}

pub(crate) struct Isolate {
    /// Dropped by hand, entered, after the handles below (see `Drop`).
    runtime: ManuallyDrop<JsRuntime>,
    raw: v8::UnsafeRawIsolatePtr,
    /// The bootstrap's `call(ns, argsJson, startMs, seedHi, seedLo, maxResult)`.
    entry: ManuallyDrop<v8::Global<v8::Function>>,
    loader: Rc<ToolLoader>,
    /// Module namespaces by module hash.
    namespaces: HashMap<String, v8::Global<v8::Value>>,
    handle: v8::IsolateHandle,
    heap_bytes: usize,
    /// Set by the near-heap-limit callback.
    heap_hit: Rc<Cell<bool>>,
}

impl Isolate {
    /// Creates a runtime with the ops extension, a heap limit of `heap_bytes`, and the libos
    /// bootstrap evaluated (after which `Deno` is unreachable from JavaScript).
    pub(crate) fn new(heap_bytes: usize) -> Result<Isolate, IsolateError> {
        let boot = bootstrap()?;
        let loader = Rc::new(ToolLoader::default());
        if let Some(map) = &boot.source_map {
            loader.insert_source_map(BOOTSTRAP_NAME, map.clone());
        }
        let mut runtime = JsRuntime::try_new(RuntimeOptions {
            module_loader: Some(loader.clone()),
            extensions: vec![agent_libos_ops::libos_ops::init()],
            create_params: Some(v8::CreateParams::default().heap_limits(0, heap_bytes)),
            ..Default::default()
        })
        .map_err(|e| IsolateError::Create(e.to_string()))?;
        let handle = runtime.v8_isolate().thread_safe_handle();
        // SAFETY: only used while `runtime` lives (see `Entered`).
        let raw = unsafe { runtime.v8_isolate().as_raw_isolate_ptr() };
        let _entered = Entered::enter(raw);
        let heap_hit = Rc::new(Cell::new(false));
        let (flag, terminate) = (heap_hit.clone(), handle.clone());
        runtime.add_near_heap_limit_callback(move |current, _initial| {
            // The first time: stop the script and leave a quarter more room for it to unwind.
            // Never again: an engine that polls for termination only every so many
            // instructions could otherwise keep doubling the limit (a loop of large native
            // allocations did, to the host's whole memory), so later allocations must fail.
            if flag.replace(true) {
                return current;
            }
            terminate.terminate_execution();
            current.saturating_add(current / 4)
        });
        let hooks = runtime
            .execute_script(BOOTSTRAP_NAME, boot.code.clone())
            .map_err(|e| IsolateError::Create(format!("libos bootstrap failed: {e}")))?;
        let entry = {
            deno_core::scope!(scope, &mut runtime);
            let hooks = v8::Local::new(scope, hooks);
            let call = hooks
                .try_cast::<v8::Object>()
                .ok()
                .and_then(|hooks| {
                    let key = v8::String::new(scope, "call")?;
                    hooks.get(scope, key.into())
                })
                .and_then(|call| call.try_cast::<v8::Function>().ok())
                .ok_or_else(|| {
                    IsolateError::Create("libos bootstrap returned no call function".into())
                })?;
            v8::Global::new(scope, call)
        };
        Ok(Isolate {
            runtime: ManuallyDrop::new(runtime),
            raw,
            entry: ManuallyDrop::new(entry),
            loader,
            namespaces: HashMap::new(),
            handle,
            heap_bytes,
            heap_hit,
        })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap_bytes
    }

    /// Runs one call to completion under the request's limits.
    pub(crate) async fn call(
        &mut self,
        req: &CallRequest,
        watchdog: &Watchdog,
    ) -> (Result<Value, CallError>, Health) {
        let raw = self.raw;
        EnteredFuture {
            raw,
            inner: Box::pin(self.call_entered(req, watchdog)),
        }
        .await
    }

    async fn call_entered(
        &mut self,
        req: &CallRequest,
        watchdog: &Watchdog,
    ) -> (Result<Value, CallError>, Health) {
        let binding = CallBinding::new(
            req.port.clone(),
            req.ctx.clone(),
            req.limits.max_syscalls,
            req.limits.max_console_bytes,
        );
        let in_flight = binding.in_flight();
        self.runtime.op_state().borrow_mut().put(binding);
        self.heap_hit.set(false);
        let ticket = watchdog.watch(self.handle.clone(), req.limits.cpu_ms, in_flight);

        let outcome = self.run(req).await;

        let terminated = ticket.finish();
        let usage = self
            .runtime
            .op_state()
            .borrow_mut()
            .try_take::<CallBinding>()
            .map(|b| b.usage())
            .unwrap_or_default();
        if terminated {
            let detail = format!(
                "the call ran longer than {} ms (wall time outside syscalls)",
                req.limits.cpu_ms
            );
            return (Err(limit("cpu_time", detail)), Health::Poisoned);
        }
        if self.heap_hit.get() {
            let detail = format!("the isolate's heap passed {} bytes", self.heap_bytes);
            return (Err(limit("memory", detail)), Health::Poisoned);
        }
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
            Ok(value) => (Ok(value), Health::Healthy),
            Err(Failure::Call(err)) => (Err(err), Health::Healthy),
            Err(Failure::Broken(err)) => (Err(err), Health::Poisoned),
        }
    }

    async fn run(&mut self, req: &CallRequest) -> Result<Value, Failure> {
        let ns = self.namespace(&req.module).await?;
        let args = serde_json::to_string(&req.args)
            .map_err(|e| Failure::Call(CallError::Internal(format!("arguments: {e}"))))?;
        let max_result = req.limits.max_result_bytes;
        let call = {
            let runtime = &mut self.runtime;
            deno_core::scope!(scope, runtime);
            let args = v8::String::new(scope, &args).ok_or_else(|| {
                Failure::Call(limit("result_size", "the arguments are too large".into()))
            })?;
            let numbers = [
                req.start_time_ms as f64,
                (req.random_seed >> 32) as f64,
                (req.random_seed & 0xffff_ffff) as f64,
                max_result as f64,
            ]
            .map(|n| v8::Global::new(scope, v8::Number::new(scope, n).cast::<v8::Value>()));
            let args = v8::Global::new(scope, args.cast::<v8::Value>());
            let [start, hi, lo, max] = numbers;
            JsRuntime::scoped_call_with_args(scope, &self.entry, &[ns, args, start, hi, lo, max])
        };
        let value = self
            .runtime
            .with_event_loop_promise(Box::pin(call), PollEventLoopOptions::default())
            .await
            .map_err(call_failure)?;

        let runtime = &mut self.runtime;
        deno_core::scope!(scope, runtime);
        let value = v8::Local::new(scope, value);
        if value.is_number() {
            let units = value.number_value(scope).unwrap_or(0.0);
            return Err(Failure::Call(too_large(units as u64, max_result)));
        }
        let text = value.to_rust_string_lossy(scope);
        if text.len() > max_result {
            return Err(Failure::Call(too_large(text.len() as u64, max_result)));
        }
        serde_json::from_str(&text)
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
            .map_err(call_failure)?;
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
        // SAFETY: each field is dropped exactly once, here, handles before their runtime.
        unsafe {
            ManuallyDrop::drop(&mut self.entry);
            ManuallyDrop::drop(&mut self.runtime);
        }
        // Disposing the isolate already took it off the thread's stack of entered isolates.
        std::mem::forget(entered);
    }
}

/// Why a call failed, and whether the isolate survived it.
enum Failure {
    Call(CallError),
    Broken(CallError),
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

fn call_failure(err: CoreError) -> Failure {
    match *err.0 {
        CoreErrorKind::Js(js) => Failure::Call(thrown(*js)),
        CoreErrorKind::ExecutionTerminated => {
            Failure::Broken(CallError::Internal("execution terminated".into()))
        }
        other => Failure::Broken(CallError::Internal(other.to_string())),
    }
}

/// A JavaScript exception that escaped the tool.
fn thrown(js: JsError) -> CallError {
    let error = js
        .additional_properties
        .iter()
        .find(|(key, _)| key == "libosWire")
        .and_then(|(_, wire)| serde_json::from_str::<Value>(wire).ok());
    let message = match (&js.name, &js.message) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        _ => js.exception_message.clone(),
    };
    if error.is_none() && is_stack_overflow(&message) {
        return limit("stack", message);
    }
    CallError::Threw {
        stack: js.to_string(),
        message,
        error,
    }
}

fn is_stack_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("maximum call stack size exceeded") || m.contains("stack overflow")
}
