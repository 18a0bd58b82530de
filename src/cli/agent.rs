//! `agent-libos run` (the model loop, [`crate::agent`]) and `agent-libos mcp` (the MCP
//! server, [`crate::mcp`]).
//!
//! Both run the kernel in [`HumanMode::Wait`]: a call under an `ask` policy parks its
//! process until `agent-libos human approve ID` (or MCP elicitation) answers. The API key is
//! read here, at the edge, from the environment variable `--api-key-env` names.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::args::{McpArgs, RunArgs};
use super::{exit, grants, note, Ctx, Failure};
use crate::agent::model::{OpenAiClient, OpenAiConfig, ScriptedModel};
use crate::agent::{self, AgentError, ChatModel, RunLimits, RunOptions, RunOutcome, StopReason};
use crate::kernel::{CapabilitySpec, HumanMode, Image, Kernel};

/// An image id, or the path of a manifest (`*.toml`, or any existing file) to register.
///
/// A manifest already registered with the same version and content is reused; one whose
/// version is registered with other content is refused (bump `version`).
pub async fn resolve_image(kernel: &Kernel, spec: &str) -> Result<String> {
    let path = Path::new(spec);
    if !(spec.ends_with(".toml") || path.is_file()) {
        kernel.image(spec).await.map_err(|e| {
            let f = Failure::from_syscall(&e);
            if e.kind() == "NotFound" {
                f.hint("register it with `agent-libos image register FILE.toml`, pass the manifest path instead, or use `base`")
            } else {
                f
            }
        })?;
        return Ok(spec.to_string());
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("cannot read image manifest {spec}: {e}"),
        )
    })?;
    let image = Image::from_toml(&text).map_err(|e| {
        Failure::new("InvalidArgument", exit::INVALID, format!("{spec}: {e}"))
            .hint("see `agent-libos image register --help` for the manifest format")
    })?;
    match kernel.register_image(&image).await {
        Ok(()) => note(format!("registered image {}@{}", image.id, image.version)),
        Err(e) if e.kind() == "AlreadyExists" => {}
        Err(e) => return Err(Failure::from_syscall(&e).into()),
    }
    let latest = kernel.image(&image.id).await.map_err(Failure::from)?;
    if latest.version != image.version {
        return Err(Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!(
                "{spec} is image {}@{}, but the database's latest version is {}",
                image.id, image.version, latest.version
            ),
        )
        .hint("processes start from an image's latest version; bump `version` in the manifest")
        .into());
    }
    if latest != image {
        return Err(Failure::new(
            "AlreadyExists",
            exit::INVALID,
            format!(
                "image {}@{} is registered with other content than {spec}",
                image.id, image.version
            ),
        )
        .hint("bump `version` in the manifest to register a new version")
        .into());
    }
    Ok(image.id)
}

fn parse_grants(list: &[String]) -> Result<Vec<CapabilitySpec>> {
    list.iter()
        .map(|g| {
            grants::parse_grant(g).map_err(|e| {
                Failure::new("InvalidArgument", exit::INVALID, format!("--grant: {e:#}"))
                    .hint("a grant is RESOURCE=RIGHTS[:POLICY], e.g. 'fs:src/**=read,write:ask'")
                    .into()
            })
        })
        .collect()
}

/// `90s`, `30m`, `2h`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 90s, 30m, 2h)"))?;
    let ms = match unit.trim() {
        "" | "s" => n.checked_mul(1000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use ms, s, m or h)"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is too long"))
}

