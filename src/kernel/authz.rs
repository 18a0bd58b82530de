//! Proofs of authorization: values only the kernel can make, that providers require.
//!
//! A provider cannot be called on an unchecked request: its methods take a `Checked*` value,
//! whose fields are private and whose constructors are visible only inside `kernel`. The
//! compiler therefore enforces "capability check before effect". (Tests of providers use
//! the `for_test` constructors, compiled only under `cfg(test)`.)

use super::capability::Right;

/// A workspace-relative path (normalized, no `..`, not absolute) the kernel authorized for
/// `right`. `"."` is the workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked path must be used by the effect it was checked for"]
pub struct CheckedPath {
    rel: String,
    right: Right,
}

impl CheckedPath {
    pub(in crate::kernel) fn new(rel: String, right: Right) -> Self {
        CheckedPath { rel, right }
    }

    /// For provider unit tests only.
    #[cfg(test)]
    pub fn for_test(rel: &str, right: Right) -> Self {
        CheckedPath {
            rel: rel.to_string(),
            right,
        }
    }

    /// The normalized path relative to the workspace root (`"."` for the root).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    pub fn right(&self) -> Right {
        self.right
    }

    /// The resource string this path was checked as.
    pub fn resource(&self) -> String {
        super::resource::exact("fs", &self.rel)
    }
}

/// An argv the kernel authorized to execute (every inner command was checked), with the
/// workspace-relative directory it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked command must be run by the effect it was checked for"]
pub struct CheckedCommand {
    argv: Vec<String>,
    cwd_rel: String,
}

impl CheckedCommand {
    pub(in crate::kernel) fn new(argv: Vec<String>, cwd_rel: String) -> Self {
        CheckedCommand { argv, cwd_rel }
    }

    #[cfg(test)]
    pub fn for_test(argv: &[&str], cwd_rel: &str) -> Self {
        CheckedCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd_rel: cwd_rel.to_string(),
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub fn cwd_rel(&self) -> &str {
        &self.cwd_rel
    }
}

/// A URL and method the kernel authorized (every identity of its destination checked), with
/// the addresses its host resolved to when it was checked: the provider connects to those,
/// never resolving the name again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked request must be sent by the effect it was checked for"]
pub struct CheckedRequest {
    url: String,
    method: String,
    addrs: Vec<core::net::SocketAddr>,
}

impl CheckedRequest {
    pub(in crate::kernel) fn new(
        url: String,
        method: String,
        addrs: Vec<core::net::SocketAddr>,
    ) -> Self {
        CheckedRequest { url, method, addrs }
    }

    #[cfg(test)]
    pub fn for_test(url: &str, method: &str, addrs: &[core::net::SocketAddr]) -> Self {
        CheckedRequest {
            url: url.into(),
            method: method.into(),
            addrs: addrs.to_vec(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The addresses the host resolved to when it was checked (for an address, itself).
    pub fn addrs(&self) -> &[core::net::SocketAddr] {
        &self.addrs
    }
}
