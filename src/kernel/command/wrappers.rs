//! Programs that run their operand as a command (`env`, `nice`, `timeout`, `xargs`, …) and
//! elevators that run it as another user (`sudo`, `doas`), with the options each may be
//! given first. An option the tables do not know makes the command an opaque form naming
//! that option (`shell:env -S`): it might take the command as its argument.

use super::{environment, Analyzer, Ctx};

/// A program that runs its operand as a command, and the options it may be given first.
pub(super) struct Wrapper {
    name: &'static str,
    /// Options without an argument.
    flags: &'static [&'static str],
    /// Options with an argument, either the next word or attached (`-n5`, `--signal=KILL`).
    with_arg: &'static [&'static str],
    /// Options whose optional argument can only be attached (`xargs -i{}`).
    optional_arg: &'static [&'static str],
    /// Options that change the working directory of the command (`env -C DIR`).
    chdir: &'static [&'static str],
    /// Accepts `-N` as a number (`nice -10`).
    numeric_option: bool,
    /// Takes a positional operand before the command (`timeout DURATION`).
    leading_operand: bool,
    /// Accepts `NAME=value` assignments before the command (`env`).
    assignments: bool,
    /// Adds words read from its input to the command (`xargs`).
    appends_input: bool,
}

const fn wrapper(name: &'static str) -> Wrapper {
    Wrapper {
        name,
        flags: &[],
        with_arg: &[],
        optional_arg: &[],
        chdir: &[],
        numeric_option: false,
        leading_operand: false,
        assignments: false,
        appends_input: false,
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
        chdir: &["-C", "--chdir"],
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
        appends_input: true,
        ..wrapper("xargs")
    },
    Wrapper {
        with_arg: &["-i", "--input", "-o", "--output", "-e", "--error"],
        ..wrapper("stdbuf")
    },
    wrapper("busybox"),
];

pub(super) fn wrapper_named(name: &str) -> Option<&'static Wrapper> {
    WRAPPERS.iter().find(|w| w.name == name)
}

pub(super) fn analyze_wrapper(
    an: &mut Analyzer,
    wrapper: &Wrapper,
    argv: &[String],
    ctx: Ctx,
) -> Result<(), String> {
    let program = &argv[0];
    let options = match skip_options(&argv[1..], wrapper) {
        Ok(count) => &argv[1..1 + count],
        Err(option) => {
            unknown_option(an, program, option);
            return Ok(());
        }
    };
    let mut start = 1 + options.len();
    if wrapper.leading_operand {
        if start >= argv.len() {
            return Err(format!("{program} needs an operand before the command"));
        }
        start += 1;
    }
    let rest = argv.get(start..).unwrap_or_default();
    let (assignments, inner) = if wrapper.assignments {
        environment::split_env_assignments(rest)
    } else {
        (&rest[..0], rest)
    };
    let mut ctx = ctx;
    if wrapper
        .chdir
        .iter()
        .any(|option| option_value(options, option).is_some())
    {
        ctx.cwd_unknown = true;
    }
    if inner.is_empty() {
        // `env`, `nice`, `xargs` alone run no other command (or `echo`).
        an.plain(argv);
        return an.after_assignments(assignments, inner, program, ctx);
    }
    if wrapper.appends_input {
        if Analyzer::sees_through(&inner[0]) {
            an.out.programs.push(inner[0].clone());
            an.opaque(
                format!("shell:{program} {}", inner[0]),
                format!(
                    "{program} adds words from its input to {}, and they decide what it runs",
                    inner[0]
                ),
            );
            return Ok(());
        }
        if let Some(replace) = replace_string(options).filter(|r| !r.is_empty()) {
            if inner[0].contains(replace.as_str()) {
                an.opaque(
                    format!("shell:{program} -I"),
                    format!("{program} replaces the program name with words from its input"),
                );
                return Ok(());
            }
        }
    }
    an.after_assignments(assignments, inner, program, ctx)
}

/// The replace string xargs was given (`-I R`, `-IR`, `-i[R]`, `--replace[=R]`).
fn replace_string(options: &[String]) -> Option<String> {
    let mut found = None;
    let mut words = options.iter();
    while let Some(word) = words.next() {
        let word = word.as_str();
        if word == "-I" {
            found = words.next().cloned();
        } else if let Some(attached) = word.strip_prefix("-I") {
            found = Some(attached.to_string());
        } else if word == "-i" || word == "--replace" {
            found = Some("{}".to_string());
        } else if let Some(attached) = word
            .strip_prefix("--replace=")
            .or_else(|| word.strip_prefix("-i"))
        {
            found = Some(attached.to_string());
        }
    }
    found
}

