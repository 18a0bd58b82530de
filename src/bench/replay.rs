//! The `replay` group: `agent-libos replay fixtures/` as a whole process at `-j 1` and
//! `-j 2` — cases per second and peak resident memory, of its largest process (`ru_maxrss`
//! from `wait4`, which covers the isolate workers it reaped) and of the whole tree (it and
//! its workers, summed from `/proc` every 20 ms).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs per `-j` value; the median is printed.
const RUNS: usize = 3;
/// How often the process tree's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One run of the suite.
struct Run {
    cases: usize,
    took: Duration,
    /// `ru_maxrss` of the child: its largest process, in bytes.
    largest_rss: u64,
    /// The largest sum over the child and its descendants seen, in bytes.
    tree_rss: u64,
}

pub fn replay_suites() -> anyhow::Result<()> {
    let binary = std::env::current_exe()?.with_file_name("agent-libos");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    if !binary.exists() || !fixtures.is_dir() {
        println!(
            "agent-libos replay: needs {} and {}",
            binary.display(),
            fixtures.display()
        );
        return Ok(());
    }
    for jobs in [1, 2] {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(run_once(&binary, &fixtures, jobs)?);
        }
        runs.sort_by_key(|r| r.took);
        let median = &runs[RUNS / 2];
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "{:<58} cases={} {:>7.1} cases/s ({:.2} s) peak RSS {:.0} MiB largest process, {:.0} MiB whole tree",
            format!("agent-libos replay fixtures/ -j {jobs} (whole process)"),
            median.cases,
            median.cases as f64 / median.took.as_secs_f64(),
            median.took.as_secs_f64(),
            mib(runs.iter().map(|r| r.largest_rss).max().unwrap_or(0)),
            mib(runs.iter().map(|r| r.tree_rss).max().unwrap_or(0)),
        );
    }
    Ok(())
}

fn run_once(binary: &Path, fixtures: &Path, jobs: usize) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("replay")
        .arg(fixtures)
        .args(["-j", &jobs.to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let mut tree_rss = 0;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: a zeroed `rusage` is valid, and `wait4` only writes into the two
        // out-parameters it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if waited == pid {
            break (status, usage);
        }
        anyhow::ensure!(waited == 0, "wait4: {}", std::io::Error::last_os_error());
        tree_rss = tree_rss.max(tree_rss_bytes(pid));
        std::thread::sleep(SAMPLE_EVERY);
    };
    let took = started.elapsed();
    let text = reader.join().unwrap_or_default();
    let closing = text.trim_end().lines().last().unwrap_or("");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "agent-libos replay -j {jobs} failed: {closing}"
    );
    // "N passed, M failed[, K skipped]"
    let cases = closing
        .split(", ")
        .filter_map(|part| part.split(' ').next()?.parse::<usize>().ok())
        .sum();
    Ok(Run {
        cases,
        took,
        largest_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        tree_rss,
    })
}

/// Resident memory of `root` and every process below it (`/proc/<pid>/task/*/children`
/// and `/proc/<pid>/statm`).
fn tree_rss_bytes(root: libc::pid_t) -> u64 {
    // SAFETY: `sysconf` has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let resident = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|statm| statm.split(' ').nth(1)?.parse::<u64>().ok());
        total += resident.unwrap_or(0) * page;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<libc::pid_t>().ok()),
                );
            }
        }
    }
    total
}
