//! Exactly once through the real binary, killed with SIGKILL at the dangerous moment: a
//! loopback HTTP server records every request it receives, and after a restart an effect
//! has happened once or waits for a human decision — never twice.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_support::{bin, Env};
use serde_json::{json, Value};

/// A loopback HTTP/1.1 server that records `METHOD path body` of every request and answers
/// a POST only after `post_delay`, so a host can be killed while the POST is in flight.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start(post_delay: Duration) -> Recorder {
        Recorder::start_slow_on("/", post_delay)
    }

    /// Like [`Recorder::start`], delaying only POSTs to paths starting with `slow`.
    fn start_slow_on(slow: &'static str, post_delay: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if head.is_empty() {
                            head = line.trim().to_string();
                        }
                    }
                    let mut body = vec![0u8; length];
                    let _ = reader.read_exact(&mut body);
                    let mut parts = head.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    log.lock().unwrap().push(format!(
                        "{method} {path} {}",
                        String::from_utf8_lossy(&body)
                    ));
                    if method == "POST" && path.starts_with(slow) {
                        std::thread::sleep(post_delay);
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                });
            }
        });
        Recorder { port, seen }
    }

    fn posts(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("POST "))
            .count()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn script(replies: &[Value]) -> String {
    replies
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `agent-libos --db DB --workspace WS ARGS...` as a child process.
fn spawn(env: &Env, args: &[&str]) -> Child {
    Command::new(bin())
        .arg("--db")
        .arg(env.db())
        .arg("--workspace")
        .arg(env.ws())
        .args(args)
        .current_dir(env.ws())
        .env_remove("AGENT_LIBOS_DB")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent-libos")
}

/// Waits until `done` holds (or the deadline passes); returns whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn pending_requests(env: &Env) -> Vec<Value> {
    let out = env.run(&["--json", "human", "list"]);
    out.json()["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn run_resume_after_a_kill_during_the_second_call_of_a_reply_never_repeats_its_post() {
    let env = Env::new();
    let server = Recorder::start(Duration::from_secs(30));
    let post = json!({"name": "net_fetch", "arguments": {
        "url": server.url("/orders"), "method": "POST", "body": "order 1"}});
    let first = env.write(
        "first.jsonl",
        &script(&[
            json!({"tool_calls": [{"name": "clock_now", "arguments": {}}, post]}),
            json!({"content": "ordered"}),
        ]),
    );
    let grant = format!("net:127.0.0.1:{}=read,write", server.port);
    let child = spawn(
        &env,
        &[
            "run",
            "base",
            "--goal",
            "order once",
            "--script",
            first.to_str().unwrap(),
            "--grant",
            &grant,
        ],
    );
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the run sent its POST"
    );
    kill(child);

    let ps = env.run(&["--json", "ps"]);
    let pid = ps.json()["result"][0]["pid"].as_i64().expect("one process");
    let rest = env.write("rest.jsonl", &script(&[json!({"content": "ordered"})]));
    let resumed = spawn(
        &env,
        &[
            "run",
            "--resume",
            &pid.to_string(),
            "--script",
            rest.to_str().unwrap(),
        ],
    );
    // The interrupted POST is uncertain: the resumed run must ask a human, not send it.
    let asked = wait_for(Duration::from_secs(60), || {
        server.posts() > 1 || !pending_requests(&env).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    kill(resumed);
    assert_eq!(server.posts(), 1, "{:?}", server.seen.lock().unwrap());
    assert!(
        asked,
        "the resumed run asked a human about the interrupted POST"
    );
    let requests = pending_requests(&env);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].to_string().contains("net.fetch"),
        "{requests:?}"
    );
}

