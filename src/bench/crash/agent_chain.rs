//! A chain of `agent-libos run` hosts driving one agent process after another against the
//! loopback model: each round starts the next process or `run --resume`s the current one,
//! then kills the host with SIGKILL at a random moment or while its effect is in flight. A
//! process that finishes, fails, or parks on a human decision gives way to a new one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::host::{Host, Site};
use super::loopback::{answered_calls, ModelServer, Recorder};
use super::tally::{Rng, Tally};

/// Longest a round waits for its host before giving up on it.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// After this long without a kill, a round looks for a pending human decision.
const PARK_CHECK_AFTER: Duration = Duration::from_millis(1500);

/// What one round did.
pub enum Round {
    /// The host was killed.
    Killed,
    /// The host exited by itself (its code is counted in `exits`).
    Exited,
    /// The host parked its process on a human decision (left pending; stopped).
    Parked,
}

pub struct AgentChain {
    pub site: Site,
    pub model: ModelServer,
    pub recorder: Recorder,
    /// `run` arguments of a new process, after `--goal TOKEN` (image, grants).
    start_args: Vec<String>,
    prefix: String,
    serial: usize,
    /// The process the next round resumes: (goal token, pid once known).
    current: Option<(String, Option<i64>)>,
    pub exits: BTreeMap<i32, usize>,
}

impl AgentChain {
    pub fn new(
        site: Site,
        model: ModelServer,
        recorder: Recorder,
        prefix: &str,
        start_args: Vec<String>,
    ) -> AgentChain {
        AgentChain {
            site,
            model,
            recorder,
            start_args,
            prefix: prefix.to_string(),
            serial: 0,
            current: None,
            exits: BTreeMap::new(),
        }
    }

