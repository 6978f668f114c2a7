//! The agent's configuration: flags merged over the `--config` TOML file,
//! defaults applied, and every value checked once, here, with errors that
//! say which flag or key was wrong.
//!
//! Ports: gossip is UDP on `--listen` (default 0.0.0.0:7700); node-to-node
//! messages are libp2p over TCP on `--p2p-listen` (default: the same host,
//! PORT+1); frameworks use the Unix socket DATA_DIR/agora.sock unless
//! `--socket` says otherwise. The HTTP API (`--http`) is off unless given;
//! a bare port binds 127.0.0.1 only. Tasks asking for ports get them from `--ports`
//! (default 31000-32000).

use crate::cli::AgentArgs;
use agora_protocol::constraint::Attributes;
use agora_protocol::resources::{PortSet, Resources, parse_mib};
use anyhow::{Context, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7700;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/agora";
/// Gossip round interval when none is configured. 500 ms, so that a
/// SIGKILLed member is seen dead by every survivor within 3 s at 32 nodes
/// (docs/MEMBERSHIP.md, `scripts/bench/membership.sh`); at 1000 ms the
/// detector needs 4.6-5.7 s. The cost is twice the gossip bytes of 1000 ms
/// (the simulator, docs/SIMULATOR.md "Choosing defaults", measured 554
/// against 274 KB per node per second at 2,000 nodes in cells of 500).
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 500;

/// Everything an agent needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Node id from the flag or file, if given (else generated and persisted).
    pub node_id: Option<String>,
    /// Gossip bind address.
    pub listen: SocketAddr,
    /// Gossip address published to peers.
    pub advertise: SocketAddr,
    /// Seeds.
    pub seeds: Vec<String>,
    /// Cluster key file.
    pub cluster_key_file: PathBuf,
    /// Cluster name.
    pub cluster_id: String,
    /// libp2p bind address and connection-pool limits (`--p2p-listen`,
    /// `--peer-connections`, `--peer-idle-timeout`); displays as the
    /// address.
    pub p2p_listen: crate::p2p::ListenConfig,
    /// Which cell this node is in (`--cell`, `--cells`).
    pub cell: CellChoice,
    /// Gateways per cell (`--gateways`).
    pub gateways: u32,
    /// Federation gossip bind address (`--federation-listen`).
    pub federation_listen: SocketAddr,
    /// Federation seeds (`--federation-seeds`).
    pub federation_seeds: Vec<String>,
    /// Framework socket path.
    pub socket: PathBuf,
    /// Resources offered (ports count is taken from `ports`).
    pub capacity: Resources,
    /// Ports for tasks.
    pub ports: PortSet,
    /// Attributes (os, arch, hostname and the operator's labels).
    pub attrs: Attributes,
    /// Gossip interval.
    pub gossip_interval: Duration,
    /// Whether to try cgroups.
    pub cgroups: bool,
    /// When ended tasks are garbage collected (`--gc-*`; the defaults and
    /// why are on [`crate::executor::GcPolicy`]).
    pub gc: crate::executor::GcPolicy,
    /// "text" or "json".
    pub log_format: String,
    /// Log filter.
    pub log_level: Option<String>,
    /// The HTTP API, dashboard and metrics (`--http`), if enabled.
    pub http: Option<crate::http::HttpConfig>,
    /// The user tasks run as (`--task-user`) when it is not the agent's
    /// own; `None`: tasks run as the agent's user (root only when asked
    /// with `--task-user root`, or any user when the agent is not root).
    pub task_user: Option<crate::users::User>,
    /// The agent's effective uid when it started.
    pub agent_uid: u32,
    /// `--operator-group`: its name and gid.
    pub operator_group: Option<(String, u32)>,
}

/// Which cell a node is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellChoice {
    /// One flat cluster (no `--cell`, no `--cells`).
    Flat,
    /// `--cell NAME`.
    Named(String),
    /// `--cells K`: derived from the node id
    /// ([`agora_protocol::cell::auto_cell`]).
    Auto(u32),
}

