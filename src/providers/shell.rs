//! Shell provider: runs argv-only commands, and tells the kernel which commands an argv runs.
//!
//! Two halves. [`analyze`] is pure: given an argv it finds every program that will run — it
//! sees through `bash -c "a && b | c"`, wrappers such as `env`, `timeout` or `xargs`, and
//! `sudo` — or says the argv is opaque (a dynamic shell script, inline interpreter code) so
//! the kernel can ask a human instead of matching a capability. [`ProcessShell`] performs the
//! effect: no shell string, a scrubbed environment, the child in its own process group so a
//! timeout kills everything it started, and output capped without blocking the child.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::kernel::authz::CheckedCommand;
use crate::kernel::capability::Right;
use crate::kernel::error::{SysResult, SyscallError};

#[derive(Debug, Clone, Copy)]
pub struct ShellLimits {
    pub timeout_ms: u64,
    pub max_output_bytes: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShellOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
}

#[async_trait]
pub trait Shell: Send + Sync {
    async fn run(
        &self,
        cmd: &CheckedCommand,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput>;
}

// ---------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------

/// What an argv runs, as far as can be known before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAnalysis {
    /// The commands whose argv0 must each be authorized (`shell:<argv0>` execute), argv0
    /// exactly as given (`/usr/bin/curl` is not `curl`).
    Commands(Vec<Vec<String>>),
    /// Cannot be checked statically; `resource` names what a human would approve (e.g.
    /// `shell:bash -c`, `shell:python3 -c`) and `reason` says why.
    Opaque { resource: String, reason: String },
}

/// Analyzes an argv before its capabilities are checked. Fails on invalid input: an empty
/// argv, an empty program name or a NUL byte.
pub fn analyze(argv: &[String]) -> Result<CommandAnalysis, String> {
    validate_argv(argv)?;
    analyze_at(argv, 0)
}

/// Deeper nesting than this (`bash -c "env bash -c '…'"`) is not worth untangling.
const MAX_DEPTH: usize = 8;

fn validate_argv(argv: &[String]) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("empty argv: a command needs at least a program name".into());
    };
    if program.is_empty() {
        return Err("empty program name".into());
    }
    match argv.iter().position(|arg| arg.contains('\0')) {
        Some(index) => Err(format!("argument {index} contains a NUL byte")),
        None => Ok(()),
    }
}

fn analyze_at(argv: &[String], depth: usize) -> Result<CommandAnalysis, String> {
    let Some(program) = argv.first() else {
        return Err("empty command".into());
    };
    if program.is_empty() {
        return Err("empty program name".into());
    }
    if depth > MAX_DEPTH {
        return Ok(opaque(
            format!("shell:{program}"),
            "commands are nested too deeply to be checked",
        ));
    }
    // A program outside the system directories may be anything (the agent could have
    // written `./bash`): it is not seen through, so it must be authorized itself.
    let Some(name) = system_program_name(program) else {
        return Ok(CommandAnalysis::Commands(vec![argv.to_vec()]));
    };
    if SHELLS.contains(&name) {
        return analyze_shell(argv, depth);
    }
    if OPAQUE_SHELLS.contains(&name) {
        return Ok(opaque(
            format!("shell:{program}"),
            "this shell's scripts cannot be checked",
        ));
    }
    if DYNAMIC_BUILTINS.contains(&name) {
        return Ok(opaque(
            format!("shell:{program}"),
            "eval/source run dynamic shell code that cannot be checked",
        ));
    }
    if let Some(wrapper) = WRAPPERS.iter().find(|w| w.name == name) {
        return analyze_wrapper(wrapper, argv, depth);
    }
    if let Some(elevator) = ELEVATORS.iter().find(|e| e.name == name) {
        return analyze_elevator(elevator, argv, depth);
    }
    if name == "su" {
        return analyze_su(argv, depth);
    }
    if let Some(interpreter) = interpreter_for(name) {
        return Ok(analyze_interpreter(interpreter, argv));
    }
    Ok(CommandAnalysis::Commands(vec![argv.to_vec()]))
}

fn opaque(resource: String, reason: impl Into<String>) -> CommandAnalysis {
    CommandAnalysis::Opaque {
        resource,
        reason: reason.into(),
    }
}

/// Directories whose programs are trusted to be what their names say.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/usr/bin",
    "/usr/local/bin",
    "/sbin",
    "/usr/sbin",
    "/usr/local/sbin",
];

/// The name by which a program is recognized as a shell, wrapper or interpreter: a bare name
/// (resolved through the scrubbed PATH of system directories) or the file name of a path in
/// a system directory (`/bin/bash` → `bash`); `None` for any other path (`./bash`). Only
/// used for recognition: the analysis always returns argv0 as given.
fn system_program_name(program: &str) -> Option<&str> {
    match program.rsplit_once('/') {
        None => Some(program),
        Some((dir, name)) if SYSTEM_DIRS.contains(&dir) => Some(name),
        Some(_) => None,
    }
}

/// Concatenates the commands of several analyses; the first opaque one wins.
fn combine(parts: Vec<CommandAnalysis>) -> CommandAnalysis {
    let mut commands = Vec::new();
    for part in parts {
        match part {
            CommandAnalysis::Commands(mut more) => commands.append(&mut more),
            opaque @ CommandAnalysis::Opaque { .. } => return opaque,
        }
    }
    CommandAnalysis::Commands(commands)
}

// ---- shells ----------------------------------------------------------------------------------

/// Shells whose `-c` scripts are parsed (POSIX-like syntax).
const SHELLS: &[&str] = &["bash", "sh", "zsh", "dash", "ksh", "ash", "mksh"];
/// Shells with other syntaxes: always opaque.
const OPAQUE_SHELLS: &[&str] = &["fish", "csh", "tcsh"];
/// Builtins that evaluate a string or a file as shell code.
const DYNAMIC_BUILTINS: &[&str] = &["eval", "source", "."];

