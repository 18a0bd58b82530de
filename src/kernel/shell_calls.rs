//! `shell.run`: analysis, authorization, the sandbox policy, then the provider effect.
//!
//! Each command the argv runs (seen through `bash -c`, `env`, `sudo`, …) is authorized as
//! `shell:<argv0>` execute, argv0 matched exactly as given; a form that cannot be analysed
//! needs a capability on that exact form (e.g. `shell:python3 -c`), never implied. A deny
//! rule on a program holds for every spelling of it (its canonical identity). The command
//! then runs inside an OS sandbox derived from the process's capabilities at this moment.

use serde_json::json;

use super::authz::{CheckedCommand, CheckedSandbox};
use super::capability::{Pid, Right};
use super::command::{analyze, identity};
use super::dispatch::{Done, Scope};
use super::error::{SysResult, SyscallError};
use super::sandbox_policy::{SandboxInputs, SandboxLimits, SandboxPolicy};
use super::syscall::Syscall;
use super::Kernel;
use crate::providers::ShellLimits;

impl Kernel {
    pub(crate) async fn shell_run(
        &self,
        pid: Pid,
        call: &Syscall,
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
        let (denies, denied_programs) = {
            let state = self.inner.state.lock();
            let denies: Vec<_> = identity::program_denies(state.caps_of(pid), self.now())
                .into_iter()
                .cloned()
                .collect();
            let refs: Vec<_> = denies.iter().collect();
            let names = identity::denied_program_names(&refs);
            (denies, names)
        };
        let shell = &self.providers().shell;
        let refs: Vec<_> = denies.iter().collect();
        if let Some(denial) = identity::first_denied(&analysis.programs, &refs, |name| {
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
        for resource in &resources {
            let result = self
                .authorize(
                    pid,
                    std::slice::from_ref(resource),
                    Right::Execute,
                    call,
                    scope,
                    || Ok(json!({"argv": argv, "commands": resources})),
                )
                .await;
            match (result, analysis.reason_for(resource)) {
                (
                    Err(SyscallError::PermissionDenied {
                        resource, right, ..
                    }),
                    Some(reason),
                ) => {
                    return Err(SyscallError::denied_because(resource, right, reason));
                }
                (result, _) => result?,
            }
        }
        let config = &self.inner.config;
        let limits = ShellLimits {
            timeout_ms: timeout_ms
                .unwrap_or(config.shell_limits.timeout_ms)
                .min(config.shell_limits.timeout_ms),
            max_output_bytes: config.shell_limits.max_output_bytes,
        };
        let policy = {
            let state = self.inner.state.lock();
            SandboxPolicy::derive(
                state.caps_of(pid),
                self.now(),
                SandboxInputs {
                    cwd: &cwd,
                    code_files: analysis.code_files.clone(),
                    denied_programs,
                    reserved: config.reserved_paths(),
                    limits: SandboxLimits {
                        cpu_seconds: limits.timeout_ms.div_ceil(1000).max(1),
                        ..config.sandbox.limits
                    },
                },
            )
        };
        let policy_sha256 = policy.sha256();
        let checked = CheckedCommand::new(argv.to_vec(), cwd);
        let sandbox = CheckedSandbox::new(policy);
        self.intent_point(call, scope).await?;
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
