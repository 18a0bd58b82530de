//! `shell.run`: analysis, authorization, the sandbox policy, then the provider effect.
//!
//! Each command the argv runs (seen through `bash -c`, `env`, `sudo`, …) is authorized as
//! `shell:<argv0>` execute, argv0 matched exactly as given; a form that cannot be analysed
//! needs a capability on that exact form (e.g. `shell:python3 -c`), never implied. A deny
//! rule on a program holds for every spelling of it (its canonical identity). The command
//! then runs inside an OS sandbox derived from the process's capabilities at this moment.

use serde_json::json;

use super::capability::{Pid, Right};
use super::command::{analyze, identity};
use super::error::{SysResult, SyscallError};
use super::sandbox_policy::{SandboxInputs, SandboxLimits};
use super::scope::{Done, Scope};
use super::syscall::ShellCall;
use super::Kernel;
use crate::providers::ShellLimits;

impl Kernel {
    pub(crate) async fn shell_run(
        &self,
        pid: Pid,
        call: &ShellCall,
        argv: &[String],
        timeout_ms: Option<u64>,
        stdin: Option<&str>,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let analysis = analyze(argv).map_err(SyscallError::invalid)?;
        let cwd = self
            .inner
            .state
            .lock()
            .process(pid)
            .map(|p| p.cwd.clone())
            .unwrap_or_else(|| ".".into());
        let denies: Vec<_> = {
            let state = self.inner.state.lock();
            identity::program_denies(state.caps_of(pid), self.now())
                .into_iter()
                .cloned()
                .collect()
        };
        let denies: Vec<_> = denies.iter().collect();
        let shell = &self.providers().shell;
        if let Some(denial) = identity::first_denied(&analysis.programs, &denies, |name| {
            shell.resolve_program(name, &cwd)
        }) {
            scope.caps.push(denial.capability);
            return Err(SyscallError::denied_because(
                format!("shell:{}", denial.program),
                Right::Execute,
                denial.because,
            ));
        }
        let resources = analysis.resources();
        let checked = self
            .authorize_command(pid, argv, &resources, call, scope, |cwd| {
                Ok(json!({"argv": argv, "cwd": cwd, "commands": resources}))
            })
            .await
            .map_err(|err| match err {
                SyscallError::PermissionDenied {
                    resource, right, ..
                } if analysis.reason_for(&resource).is_some() => {
                    let reason = analysis.reason_for(&resource).unwrap_or_default();
                    SyscallError::denied_because(resource, right, reason)
                }
                err => err,
            })?;
        let config = &self.inner.config;
        let limits = ShellLimits {
            timeout_ms: timeout_ms
                .unwrap_or(config.shell_limits.timeout_ms)
                .min(config.shell_limits.timeout_ms),
            max_output_bytes: config.shell_limits.max_output_bytes,
        };
        self.intent_point(call, scope).await?;
        // The sandbox is derived at the intent point, from the capabilities held now.
        let sandbox = self.authorize_sandbox(
            pid,
            SandboxInputs {
                cwd: checked.cwd_rel(),
                code_files: analysis.code_files.clone(),
                denied_programs: identity::denied_program_names(&denies),
                reserved: config.sandbox_reserved_paths(),
                limits: SandboxLimits {
                    cpu_seconds: limits.timeout_ms.div_ceil(1000).max(1),
                    ..config.sandbox.limits
                },
            },
        );
        let policy_sha256 = sandbox.policy().sha256();
        let out = shell.run(&checked, &sandbox, stdin, limits).await?;
        let detail = json!({
            "exit_code": out.exit_code,
            "timed_out": out.timed_out,
            "stdout_bytes": out.stdout.len(),
            "stderr_bytes": out.stderr.len(),
            "truncated": out.stdout_truncated || out.stderr_truncated,
            "sandbox": out.sandbox,
            "policy_sha256": policy_sha256,
            "connections": out.connections,
        });
        Ok(Done::new(json!(out), resources.join(" ")).detail(detail))
    }
}