/// How many of `pid`'s syscalls the audit log records as allowed.
fn allowed_syscalls(env: &Env, pid: i64) -> usize {
    let audit = env.run(&[
        "--json",
        "audit",
        "show",
        "--pid",
        &pid.to_string(),
        "--limit",
        "100000",
    ]);
    audit.json()["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["decision"] == json!("allow"))
        .count()
}

#[test]
fn a_budget_of_30_syscalls_holds_across_model_errors_kills_and_resumes() {
    let env = Env::new();
    let manifest = env.write(
        "tight.toml",
        "id = \"tight\"\nversion = \"1.0.0\"\n\n[budget]\ntool_calls = 100\nchildren = 1\nsyscalls = 30\nwall_time_ms = 3600000\n",
    );
    // Two replies of three clock reads each, then the script runs out (a model error that
    // leaves the process resumable).
    let ticks = json!({"tool_calls": [
        {"name": "clock_now", "arguments": {}},
        {"name": "clock_now", "arguments": {}},
        {"name": "clock_now", "arguments": {}},
    ]});
    let file = env.write("ticks.jsonl", &script(&[ticks.clone(), ticks]));
    let first = env.run(&[
        "run",
        manifest.to_str().unwrap(),
        "--goal",
        "tick",
        "--script",
        file.to_str().unwrap(),
    ]);
    assert_eq!(first.code, 2, "{first:?}");
    let pid = env.run(&["--json", "ps", "--all"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    for round in 0..4 {
        if round == 2 {
            // A host killed mid-run loses no count either.
            let child = spawn(
                &env,
                &[
                    "run",
                    "--resume",
                    &pid.to_string(),
                    "--script",
                    file.to_str().unwrap(),
                ],
            );
            std::thread::sleep(Duration::from_millis(300));
            kill(child);
        } else {
            env.run(&[
                "run",
                "--resume",
                &pid.to_string(),
                "--script",
                file.to_str().unwrap(),
            ]);
        }
        let allowed = allowed_syscalls(&env, pid);
        assert!(allowed <= 30, "round {round}: {allowed} syscalls allowed");
    }
    let allowed = allowed_syscalls(&env, pid);
    assert!(allowed >= 25, "the runs used the budget: {allowed}");
    let ps = env.run(&["--json", "ps", "--all"]).json()["result"][0].clone();
    let used = ps["usage"]["syscalls"].as_u64().unwrap();
    assert!(
        used as usize >= allowed && used <= 30,
        "ps reports {used} used, the audit log {allowed} allowed"
    );
}

#[test]
fn run_resume_continues_the_step_and_token_counters() {
    let env = Env::new();
    let tick = json!({"tool_calls": [{"name": "clock_now", "arguments": {}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}});
    let file = env.write("ticks.jsonl", &script(&[tick.clone(), tick.clone()]));
    let first = env.run(&[
        "run",
        "base",
        "--goal",
        "tick",
        "--script",
        file.to_str().unwrap(),
        "--max-steps",
        "3",
    ]);
    assert_eq!(first.code, 2, "a model error after two steps: {first:?}");
    let pid = env.run(&["--json", "ps", "--all"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    // Two steps were used: the resumed run may make one more model call, not three.
    let resumed = env.run(&[
        "--json",
        "run",
        "--resume",
        &pid.to_string(),
        "--script",
        file.to_str().unwrap(),
        "--max-steps",
        "3",
    ]);
    assert_eq!(resumed.code, 4, "{resumed:?}");
    let result = resumed.json()["result"].clone();
    assert_eq!(
        result["stop"],
        json!({"reason": "budget", "limit": "steps"}),
        "{result}"
    );
    assert_eq!(result["steps"], json!(3), "{result}");
    assert_eq!(result["usage"]["total_tokens"], json!(120), "{result}");

    // Tokens: 80 were used before the restart; a limit of 100 allows one more call.
    let env = Env::new();
    let file = env.write("ticks.jsonl", &script(&[tick.clone(), tick]));
    let first = env.run(&[
        "run",
        "base",
        "--goal",
        "tick",
        "--script",
        file.to_str().unwrap(),
    ]);
    assert_eq!(first.code, 2, "{first:?}");
    let pid = env.run(&["--json", "ps", "--all"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    let resumed = env.run(&[
        "--json",
        "run",
        "--resume",
        &pid.to_string(),
        "--script",
        file.to_str().unwrap(),
        "--max-tokens",
        "100",
    ]);
    assert_eq!(resumed.code, 4, "{resumed:?}");
    let result = resumed.json()["result"].clone();
    assert_eq!(
        result["stop"],
        json!({"reason": "budget", "limit": "tokens"}),
        "{result}"
    );
    assert_eq!(result["usage"]["total_tokens"], json!(120), "{result}");
}

#[test]
fn run_resume_continues_the_wall_time_of_earlier_hosts() {
    let env = Env::new();
    let file = env.write(
        "sleep.jsonl",
        &script(&[json!({"tool_calls": [{"name": "clock_sleep", "arguments": {"ms": 1500}}]})]),
    );
    let first = env.run(&[
        "run",
        "base",
        "--goal",
        "sleep",
        "--script",
        file.to_str().unwrap(),
    ]);
    assert_eq!(first.code, 2, "a model error after the sleep: {first:?}");
    let pid = env.run(&["--json", "ps", "--all"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    // The run already used 1.5 s: a limit of 1 s stops it before another model call.
    let done = env.write("done.jsonl", &script(&[json!({"content": "done"})]));
    let resumed = env.run(&[
        "--json",
        "run",
        "--resume",
        &pid.to_string(),
        "--script",
        done.to_str().unwrap(),
        "--wall-time",
        "1s",
    ]);
    assert_eq!(resumed.code, 4, "{resumed:?}");
    assert_eq!(
        resumed.json()["result"]["stop"],
        json!({"reason": "budget", "limit": "wall_time"}),
        "{resumed:?}"
    );
}

/// A tool that POSTs, sleeps, and POSTs again.
const TWO_POSTS: &str = r#"export const tool = {
  name: "two_posts",
  description: "POST, wait, POST again.",
  input: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  output: {},
};

export default async function run(args: any, libos: any) {
  await libos.net.fetch(args.url, { method: "POST", body: "first" });
  await libos.clock.sleep(4000);
  await libos.net.fetch(args.url, { method: "POST", body: "second" });
  return { posted: 2 };
}
"#;

fn bodies(server: &Recorder) -> Vec<String> {
    let mut seen: Vec<String> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST "))
        .cloned()
        .collect();
    seen.sort();
    seen
}

fn start_two_posts(env: &Env, server: &Recorder) -> Child {
    let tool = env.write("two_posts.ts", TWO_POSTS);
    let args = json!({"url": server.url("/posts")}).to_string();
    let net = format!("--allow-net=127.0.0.1:{}", server.port);
    spawn(
        env,
        &["tool", "run", tool.to_str().unwrap(), "--args", &args, &net],
    )
}

#[test]
fn resume_leaves_the_invocations_of_a_live_host_alone() {
    let env = Env::new();
    let server = Recorder::start(Duration::ZERO);
    let mut live = start_two_posts(&env, &server);
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the tool sent its first POST"
    );
    std::thread::sleep(Duration::from_millis(500));
    // The host running the tool is alive (sleeping between its POSTs): resume must not
    // take its invocation over.
    let resume = env.run(&["--json", "resume"]);
    assert_eq!(resume.code, 0, "{resume:?}");
    assert_eq!(
        resume.json()["result"]["invocations"],
        json!([]),
        "{resume:?}"
    );
    let status = live.wait().unwrap();
    assert!(
        status.success(),
        "the live host finished its call: {status:?}"
    );
    assert_eq!(
        bodies(&server),
        vec!["POST /posts first", "POST /posts second"],
        "each POST once"
    );
}

#[test]
fn resume_takes_over_a_killed_hosts_invocation_only_after_its_lease_expires() {
    let env = Env::new();
    let server = Recorder::start(Duration::ZERO);
    let host = start_two_posts(&env, &server);
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the tool sent its first POST"
    );
    // Kill the host once the first POST's outcome is durable (its audit record commits
    // with the journal outcome), while the tool sleeps before its second POST.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let audit = env.run(&["--json", "audit", "show", "--action", "net.fetch"]);
            audit.json()["result"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["decision"] == json!("allow")))
        }),
        "the first POST was recorded"
    );
    kill(host);
    // Right after the kill the lease is still fresh: nothing is taken over.
    let early = env.run(&["--json", "resume"]);
    assert_eq!(early.code, 0, "{early:?}");
    assert_eq!(
        early.json()["result"]["invocations"],
        json!([]),
        "{early:?}"
    );
    // Once it expires, resume finishes the call from its journal: the first POST is not
    // repeated, the second is sent once.
    let mut finished = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        let late = env.run(&["--json", "resume"]);
        let invocations = late.json()["result"]["invocations"].clone();
        if invocations != json!([]) {
            assert_eq!(
                invocations[0]["outcome"]["Ok"],
                json!({"posted": 2}),
                "{late:?}"
            );
            finished = true;
            break;
        }
    }
    assert!(
        finished,
        "resume took the invocation over after the lease expired"
    );
    assert_eq!(
        bodies(&server),
        vec!["POST /posts first", "POST /posts second"],
        "each POST once"
    );
}

#[test]
fn a_frozen_host_resumed_after_a_takeover_records_and_sends_nothing_more() {
    let env = Env::new();
    let server = Recorder::start(Duration::ZERO);
    let mut host = start_two_posts(&env, &server);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let audit = env.run(&["--json", "audit", "show", "--action", "net.fetch"]);
            audit.json()["result"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["decision"] == json!("allow")))
        }),
        "the first POST was recorded"
    );
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &host.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // The frozen host stops renewing its lease; once it expires, resume takes over and
    // finishes the call.
    let mut taken = false;
    let start = Instant::now();
    while !taken && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        let resume = env.run(&["--json", "resume"]);
        taken = resume.json()["result"]["invocations"] != json!([]);
    }
    assert!(taken, "resume took the frozen host's invocation over");
    // Thawed, the old host wakes from its sleep and tries its second POST: the fence
    // refuses its journal intent, so the effect is not sent again.
    signal("-CONT");
    let status = host.wait().unwrap();
    assert!(
        !status.success(),
        "the fenced host fails its call: {status:?}"
    );
    assert_eq!(
        bodies(&server),
        vec!["POST /posts first", "POST /posts second"],
        "each POST once"
    );
}

