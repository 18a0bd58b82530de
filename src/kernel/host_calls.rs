//! Shell and network primitives.
//!
//! Shell: see `shell_calls` (analysis, authorization, the sandbox policy). Network: `net:<host>:<port>` (or `net:<host>`
//! for any port) read for GET/HEAD, write for other methods; redirects are not followed.

use serde_json::json;

use super::capability::Pid;
use super::error::{SysResult, SyscallError};
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
                let (resource, host, _port) = url_resource(url).map_err(SyscallError::invalid)?;
                let method = method.to_ascii_uppercase();
                let checked = self
                    .authorize_request(
                        pid,
                        url,
                        &method,
                        &[resource.clone(), format!("net:{host}")],
                        call,
                        scope,
                        || Ok(json!({"url": url, "method": method, "body_bytes": body.as_ref().map(String::len)})),
                    )
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
