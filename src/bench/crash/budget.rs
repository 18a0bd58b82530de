//! Shape "a budget of 30 syscalls": processes of an image with `syscalls = 30` whose model
//! asks for a clock read and a POST at every step, more than the budget allows. Hosts are
//! killed at random and mid-POST and resumed again and again; after every kill the audit
//! log's allowed syscalls and the stored usage of the process must both stay within 30.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::agent_chain::{AgentChain, Round};
use super::host::Site;
use super::loopback::{finish, goal, tool_calls, ModelServer, Recorder};
use super::tally::{Rng, Tally};

const LIMIT: usize = 30;
/// Replies with tool calls per process: 2 syscalls each, beyond the limit.
const STEPS: usize = 20;

const MANIFEST: &str = "id = \"crash-budget\"\nversion = \"1.0.0\"\n\n[budget]\ntool_calls = 100\nchildren = 1\nsyscalls = 30\nwall_time_ms = 3600000\n";

pub fn run(bin: &Path, dir: &Path, kills: usize, rng: &mut Rng) -> anyhow::Result<Tally> {
    let recorder = Recorder::start(Duration::from_millis(100))?;
    let target = recorder.clone();
    let model = ModelServer::start(Box::new(move |messages| {
        let step = messages.iter().filter(|m| m["role"] == "assistant").count();
        if step >= STEPS {
            return finish("spent");
        }
        let token = goal(messages);
        tool_calls(&[
            (format!("call_{step}_clock"), "clock_now", json!({})),
            (
                format!("call_{step}_post"),
                "net_fetch",
                json!({"url": target.url(&format!("/d/{token}/{step}")), "method": "POST", "body": "spend"}),
            ),
        ])
    }))?;
    let site = Site::new(bin, dir)?;
    let manifest = site.ws.join("crash-budget.toml");
    std::fs::write(&manifest, MANIFEST)?;
    let grant = format!("net:127.0.0.1:{}=read,write", recorder.port);
    let mut chain = AgentChain::new(
        site,
        model,
        recorder,
        "crash-d",
        vec![manifest.display().to_string(), "--grant".into(), grant],
    );
    let mut tally = Tally::default();
    while tally.kills < kills {
        let dangerous = rng.one_in(3);
        let window = (Duration::from_millis(100), Duration::from_millis(1200));
        let round = chain.round(rng, window, dangerous)?;
        if let Round::Killed = round {
            tally.kills += 1;
        }
        tally.overruns += overruns(&chain.site)?;
    }
    let mut effects = chain.effects()?;
    effects.kills = tally.kills;
    effects.overruns = tally.overruns;
    Ok(effects)
}

/// How many processes of `site` exceed the budget, by the audit log or by their usage.
fn overruns(site: &Site) -> anyhow::Result<usize> {
    let mut over = 0;
    for process in site.processes()? {
        let Some(pid) = process["pid"].as_i64() else {
            continue;
        };
        let used = process["usage"]["syscalls"].as_u64().unwrap_or(0) as usize;
        let allowed = site.allowed_syscalls(pid)?;
        if used > LIMIT || allowed > LIMIT {
            eprintln!("budget: process {pid} used {used}, the audit log allows {allowed}");
            over += 1;
        }
    }
    Ok(over)
}
