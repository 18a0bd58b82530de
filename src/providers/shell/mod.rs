//! Shell provider: starts checked commands inside the OS sandbox their policy describes and
//! collects their output. It knows nothing of capabilities: the kernel hands it a
//! `CheckedCommand` and a `CheckedSandbox`. Commands get a scrubbed environment, a private
//! scratch directory as `HOME` and `TMPDIR` (removed afterwards), and output capped without
//! blocking them. Under the operator's opt-out they run unsandboxed ([`direct`]).

mod capture;
mod direct;
mod sandboxed;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::kernel::authz::{CheckedCommand, CheckedSandbox};
use crate::kernel::error::{SysResult, SyscallError};
use crate::kernel::sandbox_policy::{Reach, SandboxPolicy};
use crate::providers::sandbox::protocol::{LaunchRequest, SystemAccess};
use crate::providers::sandbox::proxy::ConnectionRecord;
use crate::providers::sandbox::{self, SandboxConfig, SandboxMode, SandboxSupport};

#[derive(Debug, Clone, Copy)]
pub struct ShellLimits {
    pub timeout_ms: u64,
    pub max_output_bytes: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShellOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    /// The sandbox the command ran under, for the audit record.
    #[serde(skip)]
    pub sandbox: String,
    /// The network connections the command asked the proxy for, for the audit record.
    #[serde(skip)]
    pub connections: Vec<ConnectionRecord>,
}

#[async_trait]
pub trait Shell: Send + Sync {
    /// The canonical path of the executable `program` names, as a command started in the
    /// workspace directory `cwd_rel` would find it (through the scrubbed `PATH` for a bare
    /// name); `None` if there is none.
    fn resolve_program(&self, program: &str, cwd_rel: &str) -> Option<String>;

    async fn run(
        &self,
        cmd: &CheckedCommand,
        sandbox: &CheckedSandbox,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput>;
}

/// The only PATH a command sees.
pub const SCRUBBED_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// After a timeout, how long to wait for output still buffered in the pipes.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How unsandboxed commands are recorded.
pub const UNSANDBOXED: &str = "unsandboxed (operator opt-out: --unsandboxed-shell)";

/// A command's private scratch directory: `home/` (its `HOME`), `tmp/` (its `TMPDIR`) and
/// `.mask/` (where the launcher mounts its masks). Removed when dropped.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> SysResult<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("agent-libos-cmd-")
            .tempdir()
            .map_err(|e| SyscallError::Io(format!("scratch directory: {e}")))?;
        for sub in ["home", "tmp", ".mask"] {
            std::fs::create_dir(dir.path().join(sub))
                .map_err(|e| SyscallError::Io(format!("scratch directory: {e}")))?;
        }
        Ok(Scratch { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self) -> Vec<(String, String)> {
        let at = |sub: &str| self.path().join(sub).to_string_lossy().into_owned();
        vec![
            ("PATH".into(), SCRUBBED_PATH.into()),
            ("HOME".into(), at("home")),
            ("TMPDIR".into(), at("tmp")),
            ("LANG".into(), "C.UTF-8".into()),
        ]
    }
}

/// Runs checked commands as host processes in the workspace, sandboxed unless the operator
/// opted out.
pub struct ProcessShell {
    workspace_root: PathBuf,
    config: SandboxConfig,
    runtime_binary: Option<PathBuf>,
    support: OnceCell<SandboxSupport>,
}

impl ProcessShell {
    pub fn new(workspace_root: PathBuf) -> Self {
        Self::with_sandbox(workspace_root, SandboxConfig::default(), None)
    }

    pub fn with_sandbox(
        workspace_root: PathBuf,
        config: SandboxConfig,
        runtime_binary: Option<PathBuf>,
    ) -> Self {
        let support = OnceCell::new();
        if let Some(assumed) = &config.assume_support {
            let _ = support.set(assumed.clone());
        }
        ProcessShell {
            workspace_root,
            runtime_binary: crate::providers::runtime_binary::locate(runtime_binary.as_deref()),
            config,
            support,
        }
    }