/// Runs `resume` until it takes the killed host's invocation over (its lease expires 5 s
/// after the host's last heartbeat); returns its JSON result.
fn resume_after_lease_expiry(env: &Env) -> Value {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        let resumed = env.run(&["--json", "resume"]);
        assert_eq!(resumed.code, 0, "{resumed:?}");
        let result = resumed.json()["result"].clone();
        if result["invocations"] != json!([]) {
            return result;
        }
    }
    panic!("resume never took the killed host's invocation over");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Branches on the clock before its POST: while early, one more read.
const CLOCK_BRANCH: &str = r#"export const tool = {
  name: "order_by_deadline",
  description: "Orders; before the deadline it reads the clock once more.",
  input: { type: "object", properties: { url: { type: "string" }, deadline: { type: "number" } },
           required: ["url", "deadline"] },
  output: {},
};

export default async function run(args: any, libos: any) {
  const early = (await libos.clock.now()) < args.deadline;
  if (early) await libos.clock.now();
  await libos.net.fetch(args.url, { method: "POST", body: early ? "early" : "late" });
  return { early };
}
"#;

/// The one pending request after a resume that met the interrupted POST.
fn the_uncertain_post(env: &Env, server: &Recorder) {
    assert_eq!(server.posts(), 1, "{:?}", server.seen.lock().unwrap());
    let requests = pending_requests(env);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["kind"], "uncertain", "{requests:?}");
    assert_eq!(
        requests[0]["payload"]["primitive"], "net.fetch",
        "{requests:?}"
    );
}

