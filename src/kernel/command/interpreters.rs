//! Interpreters (`python3`, `node`, `perl`, `ruby`, `php`, `deno`, `bun`): which options carry
//! inline code, and where the script operand is. Inline code and code read from stdin, a
//! device or a pipe are opaque forms; a script file is authorized as the program and listed
//! as a code file, which must be a regular file when the command starts.

use super::{is_device_path, Analyzer, Ctx};

/// An interpreter's command line: which options carry inline code, and enough of the others
/// to find where the script operand starts.
pub(super) struct Interpreter {
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
    /// Short options whose argument names a module to run (`python -m`).
    module_short: &'static str,
    /// Short options whose argument names the script file (`php -f`).
    file_short: &'static str,
    plain_long: &'static [&'static str],
    arg_long: &'static [&'static str],
    /// Subcommands that evaluate code (`deno eval`).
    inline_subcommands: &'static [&'static str],
    /// Options that print information and exit, so no code is read from stdin.
    info_flags: &'static [&'static str],
    /// Without a script operand, reads code from stdin (or starts a REPL).
    stdin_without_script: bool,
    /// The first operand is a subcommand, not a script (`deno run x.ts`): operands are
    /// checked for devices but not listed as code files.
    subcommand_first: bool,
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
        module_short: "",
        file_short: "",
        plain_long: &["--version", "--help"],
        arg_long: &[],
        inline_subcommands: &[],
        info_flags: &["--version", "--help"],
        stdin_without_script: true,
        subcommand_first: false,
    }
}

const INTERPRETERS: &[Interpreter] = &[
    Interpreter {
        inline_short: "ci",
        plain_short: "bBdEhIOPqsSuvVx",
        arg_short: "WX",
        module_short: "m",
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
        file_short: "fF",
        info_flags: &["--version", "--help", "-v", "-h"],
        ..interpreter("php")
    },
    Interpreter {
        inline_long: &["--eval", "--eval-file"],
        inline_subcommands: &["eval", "repl"],
        subcommand_first: true,
        ..interpreter("deno")
    },
    Interpreter {
        inline_short: "ep",
        inline_long: &["--eval", "--print"],
        inline_subcommands: &["repl"],
        stdin_without_script: false,
        subcommand_first: true,
        ..interpreter("bun")
    },
];

/// Finds the interpreter family of a program name, ignoring a version suffix
/// (`python3.12` → python, `nodejs` → node).
pub(super) fn interpreter_for(name: &str) -> Option<&'static Interpreter> {
    let family = match name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.') {
        "pypy" => "python",
        "nodejs" => "node",
        other => other,
    };
    INTERPRETERS.iter().find(|spec| spec.family == family)
}

/// What an interpreter's options say about where its code comes from.
#[derive(Debug, PartialEq)]
enum CodeSource {
    /// Inline code after this flag (or subcommand).
    Inline(String),
    /// Code read from stdin or a REPL.
    Stdin,
    /// A script file or module: the program itself is what gets authorized. `scripts` are
    /// the words that may name the script file (more than one when an unknown option
    /// makes the operand ambiguous).
    Program { scripts: Vec<String> },
}

pub(super) fn analyze_interpreter(
    an: &mut Analyzer,
    spec: &Interpreter,
    argv: &[String],
    ctx: Ctx,
) {
    let program = &argv[0];
    let stdin_form = format!("shell:{program} -");
    match code_source(spec, &argv[1..]) {
        CodeSource::Inline(flag) => an.opaque(
            format!("shell:{program} {flag}"),
            "inline interpreter code cannot be checked",
        ),
        CodeSource::Stdin => an.opaque(
            stdin_form,
            "interpreter code read from stdin cannot be checked",
        ),
        CodeSource::Program { scripts } => {
            for script in &scripts {
                if script == "-" || is_device_path(script) {
                    an.opaque(
                        stdin_form,
                        format!("interpreter code read from {script} (a device, pipe or stdin) cannot be checked"),
                    );
                    return;
                }
                if ctx.cwd_unknown && !script.starts_with('/') {
                    an.opaque(
                        stdin_form,
                        format!("the script {script} is relative to a working directory the analysis cannot know"),
                    );
                    return;
                }
            }
            if !spec.subcommand_first {
                an.out.code_files.extend(scripts);
            }
            an.plain(argv);
        }
    }
}

/// Scans an interpreter's options up to its script operand. After an option it does not
/// know (which might take an argument), it cannot tell the operand apart, so it keeps
/// looking for inline-code flags in every later word: a false alarm asks a human, a miss
/// would let code run unchecked.
fn code_source(spec: &Interpreter, args: &[String]) -> CodeSource {
    let mut unsure = false;
    let mut scripts = Vec::new();
    let mut module = false;
    let mut info_only = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        i += 1;
        if arg == "--" {
            if let Some(next) = args.get(i) {
                scripts.push(next.clone());
            }
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
        if arg.starts_with("--") {
            let name = arg.split_once('=').map_or(arg, |(name, _)| name);
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
                Cluster::Module => {
                    module = true;
                    if !unsure {
                        break;
                    }
                }
                Cluster::File { attached } => {
                    match attached {
                        Some(file) => scripts.push(file),
                        None => {
                            if let Some(file) = args.get(i) {
                                scripts.push(file.clone());
                            }
                            i += 1;
                        }
                    }
                    if !unsure {
                        break;
                    }
                }
                Cluster::NeedsNext => i += 1,
                Cluster::Done => {}
                Cluster::Unknown => unsure = true,
            }
            continue;
        }
        if spec.inline_subcommands.contains(&arg) {
            return CodeSource::Inline(arg.to_string());
        }
        scripts.push(arg.to_string());
        if !unsure && !spec.subcommand_first {
            break;
        }
    }
    if !scripts.is_empty() || module || info_only || !spec.stdin_without_script {
        CodeSource::Program { scripts }
    } else {
        CodeSource::Stdin
    }
}

/// What one cluster of short options (`-lne`) does.
enum Cluster {
    Inline(char),
    /// Names a module to run (its argument may be the next word).
    Module,
    /// Names the script file, attached or as the next word.
    File {
        attached: Option<String>,
    },
    /// The last option takes the next word as its argument.
    NeedsNext,
    Done,
    Unknown,
}

fn scan_cluster(spec: &Interpreter, letters: &str) -> Cluster {
    let mut chars = letters.chars().peekable();
    while let Some(letter) = chars.next() {
        let rest_is_empty = chars.peek().is_none();
        if spec.inline_short.contains(letter) {
            return Cluster::Inline(letter);
        }
        if spec.module_short.contains(letter) {
            return Cluster::Module;
        }
        if spec.file_short.contains(letter) {
            let rest: String = chars.collect();
            return Cluster::File {
                attached: (!rest.is_empty()).then_some(rest),
            };
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
            while chars.next_if(|c| ('0'..='7').contains(c)).is_some() {}
            continue;
        }
        if !spec.plain_short.contains(letter) {
            return Cluster::Unknown;
        }
    }
    Cluster::Done
}
