//! Where a runtime's state lives on disk: the database and the files beside it.
//!
//! A runtime's state is the SQLite database, SQLite's own files next to it (`-wal`, `-shm`,
//! `-journal`), the key that seals trusted rows (`<db>.key`) and the anchored audit head
//! (`<db>.head`). [`StateFiles::all`] lists them; the kernel reserves every one of them
//! (no process may reach them through any primitive, whatever it holds).
//!
//! By default the state lives outside the workspace, in a per-user state directory keyed by
//! the workspace's canonical path ([`default_state_dir`]).

use std::path::{Path, PathBuf};

/// The files of one runtime's state, derived from the database path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFiles {
    db: PathBuf,
}

impl StateFiles {
    /// The state whose database is `db` (made absolute against the current directory).
    pub fn new(db: &Path) -> StateFiles {
        StateFiles {
            db: std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf()),
        }
    }

    pub fn db(&self) -> &Path {
        &self.db
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.db.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.db.with_file_name(name)
    }

    /// The key that seals trusted rows and the audit head.
    pub fn key(&self) -> PathBuf {
        self.sibling(".key")
    }

    /// The anchored head of the audit chain.
    pub fn head(&self) -> PathBuf {
        self.sibling(".head")
    }

    /// Every file of the state, whether or not it exists right now (SQLite creates and
    /// removes its `-wal`, `-shm` and `-journal` files as it goes).
    pub fn all(&self) -> Vec<PathBuf> {
        vec![
            self.db.clone(),
            self.sibling("-wal"),
            self.sibling("-shm"),
            self.sibling("-journal"),
            self.key(),
            self.head(),
            self.sibling(".head.tmp"),
        ]
    }
}

/// The default state directory of a workspace: `<state home>/agent-libos/<name>-<hash>`,
/// where the state home is `$XDG_STATE_HOME`, else `$HOME/.local/state`, `<name>` is the
/// workspace directory's name and `<hash>` the first 16 hex digits of the SHA-256 of its
/// canonical path. `None` when neither variable is set.
pub fn default_state_dir(
    workspace: &Path,
    xdg_state_home: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let home_dir = match xdg_state_home.filter(|v| Path::new(v).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(home.filter(|h| !h.is_empty())?)
            .join(".local")
            .join("state"),
    };
    let canonical = workspace.to_string_lossy();
    let name: String = workspace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let hash = crate::util::sha256_hex(canonical.as_bytes());
    Some(
        home_dir
            .join("agent-libos")
            .join(format!("{name}-{}", &hash[..16])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_files_sit_beside_the_database() {
        let files = StateFiles::new(Path::new("/var/s/state.db"));
        assert_eq!(files.key(), Path::new("/var/s/state.db.key"));
        assert_eq!(files.head(), Path::new("/var/s/state.db.head"));
        assert!(files.all().contains(&PathBuf::from("/var/s/state.db-wal")));
        assert!(files.all().contains(&PathBuf::from("/var/s/state.db-shm")));
        let relative = StateFiles::new(Path::new("x/state.db"));
        assert!(relative.db().is_absolute());
    }

    #[test]
    fn the_default_state_dir_is_per_user_and_keyed_by_the_workspace() {
        let a = default_state_dir(Path::new("/home/me/proj"), None, Some("/home/me")).unwrap();
        assert!(a.starts_with("/home/me/.local/state/agent-libos"));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("proj-"));
        let b = default_state_dir(Path::new("/tmp/proj"), None, Some("/home/me")).unwrap();
        assert_ne!(a, b, "two workspaces of one name get two directories");
        let xdg = default_state_dir(Path::new("/home/me/proj"), Some("/st"), Some("/home/me"));
        assert!(xdg.unwrap().starts_with("/st/agent-libos"));
        let relative_xdg = default_state_dir(Path::new("/w"), Some("rel"), Some("/h"));
        assert!(relative_xdg.unwrap().starts_with("/h/.local/state"));
        assert_eq!(default_state_dir(Path::new("/w"), None, None), None);
        let odd = default_state_dir(Path::new("/w/a b;c"), None, Some("/h")).unwrap();
        assert!(odd
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("a_b_c-"));
        let root = default_state_dir(Path::new("/"), None, Some("/h")).unwrap();
        assert!(root
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("root-"));
    }
}