/// How a shell was asked to get its commands.
enum ShellInput<'a> {
    /// `-c SCRIPT`.
    Script(&'a str),
    /// A script file.
    File(&'a str),
    /// Interactive or from stdin.
    Stdin,
}

fn analyze_shell(argv: &[String], depth: usize) -> Result<CommandAnalysis, String> {
    let program = &argv[0];
    match shell_input(&argv[1..])? {
        ShellInput::Script(script) => Ok(analyze_script(program, script, argv, depth)?),
        ShellInput::File(file) => Ok(opaque(
            format!("shell:{program} {file}"),
            "a shell script file cannot be checked",
        )),
        ShellInput::Stdin => Ok(opaque(
            format!("shell:{program} -s"),
            "an interactive shell or commands read from stdin cannot be checked",
        )),
    }
}

/// Reads a shell's options: `-c` (alone or clustered, `-lc`, `-ec`) makes the first operand
/// the script; `-o NAME`, `-O NAME`, `--rcfile FILE` take an argument.
fn shell_input(args: &[String]) -> Result<ShellInput<'_>, String> {
    let mut has_script_flag = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" || arg == "-" {
            i += 1;
            break;
        }
        if arg.starts_with("--") {
            i += if matches!(arg, "--rcfile" | "--init-file") {
                2
            } else {
                1
            };
            continue;
        }
        let is_option = (arg.starts_with('-') || arg.starts_with('+')) && arg.len() > 1;
        if !is_option {
            break;
        }
        let letters = &arg[1..];
        if arg.starts_with('-') && letters.contains('c') {
            has_script_flag = true;
        }
        i += if letters.contains(['o', 'O']) { 2 } else { 1 };
    }
    let operand = args.get(i).map(String::as_str);
    match (has_script_flag, operand) {
        (true, Some(script)) => Ok(ShellInput::Script(script)),
        (true, None) => Err("the shell's -c option needs a script argument".into()),
        (false, Some(file)) => Ok(ShellInput::File(file)),
        (false, None) => Ok(ShellInput::Stdin),
    }
}

fn analyze_script(
    shell: &str,
    script: &str,
    argv: &[String],
    depth: usize,
) -> Result<CommandAnalysis, String> {
    let Some(commands) = split_script(script) else {
        return Ok(opaque(
            format!("shell:{shell} -c"),
            "a dynamic shell script cannot be checked (it uses redirects, substitutions, \
             variables, globs, subshells, background jobs or control flow)",
        ));
    };
    let mut parts = Vec::new();
    for command in &commands {
        let (assignments, inner) = split_assignments(command);
        // A bare assignment (`X=1; cmd`) runs nothing.
        if !inner.is_empty() {
            parts.push(analyze_after_assignments(
                assignments,
                inner,
                command,
                depth,
            )?);
        }
    }
    // A script that runs nothing still runs the shell: make the shell itself the command.
    if parts.is_empty() {
        return Ok(CommandAnalysis::Commands(vec![argv.to_vec()]));
    }
    Ok(combine(parts))
}

/// A lexical token of a plain script.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    /// `&&`, `||`, `;` or `|`.
    Separator,
}

/// Splits a script made only of plain words joined by `&&`, `||`, `;` and `|` into its
/// commands (leading `NAME=value` assignments kept); `None` if it uses anything else.
fn split_script(script: &str) -> Option<Vec<Vec<String>>> {
    let tokens = tokenize(script)?;
    if tokens.is_empty() {
        return Some(Vec::new());
    }
    let mut commands = vec![Vec::new()];
    for token in tokens {
        match token {
            Token::Word(word) => commands.last_mut()?.push(word),
            Token::Separator => commands.push(Vec::new()),
        }
    }
    let well_formed = commands.iter().all(|command| !command.is_empty());
    let plain = commands.iter().all(|command| !starts_with_keyword(command));
    (well_formed && plain).then_some(commands)
}

/// Reserved words make control flow (`if x; then curl; fi`): not a plain list of commands.
fn starts_with_keyword(command: &[String]) -> bool {
    const KEYWORDS: &[&str] = &[
        "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until",
        "do", "done", "function", "coproc", "in", "!",
    ];
    let first = command.iter().find(|word| !is_assignment(word));
    first.is_some_and(|word| KEYWORDS.contains(&word.as_str()))
}

fn is_plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)
}

fn tokenize(script: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => flush(&mut word, &mut tokens),
            ';' => {
                flush(&mut word, &mut tokens);
                tokens.push(Token::Separator);
            }
            '&' | '|' => {
                flush(&mut word, &mut tokens);
                match chars.peek() {
                    Some(&next) if next == c => {
                        chars.next();
                    }
                    // A lone `&` backgrounds a job; `|&` pipes stderr too.
                    _ if c == '&' => return None,
                    Some('&') => return None,
                    _ => {}
                }
                tokens.push(Token::Separator);
            }
            '\'' => word
                .get_or_insert_with(String::new)
                .push_str(&single_quoted(&mut chars)?),
            '"' => word
                .get_or_insert_with(String::new)
                .push_str(&double_quoted(&mut chars)?),
            c if is_plain_char(c) => word.get_or_insert_with(String::new).push(c),
            _ => return None,
        }
    }
    flush(&mut word, &mut tokens);
    Some(tokens)
}

fn flush(word: &mut Option<String>, tokens: &mut Vec<Token>) {
    if let Some(word) = word.take() {
        tokens.push(Token::Word(word));
    }
}

/// The rest of a `'…'` string (everything is literal inside), without newlines.
fn single_quoted(chars: &mut impl Iterator<Item = char>) -> Option<String> {
    let mut text = String::new();
    for c in chars {
        match c {
            '\'' => return Some(text),
            '\n' | '\r' => return None,
            c => text.push(c),
        }
    }
    None
}

/// The rest of a `"…"` string, refusing anything the shell would expand in it.
fn double_quoted(chars: &mut impl Iterator<Item = char>) -> Option<String> {
    let mut text = String::new();
    for c in chars {
        match c {
            '"' => return Some(text),
            '$' | '`' | '\\' | '!' | '\n' | '\r' => return None,
            c => text.push(c),
        }
    }
    None
}

// ---- environment assignments ------------------------------------------------------------------

/// `NAME=value` with a valid shell variable name.
fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits leading assignments off a command: `FOO=1 BAR=2 cmd args` → (`[FOO=1, BAR=2]`,
/// `[cmd, args]`).
fn split_assignments(argv: &[String]) -> (&[String], &[String]) {
    let count = argv.iter().take_while(|word| is_assignment(word)).count();
    argv.split_at(count)
}

/// Why environment assignments make `inner` unknowable, if they do: they change which program
/// a bare name resolves to, or inject code into every program the loader or a shell starts.
/// (Variables that only configure one program are like its arguments and are allowed.)
fn assignment_hazard(assignments: &[String], inner: &[String]) -> Option<String> {
    let bare_program = inner.first().is_some_and(|p| !p.contains('/'));
    assignments.iter().find_map(|assignment| {
        let name = assignment.split_once('=').map_or("", |(name, _)| name);
        if name == "PATH" && bare_program {
            Some("PATH is reassigned, so which program runs cannot be known".to_string())
        } else if name.starts_with("LD_")
            || name.starts_with("DYLD_")
            || matches!(name, "GCONV_PATH" | "BASH_ENV" | "ENV")
        {
            Some(format!("{name} injects code into the programs that run"))
        } else {
            None
        }
    })
}

/// Analyzes a command that may start with assignments (`FOO=1 cmd`).
fn analyze_after_assignments(
    assignments: &[String],
    inner: &[String],
    fallback: &[String],
    depth: usize,
) -> Result<CommandAnalysis, String> {
    if let Some(reason) = assignment_hazard(assignments, inner) {
        let program = inner.first().unwrap_or(&fallback[0]);
        return Ok(opaque(format!("shell:{program}"), reason));
    }
    if inner.is_empty() {
        return Ok(CommandAnalysis::Commands(vec![fallback.to_vec()]));
    }
    analyze_at(inner, depth + 1)
}

// ---- wrappers ---------------------------------------------------------------------------------

/// A program that runs its operand as a command, and the options it may be given first.
struct Wrapper {
    name: &'static str,
    /// Options without an argument.
    flags: &'static [&'static str],
    /// Options with an argument, either the next word or attached (`-n5`, `--signal=KILL`).
    with_arg: &'static [&'static str],
    /// Options whose optional argument can only be attached (`xargs -i{}`).
    optional_arg: &'static [&'static str],
    /// Accepts `-N` as a number (`nice -10`).
    numeric_option: bool,
    /// Takes a positional operand before the command (`timeout DURATION`).
    leading_operand: bool,
    /// Accepts `NAME=value` assignments before the command (`env`).
    assignments: bool,
}