fn model_from(args: &RunArgs) -> Result<Box<dyn ChatModel>> {
    if let Some(script) = &args.script {
        let model = ScriptedModel::from_file(script).map_err(|e| {
            Failure::new("InvalidArgument", exit::INVALID, e.to_string())
                .hint("a script is a JSON array or JSONL of replies: {\"content\"?, \"tool_calls\"?: [{\"name\", \"arguments\"}]}")
        })?;
        return Ok(Box::new(model));
    }
    let name = args.model.clone().unwrap_or_default();
    let key = agent::model::openai::api_key_from_env(&args.api_key_env);
    if key.is_none() {
        note(format!(
            "${} is not set: requests are sent without an API key",
            args.api_key_env
        ));
    }
    let mut config = OpenAiConfig::new(&args.model_url, name).with_api_key(key);
    config.timeout = Duration::from_secs(args.timeout.max(1));
    config.max_retries = args.retries;
    let client = OpenAiClient::new(config)
        .map_err(|e| Failure::new("InvalidArgument", exit::INVALID, e.to_string()))?;
    Ok(Box::new(client))
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<i32> {
    let wall_time = match &args.wall_time {
        Some(w) => Some(parse_duration(w).map_err(|e| {
            Failure::new(
                "InvalidArgument",
                exit::INVALID,
                format!("--wall-time: {e}"),
            )
        })?),
        None => None,
    };
    let limits = RunLimits {
        max_steps: args.max_steps,
        max_tokens: args.max_tokens,
        wall_time,
    };
    let grants = parse_grants(&args.grant)?;
    let requestable = parse_grants(&args.requestable)?;
    let model = model_from(&args)?;
    let kernel = ctx.open(HumanMode::Wait).await?;
    let before: Vec<i64> = kernel.processes().iter().map(|p| p.pid).collect();
    let result = match args.resume {
        Some(pid) => agent::resume_agent(&kernel, pid, model.as_ref(), limits).await,
        None => {
            let image = resolve_image(&kernel, args.image.as_deref().unwrap_or("base")).await?;
            let opts = RunOptions {
                image,
                goal: args.goal.clone().unwrap_or_default(),
                grants,
                requestable,
                cwd: args.cwd.clone(),
                limits,
            };
            agent::run_agent(&kernel, opts, model.as_ref()).await
        }
    };
    let _ = kernel.store().flush().await;
    match result {
        Ok(outcome) => {
            ctx.print(&json!(outcome), || outcome_text(&outcome));
            Ok(match outcome.stop {
                StopReason::Budget { .. } => exit::LIMIT,
                StopReason::Ended => exit::FAILED,
                _ => exit::OK,
            })
        }
        Err(err) => {
            // The process a failed run left behind (resumable), if any.
            let pid = args.resume.or_else(|| {
                kernel
                    .processes()
                    .into_iter()
                    .filter(|p| !before.contains(&p.pid) && !p.status.is_terminal())
                    .map(|p| p.pid)
                    .max()
            });
            Err(agent_failure(err, pid).into())
        }
    }
}

fn agent_failure(err: AgentError, pid: Option<i64>) -> Failure {
    let resume_hint = pid.map(|pid| {
        format!("process {pid} is left as it was; continue it with `agent-libos run --resume {pid} --model NAME` (or --script FILE)")
    });
    match err {
        AgentError::Spawn(e) | AgentError::Kernel(e) => Failure::from_syscall(&e),
        AgentError::Model(e) => {
            let f = Failure::new(
                "ModelError",
                exit::INVALID,
                format!("the model failed: {e}"),
            );
            match resume_hint {
                Some(h) => f.hint(h),
                None => f,
            }
        }
        AgentError::Ended { pid, status } => Failure::new(
            "IllegalState",
            exit::INVALID,
            format!("process {pid} has already ended ({status})"),
        )
        .hint(
            "start a new run, or fork one of its checkpoints with `agent-libos checkpoint fork ID`",
        ),
        other @ AgentError::Transcript(_) => {
            Failure::new("IllegalState", exit::INVALID, other.to_string())
        }
    }
}

fn outcome_text(o: &RunOutcome) -> String {
    let why = match &o.stop {
        StopReason::Exited => "the model called proc_exit".to_string(),
        StopReason::Finished => "the model replied without tool calls".to_string(),
        StopReason::Budget { limit } => format!("the {limit} limit stopped the run"),
        StopReason::Ended => "it was ended from outside".to_string(),
    };
    let mut out = format!(
        "process {} {} after {} step{} ({} tokens): {why}",
        o.pid,
        o.status,
        o.steps,
        if o.steps == 1 { "" } else { "s" },
        o.usage.total_tokens
    );
    if let Some(exit) = &o.exit {
        out.push('\n');
        out.push_str(&serde_json::to_string_pretty(exit).unwrap_or_default());
    }
    out
}

pub async fn mcp(ctx: &Ctx, args: McpArgs) -> Result<i32> {
    let grants = parse_grants(&args.grant)?;
    let requestable = parse_grants(&args.requestable)?;
    let kernel = ctx.open(HumanMode::Wait).await?;
    let image = resolve_image(&kernel, &args.image).await?;
    let config = crate::mcp::McpConfig {
        image: (image != "base").then_some(image),
        grants,
        requestable,
        budget: None,
        elicitation: args.elicitation,
    };
    tracing::info!(db = %ctx.db.display(), "serving MCP on stdio");
    crate::mcp::serve_mcp_stdio(kernel.clone(), config)
        .await
        .map_err(|e| Failure::new("McpError", exit::INVALID, e.to_string()))?;
    let _ = kernel.store().flush().await;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
