//! `tool check`'s type check: TypeScript's own checker (`tsc`) run on the tool against the
//! `libos` types (ts/libos.d.ts, built into the binary), with its errors located in the
//! user's file.
//!
//! The checker is looked for in `AGENT_LIBOS_TSC` (a path; `none` turns the check off), then
//! in `node_modules` of the current directory and its ancestors, then in `node_modules`
//! beside the running binary's ancestors (a source checkout after `scripts/setup`), then on
//! `PATH`. In a `node_modules`, the platform's native compiler of the `typescript` package
//! is run directly when present (no Node.js start-up), `.bin/tsc` otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The types a tool imports with `import type { Libos, Tool } from "libos"`.
pub const LIBOS_D_TS: &str = include_str!("../../ts/libos.d.ts");

/// The compiler options a tool is checked with (also written by `tool init`).
pub const COMPILER_OPTIONS: &str = r#"{
    "strict": true,
    "noEmit": true,
    "target": "es2022",
    "module": "esnext",
    "moduleResolution": "bundler",
    "lib": ["es2022"],
    "types": []
  }"#;

/// How long the checker may take before the type check is given up (and said so).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// One type error, in the checked file unless `file` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeError {
    /// Another file than the one checked (the `libos` types), when the error is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub line: usize,
    pub column: usize,
    /// TypeScript's code, e.g. `TS2322`.
    pub code: String,
    pub message: String,
}

/// What the type check found.
#[derive(Debug)]
pub enum Outcome {
    /// The checker ran; its errors (none: the tool type-checks).
    Checked(Vec<TypeError>),
    /// No checker could be run; why.
    Unavailable(String),
}

/// The checker to run, if one is found.
pub fn find_checker() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AGENT_LIBOS_TSC") {
        if path == "none" {
            return None;
        }
        return Some(PathBuf::from(path));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots
        .iter()
        .find_map(|root| in_node_modules(&root.join("node_modules")))
        .or_else(on_path)
}

fn in_node_modules(dir: &Path) -> Option<PathBuf> {
    let native = dir
        .join("@typescript")
        .join(format!("typescript-{}-{}", node_os(), node_arch()))
        .join("lib/tsc");
    [native, dir.join(".bin/tsc")]
        .into_iter()
        .find(|p| p.is_file())
}

fn node_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("tsc"))
        .find(|p| p.is_file())
}

/// The type check as `tool check` findings (rule `type`, the message led by TypeScript's
/// code); a note on stderr, and no findings, when no checker can be run.
pub fn findings(file: &Path) -> Vec<serde_json::Value> {
    let Some(checker) = find_checker() else {
        super::note(
            "types were not checked: no TypeScript checker found (run scripts/setup, or \
             `npm install typescript` in the tool's directory; AGENT_LIBOS_TSC names one)",
        );
        return Vec::new();
    };
    match check(file, &checker) {
        Outcome::Checked(errors) => errors
            .into_iter()
            .map(|e| {
                let message = match &e.file {
                    Some(other) => format!("{}: {} (in {other})", e.code, e.message),
                    None => format!("{}: {}", e.code, e.message),
                };
                let (line, column) = if e.file.is_some() { (1, 1) } else { (e.line, e.column) };
                serde_json::json!({"rule": "type", "message": message, "line": line, "column": column})
            })
            .collect(),
        Outcome::Unavailable(why) => {
            super::note(format!("types were not checked: {why}"));
            Vec::new()
        }
    }
}

/// Type-checks `file` against the `libos` types with `checker`.
pub fn check(file: &Path, checker: &Path) -> Outcome {
    match run_checker(file, checker) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Unavailable(format!("{}: {e}", checker.display())),
    }
}

fn run_checker(file: &Path, checker: &Path) -> std::io::Result<Outcome> {
    let user_file = std::fs::canonicalize(file)?;
    let dir = tempfile::Builder::new()
        .prefix("agent-libos-typecheck-")
        .tempdir()?;
    std::fs::write(dir.path().join("libos.d.ts"), LIBOS_D_TS)?;
    let mut config = serde_json::json!({
        "compilerOptions": serde_json::from_str::<serde_json::Value>(COMPILER_OPTIONS)
            .expect("the compiler options are JSON"),
        "files": ["./libos.d.ts", user_file],
    });
    config["compilerOptions"]["paths"] = serde_json::json!({ "libos": ["./libos.d.ts"] });
    std::fs::write(dir.path().join("tsconfig.json"), config.to_string())?;
    let out_path = dir.path().join("checker.out");
    let out_file = std::fs::File::create(&out_path)?;
    let mut child = Command::new(checker)
        .args(["-p", "tsconfig.json", "--pretty", "false"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out_file.try_clone()?)
        .stderr(out_file)
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > CHECK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Outcome::Unavailable(format!(
                "{} took longer than {} s",
                checker.display(),
                CHECK_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&out_path)?).into_owned();
    let errors = parse(&text, dir.path(), &user_file);
    if !status.success() && errors.is_empty() {
        let first = text.lines().next().unwrap_or("no output").to_string();
        return Ok(Outcome::Unavailable(format!(
            "{} exited with {status} ({first})",
            checker.display(),
        )));
    }
    Ok(Outcome::Checked(errors))
}

/// Parses `tsc --pretty false` output (`path(line,col): error TSnnnn: message`, with a
/// message's further lines indented below it).
fn parse(text: &str, cwd: &Path, user_file: &Path) -> Vec<TypeError> {
    let mut errors: Vec<TypeError> = Vec::new();
    for line in text.lines() {
        if let Some(e) = parse_line(line, cwd, user_file) {
            errors.push(e);
        } else if line.starts_with(' ') {
            if let Some(last) = errors.last_mut() {
                last.message.push('\n');
                last.message.push_str(line);
            }
        }
    }
    errors
}

fn parse_line(line: &str, cwd: &Path, user_file: &Path) -> Option<TypeError> {
    let (location, rest) = line.split_once("): error ")?;
    let (path, position) = location.rsplit_once('(')?;
    let (l, c) = position.split_once(',')?;
    let (code, message) = rest.split_once(": ")?;
    let resolved = std::fs::canonicalize(cwd.join(path)).ok();
    let file = match resolved {
        Some(p) if p == user_file => None,
        _ => Some(
            Path::new(path)
                .file_name()
                .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned()),
        ),
    };
    Some(TypeError {
        file,
        line: l.trim().parse().ok()?,
        column: c.trim().parse().ok()?,
        code: code.to_string(),
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_errors_and_their_continuation_lines() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("t.ts");
        std::fs::write(&user, "").unwrap();
        let user = std::fs::canonicalize(user).unwrap();
        let out = "t.ts(3,9): error TS2322: Type 'string' is not assignable to type 'number'.\n\
                   libos.d.ts(1,2): error TS1005: ';' expected.\n  and more\nFound 2 errors.\n";
        let errors = parse(out, dir.path(), &user);
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[0].line, errors[0].column), (3, 9));
        assert_eq!(errors[0].code, "TS2322");
        assert_eq!(errors[0].file, None);
        assert_eq!(errors[1].file.as_deref(), Some("libos.d.ts"));
        assert!(errors[1].message.ends_with("and more"));
    }
}
