//! The command line: a clap-derive tree whose doc comments are the help text.
//!
//! `agora agent` runs a node; `agora run|ps|nodes|logs|kill` talk to a node
//! over its framework socket (`--socket`, or `AGORA_SOCKET`, which only these
//! client commands read: the agent's own socket comes from its `--socket`
//! flag or config file, never from the client's variable); `agora keygen`
//! prints a cluster key; `agora demo` runs a throwaway local cluster.
//! Every `agent` flag is also a key of the TOML file given with `--config`
//! (same spelling as the flag, e.g. `data-dir = "/var/lib/agora"`); a flag
//! given on the command line wins over the file.

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Agora: a masterless cluster scheduler. Every machine runs `agora agent`;
/// frameworks and this CLI talk to their local node over its socket.
#[derive(Debug, Parser)]
#[command(name = "agora", version)]
pub struct Cli {
    /// The node's framework socket. Client commands (run, ps, nodes, logs,
    /// kill) connect to it [default: $AGORA_SOCKET, else
    /// /var/lib/agora/agora.sock]; `agora agent` listens on it [default:
    /// DATA_DIR/agora.sock] and does not read AGORA_SOCKET.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,

    /// Client commands (run, ps, nodes, logs, kill): give up when the node
    /// does not answer a request within this many seconds (connecting and
    /// the handshake included), e.g. 2 or 0.5. `run --wait` waits for its
    /// tasks as long as they take, but while the node sends nothing it asks
    /// it every SECS whether it is still there, so a node that stops
    /// answering is reported within about twice SECS.
    #[arg(long, global = true, default_value = "10", value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The environment variable client commands read their node's socket from.
pub const SOCKET_ENV: &str = "AGORA_SOCKET";

impl Cli {
    /// The socket a client command connects to: `--socket`, else
    /// `$AGORA_SOCKET` (when set and not empty), else the default
    /// /var/lib/agora/agora.sock. Only client commands call this; the agent
    /// takes `socket` alone, so an exported AGORA_SOCKET meant for the CLI
    /// never moves an agent's socket.
    pub fn client_socket(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                std::env::var_os(SOCKET_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(crate::default_socket)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new cluster key (32 random bytes, base64). Save it to a file
    /// readable only by the agent's user: `agora keygen > cluster.key`.
    Keygen,
    /// Run a node: gossip, auctions, tasks and the framework socket.
    Agent(Box<AgentArgs>),
    /// Submit tasks through the auction.
    Run(RunArgs),
    /// List tasks (id, name, state, node, exit code) across the cluster, in
    /// task order; filter with --state, --name, --node, --framework.
    Ps(PsArgs),
    /// List the cluster's nodes as this node sees them (and, in a cluster
    /// of cells, every cell's totals); --all lists every cell's members.
    Nodes(NodesArgs),
    /// List the cells: this node's own (its gateways, members, free
    /// resources, from its gossip) and the others the federation knows
    /// (from their gateways). Empty in a flat cluster.
    Cells(ListArgs),
    /// Print a task's output, fetched from whichever node ran it.
    Logs(LogsArgs),
    /// Kill a task (TERM, then KILL after its grace period).
    Kill(KillArgs),
    /// Start a local cluster on loopback, run tasks on it, print where they
    /// ran and how fast they were placed, and tear it all down.
    Demo(DemoArgs),
}

/// `agora agent` flags. Each is also a key in the `--config` TOML file.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentArgs {
    /// TOML file whose keys are these flags' long names (flags win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Where the node keeps its identity, checkpoints, sandboxes and socket
    /// [default: /var/lib/agora].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// This node's id (letters, digits and . _ - : @). Default: HOSTNAME-XXXX,
    /// generated once and kept in DATA_DIR/node-id.
    #[arg(long)]
    pub node_id: Option<String>,

    /// Gossip address (UDP), HOST:PORT [default: 0.0.0.0:7700].
    #[arg(long)]
    pub listen: Option<String>,

    /// Gossip address other nodes use to reach this one, when it differs
    /// from --listen (required in practice when --listen is 0.0.0.0)
    /// [default: --listen, with 0.0.0.0 replaced by 127.0.0.1].
    #[arg(long)]
    pub advertise: Option<String>,

    /// Gossip addresses of nodes already in the cluster, HOST:PORT, comma
    /// separated or repeated. Empty for the first node. In cells, seeds of
    /// other cells do: a node alone in its cell asks them (at PORT+1) where
    /// its cell's members are.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,

    /// File holding the cluster key (from `agora keygen`). Required.
    #[arg(long)]
    pub cluster_key_file: Option<PathBuf>,

    /// Cluster name: nodes with another name ignore each other [default: agora].
    #[arg(long)]
    pub cluster_id: Option<String>,

    /// The cell this node belongs to (letters, digits, - _ .). A cluster
    /// past about 100 machines should run in cells of about 100: each cell
    /// gossips on its own, and a few of its members (its gateways) also
    /// gossip with the other cells' gateways. Without --cell or --cells the
    /// cluster is one flat cell (see docs/CELLS.md).
    #[arg(long, value_name = "NAME", conflicts_with = "cells")]
    pub cell: Option<String>,

    /// Split the cluster into K cells automatically: each node's cell is
    /// c0 to c<K-1>, from a hash of its node id. Give every node the same K,
    /// about the number of machines divided by 100. Raising K by one moves
    /// about 1/(K+1) of the nodes (restart them) into the new cell.
    #[arg(long, value_name = "K")]
    pub cells: Option<u32>,

    /// Gateways per cell: that many live members of each cell, picked by a
    /// hash (no election), join the federation gossip [default: 3].
    #[arg(long, value_name = "N")]
    pub gateways: Option<u32>,

    /// Federation gossip address (UDP), used while this node is a gateway,
    /// HOST:PORT [default: --listen's host and its PORT+2].
    #[arg(long, value_name = "HOST:PORT")]
    pub federation_listen: Option<String>,

    /// Federation gossip addresses of nodes of other cells, HOST:PORT,
    /// comma separated: a node that becomes a gateway joins the federation
    /// through them (those that are gateways answer) and through the
    /// gateways its own cell knows [default: each --seeds entry with its
    /// PORT+2].
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub federation_seeds: Option<Vec<String>>,

    /// Node-to-node address (libp2p, TCP), HOST:PORT [default: --listen's
    /// host and its PORT+1].
    #[arg(long)]
    pub p2p_listen: Option<String>,

    /// Node-to-node connections this node keeps open at most, 1 or more
    /// [default: 256]. A node connects to another when it first has a
    /// message for it (a bid, an award, a task's status) and not before;
    /// past this many, the connection used least recently is closed (a
    /// message still in flight on it is sent again). Lower it to spend
    /// fewer sockets and less memory on a large cluster; each new
    /// connection costs a TCP, pnet and noise handshake.
    #[arg(long, value_name = "N")]
    pub peer_connections: Option<u32>,

    /// A node-to-node connection that has carried no message for this long
    /// is closed: seconds, or a number with a unit s, m, h, d (e.g. 2m)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "string_or_number")]
    pub peer_idle_timeout: Option<String>,

    /// Framework socket path: set with the global `--socket` flag, not with
    /// AGORA_SOCKET (the CLI's variable) [default: DATA_DIR/agora.sock].
    #[arg(skip)]
    pub socket: Option<PathBuf>,

    /// CPUs to offer, more than 0, e.g. 2 or 0.5 (at most 3 decimals)
    /// [default: what the host has].
    #[arg(long, allow_negative_numbers = true, value_parser = cpus_arg)]
    #[serde(default, deserialize_with = "string_or_number")]
    pub cpus: Option<String>,

    /// Memory to offer, more than 0: MiB or with a unit (512, 2G)
    /// [default: the host's].
    #[arg(long, allow_negative_numbers = true, value_parser = node_mem_arg)]
    #[serde(default, deserialize_with = "string_or_number")]
    pub mem: Option<String>,

    /// Disk to offer, MiB or with a unit [default: 10G].
    #[arg(long)]
    #[serde(default, deserialize_with = "string_or_number")]
    pub disk: Option<String>,

    /// GPUs to offer [default: 0].
    #[arg(long)]
    pub gpus: Option<u32>,

    /// Ports handed to tasks that ask for them, e.g. 31000-32000
    /// [default: 31000-32000].
    #[arg(long)]
    pub ports: Option<String>,

    /// Attribute KEY=VALUE for placement constraints (repeatable), e.g.
    /// zone=eu-1. os, arch and hostname are set automatically.
    #[arg(long = "attr")]
    #[serde(rename = "attr")]
    pub attrs: Option<Vec<String>>,

    /// Gossip round interval in milliseconds [default: 500]. A SIGKILLed
    /// node is seen dead by every member in about 3 to 6 intervals (2-3 s at
    /// the default, on loopback); halving the interval halves that and
    /// doubles gossip traffic (about 0.57 KB/s per node per member at 500).
    #[arg(long)]
    pub gossip_interval_ms: Option<u64>,

    /// Serve the HTTP API, dashboard and /metrics on HOST:PORT (off unless
    /// given). A bare PORT means 127.0.0.1:PORT: the listener stays on
    /// localhost unless a host is named.
    #[arg(long)]
    pub http: Option<String>,

    /// File holding the bearer token the HTTP API needs, as
    /// 'Authorization: Bearer TOKEN': for POST and DELETE, and for every
    /// read unless --http-public-read is given. Without it mutations get
    /// 403, and so do reads unless --http-public-read.
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,

    /// Host names the HTTP API answers to besides IP addresses and
    /// localhost, comma separated or repeated (e.g. node1.example.com).
    /// A request whose Host header names any other host gets 403, so a web
    /// page cannot read the API by pointing its own domain at this node
    /// (DNS rebinding).
    #[arg(long, value_delimiter = ',')]
    pub http_allow_host: Option<Vec<String>>,

    /// Serve the HTTP API's reads (GET: the cluster, nodes, tasks, logs,
    /// frameworks, /metrics) without the bearer token. Without this flag
    /// every API read needs 'Authorization: Bearer TOKEN' as writes do (the
    /// dashboard asks for the token once); with no --http-token-file the
    /// API then serves nothing but the dashboard's static files. Tasks on
    /// this machine can reach a localhost listener too, so only give this
    /// when every local user and task may read every task's logs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub http_public_read: Option<bool>,

    /// The user tasks run as, a name or a uid (e.g. nobody, agora-task,
    /// 65534). When the agent runs as root the default is `nobody`: tasks
    /// then cannot read the node's keys, its data dir or other tasks'
    /// sandboxes, and cannot act as the operator on the socket. `root`
    /// runs tasks as root, with full control of the node; only give it
    /// when every task is trusted. An agent that is not root runs tasks
    /// as its own user (any other value is refused) and logs that tasks
    /// are not isolated from it [default: nobody when root].
    #[arg(long, value_name = "USER")]
    pub task_user: Option<String>,

    /// Members of this group (a name or gid) may act as the operator on the
    /// framework socket (`agora run`, `agora kill`), besides root and the
    /// agent's own user; the socket is then made group GROUP, mode 0660,
    /// so that they can connect. A connection from any other user that
    /// can reach the socket may still register as a framework and manage
    /// its own tasks [default: none].
    #[arg(long, value_name = "GROUP")]
    pub operator_group: Option<String>,

    /// Do not use cgroups even where the host allows them.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub no_cgroups: Option<bool>,

    /// Ended tasks this node keeps (checkpoint, sandbox and logs);
    /// the oldest beyond this many are deleted; also the most files kept
    /// set aside for inspection (corrupt checkpoints, old sandboxes)
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    pub gc_max_ended: Option<usize>,

    /// Ended tasks older than this, and files set aside for inspection
    /// longer than this, are deleted: a number of seconds or with a unit
    /// s, m, h, d (e.g. 24h) [default: 24h].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "string_or_number")]
    pub gc_max_age: Option<String>,

    /// While the data dir's disk is fuller than this percentage (as df
    /// counts it), files set aside and then the oldest ended tasks are
    /// deleted until it is not; 100 turns this off [default: 90].
    #[arg(long, value_name = "PCT")]
    pub gc_disk_percent: Option<u8>,

    /// How often ended tasks and leftovers (files set aside, orphan
    /// sandboxes) are garbage collected (also once at start-up), seconds
    /// or with a unit [default: 60s].
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "string_or_number")]
    pub gc_interval: Option<String>,

