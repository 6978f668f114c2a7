//! The `agora-sim` binary: parses the command line and runs the simulator
//! (see docs/SIMULATOR.md). Exit codes: 0 done, 1 bad input or IO error,
//! 2 an invariant was violated.

fn main() {
    std::process::exit(agora_sim::cli::main_exit_code());
}