#[test]
fn a_tool_branching_on_the_clock_resumed_after_its_deadline_never_repeats_its_post() {
    let env = Env::new();
    let server = Recorder::start(Duration::from_secs(30));
    let tool = env.write("order.ts", CLOCK_BRANCH);
    let deadline = now_ms() + 12_000;
    let args = json!({"url": server.url("/orders"), "deadline": deadline}).to_string();
    let net = format!("--allow-net=127.0.0.1:{}", server.port);
    let host = spawn(
        &env,
        &["tool", "run", tool.to_str().unwrap(), "--args", &args, &net],
    );
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the tool sent its POST"
    );
    kill(host);
    assert_eq!(
        bodies(&server),
        vec!["POST /orders early"],
        "the first run was early (a slower machine needs a later deadline)"
    );
    // Resumed after the deadline: the clock reads are journaled, so the replay is early
    // again, reaches the interrupted POST at its place, and asks a human.
    while now_ms() <= deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = resume_after_lease_expiry(&env);
    let outcome = &result["invocations"][0]["outcome"]["Err"];
    assert_eq!(outcome["kind"], "HumanRequired", "{result}");
    std::thread::sleep(Duration::from_millis(300));
    the_uncertain_post(&env, &server);
}

/// Branches on a directory listing before its POST: without `flag.txt`, one more read.
const LIST_BRANCH: &str = r#"export const tool = {
  name: "order_unless_flagged",
  description: "Orders; unless flag.txt exists it reads note.txt first.",
  input: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  output: {},
};