    /// Log format: text or json [default: text].
    #[arg(long)]
    pub log_format: Option<String>,

    /// Log filter, e.g. info or agora_node=debug [default: info, or RUST_LOG].
    #[arg(long)]
    pub log_level: Option<String>,
}

/// `agora run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How many tasks, 1 to 100000 (a framework's limit of unfinished
    /// tasks).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// CPUs per task, more than 0, e.g. 0.5 (at most 3 decimals).
    #[arg(long, default_value = "0.1", allow_negative_numbers = true, value_parser = cpus_arg)]
    pub cpus: String,
    /// Memory per task, MiB or with a unit (0: the task asks for none).
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = mem_arg)]
    pub mem: String,
    /// Placement constraint (repeatable): KEY==VALUE, KEY!=VALUE,
    /// "KEY in A,B", KEY:unique, KEY:spread.
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Job name shared by the tasks [default: the program's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE for the tasks (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Priority class (higher wins contention first).
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Give up placing a task after this many seconds (0: node default, 60).
    #[arg(long, default_value_t = 0)]
    pub placement_timeout: u32,
    /// Wait until every task has ended, showing progress on stderr; exit
    /// non-zero if any did not finish successfully.
    #[arg(long)]
    pub wait: bool,
    /// Print task ids and final states as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Flags of the listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array with stable snake_case keys.
    #[arg(long)]
    pub json: bool,
}

