//! The `agent-libos` command: parse the command line, run it, exit with its code.
fn main() {
    // Hidden helper modes (the sandbox launcher, isolate workers) run before anything else
    // starts.
    if let Some(code) = agent_libos::providers::sandbox::run_hidden_mode() {
        std::process::exit(code);
    }
    if let Some(code) = agent_libos::isolate::run_worker_mode() {
        std::process::exit(code);
    }
    // The internal self-test of isolate worker confinement (run by its integration test).
    if let Some(code) = agent_libos::isolate::confine::selftest::run_hidden_mode() {
        std::process::exit(code);
    }
    let code = agent_libos::cli::run(agent_libos::cli::args::parse());
    std::process::exit(code);
}
