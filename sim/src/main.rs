//! The `agora-sim` binary (placeholder until the simulator issue lands).
fn main() {}