impl CellChoice {
    /// The cell's name for `node` (`None`: flat).
    pub fn name_for(&self, node: &agora_protocol::NodeId) -> Option<String> {
        match self {
            CellChoice::Flat => None,
            CellChoice::Named(n) => Some(n.clone()),
            CellChoice::Auto(k) => Some(agora_protocol::cell::auto_cell(node, *k)),
        }
    }
}

/// The most cells `--cells` splits a cluster into.
pub const MAX_AUTO_CELLS: u32 = 4096;

/// `HOST:PORT` with its port moved up by `by` (a seed's federation port).
fn port_plus(addr: &str, by: u16) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?.checked_add(by)?;
    Some(format!("{host}:{port}"))
}

/// The user that tasks run as when the agent runs as root and no
/// `--task-user` is given.
pub const DEFAULT_TASK_USER: &str = "nobody";

/// `--task-user` for an agent running as `agent_uid`: `Some` when tasks
/// run as another user than the agent's (see [`AgentConfig::task_user`]).
///
/// # Errors
/// An unknown user, a user other than the agent's for an agent that is
/// not root, or no `nobody` for the default.
pub fn task_user(spec: Option<&str>, agent_uid: u32) -> anyhow::Result<Option<crate::users::User>> {
    let lookup = |name: &str| {
        crate::users::user(name)
            .map_err(|e| anyhow::anyhow!("--task-user {name}: cannot look the user up: {e}"))
    };
    if agent_uid != 0 {
        let Some(name) = spec else { return Ok(None) };
        return match lookup(name)? {
            Some(u) if u.uid == agent_uid => Ok(None),
            _ => bail!(
                "--task-user {name} needs the agent to run as root (to switch to that user), \
                 but it runs as uid {agent_uid}: start the agent as root, or drop the flag \
                 (tasks then run as uid {agent_uid})"
            ),
        };
    }
    let Some(name) = spec else {
        return match lookup(DEFAULT_TASK_USER)? {
            Some(u) if u.uid != 0 => Ok(Some(u)),
            _ => bail!(
                "there is no unprivileged user {DEFAULT_TASK_USER:?} to run tasks as: create one \
                 (e.g. `useradd --system --no-create-home agora-task`) and give --task-user \
                 agora-task, or give --task-user root to run tasks as root (they can then \
                 read the node's keys and take it over)"
            ),
        };
    };
    match lookup(name)? {
        Some(u) if u.uid == 0 => Ok(None),
        Some(u) => Ok(Some(u)),
        None => bail!(
            "--task-user {name}: no such user; give an existing user (a name or a uid, e.g. \
             {DEFAULT_TASK_USER}) or create one (`useradd --system --no-create-home {name}`)"
        ),
    }
}

/// `--operator-group`: the group's name and gid.
///
/// # Errors
/// An unknown group.
fn operator_group(spec: &str) -> anyhow::Result<(String, u32)> {
    match crate::users::group(spec) {
        Ok(Some(gid)) => Ok((spec.to_string(), gid)),
        Ok(None) => bail!(
            "--operator-group {spec}: no such group; give an existing group (a name or a gid) \
             or create one (`groupadd {spec}`) and add the operators to it"
        ),
        Err(e) => bail!("--operator-group {spec}: cannot look the group up: {e}"),
    }
}

/// Reads the text of a `--config` file: TOML whose keys are the agent's
/// long flag names. Values are checked later, by [`AgentConfig::resolve`].
///
/// # Errors
/// Invalid TOML, an unknown key or a value of the wrong type, in toml's
/// words (which name the line and the key).
pub fn parse_file(text: &str) -> Result<AgentArgs, toml::de::Error> {
    toml::from_str::<AgentArgs>(text)
}