const fn wrapper(name: &'static str) -> Wrapper {
    Wrapper {
        name,
        flags: &[],
        with_arg: &[],
        optional_arg: &[],
        numeric_option: false,
        leading_operand: false,
        assignments: false,
    }
}

const WRAPPERS: &[Wrapper] = &[
    Wrapper {
        flags: &[
            "-i",
            "-",
            "--ignore-environment",
            "-0",
            "--null",
            "-v",
            "--debug",
        ],
        with_arg: &["-u", "--unset", "-C", "--chdir"],
        assignments: true,
        ..wrapper("env")
    },
    Wrapper {
        with_arg: &["-n", "--adjustment"],
        numeric_option: true,
        ..wrapper("nice")
    },
    wrapper("nohup"),
    Wrapper {
        flags: &["--preserve-status", "--foreground", "-v", "--verbose"],
        with_arg: &["-s", "--signal", "-k", "--kill-after"],
        leading_operand: true,
        ..wrapper("timeout")
    },
    Wrapper {
        flags: &["-p", "--portability", "-v", "--verbose", "-q", "--quiet"],
        with_arg: &["-f", "--format"],
        ..wrapper("time")
    },
    Wrapper {
        flags: &["-p", "-v", "-V"],
        ..wrapper("command")
    },
    Wrapper {
        flags: &["-c", "-l"],
        with_arg: &["-a"],
        ..wrapper("exec")
    },
    Wrapper {
        flags: &[
            "-0",
            "--null",
            "-r",
            "--no-run-if-empty",
            "-t",
            "--verbose",
            "-p",
            "--interactive",
            "-x",
            "--exit",
            "-o",
            "--open-tty",
        ],
        with_arg: &[
            "-a",
            "--arg-file",
            "-d",
            "--delimiter",
            "-E",
            "-I",
            "-L",
            "--max-lines",
            "-n",
            "--max-args",
            "-P",
            "--max-procs",
            "-s",
            "--max-chars",
            "--process-slot-var",
        ],
        optional_arg: &["-i", "--replace", "-e", "--eof", "-l"],
        ..wrapper("xargs")
    },
    Wrapper {
        with_arg: &["-i", "--input", "-o", "--output", "-e", "--error"],
        ..wrapper("stdbuf")
    },
    wrapper("busybox"),
];

fn analyze_wrapper(
    wrapper: &Wrapper,
    argv: &[String],
    depth: usize,
) -> Result<CommandAnalysis, String> {
    let program = &argv[0];
    let mut start = match skip_options(&argv[1..], wrapper) {
        Ok(count) => 1 + count,
        Err(option) => return Ok(unknown_option(program, option)),
    };
    if wrapper.leading_operand {
        if start >= argv.len() {
            return Err(format!("{program} needs an operand before the command"));
        }
        start += 1;
    }
    let rest = &argv[start.min(argv.len())..];
    let (assignments, inner) = if wrapper.assignments {
        split_assignments(rest)
    } else {
        (&rest[..0], rest)
    };
    analyze_after_assignments(assignments, inner, argv, depth)
}

/// Counts the option words at the start of `args`, or returns the first option it does not
/// understand.
fn skip_options<'a>(args: &'a [String], spec: &Wrapper) -> Result<usize, &'a str> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        if arg == "--" {
            return Ok(i + 1);
        }
        if !arg.starts_with('-') || (arg == "-" && !spec.flags.contains(&"-")) {
            break;
        }
        i += option_width(arg, spec).ok_or(arg)?;
    }
    Ok(i)
}

/// How many words the option `arg` occupies (1 or 2), or `None` if it is not understood.
fn unknown_option(program: &str, option: &str) -> CommandAnalysis {
    opaque(
        format!("shell:{program}"),
        format!("option '{option}' of {program} is not understood, so the command it runs cannot be known"),
    )
}

fn option_width(arg: &str, spec: &Wrapper) -> Option<usize> {
    if let Some((name, _)) = arg.split_once('=').filter(|_| arg.starts_with("--")) {
        let known = spec.with_arg.contains(&name) || spec.optional_arg.contains(&name);
        return known.then_some(1);
    }
    if spec.flags.contains(&arg) || spec.optional_arg.contains(&arg) {
        return Some(1);
    }
    if spec.with_arg.contains(&arg) {
        return Some(2);
    }
    let is_short = !arg.starts_with("--") && arg.len() > 2;
    if is_short {
        let prefix = &arg[..2];
        if spec.with_arg.contains(&prefix) || spec.optional_arg.contains(&prefix) {
            return Some(1);
        }
        if spec.numeric_option && arg[1..].chars().all(|c| c.is_ascii_digit()) {
            return Some(1);
        }
        // A cluster of flags (`xargs -0r`).
        let cluster = arg[1..]
            .chars()
            .all(|c| spec.flags.contains(&format!("-{c}").as_str()));
        if cluster {
            return Some(1);
        }
    }
    None
}

// ---- privilege elevation ---------------------------------------------------------------------

/// `sudo`/`doas`: both the elevator and the command it runs must be authorized.
struct Elevator {
    name: &'static str,
    flags: &'static [&'static str],
    with_arg: &'static [&'static str],
    /// Options with an optional attached argument (`--preserve-env=PATH`).
    optional_arg: &'static [&'static str],
    /// Options that run a shell instead of (or around) the command.
    shell_flags: &'static [&'static str],
}

