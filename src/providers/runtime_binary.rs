//! Where the runtime binary is: helper processes (the sandbox launcher today, isolate
//! workers later) are the same `agent-libos` binary started in a hidden mode, so a library
//! user or a test must be able to find it.

use std::path::{Path, PathBuf};

/// The binary's file name.
pub const NAME: &str = "agent-libos";

/// The runtime binary: `configured` if given, else this program if it is `agent-libos`,
/// else an `agent-libos` beside this program or one directory up (cargo puts test and
/// bench binaries in `target/<profile>/deps/` and `target/<profile>/`).
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return Some(path.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == NAME) {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [dir.join(NAME), dir.parent()?.join(NAME)]
        .into_iter()
        .find(|candidate| candidate.is_file())
}