/// Reads the `--config` file, if any, and lays the flags over it.
///
/// # Errors
/// Unreadable or invalid TOML, with the path.
pub fn merge(flags: AgentArgs, socket: Option<PathBuf>) -> anyhow::Result<AgentArgs> {
    let file = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => AgentArgs::default(),
    };
    Ok(AgentArgs {
        config: flags.config,
        data_dir: flags.data_dir.or(file.data_dir),
        node_id: flags.node_id.or(file.node_id),
        listen: flags.listen.or(file.listen),
        advertise: flags.advertise.or(file.advertise),
        seeds: flags.seeds.or(file.seeds),
        cluster_key_file: flags.cluster_key_file.or(file.cluster_key_file),
        cluster_id: flags.cluster_id.or(file.cluster_id),
        p2p_listen: flags.p2p_listen.or(file.p2p_listen),
        cell: flags.cell.or(file.cell),
        cells: flags.cells.or(file.cells),
        gateways: flags.gateways.or(file.gateways),
        federation_listen: flags.federation_listen.or(file.federation_listen),
        federation_seeds: flags.federation_seeds.or(file.federation_seeds),
        peer_connections: flags.peer_connections.or(file.peer_connections),
        peer_idle_timeout: flags.peer_idle_timeout.or(file.peer_idle_timeout),
        socket: socket.or(file.socket),
        cpus: flags.cpus.or(file.cpus),
        mem: flags.mem.or(file.mem),
        disk: flags.disk.or(file.disk),
        gpus: flags.gpus.or(file.gpus),
        ports: flags.ports.or(file.ports),
        attrs: flags.attrs.or(file.attrs),
        gossip_interval_ms: flags.gossip_interval_ms.or(file.gossip_interval_ms),
        no_cgroups: flags.no_cgroups.or(file.no_cgroups),
        gc_max_ended: flags.gc_max_ended.or(file.gc_max_ended),
        gc_max_age: flags.gc_max_age.or(file.gc_max_age),
        gc_disk_percent: flags.gc_disk_percent.or(file.gc_disk_percent),
        gc_interval: flags.gc_interval.or(file.gc_interval),
        http: flags.http.or(file.http),
        http_token_file: flags.http_token_file.or(file.http_token_file),
        http_allow_host: flags.http_allow_host.or(file.http_allow_host),
        http_public_read: flags.http_public_read.or(file.http_public_read),
        task_user: flags.task_user.or(file.task_user),
        operator_group: flags.operator_group.or(file.operator_group),
        log_format: flags.log_format.or(file.log_format),
        log_level: flags.log_level.or(file.log_level),
    })
}

fn resolve_addr(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("--{flag} {text:?} is not a HOST:PORT address"))?
        .next()
        .with_context(|| format!("--{flag} {text:?} resolves to no address"))
}

/// `--http`: HOST:PORT, or a bare PORT meaning 127.0.0.1:PORT.
fn http_addr(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    resolve_addr("http", text)
}

/// A duration flag: seconds, or a number with a unit s, m, h or d.
fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!(
            "--{flag} {text:?}: unknown unit; give seconds or a number with s, m, h or d (e.g. 24h)"
        ),
    };
    let n: u64 = num.parse().with_context(|| {
        format!("--{flag} {text:?} is not a duration; give seconds or a number with s, m, h or d (e.g. 24h)")
    })?;
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .with_context(|| format!("--{flag} {text:?} is too long"))
}

/// `--peer-connections` and `--peer-idle-timeout` over the pool's defaults.
fn peer_pool(args: &AgentArgs) -> anyhow::Result<crate::p2p::PoolConfig> {
    let mut pool = crate::p2p::PoolConfig::default();
    if let Some(n) = args.peer_connections {
        if n == 0 {
            bail!(
                "--peer-connections 0 would let this node talk to no other: give 1 or more \
                 (default {})",
                crate::p2p::pool::DEFAULT_MAX_CONNECTIONS
            );
        }
        pool.max_connections = n as usize;
    }
    if let Some(t) = &args.peer_idle_timeout {
        pool.idle_timeout = parse_duration("peer-idle-timeout", t)?;
        if pool.idle_timeout.is_zero() {
            bail!(
                "--peer-idle-timeout {t:?} would close every connection at once: give 1s or more \
                 (default 30s)"
            );
        }
    }
    Ok(pool)
}

