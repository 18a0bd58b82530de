//! Filesystem provider, confined to the workspace through a cap-std `Dir`.
//!
//! The kernel decides *whether* a path may be touched; this module makes sure the effect lands
//! *where* it was checked. Every operation starts from one directory handle opened on the
//! workspace root, walks the path one component at a time with `open_dir_nofollow`, and acts
//! on the last component relative to its parent handle without following it. A symlink at any
//! component is therefore refused, even one planted (or swapped in for a directory) after the
//! kernel checked the path: there is no window in which a name is resolved twice.
//!
//! The runtime's own state (database, its WAL and SHM, key, audit head; see
//! `KernelConfig::reserved_paths`) is reserved: whatever the capability, every operation
//! refuses a path that names a reserved file (by its directory's identity and its name, so
//! a file SQLite has not created yet is covered too) or resolves to one (by device and
//! inode, so a hard link or another spelling is caught), and listings leave them out.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, Metadata, MetadataExt, OpenOptions, OpenOptionsExt};
use serde::Serialize;

use crate::kernel::authz::CheckedPath;
use crate::kernel::capability::Right;
use crate::kernel::error::{SysResult, SyscallError};

/// How many bytes the filesystem primitives may move: per call (a read, a write, an append,
/// an object loaded from or written to a file) and per process over its life in this runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsLimits {
    pub call_bytes: u64,
    pub process_bytes: u64,
}

impl Default for FsLimits {
    fn default() -> Self {
        FsLimits {
            call_bytes: 16 << 20,
            process_bytes: 1 << 30,
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    /// "file", "dir" or "symlink" (symlinks are listed but never followed).
    pub kind: String,
    /// The length of a regular file; 0 for directories, symlinks and other entries.
    pub size: u64,
}

/// Filesystem effects on checked workspace-relative paths. Symlinks are never followed: a
/// path through a symlink fails with `PermissionDenied`. Errors map to `NotFound`,
/// `AlreadyExists`, `PermissionDenied` (escape), `InvalidArgument` or `Io`.
///
/// Each effect needs a proof of its own right — `read` and `list` a read proof; `write`,
/// `append` and `mkdir` a write proof; the deletes a delete proof — and fails with
/// `PermissionDenied` on a proof of another. The lookups (`file_size`, `is_dir`,
/// `parent_is_dir`) take a proof of any right.
pub trait FileSystem: Send + Sync {
    /// Reads the whole file if it holds at most `max_bytes`; a larger file is
    /// `LimitExceeded { limit: "fs_bytes" }`, found out without reading it.
    fn read(&self, path: &CheckedPath, max_bytes: u64) -> SysResult<Vec<u8>>;
    /// Writes the whole file; fails with `AlreadyExists` when it exists and `!overwrite`.
    /// Returns whether an existing file was overwritten.
    fn write(&self, path: &CheckedPath, content: &[u8], overwrite: bool) -> SysResult<bool>;
    fn append(&self, path: &CheckedPath, content: &[u8]) -> SysResult<()>;
    fn list(&self, path: &CheckedPath) -> SysResult<Vec<DirEntry>>;
    fn mkdir(&self, path: &CheckedPath, recursive: bool) -> SysResult<()>;
    fn delete_file(&self, path: &CheckedPath) -> SysResult<()>;
    /// What deleting the directory `path` (a proof for delete) would remove: every entry
    /// below it as a workspace-relative path, parents before their children, never entering
    /// a symlink. More than `max_entries` is `LimitExceeded { limit: "fs_entries" }`.
    fn walk_tree(&self, path: &CheckedPath, max_entries: usize) -> SysResult<Vec<String>>;
    /// Removes `contents` (entries below the directory, as `walk_tree` listed them, each checked
    /// for delete), children first, then the directory itself. Anything else inside — an
    /// entry created since — makes it fail with "directory not empty".
    fn delete_dir(&self, path: &CheckedPath, contents: &[CheckedPath]) -> SysResult<()>;
    /// `Some(size)` if a regular file is there, `None` if nothing is (for approval context).
    fn file_size(&self, path: &CheckedPath) -> SysResult<Option<u64>>;
    /// Whether `path` is an existing directory (for `chdir`).
    fn is_dir(&self, path: &CheckedPath) -> SysResult<bool>;
    /// Whether the directory `path` would be created in exists (for approval context);
    /// `false` for the root, which has none.
    fn parent_is_dir(&self, path: &CheckedPath) -> SysResult<bool>;
}

/// The host filesystem, seen only through a handle on the workspace root.
pub struct CapFs {
    root: Dir,
    reserved: Reserved,
}

impl CapFs {
    /// Opens the workspace root. This and [`CapFs::open_reserving`] are the one place the
    /// filesystem provider uses ambient authority: everything afterwards is relative to the
    /// returned handles.
    pub fn open(root: &std::path::Path) -> io::Result<CapFs> {
        CapFs::open_reserving(root, &[])
    }

    /// Opens the workspace root, reserving `reserved` (absolute paths of the runtime's own
    /// files and directories): no operation reaches them.
    pub fn open_reserving(
        root: &std::path::Path,
        reserved: &[std::path::PathBuf],
    ) -> io::Result<CapFs> {
        let root = Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
        Ok(CapFs {
            root,
            reserved: Reserved::open(reserved),
        })
    }
}

/// A file's identity: device and inode.
type Identity = (u64, u64);

fn identity(meta: &Metadata) -> Identity {
    (meta.dev(), meta.ino())
}

/// The reserved paths, each held as a handle on its directory and its name.
struct Reserved {
    entries: Vec<ReservedEntry>,
    /// Identities of the reserved paths that are directories (stable: a directory is not
    /// replaced the way SQLite replaces its files).
    dirs: Vec<Identity>,
}

struct ReservedEntry {
    dir: Dir,
    dir_id: Identity,
    name: std::ffi::OsString,
}

impl Reserved {
    /// Opens the directory of each reserved path (those whose directory does not exist
    /// cannot be reached through it and are skipped).
    fn open(paths: &[std::path::PathBuf]) -> Reserved {
        let mut entries = Vec::new();
        let mut dirs = Vec::new();
        for path in paths {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let Ok(dir) = Dir::open_ambient_dir(parent, cap_std::ambient_authority()) else {
                continue;
            };
            let Ok(meta) = dir.dir_metadata() else {
                continue;
            };
            if let Ok(own) = dir.symlink_metadata(name) {
                if own.is_dir() {
                    dirs.push(identity(&own));
                }
            }
            entries.push(ReservedEntry {
                dir,
                dir_id: identity(&meta),
                name: name.to_os_string(),
            });
        }
        Reserved { entries, dirs }
    }

    /// The identities of the reserved paths that exist now (files come and go).
    fn present(&self) -> Vec<Identity> {
        self.entries
            .iter()
            .filter_map(|e| e.dir.symlink_metadata(&e.name).ok())
            .map(|m| identity(&m))
            .collect()
    }

    /// Whether `name` in the directory `dir_id` is a reserved path, or `meta` (what is
    /// there, if anything) is a reserved file under any name.
    fn covers(&self, dir_id: Identity, name: &str, meta: Option<&Metadata>) -> bool {
        !self.entries.is_empty()
            && (self.names(dir_id, name)
                || meta.is_some_and(|m| self.present().contains(&identity(m))))
    }

    fn names(&self, dir_id: Identity, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.dir_id == dir_id && e.name == name)
    }
}

/// The refusal of a path into the runtime's own state.
fn reserved_denied(path: &CheckedPath) -> SyscallError {
    SyscallError::denied_because(
        path.resource(),
        path.right(),
        "the path is reserved for the runtime's own state",
    )
}

/// What a name inside a directory currently is (looked at without following it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    fn of(meta: &Metadata) -> Kind {
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }
}

