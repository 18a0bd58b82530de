//! Text on the terminal: what a tool, a model or a file controls is shown, never obeyed.
//!
//! Tool-controlled text (previews of writes, questions, error messages, stack traces,
//! results) can hold escape sequences: `ESC[2K\r` erases the line a human is about to
//! approve, a bidirectional override reorders what they read. Every line the CLI prints goes
//! through [`out`] or [`err`], which show control characters (C0, DEL, C1) and Unicode
//! bidirectional controls as escapes (`\u{1b}`, `\r`); [`line`] also escapes newlines, for
//! values that must stay on one line. A test (`tests/tidy.rs`) keeps the CLI from printing any
//! other way; [`progress`] is for the CLI's own control sequences only.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

/// Whether `c` must be shown escaped (newlines and tabs aside).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if keep(c) || !is_unsafe(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `text` with every control character escaped except newlines and tabs.
pub fn block(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// `text` on one line: every control character escaped, newlines included.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// Prints `text` (escaped, see [`block`]) and a newline to stdout. When the reader has gone
/// (`agent-libos --json ps | head -c 10`), the command stops quietly with exit 0, as a
/// pipeline expects, instead of failing on every later line.
pub fn out(text: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{}", block(text.as_ref())).and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Prints `text` (escaped, see [`block`]) and a newline to stderr (a closed stderr is
/// ignored).
pub fn err(text: impl AsRef<str>) {
    let _ = writeln!(std::io::stderr(), "{}", block(text.as_ref()));
}

/// Writes `text` (escaped, see [`block`]) to stderr with no newline, and flushes it.
pub fn prompt(text: impl AsRef<str>) {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{}", block(text.as_ref()));
    let _ = stderr.flush();
}

/// Prints the CLI's own styled text (colour sequences around parts already escaped with
/// [`block`] or [`line`]) and a newline to stdout.
pub fn styled_out(text: &str) {
    println!("{text}");
}

/// [`styled_out`] on stderr.
pub fn styled_err(text: &str) {
    eprintln!("{text}");
}

/// Writes the CLI's own progress line (control sequences included) to stderr.
pub fn progress(text: &str) {
    let _ = write!(std::io::stderr(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            block("ok\x1b[2K\rfake\n\tnext"),
            "ok\\u{1b}[2K\\rfake\n\tnext"
        );
        assert_eq!(line("a\nb\u{202e}c\u{9b}"), "a\\nb\\u{202e}c\\u{9b}");
        assert!(matches!(block("plain text, é"), Cow::Borrowed(_)));
    }
}