    /// What this host supports, probed once through the runtime binary.
    pub async fn support(&self) -> SysResult<&SandboxSupport> {
        let binary = self.binary()?;
        self.support
            .get_or_try_init(|| async {
                let output = tokio::time::timeout(
                    Duration::from_secs(20),
                    tokio::process::Command::new(binary)
                        .arg(sandbox::PROBE_MODE)
                        .env_clear()
                        .stdin(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .output(),
                )
                .await
                .map_err(|_| SyscallError::Io("shell sandbox: the host probe timed out".into()))?
                .map_err(|e| SyscallError::Io(format!("shell sandbox: probing the host: {e}")))?;
                serde_json::from_slice(&output.stdout).map_err(|e| {
                    SyscallError::Io(format!(
                        "shell sandbox: {} did not answer the host probe ({e}); is it the agent-libos binary?",
                        binary.display()
                    ))
                })
            })
            .await
    }

    fn binary(&self) -> SysResult<&Path> {
        self.runtime_binary.as_deref().ok_or_else(|| {
            SyscallError::IllegalState(format!(
                "shell sandbox: the runtime binary `{}` was not found next to this program; set \
                 KernelConfig::runtime_binary to it (its hidden launcher mode builds the sandbox)",
                crate::providers::runtime_binary::NAME
            ))
        })
    }

    fn workspace(&self) -> SysResult<PathBuf> {
        std::fs::canonicalize(&self.workspace_root).map_err(|e| {
            SyscallError::Io(format!("workspace {}: {e}", self.workspace_root.display()))
        })
    }

    fn system_access(&self) -> SystemAccess {
        let real_dir = |p: &&&str| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        SystemAccess {
            read_exec: sandbox::SYSTEM_READ_EXEC
                .iter()
                .filter(real_dir)
                .map(PathBuf::from)
                .collect(),
            read: sandbox::ETC_READ.iter().map(PathBuf::from).collect(),
            devices: sandbox::DEVICES.iter().map(PathBuf::from).collect(),
            toolchains: self.config.toolchains.clone(),
            caches: self.config.caches.clone(),
        }
    }

    /// The runtime's reserved paths a command could otherwise reach: hidden when they lie
    /// inside something granted; a refusal when a grant lands in them directly (then no mask
    /// can keep the state unreachable without hiding the grant).
    fn reserved_masks(&self, policy: &SandboxPolicy, workspace: &Path) -> SysResult<Vec<PathBuf>> {
        let mut trees: Vec<PathBuf> = Vec::new();
        let mut entries: Vec<(PathBuf, Reach)> = Vec::new();
        for grant in &policy.grants {
            let path = if grant.path == "." {
                workspace.to_path_buf()
            } else {
                workspace.join(&grant.path)
            };
            if grant.reach == Reach::Tree {
                trees.push(path.clone());
            }
            entries.push((path, grant.reach));
        }
        trees.extend(
            self.config
                .toolchains
                .iter()
                .chain(&self.config.caches)
                .filter_map(|p| std::fs::canonicalize(p).ok()),
        );
        let mut hidden = Vec::new();
        for reserved in &policy.reserved {
            let Ok(reserved) = std::fs::canonicalize(reserved) else {
                continue;
            };
            let lands_in = entries.iter().any(|(path, reach)| {
                path == &reserved
                    || (*reach == Reach::Entry && path.parent() == Some(reserved.as_path()))
            });
            if lands_in {
                return Err(SyscallError::IllegalState(format!(
                    "shell sandbox: the runtime's state directory {} is granted to the process, so \
                     commands would reach its database; keep the database outside the workspace \
                     (--db, or AGENT_LIBOS_DB)",
                    reserved.display()
                )));
            }
            if trees
                .iter()
                .any(|tree| reserved.starts_with(tree) && &reserved != tree)
            {
                hidden.push(reserved);
            }
        }
        Ok(hidden)
    }

    async fn run_sandboxed(
        &self,
        cmd: &CheckedCommand,
        policy: &SandboxPolicy,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput> {
        let binary = self.binary()?;
        let support = self.support().await?;
        if let Some(missing) = support.unavailable() {
            return Err(SyscallError::IllegalState(format!(
                "shell sandbox: this host cannot sandbox commands (missing: {missing}); the operator \
                 may run commands without an OS sandbox with --unsandboxed-shell \
                 (KernelConfig::sandbox.mode = SandboxMode::Unsandboxed), recorded in every audit record"
            )));
        }
        let workspace = self.workspace()?;
        let hidden = self.reserved_masks(policy, &workspace)?;
        let denied_executables = policy
            .denied_programs
            .iter()
            .filter_map(|name| self.resolve_program(name, "."))
            .map(PathBuf::from)
            .collect();
        let scratch = Scratch::new()?;
        let request = LaunchRequest {
            policy: policy.clone(),
            workspace,
            scratch: scratch.path().to_path_buf(),
            system: self.system_access(),
            hidden,
            denied_executables,
            argv: cmd.argv().to_vec(),
            env: scratch.env(),
            stdin: stdin.is_some(),
            landlock_abi: support.tier().unwrap_or(0),
            user_namespace: support.user_namespace,
            pid_max: support.pid_max,
        };
        let description = support.describe();
        sandboxed::run(binary, request, stdin, limits, description).await
    }
}

#[async_trait]
impl Shell for ProcessShell {
    fn resolve_program(&self, program: &str, cwd_rel: &str) -> Option<String> {
        let candidate = if program.contains('/') {
            if program.starts_with('/') {
                PathBuf::from(program)
            } else {
                self.workspace_root.join(cwd_rel).join(program)
            }
        } else {
            SCRUBBED_PATH
                .split(':')
                .map(|dir| Path::new(dir).join(program))
                .find(|path| path.is_file())?
        };
        let canonical = std::fs::canonicalize(candidate).ok()?;
        canonical
            .is_file()
            .then(|| canonical.to_string_lossy().into_owned())
    }

    async fn run(
        &self,
        cmd: &CheckedCommand,
        sandbox: &CheckedSandbox,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput> {
        cmd.require(crate::kernel::capability::Right::Execute)?;
        let argv = cmd.argv();
        if argv.is_empty() {
            return Err(SyscallError::invalid("empty argv"));
        }
        let cwd = self.workspace_root.join(cmd.cwd_rel());
        if !cwd.is_dir() {
            return Err(SyscallError::NotFound(format!(
                "working directory: {}",
                cmd.cwd_rel()
            )));
        }
        match self.config.mode {
            SandboxMode::Enforce => {
                self.run_sandboxed(cmd, sandbox.policy(), stdin, limits)
                    .await
            }
            SandboxMode::Unsandboxed => {
                let scratch = Scratch::new()?;
                direct::run(argv, &cwd, &scratch.env(), stdin, limits, &scratch).await
            }
        }
    }
}

fn spawn_error(err: std::io::Error, program: &str) -> SyscallError {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            SyscallError::NotFound(format!("command not found: {program}"))
        }
        std::io::ErrorKind::PermissionDenied => {
            SyscallError::Io(format!("cannot execute {program}: permission denied"))
        }
        _ => SyscallError::Io(format!("cannot start {program}: {err}")),
    }
}

#[cfg(test)]
mod tests;
