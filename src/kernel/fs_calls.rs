//! Filesystem primitives: normalize the path, check the capability, call the provider.
//!
//! What they move is bounded ([`FsLimits`]): one call reads or writes at most
//! `call_bytes`, one process at most `process_bytes` in all; past either the call fails with
//! `LimitExceeded { limit: "fs_bytes" }` before anything is read into memory beyond the
//! limit or written.

use base64::Engine;
use serde_json::{json, Value};

use super::authz::CheckedPath;
use super::capability::{Pid, Right};
use super::error::{SysResult, SyscallError};
use super::paths;
use super::scope::{Done, Scope};
use super::syscall::FsCall;
use super::Kernel;

/// Characters of new content shown to a human deciding on a write.
const PREVIEW_CHARS: usize = 400;

/// How many bytes fs calls may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsLimits {
    /// The most one read or write may move.
    pub call_bytes: u64,
    /// The most one process's reads and writes may move in all, while the kernel is open.
    pub process_bytes: u64,
}

impl Default for FsLimits {
    fn default() -> Self {
        FsLimits {
            call_bytes: 64 << 20,
            process_bytes: 1 << 30,
        }
    }
}

impl Kernel {
    /// Resolves `path` against `pid`'s cwd. An escape is a denial naming the path as given
    /// (decided lexically, so it says nothing about what exists).
    pub(crate) fn resolve_path(&self, pid: Pid, path: &str, right: Right) -> SysResult<String> {
        let cwd = self
            .inner
            .state
            .lock()
            .process(pid)
            .map(|p| p.cwd.clone())
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
        paths::normalize(&cwd, path)
            .map_err(|e| SyscallError::denied_because(format!("fs:{path}"), right, e.to_string()))
    }

