//! `agent-libos tool init NAME`: writes a tool skeleton that `tool check` accepts — metadata,
//! a declared test and a typed `run` — with the `libos` types and the editor configuration
//! (`tsconfig.json`, `deno.json`) that resolve `import type { … } from "libos"` to them.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::typecheck::{COMPILER_OPTIONS, LIBOS_D_TS};
use super::{exit, Ctx, Failure};

#[derive(Debug, Args)]
pub struct ToolInitArgs {
    /// The tool's name: lowercase letters, digits and `_`, starting with a letter
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The directory to write into (created if missing)
    #[arg(long, value_name = "DIR", default_value = "tools")]
    pub dir: PathBuf,
    /// Replace NAME.ts if it exists
    #[arg(long)]
    pub force: bool,
}

/// The skeleton of a tool named `name`.
pub fn skeleton(name: &str) -> String {
    format!(
        r#"import type {{ Libos, Tool }} from "libos"; // type-only: erased, nothing is loaded

type Args = {{ path: string }};
type Out = {{ lines: number }};

export const tool = {{
  name: "{name}",
  description: "Count the non-empty lines of a text file.",
  input: {{ type: "object", properties: {{ path: {{ type: "string" }} }}, required: ["path"] }},
  output: {{ type: "object", properties: {{ lines: {{ type: "integer" }} }}, required: ["lines"] }},
  tests: [{{
    name: "counts the non-empty lines",
    args: {{ path: "a.txt" }},
    syscalls: [{{ primitive: "fs.read_text", args: {{ path: "a.txt" }}, result: "a\nb\n\nc\n" }}],
    expect: {{ lines: 3 }},
  }}],
}} satisfies Tool<Args, Out>;

export default async function run(args: Args, libos: Libos): Promise<Out> {{
  const text = await libos.fs.readText(args.path);
  return {{ lines: text.split("\n").filter((line) => line.length > 0).length }};
}}
"#
    )
}

fn tsconfig() -> String {
    let mut options: serde_json::Value =
        serde_json::from_str(COMPILER_OPTIONS).expect("the compiler options are JSON");
    options["paths"] = json!({ "libos": ["./libos.d.ts"] });
    serde_json::to_string_pretty(&json!({ "compilerOptions": options, "include": ["*.ts"] }))
        .expect("serializable")
        + "\n"
}

fn deno_json() -> String {
    serde_json::to_string_pretty(&json!({
        "imports": { "libos": "./libos.d.ts" },
        "compilerOptions": { "strict": true, "lib": ["esnext"] }
    }))
    .expect("serializable")
        + "\n"
}

pub async fn run(ctx: &Ctx, args: ToolInitArgs) -> Result<i32> {
    if !crate::jit::is_valid_tool_name(&args.name) {
        return Err(Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("tool init: invalid tool name '{}'", args.name),
        )
        .hint("a name is lowercase letters, digits and `_`, starting with a letter (at most 64), e.g. `count_lines`")
        .into());
    }
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| io_failure(dir, e))?;
    let tool_file = dir.join(format!("{}.ts", args.name));
    if tool_file.exists() && !args.force {
        return Err(Failure::new(
            "AlreadyExists",
            exit::INVALID,
            format!("tool init: {} already exists", tool_file.display()),
        )
        .hint("choose another NAME or --dir, or pass --force to replace it")
        .into());
    }
    let mut written = Vec::new();
    write(&tool_file, &skeleton(&args.name), &mut written)?;
    // The types are the binary's own: refreshed whenever they differ.
    let types = dir.join("libos.d.ts");
    if std::fs::read_to_string(&types).ok().as_deref() != Some(LIBOS_D_TS) {
        write(&types, LIBOS_D_TS, &mut written)?;
    }
    for (file, content) in [("tsconfig.json", tsconfig()), ("deno.json", deno_json())] {
        let path = dir.join(file);
        if !path.exists() {
            write(&path, &content, &mut written)?;
        }
    }
    ctx.print(
        &json!({"tool": tool_file, "written": written}),
        || {
            let mut lines: Vec<String> = written
                .iter()
                .map(|p| format!("wrote {}", p.display()))
                .collect();
            lines.push(format!(
                "next: agent-libos tool check {0} && agent-libos tool run {0} --args '{{\"path\":\"README.md\"}}' --allow-read=README.md",
                tool_file.display()
            ));
            lines.join("\n")
        },
    );
    Ok(exit::OK)
}

fn write(path: &Path, content: &str, written: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::write(path, content).map_err(|e| io_failure(path, e))?;
    written.push(path.to_path_buf());
    Ok(())
}

fn io_failure(path: &Path, e: std::io::Error) -> anyhow::Error {
    Failure::new(
        "IoError",
        exit::INVALID,
        format!("tool init: cannot write {}: {e}", path.display()),
    )
    .hint("pass a writable directory with --dir")
    .into()
}