/// `agora nodes` flags.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print a JSON array with stable snake_case keys.
    #[arg(long)]
    pub json: bool,
    /// In a cluster of cells, list the members of every cell, not only of
    /// this node's own: each other cell's gateways are asked (answers wait
    /// at most 2 s; a cell that does not answer is named on stderr). Rows
    /// get a CELL column (`cell` in JSON).
    #[arg(long)]
    pub all: bool,
}

/// `agora ps` flags.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print a JSON array with stable snake_case keys.
    #[arg(long)]
    pub json: bool,
    /// Only tasks in this state (staging, starting, running, finished,
    /// failed, killed, lost).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<agora_protocol::task::TaskState>,
    /// Only tasks of this job name (`run --name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Only tasks placed on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only tasks of this framework id.
    #[arg(long)]
    pub framework: Option<String>,
    /// At most this many rows (at most 2000, the node's limit per answer).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub limit: u32,
}

fn parse_state(s: &str) -> Result<agora_protocol::task::TaskState, String> {
    use agora_protocol::task::TaskState::*;
    [Staging, Starting, Running, Finished, Failed, Killed, Lost]
        .into_iter()
        .find(|st| st.name() == s)
        .ok_or_else(|| {
            format!("{s:?} is not a task state; use staging, starting, running, finished, failed, killed or lost")
        })
}

