//! The `agent-libos` developer command line.
//!
//! Two layers, as in ripgrep: [`args`] is clap's view of what the user typed (no I/O), and
//! [`Ctx`] holds the validated settings every command starts from (resolved database and
//! workspace paths, output mode). Commands return `anyhow::Result<i32>`; errors that carry a
//! kernel error kind are [`Failure`]s, which decide the exit code and the `--json` error
//! shape. All messages go to stderr as `agent-libos: lowercase message`, suggesting a fix
//! where one exists. Exit codes are fixed (see [`args::EXIT_CODES`] and the README).
//!
//! **Architecture Invariant:** the CLI is the operator: it uses the kernel's operator API
//! (`spawn_root`, `grant`, `human_respond`, ...) and reaches processes only through syscalls.
// The operator's edge: the CLI reads files and the environment the operator names.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod admin;
pub mod agent;
pub mod args;
pub mod audit;
pub mod checkpoint;
pub mod demo;
pub mod fixture;
pub mod grants;
pub mod human;
pub mod replay;
pub mod sandbox;
pub mod serve;
pub mod source_view;
pub mod terminal;
pub mod tool;
pub mod tool_init;
pub mod typecheck;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::kernel::{HumanMode, Kernel, KernelConfig, SyscallError, WireError};
use args::{Cli, Command, GlobalArgs};

/// Exit codes (documented in `--help` and the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// The tool threw, or a check failed (replay, audit verify).
    pub const FAILED: i32 = 1;
    /// Invalid input, or the tool was rejected by validation (also any other error).
    pub const INVALID: i32 = 2;
    pub const DENIED: i32 = 3;
    pub const LIMIT: i32 = 4;
    pub const HUMAN: i32 = 5;
}

/// The exit code for a kernel error kind.
pub fn exit_code_for(kind: &str) -> i32 {
    match kind {
        "ToolError" => exit::FAILED,
        "PermissionDenied" | "HumanRejected" => exit::DENIED,
        "LimitExceeded" => exit::LIMIT,
        "HumanRequired" => exit::HUMAN,
        _ => exit::INVALID,
    }
}

/// How to get past an exceeded limit: the `tool run` flag that raises it, where one exists.
fn limit_hint(limit: &str) -> String {
    let flag = match limit {
        "cpu_time" => Some("--cpu-ms"),
        "memory" => Some("--heap-mb"),
        "syscalls" => Some("--max-syscalls"),
        _ => None,
    };
    match flag {
        Some(flag) => format!(
            "lower the work per call, or raise the limit: `tool run {flag} N` sets the operator's maximum (a tool's own `limits` only lower it; an image's `[limits]` sets it for `run` and `mcp`)"
        ),
        None => format!(
            "the {limit} limit is set by the tool's `limits` and its image's `[limits]`; lower the work per call, or register an image with a higher limit"
        ),
    }
}

/// Whether an `AlreadyExists` message is about a file (the others name a tool, an object,
/// a namespace or an image).
fn is_file_exists(what: &str) -> bool {
    !["tool ", "object ", "namespace ", "image "]
        .iter()
        .any(|p| what.starts_with(p))
}

/// An error with a kind, an exit code and an optional hint (how to fix it).
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: i32,
    pub wire: WireError,
    pub hint: Option<String>,
    /// Extra fields for the `--json` error object (e.g. validation findings).
    pub extra: Option<Value>,
}