    fn model_args(&self) -> Vec<String> {
        [
            "--model-url",
            &self.model.url(),
            "--model",
            "crash",
            "--api-key-env",
            "CRASH_MODEL_KEY",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn start_host(&mut self) -> anyhow::Result<Host> {
        let mut args: Vec<String> = Vec::new();
        match &self.current {
            Some((_, Some(pid))) => {
                args.extend(["run".into(), "--resume".into(), pid.to_string()]);
            }
            _ => {
                self.serial += 1;
                let token = format!("{}-{}", self.prefix, self.serial);
                args.extend(["run".into(), "--goal".into(), token.clone()]);
                args.extend(self.start_args.iter().cloned());
                self.current = Some((token, None));
            }
        }
        args.extend(self.model_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.site.spawn(&refs)
    }

    /// The pid of the process this chain drives now, if it was created.
    pub fn current_pid(&mut self) -> anyhow::Result<Option<i64>> {
        let Some((token, pid)) = self.current.clone() else {
            return Ok(None);
        };
        if pid.is_some() {
            return Ok(pid);
        }
        let pid = pid_of(&self.site, &token)?;
        self.current = Some((token, pid));
        Ok(pid)
    }

    /// One round: start or resume, then kill at a random moment in `window` or — when
    /// `dangerous` — as soon as a new effect reaches the recorder.
    pub fn round(
        &mut self,
        rng: &mut Rng,
        window: (Duration, Duration),
        dangerous: bool,
    ) -> anyhow::Result<Round> {
        let mut host = self.start_host()?;
        let before = self.recorder.posts().len();
        let at = rng.between(window.0, window.1);
        let start = Instant::now();
        let mut last_check = start;
        let mut parked = false;
        let token = self
            .current
            .as_ref()
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        let mut pid = self.current.as_ref().and_then(|(_, p)| *p);
        let site = &self.site;
        let recorder = &self.recorder;
        let outcome = host.wait_or_kill(ROUND_LIMIT, || {
            let elapsed = start.elapsed();
            if dangerous && recorder.posts().len() > before {
                return true;
            }
            if !dangerous && elapsed >= at {
                return true;
            }
            if elapsed >= PARK_CHECK_AFTER && last_check.elapsed() >= Duration::from_millis(300) {
                last_check = Instant::now();
                if pid.is_none() {
                    pid = pid_of(site, &token).ok().flatten();
                }
                parked = is_parked(site, pid).unwrap_or(false);
                return parked;
            }
            false
        });
        let pid = self.current_pid()?;
        if start.elapsed() >= ROUND_LIMIT {
            eprintln!(
                "{}: process {pid:?}: the host did nothing for {ROUND_LIMIT:?}; killed it",
                self.prefix
            );
        }
        if std::env::var_os("CRASH_VERBOSE").is_some() {
            eprintln!(
                "{}: pid {pid:?} {} after {:?} ({}): {outcome:?} parked {parked}",
                self.prefix,
                if dangerous { "dangerous" } else { "random" },
                start.elapsed(),
                self.recorder.posts().len() - before,
            );
        }
        let result = match outcome {
            Some(code) => {
                if code != 0 {
                    let errors = host.errors();
                    let last = errors.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                    eprintln!(
                        "{}: process {pid:?}: run exited with {code}: {last}",
                        self.prefix
                    );
                }
                *self.exits.entry(code).or_default() += 1;
                self.current = None;
                Round::Exited
            }
            None if parked => {
                self.current = None;
                Round::Parked
            }
            None => {
                // A process killed before it was created, or parked on a human decision
                // as it was killed, gives way to a new one.
                if pid.is_none() || is_parked(&self.site, pid)? {
                    self.current = None;
                }
                Round::Killed
            }
        };
        Ok(result)
    }

    /// Effects counted at the end: a POST path received twice is a repeat; a POST the
    /// model was told succeeded (its tool result is not an error) and the recorder never
    /// received is lost; each pending human request is an effect left to a human.
    pub fn effects(&self) -> anyhow::Result<Tally> {
        eprintln!(
            "{}: {} processes, {} POSTs received, hosts that exited by themselves (code: count) {:?}",
            self.prefix,
            self.serial,
            self.recorder.posts().len(),
            self.exits
        );
        effects(&self.model, &self.recorder, &self.site)
    }
}

/// The pid of the process of `site` whose goal is `token`.
fn pid_of(site: &Site, token: &str) -> anyhow::Result<Option<i64>> {
    Ok(site
        .processes()?
        .iter()
        .find(|p| p["goal"] == token)
        .and_then(|p| p["pid"].as_i64()))
}

/// Whether process `pid` of `site` waits on a human decision.
fn is_parked(site: &Site, pid: Option<i64>) -> anyhow::Result<bool> {
    let Some(pid) = pid else { return Ok(false) };
    Ok(site
        .pending_requests()?
        .iter()
        .any(|r| r["pid"].as_i64() == Some(pid)))
}

/// The path part of a loopback URL.
pub fn path_of(url: &str) -> String {
    url.splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_default()
}

/// See [`AgentChain::effects`].
pub fn effects(model: &ModelServer, recorder: &Recorder, site: &Site) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut acknowledged: BTreeMap<String, ()> = BTreeMap::new();
    let mut stopped: BTreeMap<String, ()> = BTreeMap::new();
    for conversation in model.conversations() {
        for (_, _, args, result) in answered_calls(&conversation) {
            let Some(url) = args["url"].as_str() else {
                continue;
            };
            if std::env::var_os("CRASH_VERBOSE").is_some() {
                eprintln!("answered {url}: {result}");
            }
            if result.is_object() && result.get("error").is_none() {
                acknowledged.insert(path_of(url), ());
            }
            if result["error"]["kind"] == "NonDeterminism" {
                stopped.insert(path_of(url), ());
            }
        }
    }
    let received = recorder.received();
    tally.acknowledged = acknowledged.len();
    tally.nondeterministic = stopped.len();
    tally.lost = acknowledged
        .keys()
        .filter(|p| !received.contains_key(*p))
        .count();
    tally.repeated = received.values().map(|n| n.saturating_sub(1)).sum();
    let pending = site
        .pending_requests()
        .context("listing pending human requests")?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for request in &pending {
        *kinds
            .entry(request["kind"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    eprintln!("pending human requests by kind: {kinds:?}");
    tally.pending = pending.len();
    Ok(tally)
}
