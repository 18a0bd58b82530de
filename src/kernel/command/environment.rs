//! Environment assignments before a command (`FOO=1 cmd`, `env FOO=1 cmd`, `sudo FOO=1 cmd`)
//! and the ones that make what runs unknowable: they change which program a name finds,
//! make a shell or the loader read code from elsewhere, or inject code into an interpreter.
//! Variables that only configure one program are like its arguments and are allowed.

/// `NAME=value` with a valid shell variable name (the form a shell treats as an assignment).
pub(super) fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| is_name(name))
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits leading shell assignments off a command: `FOO=1 BAR=2 cmd args` →
/// (`[FOO=1, BAR=2]`, `[cmd, args]`).
pub(super) fn split_assignments(argv: &[String]) -> (&[String], &[String]) {
    let count = argv.iter().take_while(|word| is_assignment(word)).count();
    argv.split_at(count)
}

/// Splits `env`'s leading assignments off: env takes every word containing `=` as one,
/// whatever its name (`BASH_FUNC_ls%%=() { …; }` defines a function for bash).
pub(super) fn split_env_assignments(argv: &[String]) -> (&[String], &[String]) {
    let count = argv.iter().take_while(|word| word.contains('=')).count();
    argv.split_at(count)
}

/// Variables that make a shell read startup code or change how it runs what it reads.
const SHELL_STARTUP: &[&str] = &[
    "HOME",
    "ZDOTDIR",
    "XDG_CONFIG_HOME",
    "ENV",
    "BASH_ENV",
    "INPUTRC",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "FPATH",
    "BASH_LOADABLES_PATH",
    "EXECIGNORE",
];

/// Prefixes of variables that inject code into the loader or an interpreter.
const CODE_INJECTING_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "GCONV_PATH",
    "PYTHON",
    "PERL5",
    "PERLLIB",
    "PERLIO",
    "NODE_",
    "RUBY",
    "DENO_",
    "BUN_",
    "GIT_",
    "BASH_FUNC_",
];

/// Why assigning `name` before a command makes what it runs unknowable, if it does.
pub(super) fn hazard(name: &str) -> Option<&'static str> {
    if !is_name(name) {
        return Some(
            "it is not a variable name (env passes it on; bash reads functions from such names)",
        );
    }
    if name == "PATH" {
        return Some("it changes which program a command name runs");
    }
    if SHELL_STARTUP.contains(&name) {
        return Some("it makes a shell read startup code from elsewhere");
    }
    if CODE_INJECTING_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return Some("it injects code into the loader or an interpreter");
    }
    None
}

/// The name of an assignment word (the text before its first `=`).
pub(super) fn name_of(assignment: &str) -> &str {
    assignment
        .split_once('=')
        .map_or(assignment, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazards_cover_paths_startup_files_and_injection() {
        for name in [
            "PATH",
            "HOME",
            "BASH_ENV",
            "ENV",
            "LD_PRELOAD",
            "PYTHONSTARTUP",
            "NODE_OPTIONS",
            "PERL5OPT",
            "BASH_FUNC_ls%%",
            "é",
            "",
        ] {
            assert!(hazard(name).is_some(), "{name:?}");
        }
        for name in ["LC_ALL", "FOO", "RUST_LOG", "TZ"] {
            assert!(hazard(name).is_none(), "{name:?}");
        }
    }
}