export default async function run(args: any, libos: any) {
  const flagged = JSON.stringify(await libos.fs.list(".")).includes("flag.txt");
  if (!flagged) await libos.fs.readText("note.txt");
  await libos.net.fetch(args.url, { method: "POST", body: flagged ? "flagged" : "plain" });
  return { flagged };
}
"#;

#[test]
fn a_tool_branching_on_a_listing_resumed_after_the_listing_changed_never_repeats_its_post() {
    let env = Env::new();
    let server = Recorder::start(Duration::from_secs(30));
    let tool = env.write("order.ts", LIST_BRANCH);
    env.write("note.txt", "a note");
    let args = json!({"url": server.url("/orders")}).to_string();
    let net = format!("--allow-net=127.0.0.1:{}", server.port);
    let host = spawn(
        &env,
        &[
            "tool",
            "run",
            tool.to_str().unwrap(),
            "--args",
            &args,
            &net,
            "--allow-read",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the tool sent its POST"
    );
    kill(host);
    assert_eq!(bodies(&server), vec!["POST /orders plain"]);
    // A file appears while the host is down: the listing is journaled, so the replay sees
    // the first run's listing and reaches the interrupted POST at its place.
    env.write("flag.txt", "now flagged");
    let result = resume_after_lease_expiry(&env);
    let outcome = &result["invocations"][0]["outcome"]["Err"];
    assert_eq!(outcome["kind"], "HumanRequired", "{result}");
    std::thread::sleep(Duration::from_millis(300));
    the_uncertain_post(&env, &server);
}

/// Counts its calls in a global its process's isolate keeps between calls; from the second
/// call on it reads the clock before its POST.
const GLOBAL_BRANCH: &str = r#"export const tool = {
  name: "poster",
  description: "Posts its call count; after the first call it reads the clock first.",
  input: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  output: {},
};

let calls = 0;

