//! Filesystem provider, confined to the workspace through a cap-std `Dir`.
//! (Interface; implementation in progress.)

use crate::kernel::authz::CheckedPath;
use crate::kernel::error::SysResult;
use serde::Serialize;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    /// "file", "dir" or "symlink" (symlinks are listed but never followed).
    pub kind: String,
    pub size: u64,
}

/// Filesystem effects on checked workspace-relative paths. Symlinks are never followed: a
/// path through a symlink fails with `PermissionDenied`. Errors map to `NotFound`,
/// `AlreadyExists`, `PermissionDenied` (escape), `InvalidArgument` or `Io`.
pub trait FileSystem: Send + Sync {
    fn read(&self, path: &CheckedPath) -> SysResult<Vec<u8>>;
    /// Writes the whole file; fails with `AlreadyExists` when it exists and `!overwrite`.
    /// Returns whether an existing file was overwritten.
    fn write(&self, path: &CheckedPath, content: &[u8], overwrite: bool) -> SysResult<bool>;
    fn append(&self, path: &CheckedPath, content: &[u8]) -> SysResult<()>;
    fn list(&self, path: &CheckedPath) -> SysResult<Vec<DirEntry>>;
    fn mkdir(&self, path: &CheckedPath, recursive: bool) -> SysResult<()>;
    fn delete_file(&self, path: &CheckedPath) -> SysResult<()>;
    fn delete_dir(&self, path: &CheckedPath, recursive: bool) -> SysResult<()>;
    /// `Some(size)` if a regular file is there, `None` if nothing is (for approval context).
    fn file_size(&self, path: &CheckedPath) -> SysResult<Option<u64>>;
    /// Whether `path` is an existing directory (for `chdir`).
    fn is_dir(&self, path: &CheckedPath) -> SysResult<bool>;
}

pub struct CapFs {}

impl CapFs {
    pub fn open(_root: &std::path::Path) -> std::io::Result<CapFs> {
        Ok(CapFs {})
    }
}

impl FileSystem for CapFs {
    fn read(&self, _: &CheckedPath) -> SysResult<Vec<u8>> {
        todo!()
    }
    fn write(&self, _: &CheckedPath, _: &[u8], _: bool) -> SysResult<bool> {
        todo!()
    }
    fn append(&self, _: &CheckedPath, _: &[u8]) -> SysResult<()> {
        todo!()
    }
    fn list(&self, _: &CheckedPath) -> SysResult<Vec<DirEntry>> {
        todo!()
    }
    fn mkdir(&self, _: &CheckedPath, _: bool) -> SysResult<()> {
        todo!()
    }
    fn delete_file(&self, _: &CheckedPath) -> SysResult<()> {
        todo!()
    }
    fn delete_dir(&self, _: &CheckedPath, _: bool) -> SysResult<()> {
        todo!()
    }
    fn file_size(&self, _: &CheckedPath) -> SysResult<Option<u64>> {
        todo!()
    }
    fn is_dir(&self, _: &CheckedPath) -> SysResult<bool> {
        todo!()
    }
}