/// A non-root path, resolved to its opened parent directory and its last component.
struct Entry {
    parent: Dir,
    name: String,
}

impl CapFs {
    /// The path's components; empty for the root. Rejects anything not normalized, although
    /// the kernel never builds such a `CheckedPath` (defense in depth).
    fn components(path: &CheckedPath) -> SysResult<Vec<&str>> {
        if path.rel() == "." {
            return Ok(Vec::new());
        }
        let components: Vec<&str> = path.rel().split('/').collect();
        let normalized = components
            .iter()
            .all(|c| !c.is_empty() && *c != "." && *c != "..");
        if !normalized {
            return Err(SyscallError::invalid(format!(
                "path '{}' is not a normalized workspace path",
                path.rel()
            )));
        }
        Ok(components)
    }

    /// Opens the directory named by `components`, refusing symlinks at every step.
    fn walk(&self, path: &CheckedPath, components: &[&str]) -> SysResult<Dir> {
        let mut dir = self.root.try_clone().map_err(|e| map_io(e, path))?;
        for name in components {
            let next = open_subdir(&dir, name, path)?;
            if !self.reserved.entries.is_empty() {
                let dir_id = identity(&dir.dir_metadata().map_err(|e| map_io(e, path))?);
                let next_id = identity(&next.dir_metadata().map_err(|e| map_io(e, path))?);
                if self.reserved.names(dir_id, name) || self.reserved.dirs.contains(&next_id) {
                    return Err(reserved_denied(path));
                }
            }
            dir = next;
        }
        Ok(dir)
    }

    /// Refuses `name` in `dir` if it is reserved (by name, or by the identity of `meta`).
    fn refuse_reserved(
        &self,
        dir: &Dir,
        name: &str,
        meta: Option<&Metadata>,
        path: &CheckedPath,
    ) -> SysResult<()> {
        if self.reserved.entries.is_empty() {
            return Ok(());
        }
        let dir_id = dir.dir_metadata().map_err(|e| map_io(e, path))?;
        if self.reserved.covers(identity(&dir_id), name, meta) {
            return Err(reserved_denied(path));
        }
        Ok(())
    }

    /// Refuses the last component of a located path if it is reserved (whatever is there).
    fn refuse_reserved_entry(&self, entry: &Entry, path: &CheckedPath) -> SysResult<()> {
        if self.reserved.entries.is_empty() {
            return Ok(());
        }
        let meta = stat(&entry.parent, &entry.name, path)?;
        self.refuse_reserved(&entry.parent, &entry.name, meta.as_ref(), path)
    }

    /// Resolves a path to its parent and last name; `None` for the workspace root.
    fn locate(&self, path: &CheckedPath) -> SysResult<Option<Entry>> {
        let components = Self::components(path)?;
        let Some((last, parents)) = components.split_last() else {
            return Ok(None);
        };
        let parent = self.walk(path, parents)?;
        let entry = Entry {
            parent,
            name: (*last).to_string(),
        };
        self.refuse_reserved_entry(&entry, path)?;
        Ok(Some(entry))
    }

    /// Like `locate`, for operations on which the root is a directory and therefore invalid.
    fn locate_entry(&self, path: &CheckedPath) -> SysResult<Entry> {
        self.locate(path)?.ok_or_else(|| is_a_directory(path))
    }

    /// Opens the directory at `path` (the root for `"."`).
    fn open_dir(&self, path: &CheckedPath) -> SysResult<Dir> {
        let components = Self::components(path)?;
        self.walk(path, &components)
    }

