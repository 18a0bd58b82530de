//! Shells (`bash -c SCRIPT`, `su -c SCRIPT`): their options, and the plain scripts whose
//! commands can be listed. A script file, stdin, a startup file (`--rcfile`) or an option
//! the analysis does not know makes the shell an opaque form.

use super::tokenize::split_script;
use super::{environment, Analyzer, Ctx};

/// Shells whose `-c` scripts are parsed (POSIX-like syntax).
pub(super) const SHELLS: &[&str] = &["bash", "sh", "zsh", "dash", "ksh", "ash", "mksh"];
/// Shells with other syntaxes: always opaque.
pub(super) const OPAQUE_SHELLS: &[&str] = &["fish", "csh", "tcsh"];
/// Builtins that evaluate a string or a file as shell code.
pub(super) const DYNAMIC_BUILTINS: &[&str] = &["eval", "source", "."];
/// Builtins after which the working directory is no longer the one the analysis knows.
const CWD_BUILTINS: &[&str] = &["cd", "pushd", "popd"];

/// Long options that take no argument and read no code.
const PLAIN_LONG: &[&str] = &[
    "--login",
    "--noprofile",
    "--norc",
    "--posix",
    "--restricted",
    "--verbose",
    "--noediting",
    "--debug",
    "--help",
    "--version",
    "--dump-strings",
    "--dump-po-strings",
];
/// Long options that name a file of startup code.
const STARTUP_FILE_LONG: &[&str] = &["--rcfile", "--init-file"];

/// How a shell was asked to get its commands.
enum ShellInput<'a> {
    /// `-c SCRIPT`.
    Script(&'a str),
    /// A script file.
    File(&'a str),
    /// Interactive or from stdin.
    Stdin,
    /// An option that reads code from a file, or one the analysis does not know.
    Opaque {
        option: String,
        reason: &'static str,
    },
}

pub(super) fn analyze_shell(an: &mut Analyzer, argv: &[String], ctx: Ctx) -> Result<(), String> {
    let program = &argv[0];
    match shell_input(&argv[1..])? {
        ShellInput::Script(script) => analyze_script(an, program, script, argv, ctx),
        ShellInput::File(file) => {
            an.opaque(
                format!("shell:{program} {file}"),
                "a shell script file cannot be checked",
            );
            Ok(())
        }
        ShellInput::Stdin => {
            an.opaque(
                format!("shell:{program} -s"),
                "an interactive shell or commands read from stdin cannot be checked",
            );
            Ok(())
        }
        ShellInput::Opaque { option, reason } => {
            an.opaque(format!("shell:{program} {option}"), reason);
            Ok(())
        }
    }
}

/// Reads a shell's options: `-c` (alone or clustered, `-lc`, `-ec`) makes the first operand
/// the script; `-o NAME`, `-O NAME` take an argument; `--rcfile FILE` reads code.
fn shell_input(args: &[String]) -> Result<ShellInput<'_>, String> {
    let mut has_script_flag = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_str();
        if arg == "--" || arg == "-" {
            i += 1;
            break;
        }
        if arg.starts_with("--") {
            let name = arg.split_once('=').map_or(arg, |(name, _)| name);
            if STARTUP_FILE_LONG.contains(&name) {
                return Ok(ShellInput::Opaque {
                    option: name.to_string(),
                    reason: "the shell reads startup code from a file that cannot be checked",
                });
            }
            if !PLAIN_LONG.contains(&name) {
                return Ok(ShellInput::Opaque {
                    option: name.to_string(),
                    reason: "a shell option the analysis does not know may read code",
                });
            }
            i += 1;
            continue;
        }
        let Some(letters) = arg
            .strip_prefix('-')
            .or_else(|| arg.strip_prefix('+'))
            .filter(|letters| !letters.is_empty())
        else {
            break;
        };
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

/// Lists the commands of a plain script; a dynamic one is the opaque form
/// `shell:<shell> -c`. A script that runs nothing still runs the shell itself.
pub(super) fn analyze_script(
    an: &mut Analyzer,
    shell: &str,
    script: &str,
    argv: &[String],
    ctx: Ctx,
) -> Result<(), String> {
    let Some(commands) = split_script(script) else {
        an.opaque(
            format!("shell:{shell} -c"),
            "a dynamic shell script cannot be checked (it uses redirects, substitutions, \
             variables, globs, subshells, background jobs or control flow)",
        );
        return Ok(());
    };
    let before = (an.out.commands.len(), an.out.opaque.len());
    let mut ctx = ctx;
    for command in &commands {
        let (assignments, inner) = environment::split_assignments(command);
        an.after_assignments(assignments, inner, shell, ctx)?;
        if inner
            .first()
            .is_some_and(|word| CWD_BUILTINS.contains(&word.as_str()))
        {
            ctx.cwd_unknown = true;
        }
    }
    if (an.out.commands.len(), an.out.opaque.len()) == before {
        an.plain(argv);
    }
    Ok(())
}

/// `su [options] [user] -c SCRIPT`: `su` and every command of the script are authorized;
/// without `-c` (an interactive shell) or with `-s SHELL` it is opaque.
pub(super) fn analyze_su(an: &mut Analyzer, argv: &[String], ctx: Ctx) -> Result<(), String> {
    let program = &argv[0];
    let mut script = None;
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        let arg = arg.as_str();
        if matches!(arg, "-s" | "--shell") || arg.starts_with("--shell=") {
            an.opaque(
                format!("shell:{program} -s"),
                "su -s chooses the shell that runs the command, so it cannot be checked",
            );
            return Ok(());
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
        an.opaque(
            format!("shell:{program}"),
            "su without -c starts an interactive shell, which cannot be checked",
        );
        return Ok(());
    };
    an.plain(std::slice::from_ref(program));
    analyze_script(an, program, script, argv, ctx)
}
