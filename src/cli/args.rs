//! The low layer of the command line: what the user typed, checked only for shape.
//!
//! Nothing here touches the host (no files, no database): [`super::config`] turns these into
//! validated settings, and each command module acts on them. Every subcommand carries an
//! example in its `after_help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the tool threw (ToolError), or a check failed (replay case, audit chain)
  2  invalid input, or the tool was rejected by validation
  3  permission denied (no capability, a deny rule, or a human rejected it)
  4  a limit was exceeded (cpu_time, memory, syscalls, result_size, console_output, ...)
  5  waiting for a human (a request is pending and no one is attached)";

const TOP_HELP: &str = "\
Examples:
  agent-libos tool check tools/grep.ts
  agent-libos tool run tools/grep.ts --args '{\"pattern\":\"TODO\"}' --allow-read=src
  agent-libos run coder --goal 'Fix the build' --model gpt-4o --grant 'fs:**=read'
  agent-libos human list
  agent-libos audit verify
  agent-libos replay fixtures/
  agent-libos demo

Exit codes:
  0  success
  1  the tool threw (ToolError), or a check failed (replay case, audit chain)
  2  invalid input, or the tool was rejected by validation
  3  permission denied (no capability, a deny rule, or a human rejected it)
  4  a limit was exceeded (cpu_time, memory, syscalls, result_size, console_output, ...)
  5  waiting for a human (a request is pending and no one is attached)";