    /// Bytes `pid`'s fs calls have moved so far.
    fn fs_used(&self, pid: Pid) -> SysResult<u64> {
        self.inner
            .state
            .lock()
            .process(pid)
            .map(|p| p.fs_bytes)
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))
    }

    /// The most `pid`'s next fs call may move: the per-call limit or what remains of the
    /// process's, whichever is less.
    fn fs_allowance(&self, pid: Pid) -> SysResult<u64> {
        let limits = self.inner.config.fs_limits;
        let used = self.fs_used(pid)?;
        Ok(limits
            .call_bytes
            .min(limits.process_bytes.saturating_sub(used)))
    }

    /// Counts `bytes` moved by `pid`.
    pub(crate) fn charge_fs(&self, pid: Pid, bytes: u64) {
        if let Some(p) = self.inner.state.lock().procs.get_mut(&pid) {
            p.fs_bytes = p.fs_bytes.saturating_add(bytes);
        }
    }

    /// Whether a write of `bytes` fits `pid`'s allowance; fails naming the limit (before
    /// anyone is asked to approve it). The bytes are counted once written.
    pub(crate) fn check_fs_write(&self, pid: Pid, path: &str, bytes: usize) -> SysResult<()> {
        let limits = self.inner.config.fs_limits;
        let used = self.fs_used(pid)?;
        let bytes = bytes as u64;
        let remaining = limits.process_bytes.saturating_sub(used);
        if bytes > limits.call_bytes {
            return Err(SyscallError::limit(
                "fs_bytes",
                format!(
                    "{path}: a write of {bytes} bytes is over the {} one call may write; \
                     write it in parts",
                    limits.call_bytes
                ),
            ));
        }
        if bytes > remaining {
            return Err(SyscallError::limit(
                "fs_bytes",
                format!(
                    "{path}: a write of {bytes} bytes is over the {remaining} left of the {} \
                     process {pid} may move through fs",
                    limits.process_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Reads `p` within `pid`'s allowance and counts what was read.
    pub(crate) fn read_bounded(&self, pid: Pid, p: &CheckedPath) -> SysResult<Vec<u8>> {
        let allowance = self.fs_allowance(pid)?;
        let bytes = self.providers().fs.read(p, allowance)?;
        self.charge_fs(pid, bytes.len() as u64);
        Ok(bytes)
    }

    pub(crate) async fn fs_call(
        &self,
        pid: Pid,
        call: &FsCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let fs = self.providers().fs.clone();
        match call {
            FsCall::ReadText { path } => {
                let p = self
                    .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
                    .await?;
                let bytes = self.read_bounded(pid, &p)?;
                let size = bytes.len();
                let text = String::from_utf8(bytes).map_err(|_| {
                    SyscallError::invalid(format!(
                        "{} is not UTF-8 text; use fs.read_bytes",
                        p.rel()
                    ))
                })?;
                Ok(Done::new(json!(text), p.resource()).detail(json!({"bytes": size})))
            }
            FsCall::ReadBytes { path } => {
                let p = self
                    .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
                    .await?;
                let bytes = self.read_bounded(pid, &p)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                Ok(Done::new(json!(encoded), p.resource()).detail(json!({"bytes": bytes.len()})))
            }
            FsCall::WriteText {
                path,
                content,
                overwrite,
            } => {
                self.check_fs_write(pid, path, content.len())?;
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        write_context(fs_ctx.as_ref(), p, content, *overwrite)
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                let replaced = fs.write(&p, content.as_bytes(), *overwrite)?;
                self.charge_fs(pid, content.len() as u64);
                let summary = json!({
                    "path": p.rel(),
                    "bytes": content.len(),
                    "sha256": crate::util::sha256_hex(content.as_bytes()),
                    "overwritten": replaced,
                });
                Ok(Done::new(summary.clone(), p.resource()).detail(summary))
            }
            FsCall::AppendText { path, content } => {
                self.check_fs_write(pid, path, content.len())?;
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        Ok(json!({
                            "path": p.rel(),
                            "appends_bytes": content.len(),
                            "existing_bytes": fs_ctx.file_size(p)?,
                            "preview": preview(content),
                        }))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                fs.append(&p, content.as_bytes())?;
                self.charge_fs(pid, content.len() as u64);
                let summary = json!({"path": p.rel(), "bytes": content.len()});
                Ok(Done::new(summary.clone(), p.resource()).detail(summary))
            }
            FsCall::List { path } => {
                let p = self
                    .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
                    .await?;
                let entries = fs.list(&p)?;
                let count = entries.len();
                Ok(Done::new(json!(entries), p.resource()).detail(json!({"entries": count})))
            }
            FsCall::Mkdir { path, recursive } => {
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        Ok(json!({"path": p.rel(), "recursive": recursive}))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                fs.mkdir(&p, *recursive)?;
                Ok(Done::new(json!({"path": p.rel()}), p.resource()))
            }
            FsCall::DeleteFile { path } => {
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Delete, call, scope, |p| {
                        let size = fs_ctx
                            .file_size(p)?
                            .ok_or_else(|| SyscallError::NotFound(p.rel().to_string()))?;
                        Ok(json!({"path": p.rel(), "bytes": size}))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                fs.delete_file(&p)?;
                Ok(Done::new(json!({"path": p.rel()}), p.resource()))
            }
            FsCall::DeleteDir { path, recursive } => {
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Delete, call, scope, |p| {
                        if !fs_ctx.is_dir(p)? {
                            return Err(SyscallError::NotFound(p.rel().to_string()));
                        }
                        Ok(json!({"path": p.rel(), "recursive": recursive}))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                fs.delete_dir(&p, *recursive)?;
                Ok(Done::new(json!({"path": p.rel()}), p.resource()))
            }
        }
    }
}

/// What a human sees before a write: path, size, hash, whether it overwrites, a preview.
/// Fails early (no prompt) when the write could not succeed anyway.
fn write_context(
    fs: &dyn crate::providers::FileSystem,
    path: &CheckedPath,
    content: &str,
    overwrite: bool,
) -> SysResult<Value> {
    let existing = fs.file_size(path)?;
    if existing.is_some() && !overwrite {
        return Err(SyscallError::AlreadyExists(format!(
            "{} exists; pass overwrite to replace it",
            path.rel()
        )));
    }
    if let Some((parent, _)) = path.rel().rsplit_once('/') {
        if !fs.parent_is_dir(path)? {
            return Err(SyscallError::NotFound(format!("directory {parent}")));
        }
    }
    Ok(json!({
        "path": path.rel(),
        "bytes": content.len(),
        "sha256": crate::util::sha256_hex(content.as_bytes()),
        "overwrites": existing.is_some(),
        "existing_bytes": existing,
        "preview": preview(content),
    }))
}

fn preview(content: &str) -> String {
    let mut out: String = content.chars().take(PREVIEW_CHARS).collect();
    if out.len() < content.len() {
        out.push('…');
    }
    out
}
