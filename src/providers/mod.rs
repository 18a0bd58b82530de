//! The Resource Provider Substrate: the only code that touches the host for agents.
//!
//! **Architecture Invariant:** providers perform effects only on values the kernel checked
//! (`CheckedPath`, `CheckedCommand`, `CheckedRequest`); they know nothing of capabilities,
//! policy, audit or processes. Each provider is a trait object so tests and other hosts can
//! inject their own without touching the checks.

pub mod clock;
pub mod fs;
pub mod net;
pub mod shell;

use std::sync::Arc;

pub use clock::{Clock, SystemClock};
pub use fs::{CapFs, DirEntry, FileSystem};
pub use net::{FetchLimits, FetchResponse, HttpNet, Net};
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
    /// The real providers, with the filesystem confined to `workspace`.
    pub fn host(workspace: &std::path::Path) -> std::io::Result<Providers> {
        Ok(Providers {
            clock: Arc::new(SystemClock),
            fs: Arc::new(CapFs::open(workspace)?),
            shell: Arc::new(ProcessShell::new(workspace.to_path_buf())),
            net: Arc::new(HttpNet::new()),
        })
    }
}
