//! Proofs of authorization, and the authorization steps that mint them.
//!
//! A provider cannot be called on an unchecked request: its methods take a `Checked*` value,
//! whose fields are private and whose only constructors are the `Kernel::authorize_*` steps
//! below, each of which runs [`Kernel::authorize`] first. The compiler therefore enforces
//! "capability check before effect". A proof carries the right it was checked for, and a
//! provider refuses a proof of another right ([`CheckedPath::require`]): a read proof cannot
//! be spent on a write. (Tests of providers use the `for_test` constructors, compiled only
//! under `cfg(test)`.)

// `core::net`: address values only; the kernel performs no network I/O.
use core::net::SocketAddr;

use serde_json::Value;

use super::capability::{Pid, Right};
use super::error::{SysResult, SyscallError};
use super::sandbox_policy::{SandboxInputs, SandboxPolicy};
use super::scope::Scope;
use super::syscall::Primitive;
use super::Kernel;

/// A workspace-relative path (normalized, no `..`, not absolute) the kernel authorized for
/// `right`. `"."` is the workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked path must be used by the effect it was checked for"]
pub struct CheckedPath {
    rel: String,
    right: Right,
}

impl CheckedPath {
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

    /// The right this path was checked for.
    pub fn right(&self) -> Right {
        self.right
    }

    /// The resource string this path was checked as (special characters escaped).
    pub fn resource(&self) -> String {
        super::resource::exact("fs", &self.rel)
    }

    /// Fails unless this proof was checked for `needed`: what a provider calls before an
    /// effect.
    pub fn require(&self, needed: Right) -> SysResult<()> {
        require(&self.resource(), self.right, needed)
    }
}

/// An argv the kernel authorized to execute (every inner command was checked), with the
/// workspace-relative directory it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked command must be run by the effect it was checked for"]
pub struct CheckedCommand {
    argv: Vec<String>,
    cwd_rel: String,
    right: Right,
}

