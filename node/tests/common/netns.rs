//! The fault harness (issue 12): real agents, each in its own network
//! namespace joined to one bridge, with a small tmpfs as its data dir, and
//! the faults a real cluster meets: links cut both ways or one way, packet
//! loss, SIGKILL, SIGSTOP, restarts, a full or read-only disk. After every
//! step a test checks the cluster-wide invariants against what each node
//! really runs (the supervisors alive under its data dir, read from /proc
//! and its checkpoints) and what the frameworks were told ([`Recorder`]).
//!
//! Needs root, `ip`, `nft` and `nsenter`; without them [`FaultCluster::start`]
//! prints why and returns None, and the test passes as skipped. `.ci/run`
//! installs nftables and runs the suite as root, with AGORA_REQUIRE_NETNS=1
//! so that a missing capability there is a failure, not a skip.
//!
//! Names carry the test process's pid (`agt{PID}x{K}...`), addresses are in
//! 10.213.K.0/24 inside the namespaces only (the bridge has no address, so
//! nothing leaks into the host's routing), and the guard's drop kills every
//! agent and supervisor, unmounts every tmpfs and deletes every namespace,
//! link and bridge it made; at start, what a killed earlier run left (its
//! pid gone) is removed too. Packet delay needs tc netem, which this kernel
//! may not have: [`FaultCluster::delay`] says so instead of pretending.

use super::{exe, keygen, wait_for};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gossip port every agent listens on inside its namespace (libp2p takes
/// the next one).
const PORT: u16 = 7946;

/// Cpus each agent offers (--cpus), in millis.
pub const CPU_MILLIS: u64 = 2000;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// One fault cluster at a time per test binary: a scenario's timing (the
/// failure detector's verdicts) must not depend on how many other clusters
/// share the machine's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(
            "not root: network namespaces need root (.ci/run runs the tests as root)".into(),
        );
    }
    for tool in ["ip", "nft", "nsenter", "mount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables util-linux)"
            ));
        }
    }
    None
}