/// The `--gc-*` flags over [`crate::executor::GcPolicy`]'s defaults.
fn gc_policy(args: &AgentArgs) -> anyhow::Result<crate::executor::GcPolicy> {
    let mut gc = crate::executor::GcPolicy::default();
    if let Some(n) = args.gc_max_ended {
        gc.max_ended = n;
    }
    if let Some(t) = &args.gc_max_age {
        gc.max_age = parse_duration("gc-max-age", t)?;
    }
    if let Some(p) = args.gc_disk_percent {
        if !(1..=100).contains(&p) {
            bail!(
                "--gc-disk-percent {p} is out of range; use 1 to 100 (100 turns the disk rule off)"
            );
        }
        gc.disk_percent = p;
    }
    if let Some(t) = &args.gc_interval {
        gc.interval = parse_duration("gc-interval", t)?;
        if gc.interval.is_zero() {
            bail!("--gc-interval {t:?} must be at least 1s");
        }
    }
    Ok(gc)
}

fn host_cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

fn host_mem_mib() -> u64 {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.total_memory() / (1024 * 1024)
        }
        Err(_) => 1024,
    }
}

fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_string())
}

impl AgentConfig {
    /// Applies defaults and checks every value.
    ///
    /// # Errors
    /// The first invalid value, naming its flag and how to fix it.
    pub fn resolve(args: AgentArgs) -> anyhow::Result<Self> {
        let gc = gc_policy(&args)?;
        let pool = peer_pool(&args)?;
        let data_dir = args
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen_text = args
            .listen
            .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_GOSSIP_PORT}"));
        let listen = resolve_addr("listen", &listen_text)?;
        let advertise = match &args.advertise {
            Some(a) => resolve_addr("advertise", a)?,
            None if listen.ip().is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
            }
            None => listen,
        };
        let p2p_listen = match &args.p2p_listen {
            Some(a) => resolve_addr("p2p-listen", a)?,
            None => {
                let port = listen.port().checked_add(1).with_context(|| {
                    format!(
                        "--listen port {} leaves no PORT+1 for libp2p; give --p2p-listen",
                        listen.port()
                    )
                })?;
                if listen.port() == 0 {
                    bail!("--listen with port 0 needs an explicit --p2p-listen");
                }
                SocketAddr::new(listen.ip(), port)
            }
        };
        let p2p_listen = crate::p2p::ListenConfig {
            addr: p2p_listen,
            pool,
        };
        let cell = match (&args.cell, args.cells) {
            (Some(_), Some(_)) => bail!("give --cell NAME or --cells K, not both"),
            (Some(name), None) => {
                agora_protocol::cell::check_cell_name(name)
                    .map_err(anyhow::Error::msg)
                    .context("--cell")?;
                CellChoice::Named(name.clone())
            }
            (None, Some(k)) if (1..=MAX_AUTO_CELLS).contains(&k) => CellChoice::Auto(k),
            (None, Some(k)) => bail!(
                "--cells {k} is out of range: give 1 to {MAX_AUTO_CELLS} (about the machines \
                 divided by 100)"
            ),
            (None, None) => CellChoice::Flat,
        };
        let gateways = args.gateways.unwrap_or(3);
        if !(1..=16).contains(&gateways) {
            bail!("--gateways {gateways} is out of range: give 1 to 16 (3 is usual)");
        }
        let federation_listen = match &args.federation_listen {
            Some(a) => resolve_addr("federation-listen", a)?,
            None if cell == CellChoice::Flat => SocketAddr::new(listen.ip(), 0),
            None => {
                if listen.port() == 0 {
                    bail!(
                        "--listen with port 0 needs an explicit --federation-listen when the node runs in a cell"
                    );
                }
                let port = listen.port().checked_add(2).with_context(|| {
                    format!(
                        "--listen port {} leaves no PORT+2 for the federation; give --federation-listen",
                        listen.port()
                    )
                })?;
                SocketAddr::new(listen.ip(), port)
            }
        };
        let seeds: Vec<String> = args
            .seeds
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let federation_seeds: Vec<String> = match args.federation_seeds {
            Some(list) => list
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => seeds.iter().filter_map(|s| port_plus(s, 2)).collect(),
        };
        if cell == CellChoice::Flat && args.gateways.is_some() {
            bail!("--gateways needs --cell NAME or --cells K (a flat cluster has no gateways)");
        }
        let cluster_key_file = args.cluster_key_file.context(
            "--cluster-key-file is required: create a key with `agora keygen > cluster.key` and give every node the same file",
        )?;
        let cpu_millis = match &args.cpus {
            Some(c) => crate::cli::positive_cpus(c)
                .map_err(anyhow::Error::msg)
                .context("--cpus")?,
            None => host_cpus(),
        };
        let mem_mib = match &args.mem {
            Some(m) => crate::cli::positive_mib(m)
                .map_err(anyhow::Error::msg)
                .context("--mem")?,
            None => host_mem_mib(),
        };
        let disk_mib = match &args.disk {
            Some(d) => parse_mib(d).context("--disk")?,
            None => 10 * 1024,
        };
        let ports =
            PortSet::parse(args.ports.as_deref().unwrap_or("31000-32000")).context("--ports")?;
        let mut attrs = Attributes::default();
        attrs.insert("os", std::env::consts::OS);
        attrs.insert("arch", std::env::consts::ARCH);
        attrs.insert("hostname", hostname());
        for label in args.attrs.unwrap_or_default() {
            let (k, v) = Attributes::parse_label(&label).context("--attr")?;
            attrs.insert(k, v);
        }
        let interval = args
            .gossip_interval_ms
            .unwrap_or(DEFAULT_GOSSIP_INTERVAL_MS);
        if !(10..=60_000).contains(&interval) {
            bail!("--gossip-interval-ms {interval} is out of range; use 10 to 60000");
        }
        let log_format = args.log_format.unwrap_or_else(|| "text".to_string());
        if log_format != "text" && log_format != "json" {
            bail!("--log-format {log_format:?} is unknown; use text or json");
        }
        let socket = args.socket.unwrap_or_else(|| data_dir.join("agora.sock"));
        let http = match &args.http {
            Some(text) => {
                let listen = http_addr(text)?;
                let mut http = crate::http::HttpConfig::from_flags(
                    Some(listen),
                    args.http_token_file.as_deref(),
                    args.http_allow_host.as_deref().unwrap_or_default(),
                )?;
                http.public_read = args.http_public_read.unwrap_or(false);
                Some(http)
            }
            None if args.http_public_read.is_some() => {
                bail!("--http-public-read needs --http HOST:PORT (the HTTP API is off without it)")
            }
            None if args.http_token_file.is_some() => {
                bail!("--http-token-file needs --http HOST:PORT (the HTTP API is off without it)")
            }
            None if args.http_allow_host.is_some() => {
                bail!("--http-allow-host needs --http HOST:PORT (the HTTP API is off without it)")
            }
            None => None,
        };
        let agent_uid = rustix::process::geteuid().as_raw();
        let task_user = task_user(args.task_user.as_deref(), agent_uid)?;
        let operator_group = args
            .operator_group
            .as_deref()
            .map(operator_group)
            .transpose()?;
        Ok(AgentConfig {
            task_user,
            agent_uid,
            operator_group,
            node_id: args.node_id,
            listen,
            advertise,
            seeds,
            cell,
            gateways,
            federation_listen,
            federation_seeds,
            cluster_key_file,
            cluster_id: args.cluster_id.unwrap_or_else(|| "agora".to_string()),
            p2p_listen,
            socket,
            capacity: Resources {
                cpu_millis,
                mem_mib,
                disk_mib,
                gpus: args.gpus.unwrap_or(0),
                ports: 0,
            },
            ports,
            attrs,
            gossip_interval: Duration::from_millis(interval),
            cgroups: !args.no_cgroups.unwrap_or(false),
            gc,
            log_format,
            log_level: args.log_level,
            http,
            data_dir,
        })
    }

    /// The libp2p address published to peers: the p2p port on the
    /// advertised gossip host when the bind address is unspecified.
    pub fn p2p_advertise(&self) -> SocketAddr {
        let p2p = self.p2p_listen.addr;
        if p2p.ip().is_unspecified() {
            SocketAddr::new(self.advertise.ip(), p2p.port())
        } else {
            p2p
        }
    }
}