impl Failure {
    pub fn new(kind: &str, code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            wire: WireError::new(kind, message),
            hint: None,
            extra: None,
        }
    }

    pub fn from_syscall(err: &SyscallError) -> Failure {
        let wire = err.to_wire();
        let hint = match err {
            SyscallError::PermissionDenied {
                resource, right, ..
            } => Some(grants::denial_hint(resource, right, &wire.message)),
            SyscallError::NonDeterminism {
                request_id: Some(request_id),
                ..
            } => Some(format!(
                "the call's replay left its journal and waits for a human: `agent-libos human approve {request_id}` runs it again from the start (its effects may happen again), `agent-libos human reject {request_id}` fails it; then `agent-libos resume` (or `agent-libos run --resume PID` for an agent run) settles it"
            )),
            SyscallError::HumanRequired { request_id, .. } => Some(format!(
                "run again with --ask on a terminal to answer it there, answer it with `agent-libos human approve {request_id}` (or reject), or grant the capability up front with an --allow-* or --grant flag"
            )),
            SyscallError::LimitExceeded { limit, .. } if limit == "fs_bytes" => Some(
                "fs reads and writes are bounded per call and per process (`KernelConfig::fs_limits`); read or write in smaller parts".to_string()
            ),
            SyscallError::LimitExceeded { limit, .. } => Some(limit_hint(limit)),
            SyscallError::AlreadyExists(what) if is_file_exists(what) => Some(
                "the file exists and writes never replace a file unless asked: pass `{overwrite: true}` (`libos.fs.writeText(path, text, {overwrite: true})`) to replace it".to_string()
            ),
            _ => None,
        };
        // A call parked on a human exits like one waiting for an approval.
        let parked = matches!(
            err,
            SyscallError::NonDeterminism {
                request_id: Some(_),
                ..
            }
        );
        Failure {
            code: if parked {
                exit::HUMAN
            } else {
                exit_code_for(err.kind())
            },
            wire,
            hint,
            extra: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn extra(mut self, extra: Value) -> Failure {
        self.extra = Some(extra);
        self
    }

    fn json(&self) -> Value {
        let mut error = serde_json::to_value(&self.wire).unwrap_or(Value::Null);
        if let (Some(hint), Some(obj)) = (&self.hint, error.as_object_mut()) {
            obj.insert("hint".into(), json!(hint));
        }
        if let (Some(Value::Object(extra)), Some(obj)) = (&self.extra, error.as_object_mut()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        json!({"ok": false, "error": error})
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.wire.message)
    }
}

impl std::error::Error for Failure {}

impl From<SyscallError> for Failure {
    fn from(err: SyscallError) -> Failure {
        Failure::from_syscall(&err)
    }
}

/// Validated settings shared by every command.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub db: PathBuf,
    /// Whether `--db` (or `AGENT_LIBOS_DB`) was given.
    pub db_given: bool,
    /// The default state directory, when `--db` was not given (reserved whole).
    pub state_dir: Option<PathBuf>,
    pub workspace: PathBuf,
    pub json: bool,
    /// `--unsandboxed-shell`: the operator's opt-out of the shell sandbox.
    pub unsandboxed_shell: bool,
}

impl Ctx {
    pub fn from_args(global: &GlobalArgs) -> Result<Ctx> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let workspace = match &global.workspace {
            Some(w) => {
                let w = cwd.join(w);
                std::fs::canonicalize(&w).with_context(|| {
                    format!(
                        "workspace {}: no such directory; create it or pass another --workspace",
                        w.display()
                    )
                })?
            }
            None => cwd.clone(),
        };
        let (db, db_given, state_dir) = match &global.db {
            Some(d) => (cwd.join(d), true, None),
            None => {
                let dir = crate::store::layout::default_state_dir(
                    &workspace,
                    std::env::var("XDG_STATE_HOME").ok().as_deref(),
                    std::env::var("HOME").ok().as_deref(),
                )
                .ok_or_else(|| {
                    Failure::new(
                        "InvalidArgument",
                        exit::INVALID,
                        "cannot choose a state directory: neither XDG_STATE_HOME nor HOME is set",
                    )
                    .hint("pass --db PATH (or set AGENT_LIBOS_DB), or set HOME")
                })?;
                (dir.join("state.db"), false, Some(dir))
            }
        };
        Ok(Ctx {
            db,
            db_given,
            state_dir,
            workspace,
            json: global.json,
            unsandboxed_shell: global.unsandboxed_shell,
        })
    }

    pub fn kernel_config(&self, mode: HumanMode) -> KernelConfig {
        let mut config = KernelConfig::new(&self.db, &self.workspace);
        config.human_mode = mode;
        config.reserved.extend(self.state_dir.clone());
        if self.unsandboxed_shell {
            config.sandbox.mode = crate::providers::SandboxMode::Unsandboxed;
        }
        config
    }

    /// Opens the kernel on the configured database and workspace.
    pub async fn open(&self, mode: HumanMode) -> Result<Kernel> {
        Kernel::open(self.kernel_config(mode))
            .await
            .with_context(|| format!("opening the runtime at {}", self.db.display()))
    }

    /// Opens the kernel for a one-shot run of a tool: its process worker starts, with one
    /// warm isolate, while the store opens (`HostConfig::warm`).
    pub async fn open_for_one_call(&self, mode: HumanMode) -> Result<Kernel> {
        let mut config = self.kernel_config(mode);
        config.isolates.warm = 1;
        Kernel::open(config)
            .await
            .with_context(|| format!("opening the runtime at {}", self.db.display()))
    }

    /// Opens the kernel only if the database exists (read-only commands).
    pub async fn open_existing(&self) -> Result<Kernel> {
        if !self.db.exists() {
            return Err(Failure::new(
                "NotFound",
                exit::INVALID,
                format!("no database at {}", self.db.display()),
            )
            .hint("pass --db PATH (or set AGENT_LIBOS_DB), or run a command that creates it, e.g. `agent-libos tool run`")
            .into());
        }
        self.open(HumanMode::FailFast).await
    }

    /// Prints a success: `{"ok":true,"result":…}` with `--json`, else `text`.
    pub fn print(&self, result: &Value, text: impl FnOnce() -> String) {
        if self.json {
            terminal::out(json!({"ok": true, "result": result}).to_string());
        } else {
            let text = text();
            if !text.is_empty() {
                terminal::out(text.trim_end_matches('\n'));
            }
        }
    }
}