/// Agent libOS: a runtime for long-running LLM agents.
#[derive(Debug, Parser)]
#[command(name = "agent-libos", version, about, after_help = TOP_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// The state database [default: state.db in $XDG_STATE_HOME/agent-libos/<workspace>-<hash>/, or ~/.local/state/…]
    #[arg(long, global = true, env = "AGENT_LIBOS_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The workspace directory processes see as their root [default: current directory]
    #[arg(long, global = true, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Machine-readable output on stdout (`{"ok":true,"result":…}`); logs stay on stderr
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v, -vv, -vvv); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Run shell commands WITHOUT the OS sandbox (with the runtime's own authority, confined
    /// only by the argv policy); recorded in the audit record of every command
    #[arg(long, global = true)]
    pub unsandboxed_shell: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// Check, test and run JIT TypeScript tools
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Run fixture files and compare outcomes
    #[command(after_help = "\
Examples:
  agent-libos replay fixtures/
  agent-libos replay fixtures/fs_read.json -j 4 --junit report.xml
  agent-libos replay fixtures/fs_read.json --record")]
    Replay(ReplayArgs),
    /// List processes
    #[command(after_help = "\
Examples:
  agent-libos ps
  agent-libos ps --all --json")]
    Ps(PsArgs),
    /// Answer the human queue: approvals, permissions, questions
    #[command(subcommand)]
    Human(HumanCommand),
    /// Inspect, verify and export the hash-chained audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Checkpoint, roll back, fork, export and import process state
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Register and list agent images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Drive a process with a chat model until it exits
    #[command(after_help = "\
Examples:
  OPENAI_API_KEY=sk-... agent-libos run coder --goal 'Make the failing test pass' \\
      --model gpt-4o --grant 'fs:**=read' --grant 'fs:src/**=write:ask'
  agent-libos run images/coder.toml --goal 'Count the TODOs' --script run.jsonl
  agent-libos run --resume 7 --model gpt-4o

A call under an ask policy parks the process until `agent-libos human approve ID`
(from another terminal). Exit 0 when the process exited, 4 when a --max-* limit
stopped it, 2 on a model error (the process stays resumable with --resume).")]
    Run(RunArgs),
    /// Serve libOS to an MCP client over stdio (stdout is the protocol; logs on stderr)
    #[command(after_help = "\
Examples:
  agent-libos mcp --workspace ~/project \\
      --image coder --grant 'fs:**=read' --grant 'tool:*=create' \\
      --requestable 'fs:src/**=write'

Each session process starts from --image with exactly the --grant capabilities and
may ask a human only for what --requestable allows. No MCP tool grants capabilities
or answers human requests; with --elicitation the client's UI shows them to its user,
and the client's answer counts as the human's.")]
    Mcp(McpArgs),
    /// Finish interrupted tool calls from their journals; list the live processes
    #[command(after_help = "\
Examples:
  agent-libos resume
  agent-libos --db run/state.db resume --json

Re-runs every tool invocation that was running or waiting for a human (recorded
syscalls return their recorded outcomes; nothing journaled happens twice; an
approval given meanwhile is used), then lists the non-terminal processes.")]
    Resume,
    /// What this host offers the shell sandbox, and a self-test of it
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// A short, offline story of the runtime at work
    #[command(after_help = "\
Examples:
  agent-libos demo
  agent-libos --json demo
  agent-libos demo --keep /tmp/demo && agent-libos --db /tmp/demo/state.db audit show")]
    Demo(DemoArgs),
    /// Show a process's log: the console output of its tool calls
    #[command(after_help = "\
Examples:
  agent-libos logs 3
  agent-libos logs 3 --follow
  agent-libos --json logs 3

With --follow, new lines are printed as they are written until the process ends
(with --json, one JSON object per line).")]
    Logs(LogsArgs),
    /// Stop a process now (the kill signal): its running work is dropped and it ends KILLED
    #[command(after_help = "Examples:\n  agent-libos kill 3")]
    Kill {
        /// The process to kill
        pid: i64,
    },
    /// Send a signal to a process: pause, resume, cancel or kill
    #[command(after_help = "\
Examples:
  agent-libos signal 3 pause
  agent-libos signal 3 resume
  agent-libos signal 3 cancel     # its next syscall fails with Cancelled, then it ends KILLED")]
    Signal {
        /// The process to signal
        pid: i64,
        /// pause, resume, cancel or kill
        #[arg(value_parser = ["pause", "resume", "cancel", "kill"])]
        signal: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "\
Examples:
  agent-libos completions bash > ~/.local/share/bash-completion/completions/agent-libos
  agent-libos completions zsh > ~/.zfunc/_agent-libos
  agent-libos completions fish > ~/.config/fish/completions/agent-libos.fish")]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The process whose log to show
    pub pid: i64,
    /// Keep printing new lines until the process ends
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Print the Landlock ABI, seccomp, namespaces and limits this host supports, then try
    /// to break a sandbox: a read, a write, a connect and a background child that must fail
    #[command(after_help = "\
Examples:
  agent-libos sandbox check
  agent-libos sandbox check --json

Exit 0 when commands run sandboxed and every self-test check held, 1 otherwise.")]
    Check,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum ToolCommand {
    /// Validate a tool: parse, static rules, types, schemas, declared tests
    #[command(after_help = "\
Examples:
  agent-libos tool check tools/grep.ts
  agent-libos tool check tools/ other/count.ts --json

Each finding is printed as FILE:line:col rule: message. Exit 2 if any.
Types are checked with TypeScript's tsc against the libos types when one is found
(AGENT_LIBOS_TSC, node_modules here or above, beside the binary, or PATH;
scripts/setup installs it); otherwise a note says the type check was skipped.")]
    Check(ToolFileArgs),
    /// Run the tool's declared tests with mocked syscalls
    #[command(after_help = "\
Examples:
  agent-libos tool test tools/grep.ts
  agent-libos tool test tools/ --watch

The closing line is `N passed, N failed`; exit 2 if any failed.")]
    Test(ToolFileArgs),
    /// Run a tool once in a fresh process, with exactly the grants given
    #[command(after_help = "\
Examples:
  agent-libos tool run tools/count.ts --args '{\"path\":\"README.md\"}' --allow-read=README.md
  agent-libos tool run tools/fix.ts --allow-read --allow-write=src --allow-run=cargo
  agent-libos tool run tools/post.ts --allow-net=api.example.org:443 --trace
  agent-libos tool run tools/save.ts --grant 'fs:out.txt=write:ask_each_time' --ask
  agent-libos tool run tools/count.ts --args @args.json --cpu-ms 5000
  echo '{\"path\":\"a.md\"}' | agent-libos tool run tools/count.ts --args -

The tool's console.* lines are printed to stderr as `console.LEVEL: TEXT` (and are
in the --json result as `console`); `agent-libos logs PID` shows them later.

Nothing is allowed by default. The run uses the --db database (default: the
workspace's state directory under ~/.local/state/agent-libos), so `agent-libos ps` and `agent-libos audit show` work
afterwards. The CLI, as operator, also grants tool:<name>=create to the
process so that it can register the tool it is loading.")]
    Run(ToolRunArgs),
    /// Write a tool skeleton (metadata, a declared test, typed run) and editor types
    #[command(after_help = "\
Examples:
  agent-libos tool init count_lines
  agent-libos tool init grep --dir scripts/tools

Writes DIR/NAME.ts, DIR/libos.d.ts (the libos types), and DIR/tsconfig.json and
DIR/deno.json (if missing) so that editors resolve `import type { Libos } from \"libos\"`.")]
    Init(super::tool_init::ToolInitArgs),
}

#[derive(Debug, Args)]
pub struct ToolFileArgs {
    /// Tool sources: .ts files, or directories (their *.ts files, not recursively)
    #[arg(value_name = "FILE.ts|DIR", required = true)]
    pub files: Vec<PathBuf>,
    /// Check again whenever one of the files changes (polls modification times)
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args, Default, Clone)]
pub struct ToolRunArgs {
    /// The tool's TypeScript source
    #[arg(value_name = "FILE.ts")]
    pub file: PathBuf,
    /// The call's arguments: a JSON object, @FILE to read it from a file, or - for stdin
    #[arg(long, value_name = "JSON|@FILE|-", default_value = "{}")]
    pub args: String,
    /// The operator's maximum of JavaScript time per call, in ms (the tool's own `limits`
    /// may lower it, never raise it) [default: 1000]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub cpu_ms: Option<u64>,
    /// The operator's maximum isolate heap per call, in MiB [default: 64]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub heap_mb: Option<u64>,
    /// The operator's maximum of syscalls per call [default: 1000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_syscalls: Option<u64>,
    /// Run again whenever the tool file changes (polls its modification time)
    #[arg(long)]
    pub watch: bool,
    /// Allow reading files: no value = every file; a directory covers its whole tree
    #[arg(long, value_name = "PATHS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub allow_read: Vec<String>,
    /// Allow writing files (not deleting): no value = every file
    #[arg(long, value_name = "PATHS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub allow_write: Vec<String>,
    /// Allow running these commands (argv0, exact); a blanket allow is not offered
    #[arg(long, value_name = "CMDS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "", action = clap::ArgAction::Append)]
    pub allow_run: Vec<String>,
    /// Allow network requests to HOST or HOST:PORT (read and write)
    #[arg(long, value_name = "HOSTS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub allow_net: Vec<String>,
    /// Deny reading files (beats any allow)
    #[arg(long, value_name = "PATHS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub deny_read: Vec<String>,
    /// Deny writing files (beats any allow)
    #[arg(long, value_name = "PATHS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub deny_write: Vec<String>,
    /// Deny running these commands
    #[arg(long, value_name = "CMDS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub deny_run: Vec<String>,
    /// Deny network requests to these hosts
    #[arg(long, value_name = "HOSTS", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**", action = clap::ArgAction::Append)]
    pub deny_net: Vec<String>,
    /// A capability RESOURCE=RIGHTS[:POLICY], e.g. object:obj_1=read or fs:out.txt=write:ask
    #[arg(long, value_name = "RESOURCE=RIGHTS[:POLICY]")]
    pub grant: Vec<String>,
    /// A capability RESOURCE=RIGHTS the tool may ask a human for (repeatable)
    #[arg(long, value_name = "RESOURCE=RIGHTS")]
    pub requestable: Vec<String>,
    /// Prompt on this terminal for ask_each_time approvals (y once / a always / n reject)
    #[arg(long)]
    pub ask: bool,
    /// Print every syscall of the run with its decision to stderr
    #[arg(long)]
    pub trace: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Fixture files, or directories holding *.json fixtures
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Write (or refresh) the expected outcomes from this run
    #[arg(long)]
    pub record: bool,
    /// Also write a JUnit XML report
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Cases to run in parallel [default: the machine's cores]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include ended processes (EXITED, FAILED, KILLED)
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum HumanCommand {
    /// List requests (pending only unless --all)
    #[command(after_help = "\
Examples:
  agent-libos human list
  agent-libos human list --all --json")]
    List {
        /// Include answered requests
        #[arg(short, long)]
        all: bool,
    },
    /// Show one request with its payload
    #[command(after_help = "Examples:\n  agent-libos human show hr_0123")]
    Show {
        /// The request's id (hr_…)
        id: String,
    },
    /// Approve a pending approval or permission request
    #[command(after_help = "\
Examples:
  agent-libos human approve hr_0123
  agent-libos human approve hr_0123 --always
  agent-libos human approve hr_0123 --pattern     # always, for the whole granted pattern")]
    Approve {
        /// The request's id (hr_…)
        id: String,
        /// Approve this and every later call on the same resource (grants always_allow)
        #[arg(long)]
        always: bool,
        /// Approve this and every later call under the ask capability that matched (its
        /// pattern, e.g. fs:docs/**, for the requested right)
        #[arg(long, conflicts_with = "always")]
        pattern: bool,
        /// Who is answering [default: $USER]
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Reject a pending request
    #[command(
        after_help = "Examples:\n  agent-libos human reject hr_0123 --reason 'not that file'"
    )]
    Reject {
        /// The request's id (hr_…)
        id: String,
        /// Why (the process sees it)
        #[arg(long, default_value = "")]
        reason: String,
        /// Who is answering [default: $USER]
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Answer a pending question
    #[command(
        after_help = "Examples:\n  agent-libos human answer hr_0123 'use the staging database'"
    )]
    Answer {
        /// The request's id (hr_…)
        id: String,
        /// The answer (one of the choices, if the question has any)
        text: String,
        /// Who is answering [default: $USER]
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit records, oldest first
    #[command(after_help = "\
Examples:
  agent-libos audit show
  agent-libos audit show --pid 3 --limit 20
  agent-libos audit show --action fs.write_text --json")]
    Show(AuditShowArgs),
    /// Verify the hash chain; exits 1 naming the first broken record
    #[command(after_help = "Examples:\n  agent-libos audit verify")]
    Verify,
    /// Write every record as JSON lines
    #[command(after_help = "\
Examples:
  agent-libos audit export audit.jsonl
  agent-libos audit export -        # to stdout")]
    Export {
        /// Output file, or - for stdout
        #[arg(value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AuditShowArgs {
    /// Only records by this process
    #[arg(long)]
    pub pid: Option<i64>,
    /// Only records of this action (e.g. fs.write_text)
    #[arg(long)]
    pub action: Option<String>,
    /// Only the last N records
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Checkpoint a process's runtime state (memory, capabilities, tools, fields)
    #[command(after_help = "\
Examples:
  agent-libos checkpoint create 3 --name before-refactor
  agent-libos checkpoint create 3 --json")]
    Create {
        /// The process to checkpoint
        pid: i64,
        /// A name to find it by
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List checkpoints, oldest first
    #[command(after_help = "\
Examples:
  agent-libos checkpoint list
  agent-libos checkpoint list 3 --json")]
    List {
        /// Only checkpoints of this process
        pid: Option<i64>,
    },
    /// Roll a process back to a checkpoint (effects outside the runtime are NOT undone)
    #[command(after_help = "\
Examples:
  agent-libos checkpoint rollback ckpt_0123

Restores the process's object memory, capabilities, tool table and fields. Files
written, commands run and requests sent since the checkpoint are listed, not undone.")]
    Rollback {
        /// The checkpoint's id (ckpt_…)
        id: String,
    },
    /// Start a new process (a sibling) from a checkpoint
    #[command(after_help = "Examples:\n  agent-libos checkpoint fork ckpt_0123")]
    Fork {
        /// The checkpoint's id (ckpt_…)
        id: String,
    },
    /// Write a checkpoint as a self-contained JSON document
    #[command(after_help = "\
Examples:
  agent-libos checkpoint export ckpt_0123 --out ckpt.json
  agent-libos checkpoint export ckpt_0123 --out -      # to stdout")]
    Export {
        /// The checkpoint's id (ckpt_…)
        id: String,
        /// Output file, or - for stdout
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Resume an exported checkpoint as a new root process in this database
    #[command(after_help = "\
Examples:
  agent-libos --db other/state.db checkpoint import ckpt.json --grant 'fs:notes/**=read,write'
  agent-libos checkpoint import ckpt.json --register-image

A document grants nothing: the process gets its own namespace and exactly the --grant
capabilities; the document's capabilities are listed, not granted.")]
    Import {
        /// The checkpoint document (from `checkpoint export`)
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Grant the imported process RESOURCE=RIGHTS[:POLICY] (repeatable)
        #[arg(long = "grant", value_name = "RESOURCE=RIGHTS[:POLICY]")]
        grants: Vec<String>,
        /// Register the document's image manifest if this database lacks the image
        #[arg(long)]
        register_image: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image id (`base` for the empty built-in image) or a manifest .toml (registered first)
    #[arg(value_name = "IMAGE", required_unless_present = "resume")]
    pub image: Option<String>,
    /// The process's goal (its first user message)
    #[arg(long, value_name = "TEXT", required_unless_present = "resume")]
    pub goal: Option<String>,
    /// Continue process PID after a restart, from its stored transcript
    #[arg(long, value_name = "PID", conflicts_with_all = ["image", "goal", "grant", "requestable", "cwd"])]
    pub resume: Option<i64>,
    /// OpenAI-compatible base URL (`/chat/completions` is appended)
    #[arg(long, value_name = "URL", default_value = "https://api.openai.com/v1")]
    pub model_url: String,
    /// Model name (required unless --script)
    #[arg(long, value_name = "NAME", required_unless_present = "script")]
    pub model: Option<String>,
    /// Environment variable holding the API key (the key is never a flag value)
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Replay a scripted model (JSON array or JSONL of replies) instead of calling HTTP
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub script: Option<PathBuf>,
    /// A capability RESOURCE=RIGHTS[:POLICY] for the process (repeatable)
    #[arg(long, value_name = "RESOURCE=RIGHTS[:POLICY]")]
    pub grant: Vec<String>,
    /// A capability RESOURCE=RIGHTS the process may ask a human for (repeatable)
    #[arg(long, value_name = "RESOURCE=RIGHTS")]
    pub requestable: Vec<String>,
    /// Workspace-relative working directory of the process
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Model calls
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_steps: u32,
    /// Total tokens reported by the model
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Wall time of the loop, e.g. 90s, 30m, 2h (a bare number is seconds)
    #[arg(long, value_name = "DURATION")]
    pub wall_time: Option<String>,
    /// Per-request timeout, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout: u64,
    /// Retries on 429, 5xx and network errors
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub retries: u32,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Image every process of a session starts from: an id or a manifest .toml
    #[arg(long, value_name = "IMAGE", default_value = "base")]
    pub image: String,
    /// A capability RESOURCE=RIGHTS[:POLICY] each session process gets (repeatable): the
    /// ceiling of what a client can do
    #[arg(long, value_name = "RESOURCE=RIGHTS[:POLICY]")]
    pub grant: Vec<String>,
    /// A capability RESOURCE=RIGHTS a session process may ask a human for (repeatable;
    /// human.request_permission beyond these is refused without asking)
    #[arg(long, value_name = "RESOURCE=RIGHTS")]
    pub requestable: Vec<String>,
    /// Show pending human requests to the user through the client (MCP elicitation). This
    /// trusts the client's UI: whatever the client answers counts as the human's answer.
    /// Off by default: requests are answered with `agent-libos human approve`
    #[arg(long)]
    pub elicitation: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Register an image from its TOML manifest
    #[command(after_help = "\
Examples:
  agent-libos image register images/coder.toml

A manifest:
  id = \"coder\"
  version = \"1.0.0\"
  [[capabilities]]
  resource = \"fs:src/**\"
  rights = [\"read\"]")]
    Register {
        /// The image's TOML manifest
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
    },
    /// List registered images
    #[command(after_help = "Examples:\n  agent-libos image list --json")]
    List,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's database and workspace in DIR (state.db, workspace/)
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// Parses the process arguments (clap prints help/usage and exits on its own).
pub fn parse() -> Cli {
    Cli::parse()
}