/// Creates a directory (and parents) with a clear error.
///
/// # Errors
/// Permission or IO errors, with the path.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as a config file named `name` in a temporary directory
    /// (removed on return) and merges it with no flags.
    fn merge_file(name: &str, text: &str) -> anyhow::Result<AgentArgs> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("agora-cfg-{name}-"))
            .tempdir()
            .unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        merge(
            AgentArgs {
                config: Some(path),
                ..AgentArgs::default()
            },
            None,
        )
    }

    #[test]
    fn config_file_keys_match_flags_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9000\"\ncpus = \"3\"\nattr = [\"zone=a\"]\ncluster-key-file = \"k\"\nsocket = \"/tmp/s.sock\"\ngossip-interval-ms = 100\nno-cgroups = true\n",
        )
        .unwrap();
        let flags = AgentArgs {
            config: Some(path),
            cpus: Some("1".into()),
            ..AgentArgs::default()
        };
        let merged = merge(flags, None).unwrap();
        let cfg = AgentConfig::resolve(merged).unwrap();
        assert_eq!(cfg.capacity.cpu_millis, 1000);
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.p2p_listen.addr.port(), 9001);
        assert_eq!(cfg.attrs.get("zone"), Some("a"));
        assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));
        assert!(!cfg.cgroups);
        let err = merge_file("bad", "no-such-key = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-key"), "{err:#}");
    }

    #[test]
    fn gc_keys_and_flags_set_the_policy_and_bad_values_say_which() {
        let base = || AgentArgs {
            cluster_key_file: Some(PathBuf::from("k")),
            ..AgentArgs::default()
        };
        let gc = AgentConfig::resolve(base()).unwrap().gc;
        assert_eq!(gc, crate::executor::GcPolicy::default());
        let merged = merge_file(
            "gc",
            "cluster-key-file = \"k\"\ngc-max-ended = 10\ngc-max-age = \"2h\"\ngc-disk-percent = 80\ngc-interval = 30\n",
        )
        .unwrap();
        let gc = AgentConfig::resolve(merged).unwrap().gc;
        assert_eq!(gc.max_ended, 10);
        assert_eq!(gc.max_age, Duration::from_secs(7200));
        assert_eq!(gc.disk_percent, 80);
        assert_eq!(gc.interval, Duration::from_secs(30));
        for (args, needle) in [
            (
                AgentArgs {
                    gc_max_age: Some("1w".into()),
                    ..base()
                },
                "--gc-max-age \"1w\": unknown unit",
            ),
            (
                AgentArgs {
                    gc_max_age: Some("h".into()),
                    ..base()
                },
                "--gc-max-age \"h\" is not a duration",
            ),
            (
                AgentArgs {
                    gc_disk_percent: Some(0),
                    ..base()
                },
                "--gc-disk-percent 0 is out of range",
            ),
            (
                AgentArgs {
                    gc_interval: Some("0".into()),
                    ..base()
                },
                "--gc-interval \"0\" must be at least 1s",
            ),
        ] {
            let err = AgentConfig::resolve(args).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
    }

    #[test]
    fn quantities_may_be_numbers_or_text_in_the_config_file() {
        let merged = merge_file(
            "num",
            "cpus = 8\nmem = \"16G\"\ndisk = 2048\ncluster-key-file = \"k\"\n",
        )
        .unwrap();
        let cfg = AgentConfig::resolve(merged).unwrap();
        assert_eq!(cfg.capacity.cpu_millis, 8000);
        assert_eq!(cfg.capacity.mem_mib, 16 * 1024);
        assert_eq!(cfg.capacity.disk_mib, 2048);
    }

    #[test]
    fn http_is_off_by_default_and_a_bare_port_is_localhost() {
        let dir = std::env::temp_dir().join(format!("agora-http-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let base = || AgentArgs {
            cluster_key_file: Some(PathBuf::from("k")),
            ..AgentArgs::default()
        };
        assert!(AgentConfig::resolve(base()).unwrap().http.is_none());
        let cfg = AgentConfig::resolve(AgentArgs {
            http: Some("7481".into()),
            ..base()
        })
        .unwrap();
        let http = cfg.http.unwrap();
        assert_eq!(http.listen, "127.0.0.1:7481".parse().unwrap());
        assert!(http.token.is_none());
        // TOML keys like every flag.
        let merged = merge_file(
            "http",
            &format!(
                "cluster-key-file = \"k\"\nhttp = \"0.0.0.0:7482\"\nhttp-token-file = \"{}\"\nhttp-allow-host = [\"Node1.Example.com\"]\n",
                token.display()
            ),
        )
        .unwrap();
        let http = AgentConfig::resolve(merged).unwrap().http.unwrap();
        assert_eq!(http.listen, "0.0.0.0:7482".parse().unwrap());
        assert_eq!(http.token.as_deref(), Some("s3cret"));
        assert_eq!(http.allowed_hosts, ["node1.example.com"]);
        let err = AgentConfig::resolve(AgentArgs {
            http_token_file: Some(token),
            ..base()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("needs --http"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Reads need the token unless asked otherwise.
        assert!(!http.public_read);
        let merged = merge_file(
            "public-read",
            "cluster-key-file = \"k\"\nhttp = \"7483\"\nhttp-public-read = true\n",
        )
        .unwrap();
        assert!(
            AgentConfig::resolve(merged)
                .unwrap()
                .http
                .unwrap()
                .public_read
        );
        let err = AgentConfig::resolve(AgentArgs {
            http_public_read: Some(true),
            ..base()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("needs --http"), "{err:#}");
    }

    #[test]
    fn tasks_of_a_root_agent_run_as_nobody_unless_told_and_others_run_as_the_agent() {
        // Issue 12: tasks ran as the agent's user, root, and took the node over.
        let nobody = crate::users::user(DEFAULT_TASK_USER).unwrap();
        if let Some(nobody) = &nobody {
            assert_eq!(task_user(None, 0).unwrap().as_ref(), Some(nobody));
            assert_eq!(
                task_user(Some(&nobody.uid.to_string()), 0)
                    .unwrap()
                    .as_ref(),
                Some(nobody)
            );
        }
        // Root only when asked, by name or uid.
        assert_eq!(task_user(Some("root"), 0).unwrap(), None);
        assert_eq!(task_user(Some("0"), 0).unwrap(), None);
        let err = task_user(Some("no-such-user-agora"), 0).unwrap_err();
        assert!(format!("{err:#}").contains("no such user"), "{err:#}");
        // An agent that is not root runs tasks as itself and cannot switch.
        assert_eq!(task_user(None, 1234).unwrap(), None);
        let err = task_user(Some("root"), 1234).unwrap_err();
        assert!(
            format!("{err:#}").contains("needs the agent to run as root"),
            "{err:#}"
        );
        let err = operator_group("no-such-group-agora").unwrap_err();
        assert!(format!("{err:#}").contains("no such group"), "{err:#}");
        assert_eq!(operator_group("0").unwrap(), ("0".to_string(), 0));
    }
}