const ELEVATORS: &[Elevator] = &[
    Elevator {
        name: "sudo",
        flags: &[
            "-A",
            "--askpass",
            "-b",
            "--background",
            "-E",
            "-H",
            "--set-home",
            "-k",
            "--reset-timestamp",
            "-K",
            "--remove-timestamp",
            "-l",
            "--list",
            "-n",
            "--non-interactive",
            "-P",
            "--preserve-groups",
            "-S",
            "--stdin",
            "-v",
            "--validate",
            "-V",
            "--version",
        ],
        with_arg: &[
            "-u",
            "--user",
            "-g",
            "--group",
            "-h",
            "--host",
            "-p",
            "--prompt",
            "-C",
            "--close-from",
            "-D",
            "--chdir",
            "-R",
            "--chroot",
            "-r",
            "--role",
            "-t",
            "--type",
            "-T",
            "--command-timeout",
            "-U",
            "--other-user",
        ],
        optional_arg: &["--preserve-env"],
        shell_flags: &["-s", "--shell", "-i", "--login", "-e", "--edit"],
    },
    Elevator {
        name: "doas",
        flags: &["-n", "-L"],
        with_arg: &["-u", "-C"],
        optional_arg: &[],
        shell_flags: &["-s"],
    },
];

fn analyze_elevator(
    elevator: &Elevator,
    argv: &[String],
    depth: usize,
) -> Result<CommandAnalysis, String> {
    let program = &argv[0];
    let spec = Wrapper {
        flags: elevator.flags,
        with_arg: elevator.with_arg,
        optional_arg: elevator.optional_arg,
        ..wrapper(elevator.name)
    };
    let start = match skip_options(&argv[1..], &spec) {
        Ok(count) => 1 + count,
        Err(flag) if elevator.shell_flags.contains(&flag) => {
            return Ok(opaque(
                format!("shell:{program} {flag}"),
                format!("{program} {flag} runs a shell or an editor, which cannot be checked"),
            ))
        }
        Err(option) => return Ok(unknown_option(program, option)),
    };
    let (own, rest) = argv.split_at(start);
    let (assignments, inner) = split_assignments(rest);
    if inner.is_empty() {
        return Ok(CommandAnalysis::Commands(vec![argv.to_vec()]));
    }
    let inner_analysis = analyze_after_assignments(assignments, inner, argv, depth)?;
    Ok(combine(vec![
        CommandAnalysis::Commands(vec![own.to_vec()]),
        inner_analysis,
    ]))
}

/// `su [options] [user] -c SCRIPT`: `su` and every command of the script are authorized;
/// without `-c` (an interactive shell) or with `-s SHELL` it is opaque.
fn analyze_su(argv: &[String], depth: usize) -> Result<CommandAnalysis, String> {
    let program = &argv[0];
    let mut script = None;
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        let arg = arg.as_str();
        if matches!(arg, "-s" | "--shell") || arg.starts_with("--shell=") {
            return Ok(opaque(
                format!("shell:{program} -s"),
                "su -s chooses the shell that runs the command, so it cannot be checked",
            ));
        }
        if matches!(arg, "-c" | "--command" | "--session-command") {
            script = argv.get(i + 1).map(String::as_str);
            i += 2;
            continue;
        }
        if let Some(value) = arg.strip_prefix("--command=") {
            script = Some(value);
        }
        i += 1;
    }
    let Some(script) = script else {
        return Ok(opaque(
            format!("shell:{program}"),
            "su without -c starts an interactive shell, which cannot be checked",
        ));
    };
    let inner = analyze_script(program, script, argv, depth)?;
    Ok(combine(vec![
        CommandAnalysis::Commands(vec![vec![program.clone()]]),
        inner,
    ]))
}

// ---- interpreters -----------------------------------------------------------------------------

/// An interpreter's command line: which options carry inline code, and enough of the others
/// to find where the script operand starts.
struct Interpreter {
    family: &'static str,
    /// Short options that introduce inline code (`-c`, `-e`) or read code interactively.
    inline_short: &'static str,
    inline_long: &'static [&'static str],
    /// Short options without an argument.
    plain_short: &'static str,
    /// Short options whose argument is the rest of the word or the next word (`-W error`).
    arg_short: &'static str,
    /// Short options whose optional argument is the rest of the word (`perl -i.bak`).
    attached_short: &'static str,
    /// Short options followed by optional octal digits (`perl -l`, `-0777`).
    digits_short: &'static str,
    /// Short options whose argument names the program to run (`python -m`, `php -f`).
    program_short: &'static str,
    plain_long: &'static [&'static str],
    arg_long: &'static [&'static str],
    /// Subcommands that evaluate code (`deno eval`).
    inline_subcommands: &'static [&'static str],
    /// Options that print information and exit, so no code is read from stdin.
    info_flags: &'static [&'static str],
    /// Without a script operand, reads code from stdin (or starts a REPL).
    stdin_without_script: bool,
}

const fn interpreter(family: &'static str) -> Interpreter {
    Interpreter {
        family,
        inline_short: "",
        inline_long: &[],
        plain_short: "",
        arg_short: "",
        attached_short: "",
        digits_short: "",
        program_short: "",
        plain_long: &["--version", "--help"],
        arg_long: &[],
        inline_subcommands: &[],
        info_flags: &["--version", "--help"],
        stdin_without_script: true,
    }
}

const INTERPRETERS: &[Interpreter] = &[
    Interpreter {
        inline_short: "ci",
        plain_short: "bBdEhIOPqsSuvVx",
        arg_short: "WX",
        program_short: "m",
        arg_long: &["--check-hash-based-pycs"],
        info_flags: &["--version", "--help", "-V", "-h"],
        ..interpreter("python")
    },
    Interpreter {
        inline_short: "epi",
        inline_long: &["--eval", "--print", "--interactive"],
        plain_short: "hvc",
        arg_short: "rC",
        plain_long: &[
            "--version",
            "--help",
            "--check",
            "--no-warnings",
            "--trace-warnings",
            "--enable-source-maps",
            "--experimental-vm-modules",
        ],
        arg_long: &[
            "--require",
            "--import",
            "--loader",
            "--experimental-loader",
            "--input-type",
            "--conditions",
            "--env-file",
            "--title",
        ],
        info_flags: &["--version", "--help", "-v", "-h"],
        ..interpreter("node")
    },
    Interpreter {
        inline_short: "eE",
        plain_short: "acnpsStTuUvwWXhg",
        arg_short: "IMm",
        attached_short: "iCdDxF",
        digits_short: "0l",
        info_flags: &["--version", "--help", "-v", "-h"],
        ..interpreter("perl")
    },
    Interpreter {
        inline_short: "e",
        plain_short: "acdhlnpsSvwyU",
        arg_short: "ICEr",
        attached_short: "FKTWxi",
        digits_short: "0",
        plain_long: &["--version", "--help", "--verbose", "--disable-gems"],
        arg_long: &["--encoding", "--external-encoding", "--internal-encoding"],
        ..interpreter("ruby")
    },
    Interpreter {
        inline_short: "rRBEa",
        plain_short: "CHhilmnqsvwe",
        arg_short: "cdtSz",
        program_short: "fF",
        info_flags: &["--version", "--help", "-v", "-h"],
        ..interpreter("php")
    },
    Interpreter {
        inline_long: &["--eval", "--eval-file"],
        inline_subcommands: &["eval", "repl"],
        ..interpreter("deno")
    },
    Interpreter {
        inline_short: "ep",
        inline_long: &["--eval", "--print"],
        inline_subcommands: &["repl"],
        stdin_without_script: false,
        ..interpreter("bun")
    },
];

