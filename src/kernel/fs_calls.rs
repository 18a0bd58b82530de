//! Filesystem primitives: normalize the path, check the capability, call the provider.

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
                let bytes = fs.read(&p)?;
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
                let bytes = fs.read(&p)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                Ok(Done::new(json!(encoded), p.resource()).detail(json!({"bytes": bytes.len()})))
            }
            FsCall::WriteText {
                path,
                content,
                overwrite,
            } => {
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        write_context(fs_ctx.as_ref(), p, content, *overwrite)
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                let replaced = fs.write(&p, content.as_bytes(), *overwrite)?;
                let summary = json!({
                    "path": p.rel(),
                    "bytes": content.len(),
                    "sha256": crate::util::sha256_hex(content.as_bytes()),
                    "overwritten": replaced,
                });
                Ok(Done::new(summary.clone(), p.resource()).detail(summary))
            }
            FsCall::AppendText { path, content } => {
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
