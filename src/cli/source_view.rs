//! How the CLI shows a tool's problems in the user's own file: errors and stack traces name
//! the path the user gave (`tools/count.ts:8:17`) instead of the module specifier the
//! runtime loaded the tool under (`tool:<hash>.ts`), and findings get a code frame and
//! colours when the stream is a terminal (never with `NO_COLOR` set).

use std::io::IsTerminal;
use std::path::Path;

use serde_json::Value;

use super::terminal;
use crate::kernel::SyscallError;

/// The specifier the kernel loads a tool with `source` under.
fn specifier_of(source: &str) -> String {
    crate::kernel::tool_specifier(&crate::util::sha256_hex(source.as_bytes()))
}

/// `err` with the tool's module specifier replaced by the user's `file` in its message and
/// stack trace.
pub fn in_user_file(err: SyscallError, source: &str, file: &Path) -> SyscallError {
    let specifier = specifier_of(source);
    let path = file.display().to_string();
    match err {
        SyscallError::ToolError { message, stack } => SyscallError::ToolError {
            message: message.replace(&specifier, &path),
            stack: stack.replace(&specifier, &path),
        },
        other => other,
    }
}

/// Where a finding's lines go.
#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Whether `stream` gets colours and code frames: a terminal, and `NO_COLOR` unset or empty.
fn styled(stream: Stream) -> bool {
    let tty = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

const RED_BOLD: &str = "\x1b[1;31m";
const CYAN: &str = "\x1b[36m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Prints a finding (`FILE:line:col rule: message`) to `stream`; on a terminal in colour,
/// followed by the lines around it with a caret under its column.
pub fn print_finding(stream: Stream, file: &Path, source: &str, f: &Value) {
    let line = f["line"].as_u64().unwrap_or(0) as usize;
    let column = f["column"].as_u64().unwrap_or(0) as usize;
    let rule = f["rule"].as_str().unwrap_or("?");
    let message = f["message"].as_str().unwrap_or("");
    let at = format!("{}:{line}:{column}", file.display());
    if !styled(stream) {
        emit(stream, &terminal::block(&format!("{at} {rule}: {message}")));
        return;
    }
    let mut text = format!(
        "{CYAN}{}{RESET} {RED_BOLD}{}{RESET}: {}",
        terminal::line(&at),
        terminal::line(rule),
        terminal::block(message)
    );
    text.push_str(&frame(source, line, column));
    emit(stream, &text);
}

/// The lines before and at `line` (1-based), numbered, with a caret under `column`.
fn frame(source: &str, line: usize, column: usize) -> String {
    if line == 0 {
        return String::new();
    }
    let lines: Vec<&str> = source.lines().collect();
    let Some(target) = lines.get(line - 1) else {
        return String::new();
    };
    let width = line.to_string().len();
    let mut out = String::new();
    if line >= 2 {
        out.push_str(&format!(
            "\n{DIM}{:>width$} |{RESET} {}",
            line - 1,
            terminal::line(lines[line - 2])
        ));
    }
    out.push_str(&format!(
        "\n{DIM}{line:>width$} |{RESET} {}",
        terminal::line(target)
    ));
    // The caret sits under the column's character, counting characters, tabs kept.
    let pad: String = target
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    out.push_str(&format!(
        "\n{DIM}{:>width$} |{RESET} {pad}{RED_BOLD}^{RESET}",
        ""
    ));
    out
}

fn emit(stream: Stream, text: &str) {
    match stream {
        Stream::Stdout => terminal::styled_out(text),
        Stream::Stderr => terminal::styled_err(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_points_at_the_column_and_escapes_the_source() {
        let f = frame("a\n  bad(\x1b[2K)\nc", 2, 3);
        assert!(f.contains("1 |"), "{f}");
        assert!(f.contains("bad(\\u{1b}[2K)"), "{f}");
        let caret_line = f.lines().last().unwrap();
        assert!(
            caret_line.ends_with(&format!("   {RED_BOLD}^{RESET}")),
            "{f:?}"
        );
        assert_eq!(frame("x", 5, 1), "");
    }

    #[test]
    fn tool_errors_name_the_users_file() {
        let source = "export default () => 1;";
        let spec = specifier_of(source);
        let err = SyscallError::ToolError {
            message: format!("Error: x at {spec}:1:2"),
            stack: format!("Error: x\n    at run ({spec}:1:2)"),
        };
        let SyscallError::ToolError { message, stack } =
            in_user_file(err, source, Path::new("tools/a.ts"))
        else {
            panic!()
        };
        assert!(stack.contains("at run (tools/a.ts:1:2)"), "{stack}");
        assert!(message.contains("tools/a.ts:1:2"), "{message}");
    }
}
