//! The `agora-sim` binary: parses the command line and runs the simulator
//! (see docs/SIMULATOR.md). Exit codes: 0 done, 1 bad input or IO error,
//! 2 an invariant was violated.

/// The simulator allocates and frees millions of small messages and ids per
/// simulated second; mimalloc replaces glibc malloc, whose free-list work was
/// about 15% of a 10,000-node run under `perf`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(agora_sim::cli::main_exit_code());
}