/// Runs a command; panics with its output when it fails.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring how it ends (cleanup).
fn try_run(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Writes `input` to `nft -f -` in namespace `ns`.
fn nft(ns: &str, input: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes what killed earlier runs of the tests left: namespaces, links and
/// mounts named for a pid that no longer runs.
fn sweep_stale() {
    let alive = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("agt") else {
            return true;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        pid.parse::<u32>()
            .map(|p| Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(true)
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let Some(point) = line.split_whitespace().nth(1) else {
            continue;
        };
        let Some(dir) = Path::new(point).parent() else {
            continue;
        };
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("agt") && !alive(name) {
            try_run(&["umount", "-l", point]);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let list = run(&["ip", "netns", "list"]);
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("agt") && !alive(name) {
            try_run(&["ip", "netns", "del", name]);
        }
    }
    let links = run(&["ip", "-o", "link", "show"]);
    for line in links.lines() {
        let Some(name) = line.split(':').nth(1) else {
            continue;
        };
        let name = name.trim().split('@').next().unwrap_or("");
        if name.starts_with("agt") && !alive(name) {
            try_run(&["ip", "link", "del", name]);
        }
    }
}

/// One agent in its namespace.
pub struct FaultNode {
    /// Node id (`n1`...).
    pub id: String,
    /// Its namespace.
    pub ns: String,
    /// Its address inside the namespaces.
    pub ip: String,
    /// Its data dir (a tmpfs).
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    stopped: bool,
}

impl FaultNode {
    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agora.sock")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Whether the agent process runs (it may be stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs a CLI command against this node (from the host: the socket is a
    /// file, so no namespace is needed).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(exe())
            .arg("--socket")
            .arg(self.socket())
            .args(["--timeout", "5"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `CMD --json` from this node, if it answers.
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        if !self.running() || self.stopped {
            return None;
        }
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Ids of the nodes this node holds alive.
    pub fn alive(&self) -> Option<BTreeSet<String>> {
        let v = self.json(&["nodes"])?;
        Some(
            v.as_array()?
                .iter()
                .filter(|n| n["alive"] == true)
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// The tasks the node's supervisors run now: task id to cpu millis.
    /// This is the ground truth: the processes alive under its data dir.
    pub fn really_running(&self) -> BTreeMap<String, u64> {
        let sandboxes = self.dir.join("sandboxes");
        let mut out = BTreeMap::new();
        for name in supervised_under(&sandboxes) {
            let task = name.strip_prefix('%').unwrap_or(&name).to_string();
            let cpu = std::fs::read(self.dir.join("tasks").join(format!("{name}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| find_u64(&v, "cpu_millis"))
                .unwrap_or(0);
            out.insert(task, cpu);
        }
        out
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(exe())
            .args(&self.args)
            .env("RUST_LOG", "info,agora_node=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.stopped = false;
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            try_run(&["kill", sig, &c.id().to_string()]);
        }
    }
}

/// Sandbox names of the live (not zombie) `agora __supervise` processes whose
/// sandbox is in `dir`.
fn supervised_under(dir: &Path) -> Vec<String> {
    super::processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.cmdline.get(1).is_some_and(|a| a == "__supervise"))
        .filter_map(|p| {
            let sandbox = PathBuf::from(p.cmdline.get(2)?);
            (sandbox.parent() == Some(dir))
                .then(|| {
                    sandbox
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .flatten()
        })
        .collect()
}

/// The first number under `key` anywhere in `v`.
fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(Value::as_u64)
            .or_else(|| m.values().find_map(|x| find_u64(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

/// Fault rules of one namespace.
#[derive(Clone, Default)]
struct Rules {
    /// Nodes this one cannot send to.
    blocked: BTreeSet<usize>,
    /// Percent of incoming packets dropped.
    loss: u8,
}

/// N agents in namespaces, with the faults, the schedule of what was done
/// (printed when a test fails) and cleanup.
pub struct FaultCluster {
    /// The agents (dropped, hence killed, first).
    pub nodes: Vec<FaultNode>,
    /// The seed of the test's random schedule.
    pub seed: u64,
    rules: Vec<Rules>,
    bridge: String,
    veths: Vec<String>,
    mounts: Vec<PathBuf>,
    schedule: Arc<Mutex<Vec<String>>>,
    started: Instant,
    root: tempfile::TempDir,
    /// Held while the cluster lives (dropped last).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl FaultCluster {
    /// Starts `n` agents (`n1`..`nN`, 2 cpus and 2 GiB each, gossip every
    /// 200 ms) and waits until each sees all of them alive. None (with a
    /// message) where namespaces cannot be made and AGORA_REQUIRE_NETNS is
    /// not set. `seed` comes from AGORA_FAULT_SEED when set.
    pub fn start(n: usize, seed: u64, extra: &[&str]) -> Option<Self> {
        if let Some(why) = unavailable() {
            assert!(
                std::env::var_os("AGORA_REQUIRE_NETNS").is_none(),
                "AGORA_REQUIRE_NETNS is set but the fault suite cannot run: {why}"
            );
            eprintln!("SKIPPED: the fault suite cannot run here: {why}");
            return None;
        }
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        sweep_stale();
        let seed = std::env::var("AGORA_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(seed);
        let k = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        assert!(k < 250, "too many fault clusters in one test binary");
        let tag = format!("agt{}x{k}", std::process::id());
        let bridge = format!("{tag}b");
        assert!(bridge.len() <= 15, "interface name {bridge} too long");
        // Named for this process, so that a later run can tell what a
        // killed one left mounted.
        let root = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .tempdir()
            .unwrap();
        let key = root.path().join("cluster.key");
        keygen(&key);
        let mut c = FaultCluster {
            nodes: Vec::new(),
            seed,
            rules: vec![Rules::default(); n],
            bridge: bridge.clone(),
            veths: Vec::new(),
            mounts: Vec::new(),
            schedule: Arc::new(Mutex::new(Vec::new())),
            started: Instant::now(),
            root,
            _turn: turn,
        };
        eprintln!(
            "fault cluster {tag}: {n} nodes, seed {seed} (AGORA_FAULT_SEED={seed} replays it)"
        );
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&["ip", "link", "set", &bridge, "up"]);
        let subnet = 10 + k;
        let first_ip = format!("10.213.{subnet}.1");
        for i in 1..=n {
            let ns = format!("{tag}n{i}");
            let veth = format!("{tag}v{i}");
            assert!(veth.len() <= 15, "interface name {veth} too long");
            let ip = format!("10.213.{subnet}.{i}");
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            c.veths.push(veth.clone());
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let id = format!("n{i}");
            let dir = c.root.path().join(&id);
            std::fs::create_dir(&dir).unwrap();
            run(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "size=64m,mode=0755",
                "tmpfs",
                dir.to_str().unwrap(),
            ]);
            c.mounts.push(dir.clone());
            let mut args: Vec<String> = vec![
                "agent".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen".into(),
                format!("{ip}:{PORT}"),
                "--cluster-key-file".into(),
                key.display().to_string(),
                "--node-id".into(),
                id.clone(),
                "--cpus".into(),
                (CPU_MILLIS / 1000).to_string(),
                "--mem".into(),
                "2048".into(),
                "--gossip-interval-ms".into(),
                "200".into(),
                "--no-cgroups".into(),
            ];
            if i > 1 {
                args.push("--seeds".into());
                args.push(format!("{first_ip}:{PORT}"));
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut node = FaultNode {
                id,
                ns,
                ip,
                dir,
                args,
                child: None,
                stopped: false,
            };
            node.start();
            c.nodes.push(node);
        }
        c.note(format!("started {n} agents"));
        let all: BTreeSet<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
        for i in 0..n {
            c.wait_sees(i, &all, Duration::from_secs(60));
        }
        Some(c)
    }

    /// Records a step of the schedule (printed if the test fails).
    pub fn note(&self, what: impl Into<String>) {
        let line = format!(
            "{:>8.2}s  {}",
            self.started.elapsed().as_secs_f64(),
            what.into()
        );
        eprintln!("fault: {line}");
        self.schedule.lock().unwrap().push(line);
    }

    /// Seconds since the cluster started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Indices of every node.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Waits until node `i` holds exactly `alive` alive.
    pub fn wait_sees(&self, i: usize, alive: &BTreeSet<String>, timeout: Duration) {
        let node = &self.nodes[i];
        wait_for(
            &format!("{} to hold alive exactly {alive:?}", node.id),
            timeout,
            || (node.alive().as_ref() == Some(alive)).then_some(()),
        );
    }

    fn apply_rules(&self, i: usize) {
        let r = &self.rules[i];
        let mut out = String::new();
        if !r.blocked.is_empty() {
            let ips: Vec<&str> = r
                .blocked
                .iter()
                .map(|j| self.nodes[*j].ip.as_str())
                .collect();
            out.push_str(&format!("    ip daddr {{ {} }} drop\n", ips.join(", ")));
        }
        let inp = if r.loss > 0 {
            format!(
                "    iifname \"eth0\" numgen random mod 100 < {} drop\n",
                r.loss
            )
        } else {
            String::new()
        };
        nft(
            &self.nodes[i].ns,
            &format!(
                "table inet agora_fault\ndelete table inet agora_fault\n\
                 table inet agora_fault {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{out}  }}\n  \
                 chain input {{\n    type filter hook input priority 0; policy accept;\n{inp}  }}\n}}\n"
            ),
        );
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                self.rules[i].blocked.insert(j);
                self.rules[j].blocked.insert(i);
            }
        }
        for i in a.iter().chain(b) {
            self.apply_rules(*i);
        }
        self.note(format!("partition {} | {}", self.names(a), self.names(b)));
    }

    /// Cuts the link from `from` to `to` only (`to` still reaches `from`).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.rules[from].blocked.insert(to);
        self.apply_rules(from);
        self.note(format!(
            "cut {} -> {}",
            self.nodes[from].id, self.nodes[to].id
        ));
    }

    /// Restores every cut link (loss stays).
    pub fn heal(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.rules[i].blocked.is_empty() {
                self.rules[i].blocked.clear();
                self.apply_rules(i);
            }
        }
        self.note("heal every link");
    }

    /// Drops `pct` percent of the packets every node receives (0 restores).
    pub fn loss(&mut self, pct: u8) {
        for i in 0..self.nodes.len() {
            self.rules[i].loss = pct;
            self.apply_rules(i);
        }
        self.note(format!("packet loss {pct}% on every link"));
    }

    /// Delays packets: needs tc netem. Err says why it cannot here.
    pub fn delay(&mut self, ms: u32) -> Result<(), String> {
        let ns = self.nodes[0].ns.clone();
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
            ])
            .args(["delay", &format!("{ms}ms")])
            .output()
            .map_err(|e| format!("tc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tc netem is not available on this kernel ({}): delay is not tested here",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for n in &self.nodes[1..] {
            run(&[
                "ip",
                "netns",
                "exec",
                &n.ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{ms}ms"),
            ]);
        }
        self.note(format!("delay {ms} ms on every link"));
        Ok(())
    }

    /// SIGKILLs agent `i` (its supervisors and tasks keep running).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            if node.stopped {
                try_run(&["kill", "-CONT", &c.id().to_string()]);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        node.stopped = false;
        self.note(format!("SIGKILL {}", self.nodes[i].id));
    }

    /// Starts agent `i` again with the same flags and data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "restart of a running agent");
        self.nodes[i].start();
        self.note(format!("restart {}", self.nodes[i].id));
    }

    /// SIGSTOPs agent `i` (its tasks keep running).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].signal("-STOP");
        self.nodes[i].stopped = true;
        self.note(format!("SIGSTOP {}", self.nodes[i].id));
    }

    /// SIGCONTs agent `i`.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal("-CONT");
        self.nodes[i].stopped = false;
        self.note(format!("SIGCONT {}", self.nodes[i].id));
    }

    /// Fills node `i`'s data dir (its tmpfs) up to the last byte.
    pub fn fill_disk(&self, i: usize) {
        let path = self.nodes[i].dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        self.note(format!("fill the data dir of {}", self.nodes[i].id));
    }

    /// Frees what [`FaultCluster::fill_disk`] took.
    pub fn free_disk(&self, i: usize) {
        let _ = std::fs::remove_file(self.nodes[i].dir.join("filler"));
        self.note(format!("free the data dir of {}", self.nodes[i].id));
    }

    /// Remounts node `i`'s data dir read-only (true) or read-write.
    pub fn read_only(&self, i: usize, ro: bool) {
        let dir = self.nodes[i].dir.to_str().unwrap().to_string();
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        run(&["mount", "-o", opt, &dir]);
        self.note(format!(
            "data dir of {} {}",
            self.nodes[i].id,
            if ro { "read-only" } else { "read-write" }
        ));
    }

    fn names(&self, idx: &[usize]) -> String {
        idx.iter()
            .map(|i| self.nodes[*i].id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every task each node really runs: task id to the nodes running it
    /// and its cpu millis.
    pub fn running_tasks(&self) -> BTreeMap<String, (Vec<String>, u64)> {
        let mut out: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
        for n in &self.nodes {
            for (task, cpu) in n.really_running() {
                let e = out.entry(task).or_insert((Vec::new(), cpu));
                e.0.push(n.id.clone());
            }
        }
        out
    }

    /// Checks the cluster-wide invariants against what every node runs and
    /// what the frameworks were told:
    /// - no node runs more cpu than it has;
    /// - no task runs on two nodes;
    /// - a task its framework was told ended (in any terminal state) runs
    ///   nowhere once `settle` has passed since it was told (a kill or a
    ///   partition's far side needs that long to act);
    /// - no task was told two different terminal states.
    ///
    /// Returns the violations, each a sentence.
    pub fn violations(&self, frameworks: &[&Recorder], settle: Duration) -> Vec<String> {
        let mut bad = Vec::new();
        let running = self.running_tasks();
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        for (task, (nodes, cpu)) in &running {
            if nodes.len() > 1 {
                bad.push(format!(
                    "task {task} runs on {} nodes: {nodes:?}",
                    nodes.len()
                ));
            }
            for n in nodes {
                *per_node.entry(n.as_str()).or_default() += cpu;
            }
        }
        for (node, used) in per_node {
            if used > CPU_MILLIS {
                bad.push(format!(
                    "node {node} runs {used} cpu millis of tasks; it has {CPU_MILLIS}"
                ));
            }
        }
        for f in frameworks {
            let told = f.told();
            for (task, states) in &told {
                let terminal: BTreeSet<&str> = states
                    .iter()
                    .filter(|s| is_terminal(&s.state))
                    .map(|s| s.state.as_str())
                    .collect();
                if terminal.len() > 1 {
                    bad.push(format!(
                        "task {task} was told {} terminal states: {terminal:?}",
                        terminal.len()
                    ));
                }
                let ended = states.iter().find(|s| is_terminal(&s.state));
                if let Some(end) = ended
                    && end.at.elapsed() > settle
                    && let Some((nodes, _)) = running.get(task)
                {
                    bad.push(format!(
                        "task {task} was reported {} {:.1} s ago (reason: {}) but still runs on {nodes:?}",
                        end.state,
                        end.at.elapsed().as_secs_f64(),
                        end.reason.as_deref().unwrap_or("none"),
                    ));
                }
            }
        }
        bad
    }

    /// Panics with the violations, the seed and the schedule, if any.
    pub fn assert_invariants(&self, step: &str, frameworks: &[&Recorder], settle: Duration) {
        let bad = self.violations(frameworks, settle);
        if !bad.is_empty() {
            panic!(
                "invariants broken after `{step}`:\n  {}\n{}",
                bad.join("\n  "),
                self.report()
            );
        }
        self.note(format!("invariants hold after `{step}`"));
    }

    /// The seed and the schedule so far, to replay a failure.
    pub fn report(&self) -> String {
        format!(
            "seed {} (rerun with AGORA_FAULT_SEED={}); schedule:\n{}",
            self.seed,
            self.seed,
            self.schedule.lock().unwrap().join("\n")
        )
    }

    /// The end of a scenario (after `step`): the invariants hold, and no
    /// acknowledged submit was forgotten.
    pub fn assert_end(&self, step: &str, frameworks: &[&Recorder], settle: Duration) {
        self.assert_invariants(step, frameworks, settle);
        let forgotten = self.forgotten(frameworks);
        assert!(
            forgotten.is_empty(),
            "forgotten: {forgotten:?}\n{}",
            self.report()
        );
    }

    /// Every acknowledged submit ends known: each task id a framework was
    /// given is told a terminal state or runs on exactly one node. Returns
    /// the task ids that are neither.
    pub fn forgotten(&self, frameworks: &[&Recorder]) -> Vec<String> {
        let running = self.running_tasks();
        let mut out = Vec::new();
        for f in frameworks {
            let told = f.told();
            for id in f.submitted() {
                let ended = told
                    .get(&id)
                    .is_some_and(|s| s.iter().any(|s| is_terminal(&s.state)));
                if !ended && !running.contains_key(&id) {
                    out.push(id);
                }
            }
        }
        out
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fault cluster failed; {}", self.report());
            for n in &self.nodes {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- last lines of {}'s log:\n{}",
                    n.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        for n in &mut self.nodes {
            if n.stopped {
                n.signal("-CONT");
            }
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        super::kill_supervisors_under(self.root.path());
        for m in &self.mounts {
            try_run(&["umount", "-l", m.to_str().unwrap_or_default()]);
        }
        for n in &self.nodes {
            try_run(&["ip", "netns", "del", &n.ns]);
        }
        for v in &self.veths {
            try_run(&["ip", "link", "del", v]);
        }
        try_run(&["ip", "link", "del", &self.bridge]);
    }
}

/// A small seeded generator for fault schedules (xorshift64*).
pub struct Schedule(u64);

impl Schedule {
    /// From a seed (0 is moved off the fixed point).
    pub fn new(seed: u64) -> Self {
        Schedule(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Whether a state name is terminal.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "finished" | "failed" | "killed" | "lost")
}

/// One status a framework was told.
#[derive(Clone, Debug)]
pub struct Told {
    /// The state.
    pub state: String,
    /// The node it names.
    pub node: Option<String>,
    /// The reason it gives.
    pub reason: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Rec {
    told: BTreeMap<String, Vec<Told>>,
    submitted: Vec<String>,
    answers: BTreeMap<u64, Value>,
    framework_id: Option<String>,
    closed: bool,
}

/// A framework on one node's socket (JSON codec) that records every status
/// it is told and acknowledges it, on a thread of its own. It reattaches
/// with [`Recorder::reattach`] after its node restarts.
pub struct Recorder {
    rec: Arc<Mutex<Rec>>,
    writer: Arc<Mutex<Option<UnixStream>>>,
    next_request: u64,
    name: String,
}

fn send(w: &Mutex<Option<UnixStream>>, v: &Value) -> bool {
    let mut g = w.lock().unwrap();
    let Some(s) = g.as_mut() else {
        return false;
    };
    s.write_all(&super::json::frame(v.to_string().as_bytes()))
        .is_ok()
}

impl Recorder {
    /// Registers framework `name` on `node` (failover timeout 120 s).
    pub fn connect(node: &FaultNode, name: &str) -> Recorder {
        let mut r = Recorder {
            rec: Arc::new(Mutex::new(Rec::default())),
            writer: Arc::new(Mutex::new(None)),
            next_request: 1,
            name: name.to_string(),
        };
        r.attach(node);
        r
    }

    /// Registers again with the same framework id (after the node restarted).
    pub fn reattach(&mut self, node: &FaultNode) {
        let sock = node.socket();
        wait_for(
            &format!("{} to accept connections", node.id),
            Duration::from_secs(30),
            || UnixStream::connect(&sock).ok().map(|_| ()),
        );
        self.attach(node);
    }

    fn attach(&mut self, node: &FaultNode) {
        let mut s = super::json::json_client(&node.socket());
        s.set_read_timeout(None).unwrap();
        let id = self.rec.lock().unwrap().framework_id.clone();
        s.write_all(&super::json::frame(
            json!({"register": {"name": self.name, "role": "", "weight": 1,
                "failover_timeout_ms": 120_000, "framework_id": id}})
            .to_string()
            .as_bytes(),
        ))
        .unwrap();
        let reply = super::json::read_frame(&mut s).expect("an answer to register");
        let fid = reply["registered"]["framework_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not registered: {reply}"))
            .to_string();
        {
            let mut rec = self.rec.lock().unwrap();
            rec.framework_id = Some(fid);
            rec.closed = false;
        }
        *self.writer.lock().unwrap() = Some(s.try_clone().unwrap());
        let rec = self.rec.clone();
        let writer = self.writer.clone();
        std::thread::spawn(move || {
            loop {
                let Some(v) = super::json::read_frame(&mut s) else {
                    rec.lock().unwrap().closed = true;
                    return;
                };
                if let Some(st) = v.get("status") {
                    let status = &st["status"];
                    let task = status["task_id"].as_str().unwrap_or_default().to_string();
                    let seq = st["seq"].as_u64().unwrap_or(0);
                    rec.lock()
                        .unwrap()
                        .told
                        .entry(task.clone())
                        .or_default()
                        .push(Told {
                            state: status["state"].as_str().unwrap_or_default().to_string(),
                            node: status["node"].as_str().map(str::to_string),
                            reason: status["reason"].as_str().map(str::to_string),
                            at: Instant::now(),
                        });
                    if seq > 0 {
                        send(&writer, &json!({"ack": {"task_id": task, "seq": seq}}));
                    }
                    continue;
                }
                let rid = v
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|b| b["request_id"].as_u64());
                if let Some(rid) = rid {
                    let mut g = rec.lock().unwrap();
                    if g.answers.len() < 1000 {
                        g.answers.insert(rid, v);
                    }
                }
            }
        });
    }

    /// Whether the node closed the connection.
    pub fn closed(&self) -> bool {
        self.rec.lock().unwrap().closed
    }

    /// Submits `count` tasks running `argv` (500 cpu millis, 16 MiB each);
    /// returns their ids, or the node's error answer.
    pub fn submit(
        &mut self,
        name: &str,
        count: usize,
        argv: &[&str],
    ) -> Result<Vec<String>, Value> {
        self.submit_cpu(name, count, argv, 500)
    }

    /// [`Recorder::submit`] with `cpu_millis` per task.
    pub fn submit_cpu(
        &mut self,
        name: &str,
        count: usize,
        argv: &[&str],
        cpu_millis: u64,
    ) -> Result<Vec<String>, Value> {
        let rid = self.next_request;
        self.next_request += 1;
        let spec = json!({"name": name, "command": {"argv": argv}, "env": {},
            "resources": {"cpu_millis": cpu_millis, "mem_mib": 16, "disk_mib": 0, "gpus": 0, "ports": 0},
            "constraints": [], "priority": 0, "kill_grace_ms": 1000,
            "placement_timeout_ms": 120_000});
        let tasks: Vec<Value> = (0..count).map(|_| spec.clone()).collect();
        if !send(
            &self.writer,
            &json!({"submit": {"request_id": rid, "tasks": tasks}}),
        ) {
            return Err(json!({"error": {"code": "closed"}}));
        }
        let answer = wait_for(
            &format!("the answer to submit {rid}"),
            Duration::from_secs(30),
            || self.rec.lock().unwrap().answers.remove(&rid),
        );
        let Some(ids) = answer["submitted"]["task_ids"].as_array() else {
            return Err(answer);
        };
        let ids: Vec<String> = ids
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        self.rec
            .lock()
            .unwrap()
            .submitted
            .extend(ids.iter().cloned());
        Ok(ids)
    }

    /// Asks the node for the state of `tasks` (answers are recorded as they
    /// come, with seq 0).
    pub fn reconcile(&self, tasks: &[String]) -> bool {
        send(&self.writer, &json!({ "reconcile": tasks }))
    }

    /// Every status told so far, per task.
    pub fn told(&self) -> BTreeMap<String, Vec<Told>> {
        self.rec.lock().unwrap().told.clone()
    }

    /// The latest state told of each task.
    pub fn latest(&self) -> BTreeMap<String, Told> {
        self.told()
            .into_iter()
            .filter_map(|(k, v)| {
                let end = v.iter().find(|s| is_terminal(&s.state)).cloned();
                end.or_else(|| v.last().cloned()).map(|s| (k, s))
            })
            .collect()
    }

    /// Every task id this framework was given.
    pub fn submitted(&self) -> Vec<String> {
        self.rec.lock().unwrap().submitted.clone()
    }

    /// How many of the submitted tasks were told `state` last (terminal
    /// states win over later non-terminal re-sends).
    pub fn count(&self, state: &str) -> usize {
        self.latest().values().filter(|s| s.state == state).count()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(s) = self.writer.lock().unwrap().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
