//! agora-node: the `agora` binary's library — daemon, CLI, executor and IO
//! around the pure state machines of `agora-protocol`.
//!
//! - [`cli`] and [`config`]: flags, the TOML config file, defaults.
//! - [`agent`]: a running node (one task owning every state machine).
//! - [`p2p`], [`gossip`], [`socket`], [`executor`]: its IO; [`framing`]
//!   reads and writes the frames of the socket and of peer streams.
//! - [`client`] and [`commands`]: the CLI's side of the framework socket.
//! - [`demo`]: `agora demo`, a throwaway local cluster.
//!
//! [`run`] is the whole program; `main` maps its result to an exit code:
//! 0 success, 1 `run --wait` saw a task not finish ok, 2 any error (printed
//! as one line, the whole cause chain, on stderr).

pub mod agent;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod executor;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod gossip;
pub mod http;
pub mod identity;
pub mod p2p;
pub mod service_file;
pub mod socket;
pub mod surface;
pub mod users;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// The default socket path for CLI commands.
pub fn default_socket() -> PathBuf {
    PathBuf::from(config::DEFAULT_DATA_DIR).join("agora.sock")
}

/// Whether log lines get ANSI colours: only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>), so a log written to
/// a file or a pipe (systemd, `2> agent.log`) holds plain text.
fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(format: &str, level: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Parses the command line and runs it; returns the exit code.
///
/// # Errors
/// Any failure, for `main` to print with `{:#}`.
pub fn run() -> anyhow::Result<i32> {
    let cli = cli::Cli::parse();
    let client_socket = cli.client_socket();
    let socket = cli.socket.clone();
    match cli.command {
        cli::Command::Keygen => {
            println!("{}", gossip::ClusterKey::generate().to_base64());
            Ok(0)
        }
        cli::Command::Agent(args) => {
            let merged = config::merge(*args, socket)?;
            let cfg = config::AgentConfig::resolve(merged)?;
            init_logging(&cfg.log_format, cfg.log_level.as_deref());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(agent::run(cfg))?;
            Ok(0)
        }
        cli::Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        cmd => {
            let socket = client_socket;
            let rt = runtime()?;
            match cmd {
                cli::Command::Run(a) => rt.block_on(commands::run(&socket, cli.timeout, a)),
                cli::Command::Ps(a) => rt.block_on(commands::ps(&socket, cli.timeout, a)),
                cli::Command::Nodes(a) => rt.block_on(commands::nodes(&socket, cli.timeout, a)),
                cli::Command::Cells(a) => rt.block_on(commands::cells(&socket, cli.timeout, a)),
                cli::Command::Logs(a) => rt.block_on(commands::logs(&socket, cli.timeout, a)),
                cli::Command::Kill(a) => rt.block_on(commands::kill(&socket, cli.timeout, a)),
                cli::Command::Keygen | cli::Command::Agent(_) | cli::Command::Demo(_) => Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_colours;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }
}
