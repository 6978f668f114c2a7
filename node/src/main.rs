//! The `agora` binary (placeholder until the node issue lands).
fn main() {}