/// Finds the interpreter family of a program name, ignoring a version suffix
/// (`python3.12` → python, `nodejs` → node).
fn interpreter_for(name: &str) -> Option<&'static Interpreter> {
    let family = match name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.') {
        "pypy" => "python",
        "nodejs" => "node",
        other => other,
    };
    INTERPRETERS.iter().find(|spec| spec.family == family)
}

/// What an interpreter's options say about where its code comes from.
enum CodeSource {
    /// Inline code after this flag (or subcommand).
    Inline(String),
    /// Code read from stdin or a REPL.
    Stdin,
    /// A script file or module: the program itself is what gets authorized.
    Program,
}

fn analyze_interpreter(spec: &Interpreter, argv: &[String]) -> CommandAnalysis {
    let program = &argv[0];
    match code_source(spec, &argv[1..]) {
        CodeSource::Inline(flag) => opaque(
            format!("shell:{program} {flag}"),
            "inline interpreter code cannot be checked",
        ),
        CodeSource::Stdin => opaque(
            format!("shell:{program} -"),
            "interpreter code read from stdin cannot be checked",
        ),
        CodeSource::Program => CommandAnalysis::Commands(vec![argv.to_vec()]),
    }
}

/// Scans an interpreter's options up to its script operand. After an option it does not
/// know (which might take an argument), it cannot tell the operand apart, so it keeps
/// looking for inline-code flags in every later word: a false alarm asks a human, a miss
/// would let code run unchecked.
fn code_source(spec: &Interpreter, args: &[String]) -> CodeSource {
    let mut unsure = false;
    let mut saw_operand = false;
    let mut info_only = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        i += 1;
        if arg == "--" {
            saw_operand |= i < args.len();
            if !unsure {
                break;
            }
            continue;
        }
        if arg == "-" {
            return CodeSource::Stdin;
        }
        if spec.info_flags.contains(&arg) {
            info_only = true;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            let name = &arg[..name.len() + 2];
            if spec.inline_long.contains(&name) {
                return CodeSource::Inline(name.to_string());
            }
            if arg.contains('=') || spec.plain_long.contains(&name) {
                continue;
            }
            if spec.arg_long.contains(&name) {
                i += 1;
                continue;
            }
            unsure = true;
            continue;
        }
        if let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) {
            match scan_cluster(spec, letters) {
                Cluster::Inline(letter) => return CodeSource::Inline(format!("-{letter}")),
                Cluster::Program if !unsure => return CodeSource::Program,
                Cluster::Program => saw_operand = true,
                Cluster::NeedsNext => i += 1,
                Cluster::Done => {}
                Cluster::Unknown => unsure = true,
            }
            continue;
        }
        if spec.inline_subcommands.contains(&arg) {
            return CodeSource::Inline(arg.to_string());
        }
        saw_operand = true;
        if !unsure {
            break;
        }
    }
    if saw_operand || info_only || !spec.stdin_without_script {
        CodeSource::Program
    } else {
        CodeSource::Stdin
    }
}

/// What one cluster of short options (`-lne`) does.
enum Cluster {
    Inline(char),
    /// Names the program to run (its argument may be the next word).
    Program,
    /// The last option takes the next word as its argument.
    NeedsNext,
    Done,
    Unknown,
}

fn scan_cluster(spec: &Interpreter, letters: &str) -> Cluster {
    let mut chars = letters.char_indices().peekable();
    while let Some((index, letter)) = chars.next() {
        let rest_is_empty = index + letter.len_utf8() == letters.len();
        if spec.inline_short.contains(letter) {
            return Cluster::Inline(letter);
        }
        if spec.program_short.contains(letter) {
            return Cluster::Program;
        }
        if spec.arg_short.contains(letter) {
            return if rest_is_empty {
                Cluster::NeedsNext
            } else {
                Cluster::Done
            };
        }
        if spec.attached_short.contains(letter) {
            return Cluster::Done;
        }
        if spec.digits_short.contains(letter) {
            while chars.next_if(|(_, c)| ('0'..='7').contains(c)).is_some() {}
            continue;
        }
        if !spec.plain_short.contains(letter) {
            return Cluster::Unknown;
        }
    }
    Cluster::Done
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/// Makes a fresh empty directory, mode 0500, to serve as commands' `HOME`.
fn empty_home() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "agent-libos-home-{}",
        uuid::Uuid::new_v4().simple()
    ));
    if std::fs::create_dir(&dir).is_ok() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500));
        dir
    } else {
        PathBuf::from("/nonexistent")
    }
}

/// The only PATH a command sees.
const SCRUBBED_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// After a timeout, how long to wait for output still buffered in the pipes.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Runs checked argvs as host processes in the workspace. `HOME` is an empty, read-only
/// directory outside the workspace, so dotfiles an agent writes into the workspace
/// (`.bashrc`, `.gitconfig`, …) never become a command's startup configuration.
pub struct ProcessShell {
    workspace_root: PathBuf,
    home: PathBuf,
}

impl ProcessShell {
    pub fn new(workspace_root: PathBuf) -> Self {
        let home = empty_home();
        ProcessShell {
            workspace_root,
            home,
        }
    }

    /// The `HOME` commands see.
    pub fn home(&self) -> &std::path::Path {
        &self.home
    }

    /// The command, with nothing inherited but what is set here.
    fn command(
        &self,
        argv: &[String],
        cwd: &std::path::Path,
        stdin: bool,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", SCRUBBED_PATH)
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        command
    }
}