impl CheckedCommand {
    #[cfg(test)]
    pub fn for_test(argv: &[&str], cwd_rel: &str) -> Self {
        CheckedCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd_rel: cwd_rel.to_string(),
            right: Right::Execute,
        }
    }

    /// A command proof checked for another right than `execute`, which no authorization
    /// step makes: for tests that providers refuse it.
    #[cfg(test)]
    pub fn for_test_with_right(argv: &[&str], cwd_rel: &str, right: Right) -> Self {
        CheckedCommand {
            right,
            ..CheckedCommand::for_test(argv, cwd_rel)
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub fn cwd_rel(&self) -> &str {
        &self.cwd_rel
    }

    /// The right this command was checked for (`execute` for every command the kernel
    /// authorizes).
    pub fn right(&self) -> Right {
        self.right
    }

    /// Fails unless this proof was checked for `needed`.
    pub fn require(&self, needed: Right) -> SysResult<()> {
        let program = self.argv.first().map(String::as_str).unwrap_or("");
        require(
            &super::resource::exact("shell", program),
            self.right,
            needed,
        )
    }
}

/// A URL and method the kernel authorized (every identity of its destination checked):
/// `read` for `GET`/`HEAD`, `write` for any other method; with the addresses its host
/// resolved to when it was checked — the provider connects to those, never resolving the
/// name again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked request must be sent by the effect it was checked for"]
pub struct CheckedRequest {
    url: String,
    method: String,
    right: Right,
    addrs: Vec<SocketAddr>,
}

impl CheckedRequest {
    #[cfg(test)]
    pub fn for_test(url: &str, method: &str, addrs: &[SocketAddr]) -> Self {
        CheckedRequest {
            addrs: addrs.to_vec(),
            ..Self::for_test_with_right(url, method, request_right(method))
        }
    }

    /// A request proof checked for an arbitrary right: for tests that providers refuse a
    /// method the proof's right does not cover.
    #[cfg(test)]
    pub fn for_test_with_right(url: &str, method: &str, right: Right) -> Self {
        CheckedRequest {
            url: url.into(),
            method: method.into(),
            right,
            addrs: Vec::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The right this request was checked for.
    pub fn right(&self) -> Right {
        self.right
    }

    /// The addresses the host resolved to when it was checked (for an address, itself).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Fails unless this proof was checked for the right its method needs.
    pub fn require_method(&self) -> SysResult<()> {
        require(
            &format!("net:{}", self.url),
            self.right,
            request_right(&self.method),
        )
    }
}

/// The right an HTTP method needs: `read` for `GET` and `HEAD`, `write` for the others.
pub fn request_right(method: &str) -> Right {
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        Right::Read
    } else {
        Right::Write
    }
}

fn require(resource: &str, have: Right, needed: Right) -> SysResult<()> {
    if have == needed {
        return Ok(());
    }
    Err(SyscallError::denied_because(
        resource,
        needed,
        format!("the kernel checked it for {have}, not {needed}"),
    ))
}

impl Kernel {
    /// Resolves `path` against `pid`'s cwd, authorizes `right` on it, and returns the proof
    /// the filesystem provider needs. `context` (shown to a human under `ask_each_time`)
    /// sees the proof the call gets if approved.
    pub(crate) async fn authorize_path(
        &self,
        pid: Pid,
        path: &str,
        right: Right,
        call: &dyn Primitive,
        scope: &mut Scope,
        context: impl FnOnce(&CheckedPath) -> SysResult<Value>,
    ) -> SysResult<CheckedPath> {
        let rel = self.resolve_path(pid, path, right)?;
        let checked = CheckedPath { rel, right };
        let preview = checked.clone();
        self.authorize(pid, &[checked.resource()], right, call, scope, move || {
            context(&preview)
        })
        .await?;
        Ok(checked)
    }

    /// Authorizes `execute` on each of `commands` (the resources of every command `argv`
    /// runs, nested ones included), and returns the proof to run `argv` in `pid`'s cwd. The
    /// directory is fixed before any approval and shown to it (`context` receives it): the
    /// command runs where it was approved to run, whatever the process does meanwhile.
    pub(crate) async fn authorize_command(
        &self,
        pid: Pid,
        argv: &[String],
        commands: &[String],
        call: &dyn Primitive,
        scope: &mut Scope,
        context: impl Fn(&str) -> SysResult<Value>,
    ) -> SysResult<CheckedCommand> {
        let cwd_rel = self
            .inner
            .state
            .lock()
            .process(pid)
            .map(|p| p.cwd.clone())
            .unwrap_or_else(|| ".".into());
        for resource in commands {
            self.authorize(
                pid,
                std::slice::from_ref(resource),
                Right::Execute,
                call,
                scope,
                || context(&cwd_rel),
            )
            .await?;
        }
        Ok(CheckedCommand {
            argv: argv.to_vec(),
            cwd_rel,
            right: Right::Execute,
        })
    }

    /// Authorizes the right `method` needs on `resources`, every identity of the
    /// destination resolved to `addrs` (see [`Kernel::authorize`]: a deny on any wins), and
    /// returns the proof to send the request to those addresses.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn authorize_request(
        &self,
        pid: Pid,
        url: &str,
        method: &str,
        resources: &[String],
        addrs: Vec<SocketAddr>,
        call: &dyn Primitive,
        scope: &mut Scope,
        context: impl FnOnce() -> SysResult<Value>,
    ) -> SysResult<CheckedRequest> {
        let right = request_right(method);
        self.authorize(pid, resources, right, call, scope, context)
            .await?;
        Ok(CheckedRequest {
            url: url.to_string(),
            method: method.to_string(),
            right,
            addrs,
        })
    }

    /// Authorizes `right` on one entry below a directory the call already authorized,
    /// without asking anyone (see [`Kernel::authorize_entry`]), and returns its proof.
    pub(crate) fn authorize_tree_entry(
        &self,
        pid: Pid,
        rel: String,
        right: Right,
        scope: &mut Scope,
    ) -> SysResult<CheckedPath> {
        let checked = CheckedPath { rel, right };
        self.authorize_entry(pid, &checked.resource(), right, scope)?;
        Ok(checked)
    }
}

/// The OS sandbox the kernel derived for one command from the calling process's
/// capabilities. The shell provider builds the sandbox from it and from nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a checked sandbox must confine the command it was derived for"]
pub struct CheckedSandbox {
    policy: SandboxPolicy,
}

impl CheckedSandbox {
    #[cfg(test)]
    pub fn for_test(policy: SandboxPolicy) -> Self {
        CheckedSandbox { policy }
    }

    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }
}

impl Kernel {
    /// Derives the sandbox of one command from `pid`'s live capabilities, now: only
    /// `always_allow` grants give access; denies become carve-outs; the runtime's reserved
    /// paths and the analysis's inputs ride along.
    pub(crate) fn authorize_sandbox(&self, pid: Pid, inputs: SandboxInputs<'_>) -> CheckedSandbox {
        let state = self.inner.state.lock();
        CheckedSandbox {
            policy: SandboxPolicy::derive(state.caps_of(pid), self.now(), inputs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_of_one_right_does_not_serve_another() {
        let read = CheckedPath::for_test("a.txt", Right::Read);
        assert!(read.require(Right::Read).is_ok());
        let err = read.require(Right::Write).unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied");
        assert!(err.to_string().contains("fs:a.txt"), "{err}");
        assert!(err.to_string().contains("checked it for read"), "{err}");
        let get = CheckedRequest::for_test_with_right("http://h/x", "POST", Right::Read);
        assert_eq!(get.require_method().unwrap_err().kind(), "PermissionDenied");
        assert!(CheckedRequest::for_test("http://h/x", "head", &[])
            .require_method()
            .is_ok());
    }
}
