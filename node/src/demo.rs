//! `agora demo`: a throwaway local cluster for a first look.
//!
//! It starts N `agora agent` processes (this very executable) on loopback
//! with probed free ports, a fresh cluster key and a temporary directory;
//! waits until every node sees every other alive; submits tasks (each prints
//! the node it ran on) through node 1's socket; waits for all of them; prints
//! where they ran and the placement latency (from submit to the `starting`
//! status, measured by the client: p50 and p99); then stops every agent and
//! deletes the directory. Agents are killed on every exit path, Ctrl-C
//! included. `--keep` keeps the directory (agent logs in nodeN.log);
//! AGORA_DEMO_LOG sets the agents' log filter (default warn).

use crate::cli::DemoArgs;
use crate::client::Client;
use crate::commands::{list_nodes, register_cli, submit_and_wait};
use agora_protocol::Resources;
use agora_protocol::resources::parse_cpus;
use agora_protocol::task::{Command, TaskSpec, TaskState};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Kills the agents and removes the directory when dropped.
struct Guard {
    children: Vec<Child>,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP port on loopback")?;
        let port = udp.local_addr().context("no local address")?.port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no free pair of loopback ports")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn wait_formed(socket: &Path, n: usize, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if let Ok(mut c) = Client::connect(socket).await
            && let Ok(nodes) = list_nodes(&mut c).await
            && nodes.iter().filter(|r| r.alive).count() >= n
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the local cluster did not form within 60 s (see the agent logs; rerun with --keep to inspect them)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the demo; returns the exit code.
///
/// # Errors
/// Agents that cannot start, a cluster that does not form, a refused submit.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    if args.nodes == 0 || args.nodes > 64 {
        bail!("--nodes must be 1 to 64");
    }
    let node_cpus = parse_cpus(&args.cpus).context("--cpus")?;
    let exe = std::env::current_exe().context("cannot find the agora executable")?;
    let dir = std::env::temp_dir().join(format!(
        "agora-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut guard = Guard {
        children: Vec::new(),
        dir: dir.clone(),
        keep: args.keep,
    };
    let key = dir.join("cluster.key");
    crate::identity::write_atomic(
        &key,
        format!("{}\n", crate::gossip::ClusterKey::generate().to_base64()).as_bytes(),
        0o600,
    )?;

    let started = Instant::now();
    let mut first_addr = None;
    let mut sockets = Vec::new();
    eprintln!("starting {} nodes in {} ...", args.nodes, dir.display());
    for i in 1..=args.nodes {
        let port = free_port()?;
        let node_dir = dir.join(format!("node{i}"));
        let log = std::fs::File::create(dir.join(format!("node{i}.log")))
            .context("cannot create a log file")?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&node_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cluster-key-file")
            .arg(&key)
            .arg("--node-id")
            .arg(format!("node{i}"))
            .arg("--cpus")
            .arg(&args.cpus)
            .arg("--mem")
            .arg("1024")
            .arg("--gossip-interval-ms")
            .arg("200")
            .arg("--no-cgroups")
            .arg("--log-level")
            .arg(std::env::var("AGORA_DEMO_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(seed) = &first_addr {
            cmd.arg("--seeds").arg(seed);
        } else {
            first_addr = Some(format!("127.0.0.1:{port}"));
        }
        let child = cmd.spawn().context("cannot start an agent")?;
        guard.children.push(child);
        sockets.push(node_dir.join("agora.sock"));
    }

    let work = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        for s in &sockets {
            wait_formed(s, args.nodes as usize, deadline).await?;
        }
        eprintln!(
            "cluster of {} nodes formed in {:.1} s; submitting {} tasks",
            args.nodes,
            started.elapsed().as_secs_f64(),
            args.tasks
        );
        let mut client = Client::connect(&sockets[0]).await?;
        register_cli(&mut client).await?;
        // Small tasks that all fit at once: latency is the auction's, not queueing.
        let per_task =
            (node_cpus * u64::from(args.nodes) / u64::from(args.tasks.max(1))).clamp(1, 500);
        let spec = TaskSpec::new(
            "demo",
            Command::Shell("echo \"ran on $AGORA_NODE_ID\"".into()),
            Resources::cpu_mem(per_task, 0),
        );
        let t0 = Instant::now();
        let outcome =
            submit_and_wait(&mut client, vec![spec; args.tasks as usize], true, true).await?;
        Ok::<_, anyhow::Error>((outcome, t0.elapsed()))
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let (outcome, took) = match result {
        Ok(v) => v,
        Err(e) => {
            for i in 1..=args.nodes {
                let log =
                    std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                for line in tail.into_iter().rev() {
                    eprintln!("node{i}: {line}");
                }
            }
            return Err(e);
        }
    };

    let mut per_node: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for i in 1..=args.nodes {
        per_node.insert(format!("node{i}"), (0, 0));
    }
    for (state, _, node) in outcome.states.values() {
        let e = per_node
            .entry(node.as_ref().map_or("-".into(), |n| n.to_string()))
            .or_default();
        if *state == TaskState::Finished {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut lat = outcome.placement.clone();
    lat.sort();
    println!();
    println!("{:<10} {:>8} {:>8}", "NODE", "TASKS", "FAILED");
    for (node, (ok, bad)) in &per_node {
        println!("{node:<10} {ok:>8} {bad:>8}");
    }
    println!();
    println!(
        "{} tasks on {} nodes in {:.2} s; placement latency (submit -> starting): p50 {:.1} ms, p99 {:.1} ms",
        args.tasks,
        args.nodes,
        took.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
    );
    let failed: u32 = per_node.values().map(|v| v.1).sum();
    for c in &mut guard.children {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(c.id() as i32)
                .ok_or_else(|| anyhow::anyhow!("bad pid"))?,
            rustix::process::Signal::TERM,
        );
    }
    let stop_by = Instant::now() + Duration::from_secs(3);
    for c in &mut guard.children {
        while Instant::now() < stop_by {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(guard);
    Ok(if failed == 0 { 0 } else { 1 })
}