#[async_trait]
impl Shell for ProcessShell {
    async fn run(
        &self,
        cmd: &CheckedCommand,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput> {
        cmd.require(Right::Execute)?;
        let argv = cmd.argv();
        if argv.is_empty() {
            return Err(SyscallError::invalid("empty argv"));
        }
        let cwd = self.workspace_root.join(cmd.cwd_rel());
        if !cwd.is_dir() {
            return Err(SyscallError::NotFound(format!(
                "working directory: {}",
                cmd.cwd_rel()
            )));
        }
        let mut child = self
            .command(argv, &cwd, stdin.is_some())
            .spawn()
            .map_err(|e| spawn_error(e, &argv[0]))?;
        let mut group = ProcessGroup::of(&child);
        tracing::debug!(program = %argv[0], pid = ?child.id(), "shell run");

        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.as_bytes().to_vec();
            // A child that exits without reading its input closes the pipe: not an error.
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
            });
        }
        let mut stdout = Capture::spawn(child.stdout.take(), limits.max_output_bytes);
        let mut stderr = Capture::spawn(child.stderr.take(), limits.max_output_bytes);

        // Read to the end first and reap last: until it is reaped, the child's pid keeps its
        // process group id reserved, so killing the group cannot hit an unrelated process.
        let finished = tokio::time::timeout(Duration::from_millis(limits.timeout_ms), async {
            stdout.wait().await;
            stderr.wait().await;
            child.wait().await
        })
        .await;

        let (exit_code, timed_out) = match finished {
            Ok(status) => {
                group.disarm();
                let status = status
                    .map_err(|e| SyscallError::Io(format!("waiting for {}: {e}", argv[0])))?;
                (status.code(), false)
            }
            Err(_elapsed) => {
                group.kill();
                let _ = child.start_kill();
                let _ = child.wait().await;
                group.disarm();
                // Output still in the pipes; a process that left the group may hold them open.
                let _ = tokio::time::timeout(DRAIN_GRACE, async {
                    stdout.wait().await;
                    stderr.wait().await;
                })
                .await;
                (None, true)
            }
        };
        let (stdout, stdout_truncated) = stdout.finish();
        let (stderr, stderr_truncated) = stderr.finish();
        Ok(ShellOutput {
            exit_code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            timed_out,
        })
    }
}

fn spawn_error(err: std::io::Error, program: &str) -> SyscallError {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            SyscallError::NotFound(format!("command not found: {program}"))
        }
        std::io::ErrorKind::PermissionDenied => {
            SyscallError::Io(format!("cannot execute {program}: permission denied"))
        }
        _ => SyscallError::Io(format!("cannot start {program}: {err}")),
    }
}

