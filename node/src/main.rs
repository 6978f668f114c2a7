//! The `agora` binary: dispatches the hidden per-task supervisor first, then
//! runs the CLI and maps its result to an exit code (see the library docs).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__supervise") {
        std::process::exit(agora_node::executor::supervise_main(args[2..].to_vec()));
    }
    if args.get(1).is_some_and(|a| a == "__spawner") {
        std::process::exit(agora_node::executor::spawner_main(args));
    }
    match agora_node::run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("agora: {e:#}");
            ExitCode::from(2)
        }
    }
}
