//! Shape "resume beside a live host": `tool run` of a tool that POSTs, sleeps and POSTs
//! again. While the host is alive, `agent-libos resume` runs on the same database and must
//! leave its invocation alone; then the host is killed at a random moment, `resume` right
//! after the kill must still leave it (the lease is fresh), and once the lease expired a
//! later `resume` takes it over and settles it from the journal. Each round has its own
//! database; the takeovers wait for their lease in the background of later rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::host::{wait_for, Site};
use super::loopback::Recorder;
use super::tally::{Rng, Tally};

/// The CLI's lease TTL (`lease::LEASE_TTL_MS`) and a margin for the heartbeat.
const TAKEOVER_AFTER: Duration = Duration::from_millis(6_000);

const TWO_POSTS: &str = r#"export const tool = {
  name: "two_posts",
  description: "POST, wait, POST again.",
  input: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  output: {},
};

export default async function run(args: { url: string }, libos: any) {
  await libos.net.fetch(`${args.url}/first`, { method: "POST", body: "first" });
  await libos.clock.sleep(300);
  await libos.net.fetch(`${args.url}/second`, { method: "POST", body: "second" });
  return { posted: 2 };
}
"#;

/// A killed round waiting for its lease to expire.
struct Takeover {
    round: usize,
    site: Site,
    killed_at: Instant,
}

pub fn run(bin: &Path, dir: &Path, kills: usize, rng: &mut Rng) -> anyhow::Result<Tally> {
    let recorder = Recorder::start(Duration::from_millis(100))?;
    let mut tally = Tally::default();
    let mut waiting: Vec<Takeover> = Vec::new();
    // Rounds whose call was reported done (by the live host or a takeover): both POSTs.
    let mut acknowledged: Vec<usize> = Vec::new();
    let mut round = 0;
    while tally.kills < kills {
        round += 1;
        let site = Site::new(bin, &dir.join(format!("round-{round}")))?;
        let tool = site.ws.join("two_posts.ts");
        std::fs::write(&tool, TWO_POSTS)?;
        let args = json!({"url": recorder.url(&format!("/c/{round}"))}).to_string();
        let net = format!("--allow-net=127.0.0.1:{}", recorder.port);
        let first = format!("/c/{round}/first");
        let mut host = site.spawn(&[
            "tool",
            "run",
            &tool.display().to_string(),
            "--args",
            &args,
            &net,
        ])?;
        let sent = wait_for(Duration::from_secs(20), || recorder.posts_to(&first) > 0);
        if sent && host.exited().is_none() {
            // Beside the live host: resume must not take its invocation.
            let (_, out) = site.json(&["resume"])?;
            if host.exited().is_none() && took_over(&out) {
                eprintln!("live host: resume took over a live host's invocation: {out}");
                tally.broken += 1;
            }
        }
        std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(700)));
        match host.exited() {
            Some(0) => acknowledged.push(round),
            Some(code) => eprintln!("live host: round {round}: tool run exited with {code}"),
            None => {
                host.kill();
                tally.kills += 1;
                let (_, out) = site.json(&["resume"])?;
                if took_over(&out) {
                    eprintln!(
                        "live host: resume took over an invocation whose lease was fresh: {out}"
                    );
                    tally.broken += 1;
                }
                waiting.push(Takeover {
                    round,
                    site,
                    killed_at: Instant::now(),
                });
            }
        }
        settle(&mut waiting, &mut tally, &mut acknowledged, false)?;
    }
    settle(&mut waiting, &mut tally, &mut acknowledged, true)?;
    // Every round's POSTs: each path at most once.
    let received = recorder.received();
    tally.repeated = received.values().map(|n| n.saturating_sub(1)).sum();
    tally.acknowledged = 2 * acknowledged.len();
    for round in acknowledged {
        for post in ["first", "second"] {
            if !received.contains_key(&format!("/c/{round}/{post}")) {
                tally.lost += 1;
            }
        }
    }
    Ok(tally)
}

fn took_over(resume: &Value) -> bool {
    resume["result"]["invocations"]
        .as_array()
        .is_some_and(|i| !i.is_empty())
}

/// Runs `resume` on every killed round whose lease has expired (all of them, waiting, when
/// `all`): it must take the invocation over and finish it, or leave it to a human.
fn settle(
    waiting: &mut Vec<Takeover>,
    tally: &mut Tally,
    acknowledged: &mut Vec<usize>,
    all: bool,
) -> anyhow::Result<()> {
    let mut still = Vec::new();
    for takeover in waiting.drain(..) {
        let age = takeover.killed_at.elapsed();
        if age < TAKEOVER_AFTER {
            if !all {
                still.push(takeover);
                continue;
            }
            std::thread::sleep(TAKEOVER_AFTER - age);
        }
        let (_, out) = takeover.site.json(&["resume"])?;
        let invocations = out["result"]["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if invocations.iter().any(|i| i["outcome"]["Ok"].is_object()) {
            acknowledged.push(takeover.round);
        }
        let pending = takeover.site.pending_requests()?.len();
        tally.pending += pending;
        if invocations.is_empty() && pending == 0 {
            // Killed after its call was settled, or before the call was recorded.
            eprintln!(
                "live host: round {}: nothing to take over after the lease expired",
                takeover.round
            );
        }
    }
    *waiting = still;
    Ok(())
}
