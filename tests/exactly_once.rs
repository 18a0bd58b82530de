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
                    if method == "POST" {
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
