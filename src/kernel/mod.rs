//! The kernel: processes, capabilities, policy, object memory, human queue and the single
//! syscall dispatcher.
//!
//! **Architecture Invariant:** every effect an agent can cause goes through
//! [`Kernel::syscall`]: capability, then policy, then (if asked) a human, then the provider
//! effect, then the audit record. The operator API (`spawn_root`, `grant`, `signal`,
//! `human_respond`, ...) is for the host — the CLI, tests, the MCP server's operator
//! configuration — and is never reachable from a process.

pub mod authz;
pub mod capability;
pub mod command;
pub mod error;
pub mod image;
pub mod netid;
pub mod paths;
pub mod process;
pub mod resource;
pub mod sandbox_policy;
pub mod syscall;

mod authorize;
mod caps;
mod checkpoint;
mod delegation;
mod dispatch;
mod events;
mod fs_calls;
mod host_calls;
pub mod human;
mod journal;
mod lease;
mod mem_calls;
mod operator;
mod persist;
mod proc_calls;
mod process_log;
mod scope;
mod shell_calls;
mod state;
mod tools;
pub(crate) mod unwind;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::providers::{FetchLimits, FsLimits, Providers, SandboxConfig, ShellLimits};
use crate::store::ids::IdBlock;
use crate::store::{Durability, Store, StoreError};

pub use capability::{Capability, CapabilitySpec, Pid, Policy, Right};
pub use checkpoint::{
    Checkpoint, CheckpointInfo, ChildState, ExternalEffect, ImportOptions, ImportReport,
    RollbackReport, CHECKPOINT_FORMAT,
};
pub use error::{SysResult, SyscallError, WireError};
pub use human::{HumanAnswer, HumanRequest, RequestKind, RequestStatus};
pub use image::{Image, ToolLimits};
pub use operator::{ProcessCtx, SpawnOptions};
pub use process::{Process, Status};
pub use process_log::LogLine;
pub use state::Event;
pub use syscall::{
    Budget, CapCall, ClockCall, EventCall, FsCall, HumanCall, ImageCall, JitCall, MemCall, NetCall,
    ObjectSpec, Primitive, ProcCall, ShellCall, Signal, Syscall,
};
pub use tools::{specifier_for as tool_specifier, ResumeReport, ResumedInvocation};

/// What to do when an operation needs a human and none is listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HumanMode {
    /// Park the process in WAITING_HUMAN until a human interface answers (the default).
    #[default]
    Wait,
    /// Fail at once with `HumanRequired` (the request stays pending and answerable).
    FailFast,
}

/// How to open a kernel.
#[derive(Clone)]
pub struct KernelConfig {
    pub db_path: PathBuf,
    pub workspace: PathBuf,
    pub durability: Durability,
    pub human_mode: HumanMode,
    /// Providers to use instead of the host's (tests, other hosts).
    pub providers: Option<Providers>,
    pub shell_limits: ShellLimits,
    pub fetch_limits: FetchLimits,
    /// How many bytes one fs call, and one process in all, may read or write.
    pub fs_limits: FsLimits,
    /// Sizes of the JIT tool isolate host (started on the first tool use).
    pub isolates: crate::isolate::HostConfig,
    /// A running isolate host to use instead of starting one (e.g. one for every case of
    /// a replay). The kernel takes a pid space of its own on it ([`WorkerHost::share`]),
    /// so it never reaches another kernel's isolates; `isolates` and `runtime_binary` are
    /// then the host's.
    ///
    /// [`WorkerHost::share`]: crate::isolate::WorkerHost::share
    pub isolate_host: Option<crate::isolate::WorkerHost>,
    /// More paths of the runtime's own, reserved like its state files (e.g. the state
    /// directory the CLI made for it). See [`KernelConfig::reserved_paths`].
    pub reserved: Vec<PathBuf>,
    /// The OS sandbox of shell commands: enforced by default, the operator's opt-out,
    /// toolchain and cache directories, per-command limits.
    pub sandbox: SandboxConfig,
    /// The `agent-libos` binary whose hidden modes run helper processes (the sandbox
    /// launcher, isolate workers). `None`: this program if it is `agent-libos`, else an `agent-libos` next
    /// to it or one directory up (where cargo puts test binaries); see
    /// [`crate::providers::runtime_binary`].
    pub runtime_binary: Option<PathBuf>,
    /// How long an invocation's lease outlives its owner's last heartbeat before another
    /// host may take it over (default 5 s).
    pub lease_ttl: std::time::Duration,
}

impl KernelConfig {
    pub fn new(db_path: impl Into<PathBuf>, workspace: impl Into<PathBuf>) -> KernelConfig {
        KernelConfig {
            db_path: db_path.into(),
            workspace: workspace.into(),
            durability: Durability::Normal,
            human_mode: HumanMode::Wait,
            providers: None,
            shell_limits: ShellLimits {
                timeout_ms: 30_000,
                max_output_bytes: 1 << 20,
            },
            fetch_limits: FetchLimits {
                timeout_ms: 30_000,
                max_response_bytes: 10 << 20,
            },
            fs_limits: FsLimits::default(),
            isolates: crate::isolate::HostConfig::default(),
            isolate_host: None,
            reserved: Vec::new(),
            sandbox: SandboxConfig::default(),
            runtime_binary: None,
            lease_ttl: std::time::Duration::from_millis(lease::LEASE_TTL_MS as u64),
        }
    }

    /// The paths that hold the runtime's own state, absolute: the database, SQLite's files
    /// beside it (which come and go), the key and the anchored audit head, and
    /// [`KernelConfig::reserved`]. No primitive of any process reaches them, whatever it
    /// holds (`fs:**` included): the filesystem provider refuses every path that names one
    /// or resolves to the same file (a hard link, another spelling).
    pub fn reserved_paths(&self) -> Vec<PathBuf> {
        let mut paths = crate::store::StateFiles::new(&self.db_path).all();
        for extra in &self.reserved {
            paths.push(std::path::absolute(extra).unwrap_or_else(|_| extra.clone()));
        }
        paths
    }

