//! Command analysis: which programs an argv runs, as far as can be known before running it.
//!
//! Pure policy, no I/O. It sees through `bash -c "a && b | c"` (plain scripts only,
//! [`tokenize`]), wrappers such as `env`, `timeout` or `xargs` and elevators such as `sudo`
//! ([`wrappers`]), finds where an interpreter's code comes from ([`interpreters`]), and
//! refuses to guess: whatever cannot be fully resolved — a dynamic script, inline interpreter
//! code, code read from stdin or a device, an assignment that changes which program runs —
//! becomes an [`Opaque`] form that needs a capability naming it exactly. Every program the
//! argv starts is listed in [`CommandAnalysis::programs`], so a deny rule is matched against
//! wrappers and opaque commands too. The OS sandbox confines whatever runs in the end.
//!
//! Input is arbitrary text from tools and models: the analysis works on characters and
//! whole words, never on byte offsets, and fails with an error (never a panic).

mod environment;
pub mod identity;
mod interpreters;
mod shells;
mod tokenize;
mod wrappers;

/// What an argv runs, as far as can be known before running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandAnalysis {
    /// Commands whose argv0 must each be authorized (`shell:<argv0>` execute), argv0 exactly
    /// as given (`/usr/bin/curl` is not `curl`).
    pub commands: Vec<Vec<String>>,
    /// Forms that cannot be checked statically; each needs a capability naming it exactly
    /// (e.g. `shell:bash -c`, `shell:python3 -c`).
    pub opaque: Vec<Opaque>,
    /// Every program the argv starts — wrappers, shells, elevators, the programs of opaque
    /// forms — argv0 as given: what deny rules are matched against.
    pub programs: Vec<String>,
    /// Script operands of interpreters: code read from these paths (relative to the working
    /// directory) must come from regular files, not a device, a pipe or stdin.
    pub code_files: Vec<String>,
}

/// A form that cannot be checked: `resource` names what a capability must grant, `reason`
/// says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque {
    pub resource: String,
    pub reason: String,
}

impl Opaque {
    /// The resource as a capability names it: the form's program and flags escaped, so it
    /// matches only that exact form.
    pub fn escaped_resource(&self) -> String {
        let form = self
            .resource
            .strip_prefix("shell:")
            .unwrap_or(&self.resource);
        crate::kernel::resource::exact("shell", form)
    }
}

impl CommandAnalysis {
    /// The `shell:` resources that must each be authorized for execute, commands first.
    pub fn resources(&self) -> Vec<String> {
        let mut resources: Vec<String> = self
            .commands
            .iter()
            .filter_map(|argv| argv.first())
            .map(|program| crate::kernel::resource::exact("shell", program))
            .chain(self.opaque.iter().map(Opaque::escaped_resource))
            .collect();
        let mut seen = std::collections::HashSet::new();
        resources.retain(|r| seen.insert(r.clone()));
        resources
    }

    /// Why `resource` cannot be checked, if it is an opaque form.
    pub fn reason_for(&self, resource: &str) -> Option<&str> {
        self.opaque
            .iter()
            .find(|o| o.escaped_resource() == resource)
            .map(|o| o.reason.as_str())
    }
}