/// Prints a message to stderr with the `agent-libos: ` prefix.
pub fn note(message: impl AsRef<str>) {
    terminal::err(format!("agent-libos: {}", message.as_ref()));
}

fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_tracing(&cli.global);
    let json_mode = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note(format!("cannot start the async runtime: {e}"));
            return exit::INVALID;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = Ctx::from_args(&cli.global)?;
        dispatch(&ctx, cli.command).await
    });
    // Do not wait for lingering blocking reads (an abandoned prompt on stdin).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(err) => report(&err, json_mode),
    }
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<i32> {
    match command {
        Command::Tool(cmd) => tool::run(ctx, cmd).await,
        Command::Replay(args) => replay::run(ctx, args).await,
        Command::Ps(args) => admin::ps(ctx, args).await,
        Command::Human(cmd) => human::run(ctx, cmd).await,
        Command::Audit(cmd) => audit::run(ctx, cmd).await,
        Command::Checkpoint(cmd) => checkpoint::run(ctx, cmd).await,
        Command::Run(args) => agent::run(ctx, args).await,
        Command::Mcp(args) => agent::mcp(ctx, args).await,
        Command::Image(cmd) => admin::image(ctx, cmd).await,
        Command::Resume => admin::resume(ctx).await,
        Command::Sandbox(cmd) => sandbox::run(ctx, cmd).await,
        Command::Demo(args) => demo::run(ctx, args).await,
        Command::Logs(args) => admin::logs(ctx, args).await,
        Command::Kill { pid } => admin::signal(ctx, pid, "kill").await,
        Command::Signal { pid, signal } => admin::signal(ctx, pid, &signal).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "agent-libos", &mut script);
            terminal::out(String::from_utf8_lossy(&script).trim_end());
            Ok(exit::OK)
        }
    }
}

/// Prints an error (and its `--json` form); returns its exit code.
pub fn report(err: &anyhow::Error, json_mode: bool) -> i32 {
    if let Some(failure) = err.chain().find_map(|e| e.downcast_ref::<Failure>()) {
        // Context added above the failure, outermost first.
        let mut context: Vec<String> = Vec::new();
        for e in err.chain() {
            if e.downcast_ref::<Failure>().is_some() {
                break;
            }
            context.push(e.to_string());
        }
        let mut message = context.join(": ");
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&failure.wire.message);
        if json_mode {
            terminal::out(failure.json().to_string());
        }
        match &failure.hint {
            Some(hint) => note(format!("{message}\n  hint: {hint}")),
            None => note(message),
        }
        return failure.code;
    }
    if let Some(sys) = err.chain().find_map(|e| e.downcast_ref::<SyscallError>()) {
        let failure = Failure::from_syscall(sys);
        let wrapped = anyhow::Error::new(failure);
        return report(&wrapped, json_mode);
    }
    let message = err
        .chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if json_mode {
        terminal::out(
            json!({"ok": false, "error": {"kind": "InvalidArgument", "message": message}})
                .to_string(),
        );
    }
    note(message);
    exit::INVALID
}
