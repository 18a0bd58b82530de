//! Shape "a tool that branches on its inputs": the model registers a JIT tool and calls it
//! step after step in one process. Before its POST the tool reads `clock.now()` (early
//! before a deadline in its arguments), lists the workspace (a marker file the loop may drop
//! after a kill), and counts its calls in a module global (carried between calls of its
//! process, gone in a fresh host); each input takes it down a path with a different number
//! of reads. A resumed call sees a later clock, a changed listing and a fresh global, so
//! replay must match its journaled effect by identity or stop for a human.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::agent_chain::{AgentChain, Round};
use super::host::Site;
use super::loopback::{answered_calls, finish, goal, tool_calls, ModelServer, Recorder};
use super::tally::{Rng, Tally};

/// Calls of the tool per process before it finishes.
const STEPS: usize = 4;
/// How long after the model's reply the tool counts as early.
const EARLY_MS: u64 = 300;

const BRANCHY: &str = r#"
export const tool = {
  name: "branchy",
  description: "POSTs once, after reads whose results decide how many more reads it makes",
  input: {
    type: "object",
    properties: { url: { type: "string" }, deadline: { type: "number" }, marker: { type: "string" } },
    required: ["url", "deadline", "marker"],
  },
  output: { type: "object" },
};

let calls = 0;

export default async function run(args: { url: string; deadline: number; marker: string }, libos: any) {
  calls += 1;
  const now = await libos.clock.now();
  const listing = JSON.stringify(await libos.fs.list("."));
  const early = now < args.deadline;
  const marked = listing.includes(args.marker);
  const warm = calls > 1;
  // 4, 2 and 1 extra reads: every mix of inputs puts the POST at its own position, and a
  // resumed call (late, cold, perhaps marked) reaches it sooner than the call it replays.
  if (early) { for (let i = 0; i < 4; i++) await libos.clock.now(); }
  if (warm) { await libos.clock.now(); await libos.clock.now(); }
  if (marked) await libos.fs.list(".");
  await libos.net.fetch(args.url, { method: "POST", body: `early=${early} marked=${marked} warm=${warm}` });
  return { early, marked, warm };
}
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn run(bin: &Path, dir: &Path, kills: usize, rng: &mut Rng) -> anyhow::Result<Tally> {
    let recorder = Recorder::start(Duration::from_millis(150))?;
    let target = recorder.clone();
    let markers: Arc<Mutex<Vec<String>>> = Arc::default();
    let issued = markers.clone();
    let model = ModelServer::start(Box::new(move |messages| {
        let answered = answered_calls(messages);
        let proposed = answered
            .iter()
            .find(|(_, name, _, _)| name == "tool_propose")
            .and_then(|(_, _, _, result)| result["id"].as_str().map(str::to_string));
        let registered = answered
            .iter()
            .any(|(_, name, _, result)| name == "tool_register" && result.get("error").is_none());
        let Some(id) = proposed else {
            return tool_calls(&[(
                "call_propose".into(),
                "tool_propose",
                json!({ "source": BRANCHY }),
            )]);
        };
        if !registered {
            let step = messages.iter().filter(|m| m["role"] == "assistant").count();
            return tool_calls(&[
                (
                    format!("call_{step}_validate"),
                    "tool_validate",
                    json!({ "id": id }),
                ),
                (
                    format!("call_{step}_register"),
                    "tool_register",
                    json!({ "id": id }),
                ),
            ]);
        }
        let step = messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .filter(|m| {
                m["tool_calls"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["function"]["name"] == "branchy"))
            })
            .count();
        if step >= STEPS {
            return finish("posted");
        }
        let token = goal(messages);
        let marker = format!("seen-{token}-{step}");
        issued.lock().unwrap().push(marker.clone());
        tool_calls(&[(
            format!("call_{step}_branchy"),
            "branchy",
            json!({
                "url": target.url(&format!("/b/{token}/{step}")),
                "deadline": now_ms() + EARLY_MS,
                "marker": marker,
            }),
        )])
    }))?;
    let grant = format!("net:127.0.0.1:{}=read,write", recorder.port);
    let site = Site::new(bin, dir)?;
    let ws = site.ws.clone();
    let mut chain = AgentChain::new(
        site,
        model,
        recorder,
        "crash-b",
        vec![
            "base".into(),
            "--grant".into(),
            grant,
            "--grant".into(),
            "fs:**=read".into(),
            "--grant".into(),
            "tool:*=create".into(),
        ],
    );
    let mut tally = Tally::default();
    while tally.kills < kills {
        let dangerous = rng.one_in(2);
        let window = (Duration::from_millis(200), Duration::from_millis(3000));
        if let Round::Killed = chain.round(rng, window, dangerous)? {
            tally.kills += 1;
            // The world moves on while the host is down: the listing the resumed call
            // sees may differ from the one the killed call saw.
            if rng.one_in(2) {
                for marker in markers.lock().unwrap().iter() {
                    std::fs::write(ws.join(marker), "")?;
                }
            }
        }
    }
    let mut effects = chain.effects()?;
    effects.kills = tally.kills;
    Ok(effects)
}
