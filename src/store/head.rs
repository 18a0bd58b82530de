//! The audit head anchor's file (`<db>.head`): read and replaced atomically.

use std::io::Write;
use std::path::Path;

use super::Sealer;
use crate::audit::anchor::{Anchor, AnchorRead};

/// Reads and checks the anchor at `path`.
pub fn read(path: &Path, sealer: &Sealer) -> AnchorRead {
    match std::fs::read_to_string(path) {
        Ok(text) => Anchor::parse(&text, sealer),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AnchorRead::Missing,
        Err(_) => AnchorRead::Forged,
    }
}

/// Replaces the anchor at `path` atomically (a temporary file renamed over it); with `sync`,
/// the file and its directory reach the disk first.
pub fn write(anchor: &Anchor, path: &Path, sealer: &Sealer, sync: bool) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(anchor.to_text(sealer).as_bytes())?;
        if sync {
            file.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_file_round_trips_and_an_edit_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db.head");
        let sealer = Sealer::from_key([1; 32]);
        assert_eq!(read(&path, &sealer), AnchorRead::Missing);
        let anchor = Anchor {
            seq: 3,
            hash: "cd".into(),
            sealed_from: 1,
        };
        write(&anchor, &path, &sealer, true).unwrap();
        assert_eq!(read(&path, &sealer), AnchorRead::Valid(anchor.clone()));
        write(&anchor, &path, &sealer, false).unwrap();
        assert!(!dir.path().join("state.db.head.tmp").exists());
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(read(&path, &sealer), AnchorRead::Forged);
    }
}
