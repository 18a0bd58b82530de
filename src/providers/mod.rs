//! The Resource Provider Substrate: the only code that touches the host for agents.
//!
//! **Architecture Invariant:** providers perform effects only on values the kernel checked
//! (`CheckedPath`, `CheckedCommand` with its `CheckedSandbox`, `CheckedRequest`); they know nothing of capabilities,
//! policy, audit or processes. Each provider is a trait object so tests and other hosts can
//! inject their own without touching the checks.
// The providers are the one place agents' effects touch the host, on checked proofs.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod clock;
pub mod frame_writer;
pub mod fs;
pub mod net;
pub mod runtime_binary;
pub mod sandbox;
pub mod shell;
pub mod worker_process;

use std::sync::Arc;

pub use clock::{Clock, SystemClock};
pub use fs::{CapFs, DirEntry, FileSystem, FsLimits};
pub use net::{url_resource, FetchLimits, FetchResponse, HttpNet, Net};
pub use sandbox::{SandboxConfig, SandboxMode, SandboxSupport};
pub use shell::{ProcessShell, Shell, ShellLimits, ShellOutput};

/// The set of providers a kernel uses.
#[derive(Clone)]
pub struct Providers {
    pub clock: Arc<dyn Clock>,
    pub fs: Arc<dyn FileSystem>,
    pub shell: Arc<dyn Shell>,
    pub net: Arc<dyn Net>,
}

impl Providers {
    /// The real providers, with the filesystem confined to `workspace` and kept out of
    /// `reserved` (the runtime's own state; see `KernelConfig::reserved_paths`), and commands
    /// in the default sandbox.
    pub fn host(
        workspace: &std::path::Path,
        reserved: &[std::path::PathBuf],
    ) -> std::io::Result<Providers> {
        Self::host_with(workspace, reserved, SandboxConfig::default(), None)
    }

    /// The real providers with the operator's sandbox configuration and runtime binary.
    pub fn host_with(
        workspace: &std::path::Path,
        reserved: &[std::path::PathBuf],
        sandbox: SandboxConfig,
        runtime_binary: Option<std::path::PathBuf>,
    ) -> std::io::Result<Providers> {
        Ok(Providers {
            clock: Arc::new(SystemClock),
            fs: Arc::new(CapFs::open_reserving(workspace, reserved)?),
            shell: Arc::new(ProcessShell::with_sandbox(
                workspace.to_path_buf(),
                sandbox,
                runtime_binary,
            )),
            net: Arc::new(HttpNet::new()),
        })
    }
}

/// Lossy UTF-8; a character cut in half by truncation is dropped rather than replaced.
pub(crate) fn decode_lossy(bytes: &[u8], truncated: bool) -> String {
    let end = if truncated {
        complete_utf8_len(bytes)
    } else {
        bytes.len()
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The length of `bytes` without a multi-byte character cut short at its end.
fn complete_utf8_len(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let byte = bytes[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::decode_lossy;

    #[test]
    fn truncation_drops_a_split_character() {
        let bytes = "aé".as_bytes();
        assert_eq!(decode_lossy(&bytes[..2], true), "a");
        assert_eq!(decode_lossy(bytes, true), "aé");
        assert_eq!(decode_lossy(&[b'a', 0xFF], false), "a\u{FFFD}");
    }
}