/// `agora logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task id.
    pub task: String,
    /// Print standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
}

/// `agora kill` flags.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The task ids (one or more). Several are sent on one connection
    /// without a look-up each, so killing thousands takes seconds.
    #[arg(required_unless_present = "name", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// Kill every task of this job name (`run --name`) that has not ended,
    /// found with one cluster-wide listing (at most 2000, the most one
    /// answer holds; run it again for more).
    #[arg(long, value_name = "JOB")]
    pub name: Option<String>,
}

/// `agora demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Number of tasks.
    #[arg(long, default_value_t = 100)]
    pub tasks: u32,
    /// CPUs each node offers, more than 0.
    #[arg(long, default_value = "2", allow_negative_numbers = true, value_parser = cpus_arg)]
    pub cpus: String,
    /// Keep the temporary directory (and print its path) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// Parses `--timeout`: a positive number of seconds, at most a day.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (e.g. 10 or 0.5)"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{text} s is out of range: give more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a CPU count that must be more than zero (a node's offer, a
/// task's need) into millicores: a decimal such as 2, 0.5 or 1.25.
///
/// # Errors
/// Not such a decimal (negative numbers, NaN, infinities, exponents and
/// more than 3 decimals included), zero, or too large; the message says
/// what to write.
pub fn positive_cpus(text: &str) -> Result<u64, String> {
    let millis = agora_protocol::resources::parse_cpus(text).map_err(|e| e.to_string())?;
    if millis == 0 {
        return Err(format!(
            "{text:?} CPUs is none at all: give more than 0, e.g. 0.5 or 2"
        ));
    }
    Ok(millis)
}