/// The value of option `name` among option words (`-C DIR`, `-CDIR`, `--chdir=DIR`), if
/// it was given.
fn option_value(options: &[String], name: &str) -> Option<String> {
    let mut words = options.iter();
    while let Some(word) = words.next() {
        if word == name {
            return Some(words.next().cloned().unwrap_or_default());
        }
        let attached = if name.starts_with("--") {
            word.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        } else {
            word.strip_prefix(name)
        };
        if let Some(value) = attached {
            return Some(value.to_string());
        }
    }
    None
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
    Ok(i.min(args.len()))
}

fn unknown_option(an: &mut Analyzer, program: &str, option: &str) {
    // Name the option, not its attached value: `-Scurl x` is the form `-S`.
    let name = if option.starts_with("--") {
        option
            .split_once('=')
            .map_or(option, |(name, _)| name)
            .to_string()
    } else {
        option.chars().take(2).collect()
    };
    an.opaque(
        format!("shell:{program} {name}"),
        format!(
            "option '{name}' of {program} is not understood, so the command it runs cannot be known"
        ),
    );
}

/// How many words the option `arg` occupies (1 or 2), or `None` if it is not understood.
fn option_width(arg: &str, spec: &Wrapper) -> Option<usize> {
    if arg.starts_with("--") {
        if let Some((name, _)) = arg.split_once('=') {
            let known = spec.with_arg.contains(&name) || spec.optional_arg.contains(&name);
            return known.then_some(1);
        }
    }
    if spec.flags.contains(&arg) || spec.optional_arg.contains(&arg) {
        return Some(1);
    }
    if spec.with_arg.contains(&arg) {
        return Some(2);
    }
    if arg.starts_with("--") {
        return None;
    }
    let letters = arg.strip_prefix('-')?;
    let first = letters.chars().next()?;
    let prefix = format!("-{first}");
    if letters.chars().count() > 1
        && (spec.with_arg.contains(&prefix.as_str())
            || spec.optional_arg.contains(&prefix.as_str()))
    {
        return Some(1);
    }
    if spec.numeric_option && letters.chars().all(|c| c.is_ascii_digit()) {
        return Some(1);
    }
    // A cluster of flags (`xargs -0r`).
    let cluster = letters
        .chars()
        .all(|c| spec.flags.contains(&format!("-{c}").as_str()));
    cluster.then_some(1)
}

// ---- privilege elevation ---------------------------------------------------------------------

/// `sudo`/`doas`: both the elevator and the command it runs must be authorized.
pub(super) struct Elevator {
    name: &'static str,
    flags: &'static [&'static str],
    with_arg: &'static [&'static str],
    /// Options with an optional attached argument (`--preserve-env=PATH`).
    optional_arg: &'static [&'static str],
    /// Options that run a shell instead of (or around) the command.
    shell_flags: &'static [&'static str],
    /// Options that change the working directory.
    chdir: &'static [&'static str],
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
        chdir: &["-D", "--chdir", "-R", "--chroot"],
    },
    Elevator {
        name: "doas",
        flags: &["-n", "-L"],
        with_arg: &["-u", "-C"],
        optional_arg: &[],
        shell_flags: &["-s"],
        chdir: &[],
    },
];

pub(super) fn elevator_named(name: &str) -> Option<&'static Elevator> {
    ELEVATORS.iter().find(|e| e.name == name)
}

pub(super) fn analyze_elevator(
    an: &mut Analyzer,
    elevator: &Elevator,
    argv: &[String],
    ctx: Ctx,
) -> Result<(), String> {
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
            an.opaque(
                format!("shell:{program} {flag}"),
                format!("{program} {flag} runs a shell or an editor, which cannot be checked"),
            );
            return Ok(());
        }
        Err(option) => {
            unknown_option(an, program, option);
            return Ok(());
        }
    };
    let (own, rest) = argv.split_at(start.min(argv.len()));
    an.plain(own);
    let mut ctx = ctx;
    let options = own.get(1..).unwrap_or_default();
    if elevator
        .chdir
        .iter()
        .any(|option| option_value(options, option).is_some())
    {
        ctx.cwd_unknown = true;
    }
    let (assignments, inner) = environment::split_assignments(rest);
    an.after_assignments(assignments, inner, program, ctx)
}
