//! Shell and network primitives.
//!
//! Shell: see `shell_calls` (analysis, authorization, the sandbox policy). Network: read for
//! GET/HEAD, write for other methods, on every identity of the destination (see
//! [`super::netid`]: the host as written, its addresses, their classes; each as
//! `net:<id>:<port>` and `net:<id>`); the provider connects to the addresses that were
//! checked; redirects are not followed.

use core::net::SocketAddr;

use serde_json::{json, Value};

use super::authz::request_right;
use super::capability::{Decision, Pid, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::netid;
use super::scope::{Done, Scope};
use super::syscall::{NetCall, ShellCall};
use super::Kernel;
use crate::providers::net::url_resource;
use crate::providers::FetchLimits;

impl Kernel {
    /// `shell.run`.
    pub(crate) async fn shell_call(
        &self,
        pid: Pid,
        call: &ShellCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            ShellCall::Run {
                argv,
                timeout_ms,
                stdin,
            } => {
                self.shell_run(pid, call, argv, *timeout_ms, stdin.as_deref(), scope)
                    .await
            }
        }
    }

    /// `net.fetch`.
    pub(crate) async fn net_call(
        &self,
        pid: Pid,
        call: &NetCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            NetCall::Fetch {
                url,
                method,
                headers,
                body,
                max_bytes,
            } => {
                let (resource, host, port) = url_resource(url).map_err(SyscallError::invalid)?;
                let method = method.to_ascii_uppercase();
                let right = request_right(&method);
                let net = self.providers().net.clone();
                let local = net.local_host();
                let written = netid::request_resources(&host, port, &[], &local);
                if !self.worth_resolving(pid, &written, right) {
                    // Decided by the name alone: no lookup for a request that cannot pass.
                    self.authorize(pid, &written, right, call, scope, || Ok(Value::Null))
                        .await?;
                }
                let timeout_ms = self.inner.config.fetch_limits.timeout_ms;
                let mut ips = net.resolve(&host, port, timeout_ms).await?;
                // In a stable order, so the approval of a request does not depend on the
                // order a resolver happened to answer in.
                ips.sort();
                let identities = netid::request_resources(&host, port, &ips, &local);
                let addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                let checked = self
                    .authorize_request(pid, url, &method, &identities, addrs, call, scope, || {
                        Ok(json!({
                            "url": url,
                            "method": method,
                            "addresses": ips,
                            "body_bytes": body.as_ref().map(String::len),
                        }))
                    })
                    .await?;
                let defaults = self.inner.config.fetch_limits;
                let limits = FetchLimits {
                    timeout_ms: defaults.timeout_ms,
                    max_response_bytes: max_bytes
                        .unwrap_or(defaults.max_response_bytes)
                        .min(defaults.max_response_bytes),
                };
                self.intent_point(call, scope).await?;
                let resp = self
                    .providers()
                    .net
                    .fetch(&checked, headers, body.as_deref(), limits)
                    .await?;
                let detail = json!({"status": resp.status, "bytes": resp.body.len(), "truncated": resp.truncated});
                Ok(Done::new(json!(resp), resource).detail(detail))
            }
        }
    }
}

impl Kernel {
    /// Whether a request's destination must be resolved to decide on it: not when the name
    /// as written is already denied, nor when nothing could allow it but the name (the
    /// process holds no capability naming an address or a class). A lookup is itself a
    /// request to the network, so a process that cannot fetch cannot make one either.
    fn worth_resolving(&self, pid: Pid, written: &[String], right: Right) -> bool {
        match self.peek(pid, written, right) {
            Decision::Denied(_) => false,
            Decision::Matched(_) => true,
            Decision::NoCapability => {
                let now = self.now();
                let state = self.inner.state.lock();
                state.caps_of(pid).iter().any(|c| {
                    c.is_live(now)
                        && c.has_right(right)
                        && c.policy != Policy::AlwaysDeny
                        && c.resource
                            .strip_prefix("net:")
                            .is_some_and(netid::names_addresses)
                })
            }
        }
    }
}