/// Analyzes an argv before its capabilities are checked. Fails on invalid input: an empty
/// argv, an empty program name, a NUL byte, or a shell `-c` without a script.
pub fn analyze(argv: &[String]) -> Result<CommandAnalysis, String> {
    validate_argv(argv)?;
    let mut analyzer = Analyzer::default();
    analyzer.command(argv, Ctx::default())?;
    Ok(analyzer.out)
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

/// Where in the analysis a command sits.
#[derive(Debug, Clone, Copy, Default)]
struct Ctx {
    depth: usize,
    /// An earlier `cd`, `env -C` or `sudo -D` moved the working directory somewhere the
    /// analysis does not know, so relative paths no longer mean what they say.
    cwd_unknown: bool,
}

impl Ctx {
    fn deeper(self) -> Ctx {
        Ctx {
            depth: self.depth + 1,
            ..self
        }
    }
}

#[derive(Default)]
struct Analyzer {
    out: CommandAnalysis,
}

impl Analyzer {
    fn command(&mut self, argv: &[String], ctx: Ctx) -> Result<(), String> {
        let Some(program) = argv.first() else {
            return Err("empty command".into());
        };
        if program.is_empty() {
            return Err("empty program name".into());
        }
        self.out.programs.push(program.clone());
        if ctx.depth > MAX_DEPTH {
            self.opaque(
                format!("shell:{program}"),
                "commands are nested too deeply to be checked",
            );
            return Ok(());
        }
        // A program outside the system directories may be anything (the agent could have
        // written `./bash`): it is not seen through, so it must be authorized itself.
        let Some(name) = system_program_name(program) else {
            self.plain(argv);
            return Ok(());
        };
        if shells::SHELLS.contains(&name) {
            return shells::analyze_shell(self, argv, ctx);
        }
        if shells::OPAQUE_SHELLS.contains(&name) {
            self.opaque(
                format!("shell:{program}"),
                "this shell's scripts cannot be checked",
            );
            return Ok(());
        }
        if shells::DYNAMIC_BUILTINS.contains(&name) {
            self.opaque(
                format!("shell:{program}"),
                "eval/source run dynamic shell code that cannot be checked",
            );
            return Ok(());
        }
        if let Some(wrapper) = wrappers::wrapper_named(name) {
            return wrappers::analyze_wrapper(self, wrapper, argv, ctx);
        }
        if let Some(elevator) = wrappers::elevator_named(name) {
            return wrappers::analyze_elevator(self, elevator, argv, ctx);
        }
        if name == "su" {
            return shells::analyze_su(self, argv, ctx);
        }
        if let Some(interpreter) = interpreters::interpreter_for(name) {
            interpreters::analyze_interpreter(self, interpreter, argv, ctx);
            return Ok(());
        }
        self.plain(argv);
        Ok(())
    }

    /// A command authorized as itself.
    fn plain(&mut self, argv: &[String]) {
        self.out.commands.push(argv.to_vec());
    }

    fn opaque(&mut self, resource: String, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.out.opaque.iter().any(|o| o.resource == resource) {
            self.out.opaque.push(Opaque { resource, reason });
        }
    }

    /// Analyzes the command after leading assignments; each hazardous assignment adds an
    /// opaque form `shell:<program> NAME=`. With no command left, nothing more runs.
    fn after_assignments(
        &mut self,
        assignments: &[String],
        inner: &[String],
        fallback_program: &str,
        ctx: Ctx,
    ) -> Result<(), String> {
        let program = inner.first().map_or(fallback_program, String::as_str);
        for assignment in assignments {
            let name = environment::name_of(assignment);
            if let Some(reason) = environment::hazard(name) {
                self.opaque(
                    format!("shell:{program} {name}="),
                    format!("assigning {name} before {program}: {reason}"),
                );
            }
        }
        if inner.is_empty() {
            return Ok(());
        }
        self.command(inner, ctx.deeper())
    }

    /// Whether `program` is something the analysis sees through (a shell, wrapper, elevator
    /// or interpreter): its meaning depends on every argument it gets.
    fn sees_through(program: &str) -> bool {
        let Some(name) = system_program_name(program) else {
            return false;
        };
        shells::SHELLS.contains(&name)
            || shells::OPAQUE_SHELLS.contains(&name)
            || shells::DYNAMIC_BUILTINS.contains(&name)
            || name == "su"
            || wrappers::wrapper_named(name).is_some()
            || wrappers::elevator_named(name).is_some()
            || interpreters::interpreter_for(name).is_some()
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
        Some((dir, name)) if SYSTEM_DIRS.contains(&dir) && !name.is_empty() => Some(name),
        Some(_) => None,
    }
}

/// Whether a path names a device, a process's file descriptors or kernel state (where code
/// would come from a pipe, a terminal or stdin rather than a file), judged lexically.
fn is_device_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    matches!(parts.first(), Some(&("dev" | "proc" | "sys")))
}

#[cfg(test)]
mod tests;