export default async function run(args: any, libos: any) {
  calls += 1;
  if (calls > 1) await libos.clock.now();
  await libos.net.fetch(args.url, { method: "POST", body: "call " + calls });
  return { calls };
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_branching_on_a_global_killed_through_mcp_is_never_sent_again_on_resume() {
    use rmcp::model::CallToolRequestParams;
    use rmcp::ServiceExt;

    let env = Env::new();
    let server = Recorder::start_slow_on("/slow", Duration::from_secs(30));
    let mut child = tokio::process::Command::new(bin())
        .arg("--db")
        .arg(env.db())
        .arg("--workspace")
        .arg(env.ws())
        .args([
            "mcp",
            "--grant",
            "tool:*=create",
            "--grant",
            &format!("net:127.0.0.1:{}=read,write", server.port),
        ])
        .current_dir(env.ws())
        .env_remove("AGENT_LIBOS_DB")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent-libos mcp");
    let io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = std::sync::Arc::new(().serve(io).await.expect("initialize"));
    let call = |tool: &'static str, args: Value| {
        let client = client.clone();
        async move {
            let Value::Object(args) = args else {
                unreachable!()
            };
            let result = client
                .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
                .await
                .expect("tools/call");
            let text: String = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            assert_ne!(result.is_error, Some(true), "{tool}: {text}");
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }
    };
    call("spawn_process", json!({"goal": "post"})).await;
    let id = call("propose_tool", json!({"source": GLOBAL_BRANCH})).await["id"].clone();
    let report = call("validate_tool", json!({"id": id})).await;
    assert_eq!(report["ok"], true, "{report}");
    call("register_tool", json!({"id": id})).await;
    let first = call(
        "call_tool",
        json!({"name": "poster", "args": {"url": server.url("/fast")}}),
    )
    .await;
    assert_eq!(first, json!({"calls": 1}));
    // The second call runs in the same isolate (calls = 2): it reads the clock, then POSTs;
    // the host is killed during the POST.
    let second = {
        let client = client.clone();
        let Value::Object(args) = json!({"name": "poster", "args": {"url": server.url("/slow")}})
        else {
            unreachable!()
        };
        // Its answer never comes: the host dies first.
        tokio::spawn(async move {
            let _ = client
                .call_tool(CallToolRequestParams::new("call_tool").with_arguments(args))
                .await;
        })
    };
    let start = Instant::now();
    while server.posts() < 2 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    second.abort();
    assert_eq!(
        bodies(&server),
        vec!["POST /fast call 1", "POST /slow call 2"]
    );
    // Resumed in a fresh isolate the tool counts 1 again and would POST "call 1" where its
    // journal records the clock read: it stops on a human request instead.
    let result = tokio::task::block_in_place(|| resume_after_lease_expiry(&env));
    let outcome = &result["invocations"][0]["outcome"]["Err"];
    assert_eq!(outcome["kind"], "NonDeterminism", "{result}");
    let request = outcome["request_id"]
        .as_str()
        .expect("a request")
        .to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bodies(&server),
        vec!["POST /fast call 1", "POST /slow call 2"],
        "nothing sent again"
    );
    let requests = pending_requests(&env);
    let diverged: Vec<&Value> = requests.iter().filter(|r| r["id"] == request).collect();
    assert_eq!(diverged.len(), 1, "{requests:?}");
    assert_eq!(diverged[0]["kind"], "diverged");
    assert_eq!(diverged[0]["payload"]["recorded"], "clock.now");
    assert_eq!(diverged[0]["payload"]["called"], "net.fetch");
    assert_eq!(diverged[0]["payload"]["carried"], true);
}

#[test]
fn a_journal_without_the_reads_before_the_first_effect_still_never_repeats_the_post() {
    let env = Env::new();
    let server = Recorder::start(Duration::from_secs(30));
    let tool = env.write("order.ts", CLOCK_BRANCH);
    let deadline = now_ms() + 12_000;
    let args = json!({"url": server.url("/orders"), "deadline": deadline}).to_string();
    let net = format!("--allow-net=127.0.0.1:{}", server.port);
    let host = spawn(
        &env,
        &["tool", "run", tool.to_str().unwrap(), "--args", &args, &net],
    );
    assert!(
        wait_for(Duration::from_secs(60), || server.posts() == 1),
        "the tool sent its POST"
    );
    kill(host);
    assert_eq!(bodies(&server), vec!["POST /orders early"]);
    // The journal as hosts that did not journal reads before the first effect left it: the
    // two clock reads took ordinals 0 and 1 but have no rows.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.db().display()))
            .await
            .unwrap();
        let removed = sqlx::query("DELETE FROM journal WHERE primitive = 'clock.now'")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(removed.rows_affected(), 2);
        db.close().await;
    });
    while now_ms() <= deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Late now, the replay skips the second read and reaches its POST at ordinal 1, where
    // the journal has nothing but records the POST at 2: it stops on a human request.
    let result = resume_after_lease_expiry(&env);
    let outcome = &result["invocations"][0]["outcome"]["Err"];
    assert_eq!(outcome["kind"], "NonDeterminism", "{result}");
    let request = outcome["request_id"]
        .as_str()
        .expect("a request")
        .to_string();
    assert_eq!(
        result["ended"],
        json!([]),
        "the tool run's process waits: {result}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.posts(), 1, "{:?}", server.seen.lock().unwrap());
    // Rejected, the call fails and its process ends; nothing was sent again.
    let rejected = env.run(&["human", "reject", &request]);
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let resumed = env.run(&["--json", "resume"]);
    let result = resumed.json()["result"].clone();
    assert_eq!(
        result["invocations"][0]["outcome"]["Err"]["kind"], "HumanRejected",
        "{result}"
    );
    assert_eq!(
        result["ended"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    assert_eq!(server.posts(), 1, "{:?}", server.seen.lock().unwrap());
}
