//! Tests of the command analysis: what each argv form runs, the forms that must stay opaque,
//! and property tests proving that no argv makes the analysis panic.

use super::*;
use proptest::prelude::*;

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn commands(words: &[&str]) -> Vec<Vec<String>> {
    let analysis = analyze(&argv(words)).unwrap();
    assert!(
        analysis.opaque.is_empty(),
        "expected only commands for {words:?}, got {analysis:?}"
    );
    analysis.commands
}

/// The first opaque form of an argv.
fn opaque_resource(words: &[&str]) -> String {
    let analysis = analyze(&argv(words)).unwrap();
    match analysis.opaque.first() {
        Some(Opaque { resource, reason }) => {
            assert!(!reason.is_empty());
            resource.clone()
        }
        None => panic!("expected an opaque form for {words:?}, got {analysis:?}"),
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
    assert!(analyze(&argv(&["timeout"])).is_err());
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
fn shell_c_splits_lists_and_pipelines() {
    assert_eq!(commands(&["bash", "-c", "curl"]), list(&[&["curl"]]));
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
    assert_eq!(
        commands(&["sh", "-c", "grep -r \"two words\" 'src/'x"]),
        list(&[&["grep", "-r", "two words", "src/x"]])
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
    assert_eq!(
        commands(&["bash", "--norc", "--noprofile", "-c", "ls"]),
        list(&[&["ls"]])
    );
}

#[test]
fn a_shell_reading_a_startup_file_is_opaque() {
    // With only `shell:ls`, `--rcfile /dev/stdin -ic ls` ran the rcfile read from stdin.
    assert_eq!(
        opaque_resource(&["bash", "--rcfile", "/dev/stdin", "-ic", "ls"]),
        "shell:bash --rcfile"
    );
    assert_eq!(
        opaque_resource(&["bash", "--init-file=x", "-c", "ls"]),
        "shell:bash --init-file"
    );
    assert_eq!(
        opaque_resource(&["bash", "--frobnicate", "-c", "ls"]),
        "shell:bash --frobnicate"
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
fn assignments_that_change_what_runs_are_opaque() {
    assert_eq!(
        commands(&["sh", "-c", "LC_ALL=C sort x"]),
        list(&[&["sort", "x"]])
    );
    assert_eq!(
        opaque_resource(&["sh", "-c", "PATH=. curl x"]),
        "shell:curl PATH="
    );
    assert_eq!(
        opaque_resource(&["env", "LD_PRELOAD=./evil.so", "/usr/bin/ls"]),
        "shell:/usr/bin/ls LD_PRELOAD="
    );
    // `env PATH=dir /bin/sh -c ls` ran `dir/ls`: PATH matters whatever the outer program.
    let analysis = analyze(&argv(&["env", "PATH=dir", "/bin/sh", "-c", "ls"])).unwrap();
    assert_eq!(analysis.opaque[0].resource, "shell:/bin/sh PATH=");
    assert_eq!(
        analysis.commands,
        list(&[&["ls"]]),
        "ls is still authorized"
    );
    // A workspace .bashrc became startup code through HOME.
    assert_eq!(
        opaque_resource(&["env", "HOME=/ws", "bash", "-ic", "ls"]),
        "shell:bash HOME="
    );
    // env passes on any NAME=VALUE word; bash turns BASH_FUNC_x%% into a function.
    assert_eq!(
        opaque_resource(&["env", "BASH_FUNC_ls%%=() { curl x; }", "bash", "-c", "ls"]),
        "shell:bash BASH_FUNC_ls%%="
    );
    assert_eq!(
        opaque_resource(&["sudo", "PYTHONSTARTUP=x", "python3", "y.py"]),
        "shell:python3 PYTHONSTARTUP="
    );
}

#[test]
fn env_is_replaced_by_its_command() {
    assert_eq!(
        commands(&["env", "-i", "FOO=/x", "/usr/bin/curl", "u"]),
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
}

#[test]
fn env_split_string_needs_its_own_capability() {
    assert_eq!(opaque_resource(&["env", "-S", "curl x"]), "shell:env -S");
    assert_eq!(opaque_resource(&["env", "-Scurl x"]), "shell:env -S");
    assert_eq!(
        opaque_resource(&["env", "--split-string=curl x"]),
        "shell:env --split-string"
    );
    // Multi-byte option text never splits a character.
    assert_eq!(opaque_resource(&["env", "-é", "x"]), "shell:env -é");
    assert_eq!(opaque_resource(&["env", "-éé", "x"]), "shell:env -é");
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
        opaque_resource(&["time", "-o", "/etc/x", "ls"]),
        "shell:time -o"
    );
}

#[test]
fn xargs_input_never_chooses_the_program() {
    // `xargs -I ls sh -c ls` replaced `ls` in the script with a line of stdin.
    assert_eq!(
        opaque_resource(&["xargs", "-I", "ls", "sh", "-c", "ls"]),
        "shell:xargs sh"
    );
    assert_eq!(
        opaque_resource(&["xargs", "sh", "-c", "rm {}"]),
        "shell:xargs sh"
    );
    assert_eq!(opaque_resource(&["xargs", "env"]), "shell:xargs env");
    assert_eq!(opaque_resource(&["xargs", "nice"]), "shell:xargs nice");
    assert_eq!(
        opaque_resource(&["xargs", "python3"]),
        "shell:xargs python3"
    );
    assert_eq!(
        opaque_resource(&["xargs", "-I", "X", "X"]),
        "shell:xargs -I"
    );
    assert_eq!(opaque_resource(&["xargs", "-i", "{}"]), "shell:xargs -I");
    assert_eq!(
        opaque_resource(&["xargs", "--replace=P", "/usr/bin/P"]),
        "shell:xargs -I"
    );
    assert_eq!(
        commands(&["xargs", "-I", "X", "rm", "X"]),
        list(&[&["rm", "X"]])
    );
    assert_eq!(commands(&["xargs"]), list(&[&["xargs"]]));
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
    // Both sudo and the opaque form need a capability.
    let analysis = analyze(&argv(&["sudo", "python3", "-c", "x"])).unwrap();
    assert_eq!(analysis.resources(), ["shell:sudo", "shell:python3 -c"]);
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
fn interpreter_reading_stdin_or_a_device_is_opaque() {
    assert_eq!(opaque_resource(&["python3"]), "shell:python3 -");
    assert_eq!(opaque_resource(&["python3", "-"]), "shell:python3 -");
    assert_eq!(opaque_resource(&["python3", "-v"]), "shell:python3 -");
    assert_eq!(opaque_resource(&["node"]), "shell:node -");
    assert_eq!(
        opaque_resource(&["python3", "-i", "x.py"]),
        "shell:python3 -i"
    );
    for path in [
        "/dev/stdin",
        "/dev/fd/0",
        "/proc/self/fd/0",
        "//dev//stdin",
        "/tmp/../dev/stdin",
        "/./dev/tty",
    ] {
        assert_eq!(
            opaque_resource(&["python3", path]),
            "shell:python3 -",
            "{path}"
        );
        assert_eq!(opaque_resource(&["perl", path]), "shell:perl -", "{path}");
    }
    assert_eq!(
        opaque_resource(&["deno", "run", "/dev/stdin"]),
        "shell:deno -"
    );
    assert_eq!(opaque_resource(&["php", "-f", "/dev/stdin"]), "shell:php -");
}

#[test]
fn a_relative_script_after_a_directory_change_is_opaque() {
    assert_eq!(
        opaque_resource(&["env", "-C", "/dev", "python3", "stdin"]),
        "shell:python3 -"
    );
    assert_eq!(
        opaque_resource(&["bash", "-c", "cd /dev && python3 stdin"]),
        "shell:python3 -"
    );
    let analysis = analyze(&argv(&["bash", "-c", "cd sub && python3 /abs/x.py"])).unwrap();
    assert!(analysis.opaque.is_empty());
    assert_eq!(analysis.code_files, ["/abs/x.py"]);
}

#[test]
fn interpreter_running_a_script_is_a_command_with_a_code_file() {
    for (words, code) in [
        (
            &["python3", "script.py", "-c", "conf"][..],
            &["script.py"][..],
        ),
        (&["python3", "-W", "error", "script.py"], &["script.py"]),
        (&["python3", "-m", "pytest", "-c", "x"], &[]),
        (&["python3", "--version"], &[]),
        (&["node", "app.js", "-e"], &["app.js"]),
        (&["perl", "-I", "lib", "script.pl"], &["script.pl"]),
        (&["perl", "-pi.bak", "script.pl"], &["script.pl"]),
        (&["ruby", "-I", "lib", "x.rb"], &["x.rb"]),
        (&["php", "-f", "x.php"], &["x.php"]),
        (&["deno", "run", "x.ts"], &[]),
        (&["bun"], &[]),
    ] {
        let analysis = analyze(&argv(words)).unwrap();
        assert!(analysis.opaque.is_empty(), "{words:?}: {analysis:?}");
        assert_eq!(analysis.commands, list(&[words]), "{words:?}");
        assert_eq!(analysis.code_files, code, "{words:?}");
    }
}

#[test]
fn after_an_unknown_option_every_word_is_checked() {
    // `--frobnicate` might take `x.py` as its argument, so `-c` may be python's own.
    assert_eq!(
        opaque_resource(&["python3", "--frobnicate", "x.py", "-c", "x"]),
        "shell:python3 -c"
    );
    let analysis = analyze(&argv(&["python3", "--frobnicate", "x.py", "y.py"])).unwrap();
    assert_eq!(analysis.code_files, ["x.py", "y.py"]);
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
    assert!(!analyze(&words).unwrap().opaque.is_empty());
}

#[test]
fn every_program_started_is_listed_for_deny_rules() {
    let analysis = analyze(&argv(&[
        "nice",
        "env",
        "bash",
        "-c",
        "rm x && python3 -c y",
    ]))
    .unwrap();
    assert_eq!(analysis.programs, ["nice", "env", "bash", "rm", "python3"]);
    let analysis = analyze(&argv(&["xargs", "bash"])).unwrap();
    assert_eq!(analysis.programs, ["xargs", "bash"]);
}

// ---- property tests: no input panics ------------------------------------------------------

/// Words drawn from the analysis's own vocabulary plus arbitrary Unicode, so that the
/// generated argvs reach deep into shells, wrappers and interpreters.
fn word() -> impl Strategy<Value = String> {
    let vocabulary = prop::sample::select(vec![
        "bash",
        "sh",
        "-c",
        "-lc",
        "env",
        "-S",
        "-C",
        "-u",
        "-i",
        "-I",
        "-0",
        "xargs",
        "sudo",
        "-D",
        "su",
        "nice",
        "-n",
        "timeout",
        "python3",
        "-m",
        "node",
        "-e",
        "perl",
        "-pi",
        "php",
        "-f",
        "deno",
        "eval",
        "bun",
        "--",
        "-",
        "--rcfile",
        "PATH=x",
        "FOO=1",
        "/dev/stdin",
        "cd",
        "&&",
        "|",
        ";",
        "'",
        "\"",
        "ls",
        "é",
        "-é",
        "--é=é",
        "{}",
    ])
    .prop_map(str::to_string);
    prop_oneof![vocabulary, any::<String>(), "[-+]?[\\PC]{0,6}"]
}

fn script() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..8).prop_map(|words| words.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_argv_panics(argv in prop::collection::vec(word(), 0..10)) {
        let _ = analyze(&argv);
    }

    #[test]
    fn no_nested_script_panics(shell in word(), script in script(), tail in prop::collection::vec(word(), 0..4)) {
        let mut argv = vec![shell, "-c".to_string(), script];
        argv.extend(tail);
        let _ = analyze(&argv);
    }

    #[test]
    fn every_analysis_lists_what_it_authorizes(argv in prop::collection::vec(word(), 1..8)) {
        if let Ok(analysis) = analyze(&argv) {
            // Something always needs a capability, and every command's program is listed
            // for deny rules.
            prop_assert!(!analysis.resources().is_empty());
            for command in &analysis.commands {
                prop_assert!(analysis.programs.contains(&command[0]));
            }
        }
    }
}
