//! agora-node: the `agora` binary's library — daemon, CLI, executor and IO
//! around the pure state machines of `agora-protocol`.

pub mod executor;
pub mod gossip;
pub mod http;