    /// Opens the file at `path` with `options` (never following a symlink) and checks it is
    /// a regular file.
    fn open_file(&self, path: &CheckedPath, options: &mut OpenOptions) -> SysResult<File> {
        let entry = self.locate_entry(path)?;
        // O_NONBLOCK: opening a FIFO planted in the workspace must not hang the kernel.
        options
            .follow(FollowSymlinks::No)
            .custom_flags(libc::O_NONBLOCK);
        let file = entry
            .parent
            .open_with(&entry.name, options)
            .map_err(|e| component_error(&entry.parent, &entry.name, e, path))?;
        let meta = file.metadata().map_err(|e| map_io(e, path))?;
        // What was opened, not only what was looked at: a link swapped in meanwhile.
        self.refuse_reserved(&entry.parent, &entry.name, Some(&meta), path)?;
        match Kind::of(&meta) {
            Kind::File => Ok(file),
            Kind::Dir => Err(is_a_directory(path)),
            _ => Err(not_a_regular_file(path)),
        }
    }
}

impl FileSystem for CapFs {
    fn read(&self, path: &CheckedPath, max_bytes: u64) -> SysResult<Vec<u8>> {
        path.require(Right::Read)?;
        let file = self.open_file(path, OpenOptions::new().read(true))?;
        let size = file.metadata().map_err(|e| map_io(e, path))?.len();
        let too_large = || {
            SyscallError::limit(
                "fs_bytes",
                format!("{} holds more than {max_bytes} bytes", path.rel()),
            )
        };
        if size > max_bytes {
            return Err(too_large());
        }
        // The file may grow after the size was read: never take more than the limit.
        let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| map_io(e, path))?;
        if content.len() as u64 > max_bytes {
            return Err(too_large());
        }
        Ok(content)
    }

    fn write(&self, path: &CheckedPath, content: &[u8], overwrite: bool) -> SysResult<bool> {
        path.require(Right::Write)?;
        let entry = self.locate_entry(path)?;
        let existing = stat(&entry.parent, &entry.name, path)?;
        if let Some(meta) = &existing {
            match Kind::of(meta) {
                Kind::File if !overwrite => {
                    return Err(SyscallError::AlreadyExists(path.rel().to_string()))
                }
                Kind::File => {}
                Kind::Dir => return Err(is_a_directory(path)),
                Kind::Symlink => return Err(symlink_denied(path)),
                Kind::Other => return Err(not_a_regular_file(path)),
            }
        }
        let mut temp = TempFile::create(&entry.parent, path)?;
        temp.fill(content, existing.as_ref(), path)?;
        if overwrite {
            temp.replace(&entry.name, path)?;
        } else {
            temp.link_new(&entry.name, path)?;
        }
        tracing::debug!(path = path.rel(), bytes = content.len(), "fs write");
        Ok(existing.is_some())
    }

    fn append(&self, path: &CheckedPath, content: &[u8]) -> SysResult<()> {
        path.require(Right::Write)?;
        let mut file = self.open_file(path, OpenOptions::new().append(true).create(true))?;
        file.write_all(content).map_err(|e| map_io(e, path))
    }

    fn list(&self, path: &CheckedPath) -> SysResult<Vec<DirEntry>> {
        path.require(Right::Read)?;
        let dir = self.open_dir(path)?;
        let dir_id = identity(&dir.dir_metadata().map_err(|e| map_io(e, path))?);
        let present = self.reserved.present();
        let mut entries = Vec::new();
        for entry in dir.entries().map_err(|e| map_io(e, path))? {
            let file_name = entry.map_err(|e| map_io(e, path))?.file_name();
            // An entry removed while listing is simply not listed.
            let Ok(meta) = dir.symlink_metadata(&file_name) else {
                continue;
            };
            // Nor is the runtime's own state.
            if self.reserved.names(dir_id, &file_name.to_string_lossy())
                || present.contains(&identity(&meta))
            {
                continue;
            }
            let kind = Kind::of(&meta);
            entries.push(DirEntry {
                name: file_name.to_string_lossy().into_owned(),
                kind: kind.as_str().to_string(),
                size: if kind == Kind::File { meta.len() } else { 0 },
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn mkdir(&self, path: &CheckedPath, recursive: bool) -> SysResult<()> {
        path.require(Right::Write)?;
        if recursive {
            return self.mkdir_all(path);
        }
        let entry = self
            .locate(path)?
            .ok_or_else(|| SyscallError::AlreadyExists(path.rel().to_string()))?;
        entry
            .parent
            .create_dir(&entry.name)
            .map_err(|e| component_error(&entry.parent, &entry.name, e, path))
    }

    fn delete_file(&self, path: &CheckedPath) -> SysResult<()> {
        path.require(Right::Delete)?;
        // Unlinking a symlink removes the link itself and follows nothing, so it is allowed.
        let entry = self.locate_entry(path)?;
        entry
            .parent
            .remove_file(&entry.name)
            .map_err(|e| map_io(e, path))
    }

    fn walk_tree(&self, path: &CheckedPath, max_entries: usize) -> SysResult<Vec<String>> {
        path.require(Right::Delete)?;
        let mut out = Vec::new();
        let mut pending = vec![(self.open_dir(path)?, path.rel().to_string())];
        while let Some((dir, rel)) = pending.pop() {
            let mut names = Vec::new();
            for entry in dir.entries().map_err(|e| map_io(e, path))? {
                let name = entry.map_err(|e| map_io(e, path))?.file_name();
                let name = name.into_string().map_err(|name| {
                    SyscallError::invalid(format!(
                        "{rel}: the entry {name:?} has a name that is not UTF-8"
                    ))
                })?;
                names.push(name);
            }
            names.sort();
            for name in names {
                let child = if rel == "." {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                // An entry removed while walking is simply not listed.
                let Ok(meta) = dir.symlink_metadata(&name) else {
                    continue;
                };
                out.push(child.clone());
                if out.len() > max_entries {
                    return Err(SyscallError::limit(
                        "fs_entries",
                        format!("{} holds more than {max_entries} entries", path.rel()),
                    ));
                }
                if Kind::of(&meta) == Kind::Dir {
                    pending.push((open_subdir(&dir, &name, path)?, child));
                }
            }
        }
        Ok(out)
    }

    fn delete_dir(&self, path: &CheckedPath, contents: &[CheckedPath]) -> SysResult<()> {
        path.require(Right::Delete)?;
        for item in contents {
            item.require(Right::Delete)?;
        }
        let entry = self
            .locate(path)?
            .ok_or_else(|| SyscallError::invalid("refusing to delete the workspace root"))?;
        let meta = stat(&entry.parent, &entry.name, path)?
            .ok_or_else(|| SyscallError::NotFound(path.rel().to_string()))?;
        match Kind::of(&meta) {
            Kind::Dir => {}
            Kind::Symlink => return Err(symlink_denied(path)),
            _ => return Err(not_a_directory(path)),
        }
        // A reserved file anywhere below refuses the whole delete, before anything goes.
        if !contents.is_empty() && !self.reserved.entries.is_empty() {
            let dir = open_subdir(&entry.parent, &entry.name, path)?;
            if holds_reserved(&dir, &self.reserved.present()).map_err(|e| map_io(e, path))? {
                return Err(reserved_denied(path));
            }
        }
        let below = format!("{}/", path.rel());
        if let Some(stray) = contents.iter().find(|c| !c.rel().starts_with(&below)) {
            return Err(SyscallError::invalid(format!(
                "{} is not inside {}",
                stray.rel(),
                path.rel()
            )));
        }
        for item in contents.iter().rev() {
            let Some(found) = self.locate(item)? else {
                continue;
            };
            match stat(&found.parent, &found.name, item)?.map(|m| Kind::of(&m)) {
                None => {}
                Some(Kind::Dir) => found
                    .parent
                    .remove_dir(&found.name)
                    .map_err(|e| map_io(e, item))?,
                // Unlinking a symlink removes the link and follows nothing.
                Some(_) => found
                    .parent
                    .remove_file(&found.name)
                    .map_err(|e| map_io(e, item))?,
            }
        }
        entry
            .parent
            .remove_dir(&entry.name)
            .map_err(|e| map_io(e, path))
    }

    fn file_size(&self, path: &CheckedPath) -> SysResult<Option<u64>> {
        let entry = match self.locate_entry(path) {
            Err(SyscallError::NotFound(_)) => return Ok(None),
            other => other?,
        };
        let Some(meta) = stat(&entry.parent, &entry.name, path)? else {
            return Ok(None);
        };
        match Kind::of(&meta) {
            Kind::File => Ok(Some(meta.len())),
            Kind::Dir => Err(is_a_directory(path)),
            Kind::Symlink => Err(symlink_denied(path)),
            Kind::Other => Err(not_a_regular_file(path)),
        }
    }

    fn is_dir(&self, path: &CheckedPath) -> SysResult<bool> {
        let entry = match self.locate(path) {
            Ok(None) => return Ok(true),
            Ok(Some(entry)) => entry,
            Err(SyscallError::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        match stat(&entry.parent, &entry.name, path)?.map(|m| Kind::of(&m)) {
            Some(Kind::Dir) => Ok(true),
            Some(Kind::Symlink) => Err(symlink_denied(path)),
            _ => Ok(false),
        }
    }

    fn parent_is_dir(&self, path: &CheckedPath) -> SysResult<bool> {
        let components = Self::components(path)?;
        let Some((_, parents)) = components.split_last() else {
            return Ok(false);
        };
        let Some((name, above)) = parents.split_last() else {
            return Ok(true);
        };
        let dir = match self.walk(path, above) {
            Ok(dir) => dir,
            Err(SyscallError::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        match stat(&dir, name, path)?.map(|m| Kind::of(&m)) {
            Some(Kind::Dir) => Ok(true),
            Some(Kind::Symlink) => Err(symlink_denied(path)),
            _ => Ok(false),
        }
    }
}

impl CapFs {
    /// `mkdir -p`: creates each missing component, refusing symlinks on the way.
    fn mkdir_all(&self, path: &CheckedPath) -> SysResult<()> {
        let mut dir = self.root.try_clone().map_err(|e| map_io(e, path))?;
        for name in Self::components(path)? {
            let existing = stat(&dir, name, path)?;
            self.refuse_reserved(&dir, name, existing.as_ref(), path)?;
            match dir.create_dir(name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(component_error(&dir, name, e, path)),
            }
            dir = open_subdir(&dir, name, path)?;
        }
        Ok(())
    }
}

/// Opens the subdirectory `name` of `dir`, refusing a symlink.
fn open_subdir(dir: &Dir, name: &str, path: &CheckedPath) -> SysResult<Dir> {
    dir.open_dir_nofollow(name)
        .map_err(|e| component_error(dir, name, e, path))
}

/// Looks at `name` in `dir` without following it; `None` if nothing is there.
fn stat(dir: &Dir, name: &str, path: &CheckedPath) -> SysResult<Option<Metadata>> {
    match dir.symlink_metadata(name) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(map_io(e, path)),
    }
}

/// Whether anything under `dir` (not following symlinks) is one of the `reserved` files.
fn holds_reserved(dir: &Dir, reserved: &[Identity]) -> io::Result<bool> {
    if reserved.is_empty() {
        return Ok(false);
    }
    for entry in dir.entries()? {
        let name = entry?.file_name();
        let Ok(meta) = dir.symlink_metadata(&name) else {
            continue;
        };
        if reserved.contains(&identity(&meta)) {
            return Ok(true);
        }
        if meta.file_type().is_dir() && holds_reserved(&dir.open_dir_nofollow(&name)?, reserved)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A temporary file beside the target, removed on drop unless it was moved into place.
struct TempFile<'a> {
    dir: &'a Dir,
    name: String,
    file: File,
    placed: bool,
}

impl<'a> TempFile<'a> {
    fn create(dir: &'a Dir, path: &CheckedPath) -> SysResult<TempFile<'a>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .follow(FollowSymlinks::No)
            .mode(0o644);
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(".libos-write-{}-{n}.tmp", std::process::id());
            match dir.open_with(&name, &options) {
                Ok(file) => {
                    return Ok(TempFile {
                        dir,
                        name,
                        file,
                        placed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(map_io(e, path)),
            }
        }
        Err(SyscallError::Io(format!(
            "{}: could not create a temporary file beside it",
            path.rel()
        )))
    }

    /// Writes the content, keeps the permissions of the file being replaced, and syncs.
    fn fill(
        &mut self,
        content: &[u8],
        replaced: Option<&Metadata>,
        path: &CheckedPath,
    ) -> SysResult<()> {
        self.file.write_all(content).map_err(|e| map_io(e, path))?;
        if let Some(meta) = replaced {
            self.file
                .set_permissions(meta.permissions())
                .map_err(|e| map_io(e, path))?;
        }
        self.file.sync_data().map_err(|e| map_io(e, path))
    }

    /// Atomically replaces `target` (whatever file is there) with the temporary file.
    fn replace(mut self, target: &str, path: &CheckedPath) -> SysResult<()> {
        self.dir
            .rename(&self.name, self.dir, target)
            .map_err(|e| map_io(e, path))?;
        self.placed = true;
        Ok(())
    }

    /// Atomically places the temporary file at `target`, failing if anything is there.
    fn link_new(self, target: &str, path: &CheckedPath) -> SysResult<()> {
        self.dir
            .hard_link(&self.name, self.dir, target)
            .map_err(|e| map_io(e, path))
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.placed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// Maps an error met while opening `name` in `dir`: a symlink there means the path was
/// refused for being a symlink, whatever errno the nofollow open reported.
fn component_error(dir: &Dir, name: &str, err: io::Error, path: &CheckedPath) -> SyscallError {
    let is_symlink = dir
        .symlink_metadata(name)
        .is_ok_and(|m| m.file_type().is_symlink());
    if is_symlink {
        symlink_denied(path)
    } else {
        map_io(err, path)
    }
}

/// Maps a host error to a syscall error naming the workspace-relative path only.
fn map_io(err: io::Error, path: &CheckedPath) -> SyscallError {
    let rel = path.rel().to_string();
    match err.kind() {
        io::ErrorKind::NotFound => SyscallError::NotFound(rel),
        io::ErrorKind::AlreadyExists => SyscallError::AlreadyExists(rel),
        io::ErrorKind::IsADirectory => is_a_directory(path),
        io::ErrorKind::NotADirectory => not_a_directory(path),
        io::ErrorKind::DirectoryNotEmpty => {
            SyscallError::invalid(format!("directory not empty: {rel}"))
        }
        // cap-std reports an escape attempt as a PermissionDenied without an errno.
        io::ErrorKind::PermissionDenied if err.raw_os_error().is_none() => {
            SyscallError::denied_because(
                path.resource(),
                path.right(),
                "path escapes the workspace",
            )
        }
        io::ErrorKind::PermissionDenied => {
            SyscallError::denied_because(path.resource(), path.right(), "the host denies access")
        }
        _ if err.raw_os_error() == Some(libc::ELOOP) => symlink_denied(path),
        _ => SyscallError::Io(format!("{rel}: {err}")),
    }
}

fn symlink_denied(path: &CheckedPath) -> SyscallError {
    SyscallError::denied_because(path.resource(), path.right(), "symlinks are not followed")
}

fn is_a_directory(path: &CheckedPath) -> SyscallError {
    SyscallError::invalid(format!("{} is a directory", path.rel()))
}

fn not_a_directory(path: &CheckedPath) -> SyscallError {
    SyscallError::invalid(format!("{}: not a directory", path.rel()))
}

fn not_a_regular_file(path: &CheckedPath) -> SyscallError {
    SyscallError::invalid(format!("{} is not a regular file", path.rel()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, CapFs) {
        let workspace = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let fs = CapFs::open(workspace.path()).unwrap();
        (workspace, outside, fs)
    }

    fn path(rel: &str, right: Right) -> CheckedPath {
        CheckedPath::for_test(rel, right)
    }

    /// A recursive delete as the kernel does it: walk, then remove what was listed.
    fn delete_all(fs: &CapFs, rel: &str) -> SysResult<()> {
        let dir = path(rel, Right::Delete);
        let contents: Vec<CheckedPath> = fs
            .walk_tree(&dir, 1000)?
            .iter()
            .map(|p| path(p, Right::Delete))
            .collect();
        fs.delete_dir(&dir, &contents)
    }

    fn assert_symlink_denied(err: SyscallError, rel: &str, right: Right) {
        match err {
            SyscallError::PermissionDenied {
                resource,
                right: denied_right,
                detail,
            } => {
                assert_eq!(resource, format!("fs:{rel}"));
                assert_eq!(denied_right, right.as_str());
                assert!(detail.contains("symlink"), "{detail}");
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    fn no_temp_files_left(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with(".libos-write-"),
                "temporary file left behind: {name:?}"
            );
        }
    }

    #[test]
    fn a_read_proof_cannot_write_and_no_proof_serves_another_right() {
        let (ws, _out, fs) = setup();
        std::fs::write(ws.path().join("a.txt"), "keep").unwrap();
        let read = path("a.txt", Right::Read);
        let refused = |err: SyscallError, needed: Right| match err {
            SyscallError::PermissionDenied { right, detail, .. } => {
                assert_eq!(right, needed.as_str());
                assert!(detail.contains("checked it for"), "{detail}");
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        };
        refused(fs.write(&read, b"x", true).unwrap_err(), Right::Write);
        refused(fs.append(&read, b"x").unwrap_err(), Right::Write);
        refused(fs.delete_file(&read).unwrap_err(), Right::Delete);
        refused(
            fs.mkdir(&path("d", Right::Read), true).unwrap_err(),
            Right::Write,
        );
        refused(
            fs.delete_dir(&path(".", Right::Write), &[]).unwrap_err(),
            Right::Delete,
        );
        refused(
            fs.delete_dir(&path("d", Right::Delete), &[path("d/x", Right::Write)])
                .unwrap_err(),
            Right::Delete,
        );
        refused(
            fs.walk_tree(&path(".", Right::Read), 10).unwrap_err(),
            Right::Delete,
        );
        let write = path("a.txt", Right::Write);
        refused(fs.read(&write, u64::MAX).unwrap_err(), Right::Read);
        refused(fs.list(&path(".", Right::Delete)).unwrap_err(), Right::Read);
        assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"keep");
        assert!(!ws.path().join("d").exists());
        // Lookups serve approval context for any right.
        assert_eq!(fs.file_size(&write).unwrap(), Some(4));
        assert!(fs.parent_is_dir(&write).unwrap());
    }

    #[test]
    fn parent_is_dir_reports_missing_and_file_parents() {
        let (ws, _out, fs) = setup();
        std::fs::create_dir(ws.path().join("d")).unwrap();
        std::fs::write(ws.path().join("f"), "").unwrap();
        let p = |rel| path(rel, Right::Write);
        assert!(fs.parent_is_dir(&p("d/x")).unwrap());
        assert!(!fs.parent_is_dir(&p("missing/x")).unwrap());
        assert!(!fs.parent_is_dir(&p("missing/deeper/x")).unwrap());
        assert!(!fs.parent_is_dir(&p("f/x")).unwrap());
        assert!(!fs.parent_is_dir(&p(".")).unwrap());
    }

    #[test]
    fn write_then_read_round_trips() {
        let (ws, _out, fs) = setup();
        let overwrote = fs
            .write(&path("a.txt", Right::Write), b"hello", false)
            .unwrap();
        assert!(!overwrote);
        assert_eq!(
            fs.read(&path("a.txt", Right::Read), u64::MAX).unwrap(),
            b"hello"
        );
        assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"hello");
        no_temp_files_left(ws.path());
    }

    #[test]
    fn write_respects_the_overwrite_flag() {
        let (ws, _out, fs) = setup();
        let p = path("a.txt", Right::Write);
        fs.write(&p, b"one", false).unwrap();
        let err = fs.write(&p, b"two", false).unwrap_err();
        assert_eq!(err, SyscallError::AlreadyExists("a.txt".into()));
        assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"one");
        assert!(fs.write(&p, b"three", true).unwrap());
        assert_eq!(std::fs::read(ws.path().join("a.txt")).unwrap(), b"three");
        no_temp_files_left(ws.path());
    }

    #[test]
    fn overwrite_keeps_the_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let (ws, _out, fs) = setup();
        let host = ws.path().join("run.sh");
        std::fs::write(&host, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
        fs.write(&path("run.sh", Right::Write), b"#!/bin/sh\necho\n", true)
            .unwrap();
        let mode = std::fs::metadata(&host).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn write_fails_when_the_parent_is_missing() {
        let (ws, _out, fs) = setup();
        let err = fs
            .write(&path("missing/a.txt", Right::Write), b"x", false)
            .unwrap_err();
        assert_eq!(err, SyscallError::NotFound("missing/a.txt".into()));
        assert!(!ws.path().join("missing").exists());
    }

    #[test]
    fn write_to_a_directory_is_invalid() {
        let (ws, _out, fs) = setup();
        std::fs::create_dir(ws.path().join("d")).unwrap();
        let err = fs.write(&path("d", Right::Write), b"x", true).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        assert!(err.to_string().contains("d is a directory"), "{err}");
        no_temp_files_left(ws.path());
    }

    #[test]
    fn append_creates_then_extends() {
        let (ws, _out, fs) = setup();
        let p = path("log.txt", Right::Write);
        fs.append(&p, b"a").unwrap();
        fs.append(&p, b"b").unwrap();
        assert_eq!(std::fs::read(ws.path().join("log.txt")).unwrap(), b"ab");
    }

    #[test]
    fn read_of_missing_file_and_directory() {
        let (ws, _out, fs) = setup();
        std::fs::create_dir(ws.path().join("d")).unwrap();
        let err = fs
            .read(&path("nope.txt", Right::Read), u64::MAX)
            .unwrap_err();
        assert_eq!(err, SyscallError::NotFound("nope.txt".into()));
        let err = fs.read(&path("d", Right::Read), u64::MAX).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        let err = fs.read(&path(".", Right::Read), u64::MAX).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
    }

    #[test]
    fn error_messages_never_name_the_host_path() {
        let (ws, _out, fs) = setup();
        let err = fs
            .read(&path("a/b/c.txt", Right::Read), u64::MAX)
            .unwrap_err();
        let host = ws.path().to_string_lossy().into_owned();
        assert!(!err.to_string().contains(&host), "{err}");
        assert!(err.to_string().contains("a/b/c.txt"), "{err}");
    }

    #[test]
    fn list_is_sorted_and_shows_symlinks_unfollowed() {
        let (ws, out, fs) = setup();
        std::fs::write(ws.path().join("b.txt"), "12345").unwrap();
        std::fs::create_dir(ws.path().join("a_dir")).unwrap();
        symlink(out.path(), ws.path().join("c_link")).unwrap();
        let entries = fs.list(&path(".", Right::Read)).unwrap();
        let summary: Vec<(&str, &str, u64)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str(), e.size))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a_dir", "dir", 0),
                ("b.txt", "file", 5),
                ("c_link", "symlink", 0)
            ]
        );
        let err = fs.list(&path("c_link", Right::Read)).unwrap_err();
        assert_symlink_denied(err, "c_link", Right::Read);
    }

    #[test]
    fn mkdir_plain_and_recursive() {
        let (ws, _out, fs) = setup();
        fs.mkdir(&path("a", Right::Write), false).unwrap();
        let err = fs.mkdir(&path("a", Right::Write), false).unwrap_err();
        assert_eq!(err, SyscallError::AlreadyExists("a".into()));
        let err = fs.mkdir(&path("x/y", Right::Write), false).unwrap_err();
        assert_eq!(err, SyscallError::NotFound("x/y".into()));
        fs.mkdir(&path("x/y/z", Right::Write), true).unwrap();
        fs.mkdir(&path("x/y/z", Right::Write), true).unwrap();
        assert!(ws.path().join("x/y/z").is_dir());
        assert!(fs.is_dir(&path("x/y", Right::Read)).unwrap());
        assert!(fs.is_dir(&path(".", Right::Read)).unwrap());
        assert!(!fs.is_dir(&path("nope/deeper", Right::Read)).unwrap());
    }

    #[test]
    fn mkdir_recursive_refuses_a_symlink_on_the_way() {
        let (ws, out, fs) = setup();
        symlink(out.path(), ws.path().join("link")).unwrap();
        let err = fs.mkdir(&path("link/sub", Right::Write), true).unwrap_err();
        assert_symlink_denied(err, "link/sub", Right::Write);
        assert!(!out.path().join("sub").exists());
    }

    #[test]
    fn delete_file_and_dirs() {
        let (ws, _out, fs) = setup();
        std::fs::create_dir_all(ws.path().join("d/e")).unwrap();
        std::fs::write(ws.path().join("d/e/f.txt"), "x").unwrap();
        std::fs::write(ws.path().join("g.txt"), "x").unwrap();
        fs.delete_file(&path("g.txt", Right::Delete)).unwrap();
        assert!(!ws.path().join("g.txt").exists());
        let err = fs.delete_file(&path("d", Right::Delete)).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        let err = fs.delete_dir(&path("d", Right::Delete), &[]).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        assert!(err.to_string().contains("directory not empty"), "{err}");
        delete_all(&fs, "d").unwrap();
        assert!(!ws.path().join("d").exists());
        let err = delete_all(&fs, ".").unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        let err = fs.delete_dir(&path("d", Right::Delete), &[]).unwrap_err();
        assert_eq!(err, SyscallError::NotFound("d".into()));
    }

    #[test]
    fn recursive_delete_unlinks_symlinks_without_entering_them() {
        let (ws, out, fs) = setup();
        std::fs::write(out.path().join("keep.txt"), "keep").unwrap();
        std::fs::create_dir(ws.path().join("d")).unwrap();
        symlink(out.path(), ws.path().join("d/link")).unwrap();
        delete_all(&fs, "d").unwrap();
        assert!(!ws.path().join("d").exists());
        assert_eq!(std::fs::read(out.path().join("keep.txt")).unwrap(), b"keep");
    }

    #[test]
    fn delete_dir_refuses_a_symlink() {
        let (ws, out, fs) = setup();
        symlink(out.path(), ws.path().join("link")).unwrap();
        let err = fs
            .delete_dir(&path("link", Right::Delete), &[])
            .unwrap_err();
        assert_symlink_denied(err, "link", Right::Delete);
        assert!(out.path().exists());
    }

    #[test]
    fn walk_tree_lists_every_entry_parents_first() {
        let (ws, out, fs) = setup();
        std::fs::create_dir_all(ws.path().join("d/e/f")).unwrap();
        std::fs::write(ws.path().join("d/a.txt"), "x").unwrap();
        std::fs::write(ws.path().join("d/e/f/g.txt"), "x").unwrap();
        symlink(out.path(), ws.path().join("d/link")).unwrap();
        std::fs::write(out.path().join("outside.txt"), "x").unwrap();
        let listed = fs.walk_tree(&path("d", Right::Delete), 100).unwrap();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(sorted, ["d/a.txt", "d/e", "d/e/f", "d/e/f/g.txt", "d/link"]);
        let pos = |p: &str| listed.iter().position(|l| l == p).unwrap();
        assert!(pos("d/e") < pos("d/e/f") && pos("d/e/f") < pos("d/e/f/g.txt"));
        let err = fs.walk_tree(&path("d", Right::Delete), 3).unwrap_err();
        assert!(
            matches!(&err, SyscallError::LimitExceeded { limit, .. } if limit == "fs_entries"),
            "{err:?}"
        );
    }

    #[test]
    fn delete_dir_removes_only_what_was_listed() {
        let (ws, _out, fs) = setup();
        std::fs::create_dir_all(ws.path().join("d/e")).unwrap();
        std::fs::write(ws.path().join("d/e/f.txt"), "x").unwrap();
        let dir = path("d", Right::Delete);
        let listed: Vec<CheckedPath> = fs
            .walk_tree(&dir, 100)
            .unwrap()
            .iter()
            .map(|p| path(p, Right::Delete))
            .collect();
        // Something created after the walk was never checked: the delete stops at it.
        std::fs::write(ws.path().join("d/late.txt"), "x").unwrap();
        let err = fs.delete_dir(&dir, &listed).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(ws.path().join("d/late.txt").exists());
        // An entry outside the directory is refused outright.
        std::fs::write(ws.path().join("other.txt"), "x").unwrap();
        let err = fs
            .delete_dir(&dir, &[path("other.txt", Right::Delete)])
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        assert!(ws.path().join("other.txt").exists());
    }

    #[test]
    fn a_read_over_its_limit_is_refused_without_reading() {
        let (ws, _out, fs) = setup();
        // 1.5 GB, sparse: reading it whole would take that much memory.
        let big = std::fs::File::create(ws.path().join("big.bin")).unwrap();
        big.set_len(1_500_000_000).unwrap();
        let err = fs.read(&path("big.bin", Right::Read), 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SyscallError::LimitExceeded { limit, .. } if limit == "fs_bytes"),
            "{err:?}"
        );
        std::fs::write(ws.path().join("small.txt"), "12345").unwrap();
        assert_eq!(
            fs.read(&path("small.txt", Right::Read), 5).unwrap(),
            b"12345"
        );
        let err = fs.read(&path("small.txt", Right::Read), 4).unwrap_err();
        assert_eq!(err.kind(), "LimitExceeded");
    }

    #[test]
    fn file_size_reports_files_and_absence() {
        let (ws, _out, fs) = setup();
        std::fs::write(ws.path().join("a.txt"), "abc").unwrap();
        assert_eq!(fs.file_size(&path("a.txt", Right::Write)).unwrap(), Some(3));
        assert_eq!(fs.file_size(&path("b.txt", Right::Write)).unwrap(), None);
        assert_eq!(fs.file_size(&path("x/b.txt", Right::Write)).unwrap(), None);
    }

    #[test]
    fn symlink_to_outside_is_denied() {
        let (ws, out, fs) = setup();
        std::fs::write(out.path().join("secret.txt"), "secret").unwrap();
        symlink(out.path().join("secret.txt"), ws.path().join("s.txt")).unwrap();
        let err = fs.read(&path("s.txt", Right::Read), u64::MAX).unwrap_err();
        assert_symlink_denied(err, "s.txt", Right::Read);
        let err = fs
            .write(&path("s.txt", Right::Write), b"x", true)
            .unwrap_err();
        assert_symlink_denied(err, "s.txt", Right::Write);
        let err = fs.append(&path("s.txt", Right::Write), b"x").unwrap_err();
        assert_symlink_denied(err, "s.txt", Right::Write);
        let err = fs.file_size(&path("s.txt", Right::Write)).unwrap_err();
        assert_symlink_denied(err, "s.txt", Right::Write);
        assert_eq!(
            std::fs::read(out.path().join("secret.txt")).unwrap(),
            b"secret"
        );
    }

    #[test]
    fn symlink_inside_the_workspace_is_not_followed() {
        let (ws, _out, fs) = setup();
        std::fs::write(ws.path().join("real.txt"), "real").unwrap();
        symlink("real.txt", ws.path().join("alias.txt")).unwrap();
        std::fs::create_dir(ws.path().join("dir")).unwrap();
        symlink("dir", ws.path().join("dir_alias")).unwrap();
        let err = fs
            .read(&path("alias.txt", Right::Read), u64::MAX)
            .unwrap_err();
        assert_symlink_denied(err, "alias.txt", Right::Read);
        let err = fs
            .write(&path("dir_alias/new.txt", Right::Write), b"x", false)
            .unwrap_err();
        assert_symlink_denied(err, "dir_alias/new.txt", Right::Write);
        assert!(!ws.path().join("dir/new.txt").exists());
        let err = fs.is_dir(&path("dir_alias", Right::Read)).unwrap_err();
        assert_symlink_denied(err, "dir_alias", Right::Read);
        // Deleting the link removes the link, not its target.
        fs.delete_file(&path("alias.txt", Right::Delete)).unwrap();
        assert_eq!(std::fs::read(ws.path().join("real.txt")).unwrap(), b"real");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (ws, _out, fs) = setup();
        let fifo = std::ffi::CString::new(ws.path().join("pipe").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = fs.read(&path("pipe", Right::Read), u64::MAX).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    /// Replaces the workspace directory `data` by a symlink to `outside` after the path was
    /// checked, as a racing process would.
    fn swap_data_for_symlink(ws: &Path, outside: &Path) {
        std::fs::remove_dir_all(ws.join("data")).unwrap();
        symlink(outside, ws.join("data")).unwrap();
    }

    #[test]
    fn symlink_swap_after_check_cannot_read_outside() {
        let (ws, out, fs) = setup();
        std::fs::create_dir(ws.path().join("data")).unwrap();
        std::fs::write(ws.path().join("data/f.txt"), "inside").unwrap();
        std::fs::write(out.path().join("f.txt"), "outside secret").unwrap();
        let checked = path("data/f.txt", Right::Read);
        swap_data_for_symlink(ws.path(), out.path());
        let err = fs.read(&checked, u64::MAX).unwrap_err();
        assert_symlink_denied(err, "data/f.txt", Right::Read);
    }

    #[test]
    fn symlink_swap_after_check_cannot_write_outside() {
        let (ws, out, fs) = setup();
        std::fs::create_dir(ws.path().join("data")).unwrap();
        std::fs::write(ws.path().join("data/f.txt"), "inside").unwrap();
        std::fs::write(out.path().join("f.txt"), "outside").unwrap();
        let existing = path("data/f.txt", Right::Write);
        let new = path("data/g.txt", Right::Write);
        swap_data_for_symlink(ws.path(), out.path());

        let err = fs.write(&existing, b"pwned", true).unwrap_err();
        assert_symlink_denied(err, "data/f.txt", Right::Write);
        let err = fs.write(&new, b"pwned", false).unwrap_err();
        assert_symlink_denied(err, "data/g.txt", Right::Write);
        let err = fs
            .append(&path("data/f.txt", Right::Write), b"pwned")
            .unwrap_err();
        assert_symlink_denied(err, "data/f.txt", Right::Write);

        assert_eq!(std::fs::read(out.path().join("f.txt")).unwrap(), b"outside");
        assert!(!out.path().join("g.txt").exists());
        no_temp_files_left(out.path());
    }
}
