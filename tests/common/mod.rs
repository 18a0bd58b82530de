//! Shared setup for integration tests: a real kernel on a real SQLite file and workspace.
#![allow(dead_code)]

use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, JitCall, Kernel, KernelConfig, Pid, SpawnOptions, Syscall, SyscallError,
};
use serde_json::Value;
use tempfile::TempDir;

pub struct TestHost {
    pub dir: TempDir,
    pub kernel: Kernel,
}

impl TestHost {
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn workspace(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }

    pub async fn spawn(&self, grants: &[&str]) -> Pid {
        spawn_on(&self.kernel, grants).await
    }

    /// Spawns a process that may also ask a human for `requestable`.
    pub async fn spawn_requesting(&self, grants: &[&str], requestable: &[&str]) -> Pid {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|g| CapabilitySpec::parse_grant(g).expect("grant syntax"))
                .collect()
        };
        self.kernel
            .spawn_root(SpawnOptions {
                goal: "test".into(),
                grants: parse(grants),
                requestable: parse(requestable),
                ..SpawnOptions::default()
            })
            .await
            .expect("spawn")
    }

    /// Opens a second kernel on the same database and workspace (as after a restart).
    pub async fn reopen(&self) -> Kernel {
        Kernel::open(self.config()).await.expect("reopen")
    }

    pub fn config(&self) -> KernelConfig {
        config(self.db_path(), self.workspace())
    }
}

/// Spawns a root process on `kernel` holding `grants` (grant syntax).
pub async fn spawn_on(kernel: &Kernel, grants: &[&str]) -> Pid {
    let grants = grants
        .iter()
        .map(|g| CapabilitySpec::parse_grant(g).expect("grant syntax"))
        .collect();
    kernel
        .spawn_root(SpawnOptions {
            goal: "test".into(),
            grants,
            ..SpawnOptions::default()
        })
        .await
        .expect("spawn")
}

/// A kernel configuration whose commands run in the sandbox built by this build's binary.
pub fn config(db: std::path::PathBuf, workspace: std::path::PathBuf) -> KernelConfig {
    let mut config = KernelConfig::new(db, workspace);
    config.runtime_binary = Some(env!("CARGO_BIN_EXE_agent-libos").into());
    config
}

pub async fn host() -> TestHost {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let kernel = Kernel::open(config(dir.path().join("state.db"), dir.path().join("ws")))
        .await
        .expect("open kernel");
    TestHost { dir, kernel }
}

/// A small tool with a declared test, shared by the agent-loop and MCP tests.
pub const COUNT_LINES: &str = r#"export const tool = {
  name: "count_lines",
  description: "Counts the lines of a text file",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  output: { type: "object", properties: { lines: { type: "integer" } }, required: ["lines"] },
  tests: [
    { name: "three lines", args: { path: "a.txt" },
      syscalls: [ { primitive: "fs.read_text", result: "a\nb\nc" } ],
      expect: { lines: 3 } },
  ],
};

export default async function run(args: { path: string }, libos: any) {
  const text = await libos.fs.readText(args.path);
  return { lines: text.split("\n").length };
}
"#;

/// A connection of its own to the state database, as anything with the path could open.
pub async fn outside(db: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

/// The first pending human request, once one appears.
pub async fn wait_pending(kernel: &Kernel) -> agent_libos::kernel::HumanRequest {
    for _ in 0..2000 {
        if let Some(r) = kernel
            .human_requests(false)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no pending human request appeared");
}

/// The source of a tool `name` whose body is `body`.
pub fn tool_source(name: &str, body: &str) -> String {
    format!(
        "import type {{ Libos }} from \"libos\";\nexport const tool = {{ name: \"{name}\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\nexport default async function run(args: any, libos: Libos) {{ {body} }}\n"
    )
}

/// `clock.sleep` of exactly this many milliseconds panics in [`PanickingClock`].
pub const PANIC_SLEEP_MS: u64 = 13;

/// A clock provider with one bug: sleeping [`PANIC_SLEEP_MS`] panics. Everything else is the
/// host's clock. It stands for any panic reached while serving a call.
pub struct PanickingClock;

#[async_trait::async_trait]
impl agent_libos::providers::Clock for PanickingClock {
    fn now_ms(&self) -> i64 {
        agent_libos::providers::SystemClock.now_ms()
    }

    async fn sleep(&self, ms: u64) {
        if ms == PANIC_SLEEP_MS {
            panic!("injected provider bug: sleep({ms})");
        }
        agent_libos::providers::SystemClock.sleep(ms).await
    }
}

/// A real kernel whose clock provider panics on `clock.sleep(PANIC_SLEEP_MS)`.
pub async fn host_with_panicking_clock() -> TestHost {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let mut config = config(dir.path().join("state.db"), ws.clone());
    let mut providers =
        agent_libos::providers::Providers::host(&ws, &config.reserved_paths()).expect("providers");
    providers.clock = std::sync::Arc::new(PanickingClock);
    config.providers = Some(providers);
    let kernel = Kernel::open(config).await.expect("open kernel");
    TestHost { dir, kernel }
}

/// A tool that sleeps `args.ms` and returns it: with [`host_with_panicking_clock`], the
/// panic happens inside the tool's syscall, under the engine.
pub const SLEEPER: &str = r#"export const tool = {
  name: "sleeper",
  description: "Sleeps a while",
  input: { type: "object", properties: { ms: { type: "integer" } }, required: ["ms"] },
  output: { type: "object", properties: { slept: { type: "integer" } }, required: ["slept"] },
};

export default async function run(args: { ms: number }, libos: any) {
  await libos.clock.sleep(args.ms);
  return { slept: args.ms };
}
"#;

/// Proposes `source` as `pid`; the kernel's answer (`id`, `hash`).
pub async fn propose_report(kernel: &Kernel, pid: Pid, source: &str) -> Value {
    kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Propose {
                source: source.into(),
            }),
        )
        .await
        .unwrap()
}

/// Proposes `source` as `pid`; the candidate's id.
pub async fn propose(kernel: &Kernel, pid: Pid, source: &str) -> String {
    propose_report(kernel, pid, source).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Proposes, validates (which must pass) and registers `source` as `pid`; the tool's name.
pub async fn install(kernel: &Kernel, pid: Pid, source: &str) -> Result<String, SyscallError> {
    let id = propose(kernel, pid, source).await;
    let report = kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await?;
    assert_eq!(report["ok"], true, "validation: {report}");
    let reg = kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id }))
        .await?;
    Ok(reg["name"].as_str().unwrap().to_string())
}

/// Calls `pid`'s tool `name` with `args`.
pub async fn call(
    kernel: &Kernel,
    pid: Pid,
    name: &str,
    args: Value,
) -> Result<Value, SyscallError> {
    kernel
        .syscall(
            pid,
            Syscall::Tool(JitCall::Call {
                name: name.into(),
                args,
            }),
        )
        .await
}

/// A loopback HTTP/1.1 server that records `METHOD path` of every request it receives and
/// answers each `200 ok`.
pub struct CountingServer {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CountingServer {
    pub fn start() -> CountingServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let (mut head, mut length) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
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
                    let request = format!(
                        "{} {}",
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or("")
                    );
                    log.lock().unwrap().push(request);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                });
            }
        });
        CountingServer { port, seen }
    }

    /// How many requests `METHOD path` it received.
    pub fn count(&self, request: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| *r == request)
            .count()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
