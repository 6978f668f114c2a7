//! The `agora` binary. The hidden `__supervise` subcommand (the per-task
//! supervisor started by the executor) is dispatched before anything else.

use std::ffi::OsStr;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("__supervise")) {
        std::process::exit(agora_node::executor::supervise_main(
            std::env::args_os().skip(2).collect(),
        ))
    }
}