/// Kills the child's whole process group (grandchildren included) when the run times out
/// or is abandoned (its future dropped), unless disarmed once the child has been reaped.
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroup {
    fn of(child: &tokio::process::Child) -> Self {
        // `process_group(0)` made the child the leader of a group whose id is its pid.
        let pgid = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        ProcessGroup { pgid }
    }

    fn kill(&self) {
        if let Some(pgid) = self.pgid.filter(|pgid| *pgid > 1) {
            // SAFETY: killpg only sends a signal; the group id belongs to our unreaped child.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One output stream, read to the end in its own task and kept up to a cap.
struct Capture {
    task: JoinHandle<()>,
    sink: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes.len());
        let kept = room.min(chunk.len());
        self.bytes.extend_from_slice(&chunk[..kept]);
        self.truncated |= kept < chunk.len();
    }
}

impl Capture {
    fn spawn<R: AsyncRead + Unpin + Send + 'static>(reader: Option<R>, cap: usize) -> Capture {
        let sink = Arc::new(Mutex::new(Captured::default()));
        let task = tokio::spawn(read_capped(reader, cap, sink.clone()));
        Capture { task, sink }
    }

    /// Waits until the stream reaches its end (at most once to completion).
    async fn wait(&mut self) {
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
    }

    /// The captured text (lossy UTF-8) and whether it was truncated.
    fn finish(self) -> (String, bool) {
        self.task.abort();
        let captured = std::mem::take(
            &mut *self
                .sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (
            super::decode_lossy(&captured.bytes, captured.truncated),
            captured.truncated,
        )
    }
}

/// Reads to EOF, keeping at most `cap` bytes and discarding the rest, so the child never
/// blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    sink: Arc<Mutex<Captured>>,
) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(&buf[..n], cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn commands(words: &[&str]) -> Vec<Vec<String>> {
        match analyze(&argv(words)).unwrap() {
            CommandAnalysis::Commands(commands) => commands,
            opaque => panic!("expected commands for {words:?}, got {opaque:?}"),
        }
    }

    fn opaque_resource(words: &[&str]) -> String {
        match analyze(&argv(words)).unwrap() {
            CommandAnalysis::Opaque { resource, reason } => {
                assert!(!reason.is_empty());
                resource
            }
            commands => panic!("expected opaque for {words:?}, got {commands:?}"),
        }
    }

    fn list(items: &[&[&str]]) -> Vec<Vec<String>> {
        items.iter().map(|words| argv(words)).collect()
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(analyze(&[]).is_err());
        assert!(analyze(&argv(&[""])).is_err());
        assert!(analyze(&argv(&["echo", "a\0b"])).is_err());
        assert!(analyze(&argv(&["bash", "-c"])).is_err());
    }

    #[test]
    fn plain_command_is_returned_as_given() {
        assert_eq!(commands(&["ls", "-la"]), list(&[&["ls", "-la"]]));
        assert_eq!(
            commands(&["/usr/bin/curl", "x"]),
            list(&[&["/usr/bin/curl", "x"]])
        );
    }

    #[test]
    fn programs_outside_system_dirs_are_not_seen_through() {
        assert_eq!(
            commands(&["./bash", "-c", "ls"]),
            list(&[&["./bash", "-c", "ls"]])
        );
        assert_eq!(
            commands(&["/tmp/env", "curl"]),
            list(&[&["/tmp/env", "curl"]])
        );
        assert_eq!(
            commands(&["sh", "-c", "tools/python3 -c x"]),
            list(&[&["tools/python3", "-c", "x"]])
        );
        assert_eq!(commands(&["/usr/bin/env", "ls"]), list(&[&["ls"]]));
    }

    #[test]
    fn shell_c_with_one_word() {
        assert_eq!(commands(&["bash", "-c", "curl"]), list(&[&["curl"]]));
        assert_eq!(commands(&["/bin/sh", "-c", "curl"]), list(&[&["curl"]]));
    }

    #[test]
    fn shell_c_splits_lists_and_pipelines() {
        assert_eq!(
            commands(&["bash", "-c", "ls && curl x | wc -l"]),
            list(&[&["ls"], &["curl", "x"], &["wc", "-l"]])
        );
        assert_eq!(
            commands(&[
                "zsh",
                "-ec",
                "make build; ./run.sh --port=8080 || echo 'it failed: (sad)'"
            ]),
            list(&[
                &["make", "build"],
                &["./run.sh", "--port=8080"],
                &["echo", "it failed: (sad)"]
            ])
        );
    }

    #[test]
    fn shell_option_forms() {
        assert_eq!(
            commands(&["bash", "-lc", "git status"]),
            list(&[&["git", "status"]])
        );
        assert_eq!(commands(&["bash", "-ic", "ls"]), list(&[&["ls"]]));
        assert_eq!(
            commands(&["bash", "-o", "pipefail", "-c", "ls", "arg0"]),
            list(&[&["ls"]])
        );
        assert_eq!(commands(&["dash", "-e", "-c", "ls"]), list(&[&["ls"]]));
    }

    #[test]
    fn quoted_words_are_joined() {
        assert_eq!(
            commands(&["sh", "-c", "grep -r \"two words\" 'src/'x"]),
            list(&[&["grep", "-r", "two words", "src/x"]])
        );
    }

    #[test]
    fn dynamic_scripts_are_opaque() {
        for script in [
            "echo $(id)",
            "echo $HOME",
            "echo `id`",
            "ls > out.txt",
            "cat < in.txt",
            "(cd x && ls)",
            "{ ls; }",
            "sleep 10 &",
            "ls *.rs",
            "ls file?",
            "ls [ab]",
            "ls\ncurl x",
            "cat <<EOF",
            "echo \"$X\"",
            "echo a\\ b",
            "ls |& cat",
            "if true; then curl x; fi",
            "for f in a b; do rm f; done",
            "ls &&",
            "; ls",
            "echo 'unterminated",
            "ls # comment",
            "ls ~",
        ] {
            assert_eq!(
                opaque_resource(&["sh", "-c", script]),
                "shell:sh -c",
                "{script:?}"
            );
        }
        assert_eq!(
            opaque_resource(&["/bin/bash", "-c", "echo $(id)"]),
            "shell:/bin/bash -c"
        );
    }

    #[test]
    fn shell_without_c_is_opaque() {
        assert_eq!(
            opaque_resource(&["bash", "deploy.sh"]),
            "shell:bash deploy.sh"
        );
        assert_eq!(opaque_resource(&["bash"]), "shell:bash -s");
        assert_eq!(opaque_resource(&["sh", "-s"]), "shell:sh -s");
        assert_eq!(opaque_resource(&["fish", "-c", "ls"]), "shell:fish");
    }

    #[test]
    fn empty_script_still_needs_the_shell() {
        assert_eq!(commands(&["bash", "-c", ""]), list(&[&["bash", "-c", ""]]));
        assert_eq!(
            commands(&["bash", "-c", "X=1"]),
            list(&[&["bash", "-c", "X=1"]])
        );
    }

    #[test]
    fn assignments_before_a_command() {
        assert_eq!(
            commands(&["sh", "-c", "LC_ALL=C sort x"]),
            list(&[&["sort", "x"]])
        );
        assert_eq!(
            opaque_resource(&["sh", "-c", "PATH=. curl x"]),
            "shell:curl"
        );
        assert_eq!(
            opaque_resource(&["env", "LD_PRELOAD=./evil.so", "/usr/bin/ls"]),
            "shell:/usr/bin/ls"
        );
    }

    #[test]
    fn env_is_replaced_by_its_command() {
        assert_eq!(
            commands(&["env", "-i", "PATH=/x", "/usr/bin/curl", "u"]),
            list(&[&["/usr/bin/curl", "u"]])
        );
        assert_eq!(
            commands(&["env", "-u", "HOME", "FOO=bar", "ls"]),
            list(&[&["ls"]])
        );
        assert_eq!(
            commands(&["env", "bash", "-c", "curl x"]),
            list(&[&["curl", "x"]])
        );
        assert_eq!(commands(&["env"]), list(&[&["env"]]));
        assert_eq!(opaque_resource(&["env", "-S", "curl x"]), "shell:env");
    }

    #[test]
    fn other_wrappers_are_replaced_by_their_command() {
        assert_eq!(commands(&["nice", "-n", "5", "make"]), list(&[&["make"]]));
        assert_eq!(commands(&["nice", "-10", "make"]), list(&[&["make"]]));
        assert_eq!(commands(&["nohup", "./server"]), list(&[&["./server"]]));
        assert_eq!(
            commands(&[
                "timeout",
                "-s",
                "KILL",
                "--preserve-status",
                "5s",
                "curl",
                "x"
            ]),
            list(&[&["curl", "x"]])
        );
        assert_eq!(
            commands(&["time", "-p", "cargo", "build"]),
            list(&[&["cargo", "build"]])
        );
        assert_eq!(commands(&["bash", "-c", "time make"]), list(&[&["make"]]));
        assert_eq!(commands(&["command", "-p", "ls"]), list(&[&["ls"]]));
        assert_eq!(commands(&["exec", "-a", "name", "ls"]), list(&[&["ls"]]));
        assert_eq!(
            commands(&["xargs", "-0r", "-n", "1", "-I{}", "rm", "{}"]),
            list(&[&["rm", "{}"]])
        );
        assert_eq!(
            commands(&["stdbuf", "-oL", "grep", "x"]),
            list(&[&["grep", "x"]])
        );
        assert_eq!(
            commands(&["nice", "timeout", "5", "env", "sh", "-c", "curl x && ls"]),
            list(&[&["curl", "x"], &["ls"]])
        );
        assert_eq!(
            opaque_resource(&["xargs", "sh", "-c", "rm {}"]),
            "shell:sh -c"
        );
        assert_eq!(
            opaque_resource(&["time", "-o", "/etc/x", "ls"]),
            "shell:time"
        );
    }

    #[test]
    fn sudo_needs_both_itself_and_its_command() {
        assert_eq!(
            commands(&["sudo", "-u", "root", "curl", "x"]),
            list(&[&["sudo", "-u", "root"], &["curl", "x"]])
        );
        assert_eq!(
            commands(&["doas", "bash", "-c", "ls | wc"]),
            list(&[&["doas"], &["ls"], &["wc"]])
        );
        assert_eq!(
            commands(&["su", "-c", "curl x", "bob"]),
            list(&[&["su"], &["curl", "x"]])
        );
        assert_eq!(commands(&["sudo", "-l"]), list(&[&["sudo", "-l"]]));
        assert_eq!(
            opaque_resource(&["sudo", "-u", "root", "-s"]),
            "shell:sudo -s"
        );
        assert_eq!(opaque_resource(&["su", "bob"]), "shell:su");
        assert_eq!(
            opaque_resource(&["sudo", "python3", "-c", "x"]),
            "shell:python3 -c"
        );
    }

    #[test]
    fn inline_interpreter_code_is_opaque() {
        assert_eq!(
            opaque_resource(&["python3", "-c", "print(1)"]),
            "shell:python3 -c"
        );
        assert_eq!(
            opaque_resource(&["/usr/bin/python3.12", "-u", "-c", "x"]),
            "shell:/usr/bin/python3.12 -c"
        );
        assert_eq!(opaque_resource(&["node", "-e", "x"]), "shell:node -e");
        assert_eq!(opaque_resource(&["node", "--eval=x"]), "shell:node --eval");
        assert_eq!(
            opaque_resource(&["node", "-r", "mod", "-p", "x"]),
            "shell:node -p"
        );
        assert_eq!(opaque_resource(&["perl", "-lne", "print"]), "shell:perl -e");
        assert_eq!(opaque_resource(&["perl", "-E", "say 1"]), "shell:perl -E");
        assert_eq!(
            opaque_resource(&["ruby", "-rjson", "-e", "x"]),
            "shell:ruby -e"
        );
        assert_eq!(opaque_resource(&["php", "-r", "echo 1;"]), "shell:php -r");
        assert_eq!(opaque_resource(&["deno", "eval", "x"]), "shell:deno eval");
        assert_eq!(opaque_resource(&["bun", "--eval", "x"]), "shell:bun --eval");
        assert_eq!(
            opaque_resource(&["bash", "-c", "python3 -c 'import os'"]),
            "shell:python3 -c"
        );
    }

    #[test]
    fn interpreter_reading_stdin_is_opaque() {
        assert_eq!(opaque_resource(&["python3"]), "shell:python3 -");
        assert_eq!(opaque_resource(&["python3", "-"]), "shell:python3 -");
        assert_eq!(opaque_resource(&["python3", "-v"]), "shell:python3 -");
        assert_eq!(opaque_resource(&["node"]), "shell:node -");
        assert_eq!(
            opaque_resource(&["python3", "-i", "x.py"]),
            "shell:python3 -i"
        );
    }

    #[test]
    fn interpreter_running_a_script_is_a_command() {
        for words in [
            &["python3", "script.py", "-c", "conf"][..],
            &["python3", "-W", "error", "script.py"],
            &["python3", "-m", "pytest", "-c", "x"],
            &["python3", "--version"],
            &["node", "app.js", "-e"],
            &["perl", "-I", "lib", "script.pl"],
            &["perl", "-pi.bak", "script.pl"],
            &["ruby", "-I", "lib", "x.rb"],
            &["php", "-f", "x.php"],
            &["deno", "run", "x.ts"],
            &["bun"],
        ] {
            assert_eq!(commands(words), list(&[words]), "{words:?}");
        }
    }

    #[test]
    fn after_an_unknown_option_every_word_is_checked() {
        // `--frobnicate` might take `x.py` as its argument, so `-c` may be python's own.
        assert_eq!(
            opaque_resource(&["python3", "--frobnicate", "x.py", "-c", "x"]),
            "shell:python3 -c"
        );
    }

    #[test]
    fn eval_and_source_are_opaque() {
        assert_eq!(opaque_resource(&["sh", "-c", "eval curl"]), "shell:eval");
        assert_eq!(opaque_resource(&["bash", "-c", ". ./env.sh"]), "shell:.");
    }

    #[test]
    fn deep_nesting_is_opaque() {
        let mut words = vec!["ls".to_string()];
        for _ in 0..12 {
            let mut outer = vec!["env".to_string()];
            outer.extend(words);
            words = outer;
        }
        assert!(matches!(
            analyze(&words).unwrap(),
            CommandAnalysis::Opaque { .. }
        ));
    }

    // ---- ProcessShell ----

    const LIMITS: ShellLimits = ShellLimits {
        timeout_ms: 10_000,
        max_output_bytes: 1 << 20,
    };

    async fn run_in(
        root: &std::path::Path,
        words: &[&str],
        cwd: &str,
        stdin: Option<&str>,
        limits: ShellLimits,
    ) -> SysResult<ShellOutput> {
        let shell = ProcessShell::new(root.to_path_buf());
        shell
            .run(&CheckedCommand::for_test(words, cwd), stdin, limits)
            .await
    }

    async fn run(words: &[&str]) -> ShellOutput {
        let dir = tempfile::tempdir().unwrap();
        run_in(dir.path(), words, ".", None, LIMITS).await.unwrap()
    }

    #[tokio::test]
    async fn a_command_proof_of_another_right_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let proof = CheckedCommand::for_test_with_right(&["touch", "made"], ".", Right::Read);
        let err = ProcessShell::new(dir.path().to_path_buf())
            .run(&proof, None, LIMITS)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied", "{err}");
        assert!(!dir.path().join("made").exists());
    }

    #[tokio::test]
    async fn echo_prints() {
        let out = run(&["echo", "hello", "world"]).await;
        assert_eq!(out.stdout, "hello world\n");
        assert_eq!(out.exit_code, Some(0));
        assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);
    }

    #[tokio::test]
    async fn exit_code_and_stderr_are_reported() {
        let out = run(&["sh", "-c", "echo oops >&2; exit 3"]).await;
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stderr, "oops\n");
    }

    #[tokio::test]
    async fn stdin_is_fed() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_in(dir.path(), &["cat"], ".", Some("from stdin"), LIMITS)
            .await
            .unwrap();
        assert_eq!(out.stdout, "from stdin");
        // Without stdin the child reads EOF at once.
        assert_eq!(run(&["cat"]).await.stdout, "");
    }

    #[tokio::test]
    async fn environment_is_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_in(dir.path(), &["env"], ".", None, LIMITS)
            .await
            .unwrap();
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        lines.sort();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("HOME=") && lines[0].contains("agent-libos-home-"),
            "{lines:?}"
        );
        assert!(
            !lines[0].contains(&dir.path().display().to_string()),
            "HOME is not the workspace"
        );
        assert_eq!(
            &lines[1..],
            ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]
        );
    }

    #[tokio::test]
    async fn cwd_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let out = run_in(dir.path(), &["pwd"], "sub", None, LIMITS)
            .await
            .unwrap();
        let expected = std::fs::canonicalize(dir.path().join("sub")).unwrap();
        assert_eq!(out.stdout.trim_end(), expected.to_str().unwrap());
        let err = run_in(dir.path(), &["pwd"], "missing", None, LIMITS)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "NotFound");
    }

    #[tokio::test]
    async fn missing_command_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_in(dir.path(), &["no-such-command-xyz"], ".", None, LIMITS)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SyscallError::NotFound("command not found: no-such-command-xyz".into())
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShellLimits {
            timeout_ms: 200,
            ..LIMITS
        };
        let out = run_in(dir.path(), &["sleep", "30"], ".", None, limits)
            .await
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, None);
    }

    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesized command name; a zombie is dead.
            Ok(stat) => stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn timeout_kills_grandchildren_too() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShellLimits {
            timeout_ms: 300,
            ..LIMITS
        };
        let out = run_in(
            dir.path(),
            &["sh", "-c", "sleep 30 & echo $! > grandchild.pid; wait"],
            ".",
            None,
            limits,
        )
        .await
        .unwrap();
        assert!(out.timed_out);
        let pid: i32 = std::fs::read_to_string(dir.path().join("grandchild.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut dead = false;
        for _ in 0..50 {
            if is_dead(pid) {
                dead = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dead, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn output_is_capped_without_blocking_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShellLimits {
            max_output_bytes: 1000,
            ..LIMITS
        };
        let out = run_in(dir.path(), &["seq", "1", "200000"], ".", None, limits)
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0));
        assert!(out.stdout_truncated);
        assert!(!out.stderr_truncated);
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.stdout.starts_with("1\n2\n3\n"));
    }
}
