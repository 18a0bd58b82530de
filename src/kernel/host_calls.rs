//! Shell and network primitives.
//!
//! Shell: argv only, each command (including those nested in `bash -c`, `env`, `sudo`, …)
//! authorized as `shell:<argv0>` execute, argv0 matched exactly as given; a script or inline
//! interpreter code that cannot be analysed needs a capability on its exact form (e.g.
//! `shell:python -c`), which is never implied. Network: `net:<host>:<port>` (or `net:<host>`
//! for any port) read for GET/HEAD, write for other methods; redirects are not followed.

use serde_json::json;

use super::capability::Pid;
use super::error::{SysResult, SyscallError};
use super::scope::{Done, Scope};
use super::syscall::{NetCall, ShellCall};
use super::Kernel;
use crate::providers::net::url_resource;
use crate::providers::shell::{analyze, CommandAnalysis};
use crate::providers::{FetchLimits, ShellLimits};

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
                let analysis = analyze(argv).map_err(SyscallError::invalid)?;
                let commands: Vec<String> = match &analysis {
                    CommandAnalysis::Commands(cmds) => cmds
                        .iter()
                        .map(|c| format!("shell:{}", c.first().map(String::as_str).unwrap_or("")))
                        .collect(),
                    CommandAnalysis::Opaque { resource, .. } => vec![resource.clone()],
                };
                let checked = self
                    .authorize_command(pid, argv, &commands, call, scope, || {
                        Ok(json!({"argv": argv, "commands": commands}))
                    })
                    .await
                    .map_err(|err| match (err, &analysis) {
                        (
                            SyscallError::PermissionDenied {
                                resource, right, ..
                            },
                            CommandAnalysis::Opaque { reason, .. },
                        ) => SyscallError::denied_because(resource, right, reason.clone()),
                        (err, _) => err,
                    })?;
                let limits = ShellLimits {
                    timeout_ms: timeout_ms
                        .unwrap_or(self.inner.config.shell_limits.timeout_ms)
                        .min(self.inner.config.shell_limits.timeout_ms),
                    max_output_bytes: self.inner.config.shell_limits.max_output_bytes,
                };
                self.intent_point(call, scope).await?;
                let out = self
                    .providers()
                    .shell
                    .run(&checked, stdin.as_deref(), limits)
                    .await?;
                let detail = json!({
                    "exit_code": out.exit_code,
                    "timed_out": out.timed_out,
                    "stdout_bytes": out.stdout.len(),
                    "stderr_bytes": out.stderr.len(),
                    "truncated": out.stdout_truncated || out.stderr_truncated,
                });
                Ok(Done::new(json!(out), commands.join(" ")).detail(detail))
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
