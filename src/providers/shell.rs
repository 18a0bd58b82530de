//! Shell provider (interface; implementation in progress).
use crate::kernel::authz::CheckedCommand;
use crate::kernel::error::SysResult;
use async_trait::async_trait;
use serde::Serialize;

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
}

#[async_trait]
pub trait Shell: Send + Sync {
    async fn run(
        &self,
        cmd: &CheckedCommand,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput>;
}

pub struct ProcessShell {}
impl ProcessShell {
    pub fn new(_root: std::path::PathBuf) -> Self {
        ProcessShell {}
    }
}
#[async_trait]
impl Shell for ProcessShell {
    async fn run(
        &self,
        _: &CheckedCommand,
        _: Option<&str>,
        _: ShellLimits,
    ) -> SysResult<ShellOutput> {
        todo!()
    }
}
pub enum CommandAnalysis {
    Commands(Vec<Vec<String>>),
    Opaque { resource: String, reason: String },
}
pub fn analyze(argv: &[String]) -> Result<CommandAnalysis, String> {
    Ok(CommandAnalysis::Commands(vec![argv.to_vec()]))
}
