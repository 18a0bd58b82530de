//! Shape "two calls in one reply": the model answers each step with `clock_now` and then a
//! `net_fetch` POST to the recorder; hosts are killed at random and while the POST is in
//! flight, and `run --resume` must settle the reply's journaled calls before anything new.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::agent_chain::{AgentChain, Round};
use super::host::Site;
use super::loopback::{finish, goal, tool_calls, ModelServer, Recorder};
use super::tally::{Rng, Tally};

/// Replies with tool calls per process before it finishes.
const STEPS: usize = 4;

pub fn run(bin: &Path, dir: &Path, kills: usize, rng: &mut Rng) -> anyhow::Result<Tally> {
    let recorder = Recorder::start(Duration::from_millis(150))?;
    let target = recorder.clone();
    let model = ModelServer::start(Box::new(move |messages| {
        let step = messages.iter().filter(|m| m["role"] == "assistant").count();
        if step >= STEPS {
            return finish("ordered");
        }
        let token = goal(messages);
        let url = target.url(&format!("/a/{token}/{step}"));
        tool_calls(&[
            (format!("call_{step}_clock"), "clock_now", json!({})),
            (
                format!("call_{step}_post"),
                "net_fetch",
                json!({"url": url, "method": "POST", "body": format!("order {token} {step}")}),
            ),
        ])
    }))?;
    let grant = format!("net:127.0.0.1:{}=read,write", recorder.port);
    let mut chain = AgentChain::new(
        Site::new(bin, dir)?,
        model,
        recorder,
        "crash-a",
        vec!["base".into(), "--grant".into(), grant],
    );
    let mut tally = Tally::default();
    while tally.kills < kills {
        let dangerous = rng.one_in(3);
        let window = (Duration::from_millis(200), Duration::from_millis(2000));
        if let Round::Killed = chain.round(rng, window, dangerous)? {
            tally.kills += 1;
        }
    }
    let mut effects = chain.effects()?;
    effects.kills = tally.kills;
    Ok(effects)
}