    /// What shell commands may not reach: [`KernelConfig::reserved_paths`] and the
    /// directory of the database (where SQLite's files come and go), hidden inside anything
    /// granted; a grant of one of them refuses the command.
    pub fn sandbox_reserved_paths(&self) -> Vec<PathBuf> {
        let dir = match self.db_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut paths = self.reserved_paths();
        paths.push(std::path::absolute(&dir).unwrap_or(dir));
        paths
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("workspace {path}: {source}")]
    Workspace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading state: {0}")]
    Load(#[from] sqlx::Error),
}

/// Id sequences shared safely with other runtimes on the same database.
struct Ids {
    pid: IdBlock,
    cap: IdBlock,
    event: IdBlock,
}

/// A handle to a running kernel. Cheap to clone.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    providers: Providers,
    config: KernelConfig,
    state: Mutex<state::State>,
    human: human::Waiters,
    tasks: Mutex<HashMap<Pid, tokio::task::AbortHandle>>,
    ids: Ids,
    isolates: std::sync::OnceLock<crate::isolate::WorkerHost>,
    tools: tools::ToolTables,
    invocations: journal::Invocations,
    /// This host's identity for invocation leases.
    leases: lease::Leases,
    /// Latest version of each image read so far (images change only by registration).
    images: Mutex<HashMap<String, Image>>,
}

impl Kernel {
    /// Opens the store (creating and migrating it if needed), loads state, and brings every
    /// registered process back into memory.
    pub async fn open(config: KernelConfig) -> Result<Kernel, OpenError> {
        // With warm isolates asked for, the process worker starts (and creates them) while
        // the store opens.
        let isolates = std::sync::OnceLock::new();
        if config.isolates.warm > 0 {
            let host = tools::start_isolate_host(&config);
            host.prestart();
            let _ = isolates.set(host);
        }
        let store = Store::open(&config.db_path, config.durability).await?;
        let providers = match &config.providers {
            Some(p) => p.clone(),
            None => Providers::host_with(
                &config.workspace,
                &config.reserved_paths(),
                config.sandbox.clone(),
                config.runtime_binary.clone(),
            )
            .map_err(|source| OpenError::Workspace {
                path: config.workspace.clone(),
                source,
            })?,
        };
        let state = state::State::load(store.pool(), store.sealer()).await?;
        // Events nobody will read: consumed ones and the queues of ended processes (left by
        // older runtimes), and payloads beyond today's bound.
        let stale = crate::store::WriteBatch::default().stmt(
            "DELETE FROM events WHERE consumed = 1 OR length(payload) > ? \
             OR target NOT IN (SELECT pid FROM processes WHERE status NOT IN (?, ?, ?))",
            vec![
                (events::EVENT_PAYLOAD_MAX as i64).into(),
                Status::Exited.as_str().into(),
                Status::Failed.as_str().into(),
                Status::Killed.as_str().into(),
            ],
        );
        if let Err(e) = store.submit(stale).await {
            tracing::warn!(%e, "queueing the removal of stale events");
        }
        let ids = Ids {
            pid: IdBlock::open(store.pool(), "seq.pid", "SELECT MAX(pid) FROM processes").await?,
            cap: IdBlock::open(
                store.pool(),
                "seq.capability",
                "SELECT MAX(id) FROM capabilities",
            )
            .await?,
            event: IdBlock::open(store.pool(), "seq.event", "SELECT MAX(id) FROM events").await?,
        };
        let kernel = Kernel {
            inner: Arc::new(Inner {
                store,
                providers,
                config,
                state: Mutex::new(state),
                human: human::Waiters::default(),
                tasks: Mutex::new(HashMap::new()),
                ids,
                isolates,
                tools: tools::ToolTables::default(),
                invocations: journal::Invocations::default(),
                leases: lease::Leases::default(),
                images: Mutex::new(HashMap::new()),
            }),
        };
        kernel.start_heartbeat();
        Ok(kernel)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &KernelConfig {
        &self.inner.config
    }

    fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    async fn new_pid(&self) -> SysResult<Pid> {
        Ok(self.inner.ids.pid.next(self.inner.store.pool()).await?)
    }

    async fn new_cap_id(&self) -> SysResult<i64> {
        Ok(self.inner.ids.cap.next(self.inner.store.pool()).await?)
    }

    async fn new_event_id(&self) -> SysResult<i64> {
        Ok(self.inner.ids.event.next(self.inner.store.pool()).await?)
    }

    fn now(&self) -> i64 {
        self.inner.providers.clock.now_ms()
    }

    /// A snapshot of one process.
    pub fn process(&self, pid: Pid) -> Option<Process> {
        self.inner.state.lock().process(pid).cloned()
    }

    /// Snapshots of every registered process, by pid.
    pub fn processes(&self) -> Vec<Process> {
        let state = self.inner.state.lock();
        let mut all: Vec<Process> = state.procs.values().cloned().collect();
        all.sort_by_key(|p| p.pid);
        all
    }

    /// The live capabilities a process holds.
    pub fn capabilities(&self, pid: Pid) -> Vec<Capability> {
        let now = self.now();
        self.inner
            .state
            .lock()
            .caps_of(pid)
            .iter()
            .filter(|c| c.is_live(now))
            .cloned()
            .collect()
    }

    /// Verifies the audit chain.
    pub async fn verify_audit(&self) -> Result<crate::audit::VerifyReport, StoreError> {
        self.inner.store.verify_audit().await
    }
}
