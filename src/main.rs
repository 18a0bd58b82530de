//! The `agent-libos` command: parse the command line, run it, exit with its code.
fn main() {
    let code = agent_libos::cli::run(agent_libos::cli::args::parse());
    std::process::exit(code);
}
