//! The crash loop: `agent-libos-crash loop DIR KILLS [--seed N] [--only SHAPE]` kills real hosts with SIGKILL
//! at random and at the dangerous moments, about KILLS times in all, over five shapes —
//! journaled steps in-process, two tool calls in one model reply, a tool that branches on
//! its reads, `resume` beside a live host, and a budget of 30 syscalls — against loopback
//! servers that record every effect, then prints per shape and in total the kills, the
//! acknowledged effects, the lost and repeated ones, the pending human decisions and the
//! budget overruns. It exits non-zero if anything was lost, repeated, overrun or broken.
//! (`agent-libos-crash work DIR` is the in-process workload the first shape kills, and
//! `agent-libos-crash check DIR` checks what it left.)
// An operator tool: the crash loop starts, kills and inspects real host processes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod agent_chain;
mod branching;
mod budget;
mod host;
mod live_host;
mod loopback;
mod tally;
mod two_calls;
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use tally::{Rng, Tally};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(dir)) = (args.get(1), args.get(2)) else {
        bail!("usage: agent-libos-crash loop DIR KILLS [--seed N] [--only SHAPE] | work DIR | check DIR");
    };
    let dir = PathBuf::from(dir);
    match mode.as_str() {
        "work" => runtime()?.block_on(workload::work(&dir)),
        "check" => {
            let (tally, line) = runtime()?.block_on(workload::check(&dir))?;
            println!("{line}");
            if tally.failed() {
                bail!("crash check failed: {tally}");
            }
            Ok(())
        }
        "loop" => {
            let kills: usize = args
                .get(3)
                .map(|k| k.parse())
                .transpose()
                .context("KILLS: not a number")?
                .unwrap_or(20);
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            let seed = match flag("--seed") {
                Some(s) => s.parse().context("--seed: not a number")?,
                None => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            };
            if !run_loop(&dir, kills, seed, flag("--only").as_deref())? {
                std::process::exit(1);
            }
            Ok(())
        }
        other => bail!("unknown mode {other} (loop, work or check)"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

type Shape = fn(&Path, &Path, usize, &mut Rng) -> anyhow::Result<Tally>;

/// Runs every shape; returns whether all promises held.
fn run_loop(dir: &Path, kills: usize, seed: u64, only: Option<&str>) -> anyhow::Result<bool> {
    let bin = host::binary()?;
    let shapes: [(&str, &str, Shape); 5] = [
        ("steps", "journaled steps (in-process)", steps),
        ("two-calls", "two calls in one model reply", two_calls::run),
        (
            "branching",
            "a tool branching on clock, fs, global",
            branching::run,
        ),
        ("live-host", "resume beside a live host", live_host::run),
        ("budget", "a budget of 30 syscalls", budget::run),
    ];
    let shapes: Vec<_> = shapes
        .into_iter()
        .filter(|(name, _, _)| only.is_none_or(|o| o == *name))
        .collect();
    if shapes.is_empty() {
        bail!("--only: no such shape (steps, two-calls, branching, live-host, budget)");
    }
    let per_shape = kills.div_ceil(shapes.len()).max(1);
    eprintln!("crash loop: {per_shape} kills per shape, seed {seed}");
    // The shapes run side by side (each on its own database and servers): most of a
    // round is waiting — for a kill moment, or for a killed host's lease to expire.
    let results: Vec<(String, anyhow::Result<Tally>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, (name, label, shape))| {
                let bin = &bin;
                let dir = dir.join(name);
                let mut rng =
                    Rng::new(seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                scope.spawn(move || {
                    let tally = shape(bin, &dir, per_shape, &mut rng);
                    if let Ok(tally) = &tally {
                        eprintln!("crash loop: {label:<40} {tally}");
                    }
                    (label.to_string(), tally)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a shape panicked"))
            .collect()
    });
    let mut lines = Vec::new();
    let mut total = Tally::default();
    for (label, tally) in results {
        let tally = tally.with_context(|| format!("shape {label}"))?;
        total.add(&tally);
        lines.push(format!("{label:<40} {tally}"));
    }
    for line in &lines {
        println!("{line}");
    }
    println!("{:<40} {total}", "total");
    Ok(!total.failed())
}

/// Shape "journaled steps": the in-process workload (`work`) killed at random moments,
/// then checked in this process.
fn steps(_bin: &Path, dir: &Path, kills: usize, rng: &mut Rng) -> anyhow::Result<Tally> {
    let me = std::env::current_exe()?;
    std::fs::create_dir_all(dir)?;
    runtime()?.block_on(workload::setup(dir))?;
    for _ in 0..kills {
        let mut child = Command::new(&me)
            .arg("work")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the workload")?;
        // One kill in three at a random moment from the start (opening, resuming); the
        // others at a random moment once the workload acknowledges steps again.
        if !rng.one_in(3) {
            let acks = dir.join("acks.log");
            let before = acknowledged_steps(&acks);
            host::wait_for(Duration::from_secs(30), || {
                acknowledged_steps(&acks) > before
            });
        }
        std::thread::sleep(rng.between(Duration::from_millis(50), Duration::from_millis(1500)));
        let _ = child.kill();
        let _ = child.wait();
    }
    let (mut tally, line) = runtime()?.block_on(workload::check(dir))?;
    eprintln!("{line}");
    tally.kills = kills;
    Ok(tally)
}

/// How many steps the workload has acknowledged so far.
fn acknowledged_steps(acks: &Path) -> usize {
    std::fs::read_to_string(acks)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}
