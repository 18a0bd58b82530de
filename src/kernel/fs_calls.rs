//! Filesystem primitives: normalize the path, check the capability, call the provider.
//!
//! Provider calls run on the blocking pool, never on the async thread that serves the call
//! (for a tool, its isolate worker's only thread). Reads and writes are bounded per call and
//! per process (`LimitExceeded { limit: "fs_bytes" }`). A listing shows only the entries the
//! caller may read; a recursive delete checks every entry it would remove before removing any.

use base64::Engine;
use serde_json::{json, Value};

use super::authz::CheckedPath;
use super::capability::{Pid, Right};
use super::error::{SysResult, SyscallError};
use super::paths;
use super::resource;
use super::scope::{Done, Scope};
use super::syscall::FsCall;
use super::Kernel;
use crate::providers::FileSystem;

/// Characters of new content shown to a human deciding on a write.
const PREVIEW_CHARS: usize = 400;

/// The most entries a recursive delete looks at.
const MAX_DELETE_ENTRIES: usize = 100_000;

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
        paths::normalize(&cwd, path).map_err(|e| {
            SyscallError::denied_because(resource::exact("fs", path), right, e.to_string())
        })
    }

    /// Runs a filesystem provider call on the blocking pool.
    pub(crate) async fn fs_blocking<T: Send + 'static>(
        &self,
        effect: impl FnOnce(&dyn FileSystem) -> SysResult<T> + Send + 'static,
    ) -> SysResult<T> {
        let fs = self.providers().fs.clone();
        tokio::task::spawn_blocking(move || effect(fs.as_ref()))
            .await
            .map_err(|e| SyscallError::internal(format!("filesystem task: {e}")))?
    }

    /// How many bytes one filesystem call of `pid` may move now, and what sets that bound.
    pub(crate) fn fs_allowance(&self, pid: Pid) -> (u64, String) {
        let limits = self.inner.config.fs_limits;
        let used = self
            .inner
            .state
            .lock()
            .fs_bytes
            .get(&pid)
            .copied()
            .unwrap_or(0);
        let left = limits.process_bytes.saturating_sub(used);
        if left < limits.call_bytes {
            let why = format!(
                "process {pid} has {left} of its {} filesystem bytes left",
                limits.process_bytes
            );
            (left, why)
        } else {
            let why = format!("one call may move at most {} bytes", limits.call_bytes);
            (limits.call_bytes, why)
        }
    }

    /// Refuses to move `bytes` through the filesystem for `pid` if that exceeds its allowance.
    pub(crate) fn check_fs_bytes(&self, pid: Pid, what: &str, bytes: u64) -> SysResult<()> {
        let (allowed, why) = self.fs_allowance(pid);
        if bytes > allowed {
            return Err(SyscallError::limit(
                "fs_bytes",
                format!("{what} is {bytes} bytes; {why}"),
            ));
        }
        Ok(())
    }

    /// Counts `bytes` moved through the filesystem against `pid`'s allowance.
    pub(crate) fn charge_fs_bytes(&self, pid: Pid, bytes: u64) {
        let mut state = self.inner.state.lock();
        let used = state.fs_bytes.entry(pid).or_insert(0);
        *used = used.saturating_add(bytes);
    }

    /// Reads a checked file within `pid`'s allowance, and charges it.
    pub(crate) async fn read_file(&self, pid: Pid, path: &CheckedPath) -> SysResult<Vec<u8>> {
        let (allowed, why) = self.fs_allowance(pid);
        let p = path.clone();
        let bytes = self
            .fs_blocking(move |fs| fs.read(&p, allowed))
            .await
            .map_err(|e| match e {
                SyscallError::LimitExceeded { limit, detail } if limit == "fs_bytes" => {
                    SyscallError::limit(limit, format!("{detail}; {why}"))
                }
                other => other,
            })?;
        self.charge_fs_bytes(pid, bytes.len() as u64);
        Ok(bytes)
    }

    /// Writes a checked file (see [`FileSystem::write`]) and charges it.
    pub(crate) async fn write_file(
        &self,
        pid: Pid,
        path: &CheckedPath,
        content: &str,
        overwrite: bool,
    ) -> SysResult<bool> {
        let (p, bytes) = (path.clone(), content.as_bytes().to_vec());
        let len = bytes.len() as u64;
        let replaced = self
            .fs_blocking(move |fs| fs.write(&p, &bytes, overwrite))
            .await?;
        self.charge_fs_bytes(pid, len);
        Ok(replaced)
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
                let bytes = self.read_file(pid, &p).await?;
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
                let bytes = self.read_file(pid, &p).await?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                Ok(Done::new(json!(encoded), p.resource()).detail(json!({"bytes": bytes.len()})))
            }
            FsCall::WriteText {
                path,
                content,
                overwrite,
            } => {
                self.check_fs_bytes(pid, "the content", content.len() as u64)?;
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        write_context(fs_ctx.as_ref(), p, content, *overwrite, json!({}))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                let replaced = self.write_file(pid, &p, content, *overwrite).await?;
                let summary = json!({
                    "path": p.rel(),
                    "bytes": content.len(),
                    "sha256": crate::util::sha256_hex(content.as_bytes()),
                    "overwritten": replaced,
                });
                Ok(Done::new(summary.clone(), p.resource()).detail(summary))
            }
            FsCall::AppendText { path, content } => {
                self.check_fs_bytes(pid, "the content", content.len() as u64)?;
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        Ok(json!({
                            "path": p.rel(),
                            "appends_bytes": content.len(),
                            "sha256": crate::util::sha256_hex(content.as_bytes()),
                            "existing_bytes": fs_ctx.file_size(p)?,
                            "preview": preview(content),
                        }))
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                let (q, bytes) = (p.clone(), content.as_bytes().to_vec());
                self.fs_blocking(move |fs| fs.append(&q, &bytes)).await?;
                self.charge_fs_bytes(pid, content.len() as u64);
                let summary = json!({"path": p.rel(), "bytes": content.len()});
                Ok(Done::new(summary.clone(), p.resource()).detail(summary))
            }
            FsCall::List { path } => {
                let p = self
                    .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
                    .await?;
                let q = p.clone();
                let mut entries = self.fs_blocking(move |fs| fs.list(&q)).await?;
                // Names and sizes are the entries' own: only those the caller may read show.
                entries.retain(|entry| {
                    let rel = child_path(p.rel(), &entry.name);
                    self.visible(pid, &[resource::exact("fs", &rel)], Right::Read, scope)
                });
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
                let (q, recursive) = (p.clone(), *recursive);
                self.fs_blocking(move |fs| fs.mkdir(&q, recursive)).await?;
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
                let q = p.clone();
                self.fs_blocking(move |fs| fs.delete_file(&q)).await?;
                Ok(Done::new(json!({"path": p.rel()}), p.resource()))
            }
            FsCall::DeleteDir { path, recursive } => {
                let fs_ctx = fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Delete, call, scope, |p| {
                        if !fs_ctx.is_dir(p)? {
                            return Err(SyscallError::NotFound(p.rel().to_string()));
                        }
                        let mut context = json!({"path": p.rel(), "recursive": recursive});
                        if *recursive {
                            context["entries"] =
                                json!(fs_ctx.walk_tree(p, MAX_DELETE_ENTRIES)?.len());
                        }
                        Ok(context)
                    })
                    .await?;
                let contents = if *recursive {
                    self.check_tree(pid, &p, scope).await?
                } else {
                    Vec::new()
                };
                self.intent_point(call, scope).await?;
                let (q, removed) = (p.clone(), contents.len());
                self.fs_blocking(move |fs| fs.delete_dir(&q, &contents))
                    .await?;
                Ok(Done::new(json!({"path": p.rel()}), p.resource())
                    .detail(json!({"entries": removed})))
            }
        }
    }

    /// Every entry below the directory `dir`, each checked for delete: one that is denied,
    /// has no capability, or needs its own approval refuses the whole delete before anything
    /// is removed.
    async fn check_tree(
        &self,
        pid: Pid,
        dir: &CheckedPath,
        scope: &mut Scope,
    ) -> SysResult<Vec<CheckedPath>> {
        let d = dir.clone();
        let entries = self
            .fs_blocking(move |fs| fs.walk_tree(&d, MAX_DELETE_ENTRIES))
            .await?;
        let mut checked = Vec::with_capacity(entries.len());
        for rel in entries {
            let entry = self
                .authorize_tree_entry(pid, rel, Right::Delete, scope)
                .map_err(|e| match e {
                    SyscallError::PermissionDenied {
                        resource,
                        right,
                        detail,
                    } => SyscallError::denied_because(
                        resource,
                        right,
                        format!(
                            "inside {}, which is therefore not deleted{}",
                            dir.rel(),
                            if detail.is_empty() {
                                String::new()
                            } else {
                                format!("; {detail}")
                            }
                        ),
                    ),
                    other => other,
                })?;
            checked.push(entry);
        }
        Ok(checked)
    }
}

/// The workspace-relative path of `name` inside the directory `dir`.
fn child_path(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// What a human sees before a write: path, size, hash, whether it overwrites, a preview,
/// and `extra` fields. Fails early (no prompt) when the write could not succeed anyway.
pub(crate) fn write_context(
    fs: &dyn FileSystem,
    path: &CheckedPath,
    content: &str,
    overwrite: bool,
    extra: Value,
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
    let mut context = json!({
        "path": path.rel(),
        "bytes": content.len(),
        "sha256": crate::util::sha256_hex(content.as_bytes()),
        "overwrites": existing.is_some(),
        "existing_bytes": existing,
        "preview": preview(content),
    });
    if let (Value::Object(context), Value::Object(extra)) = (&mut context, extra) {
        context.extend(extra);
    }
    Ok(context)
}

fn preview(content: &str) -> String {
    let mut out: String = content.chars().take(PREVIEW_CHARS).collect();
    if out.len() < content.len() {
        out.push('…');
    }
    out
}