/// Parses a node's memory offer, which must be more than zero, into MiB.
///
/// # Errors
/// Not a size, zero, or too large; the message says what to write.
pub fn positive_mib(text: &str) -> Result<u64, String> {
    let mib = agora_protocol::resources::parse_mib(text).map_err(|e| e.to_string())?;
    if mib == 0 {
        return Err(format!(
            "{text:?} is no memory at all: give more than 0, e.g. 512 or 2G"
        ));
    }
    Ok(mib)
}

/// clap's check of a `--cpus` flag (the value is kept as written).
fn cpus_arg(text: &str) -> Result<String, String> {
    positive_cpus(text).map(|_| text.to_string())
}

/// clap's check of the agent's `--mem`.
fn node_mem_arg(text: &str) -> Result<String, String> {
    positive_mib(text).map(|_| text.to_string())
}

/// clap's check of a task's `--mem` (0 allowed: the task asks for none).
fn mem_arg(text: &str) -> Result<String, String> {
    agora_protocol::resources::parse_mib(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// A duration as seconds for messages: `10`, `0.5`, `2.25`.
pub fn seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Accepts `cpus = 8` as well as `cpus = "8"` (and likewise mem and disk)
/// in the config file.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Quantity {
        Text(String),
        Int(u64),
        Float(f64),
    }
    Ok(Option::<Quantity>::deserialize(d)?.map(|q| match q {
        Quantity::Text(s) => s,
        Quantity::Int(i) => i.to_string(),
        Quantity::Float(f) => f.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "abc", "1e9", "NaN", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds(Duration::from_secs(10)), "10");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
    }

    fn parse_error(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(cli) => panic!("{args:?} was accepted: {cli:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cpus_must_be_more_than_zero_and_a_plain_decimal() {
        for bad in [
            "0", "0.0", "-1", "-0.5", "NaN", "nan", "inf", "-inf", "1e3", "0.0001", "",
        ] {
            let flag = format!("--cpus={bad}");
            let run = parse_error(&["agora", "run", &flag, "--", "true"]);
            assert!(run.contains("--cpus"), "{bad}: {run}");
            let agent = parse_error(&["agora", "agent", &flag]);
            assert!(agent.contains("--cpus"), "{bad}: {agent}");
            parse_error(&["agora", "demo", &flag]);
        }
        let zero = parse_error(&["agora", "run", "--cpus", "0", "--", "true"]);
        assert!(zero.contains("give more than 0"), "{zero}");
        let negative = parse_error(&["agora", "agent", "--cpus", "-1"]);
        assert!(negative.contains("is not a cpu count"), "{negative}");
        for bad in ["0", "0G", "-512", "NaN", "1.5G"] {
            let agent = parse_error(&["agora", "agent", &format!("--mem={bad}")]);
            assert!(agent.contains("--mem"), "{bad}: {agent}");
        }
        assert!(parse_error(&["agora", "run", "--mem", "-1", "--", "true"]).contains("--mem"));
        // What stays allowed.
        let ok = Cli::try_parse_from([
            "agora", "run", "--cpus", "0.001", "--mem", "0", "--", "true",
        ]);
        assert!(ok.is_ok(), "{ok:?}");
        let ok = Cli::try_parse_from(["agora", "agent", "--cpus", "0.5", "--mem", "2G"]);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(positive_cpus("1.25"), Ok(1250));
        assert_eq!(positive_mib("2G"), Ok(2048));
    }
}
