//! Membership with real agents on loopback at the DEFAULT gossip settings
//! (no `--gossip-interval-ms`): a node that joins through a seed is seen
//! alive by every member, a SIGKILLed node is seen dead by every survivor, a
//! node that leaves is seen gone, and a node whose own process was stopped
//! (the extreme of CPU starvation) does not take its own silence for its
//! peers' death when it runs again (local health, `gossip/detector.rs`).
//!
//! The bounds are generous (tens of seconds): they check that the thing
//! happens, not how fast. `scripts/bench/membership.sh` measures the times.

mod common;

use common::{Resume, exe, free_port, keygen, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(60);

/// One agent at the default gossip settings.
struct Agent {
    id: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Agent {
    fn start(root: &Path, key: &Path, id: &str, seed: Option<u16>) -> Agent {
        let port = free_port();
        let dir = root.join(id);
        let log = std::fs::File::create(root.join(format!("{id}.log"))).unwrap();
        let mut cmd = Command::new(exe());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--cluster-key-file")
            .arg(key)
            .args([
                "--node-id",
                id,
                "--cpus",
                "1",
                "--mem",
                "256",
                "--no-cgroups",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(seed) = seed {
            cmd.args(["--seeds", &format!("127.0.0.1:{seed}")]);
        }
        Agent {
            id: id.to_string(),
            dir,
            port,
            child: Some(cmd.spawn().unwrap()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// The ids this agent's `agora nodes --json` holds alive (empty while
    /// its socket is not up).
    fn alive(&self) -> Vec<String> {
        let out = Command::new(exe())
            .arg("--socket")
            .arg(self.dir.join("agora.sock"))
            .args(["nodes", "--json"])
            .output()
            .unwrap();
        let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut ids: Vec<String> = nodes
            .iter()
            .filter(|n| n["alive"] == true)
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().map(Child::id).unwrap();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ids(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Waits until every agent in `agents` holds exactly `expect` alive.
fn wait_all_see(agents: &[&Agent], expect: &[&str], what: &str) {
    let expect = ids(expect);
    for a in agents {
        wait_for(
            &format!("{} to see {what}: {expect:?}", a.id),
            BOUND,
            || (a.alive() == expect).then_some(()),
        );
    }
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("cluster.key");
    keygen(&key);
    (root, key)
}

#[test]
fn a_joined_node_is_seen_everywhere_and_a_killed_one_dead_by_every_survivor() {
    let (root, key) = setup();
    let seed = Agent::start(root.path(), &key, "n1", None);
    let mut agents = vec![seed];
    for i in 2..=5 {
        let s = agents[0].port;
        agents.push(Agent::start(root.path(), &key, &format!("n{i}"), Some(s)));
    }
    let all: Vec<&Agent> = agents.iter().collect();
    wait_all_see(&all, &["n1", "n2", "n3", "n4", "n5"], "the first five");

    // A sixth node joins through the seed: every member sees it alive, and
    // it sees every member.
    let s = agents[0].port;
    agents.push(Agent::start(root.path(), &key, "n6", Some(s)));
    let all: Vec<&Agent> = agents.iter().collect();
    wait_all_see(
        &all,
        &["n1", "n2", "n3", "n4", "n5", "n6"],
        "the joined node",
    );

    // SIGKILL one: every survivor sees it dead.
    agents[2].kill9();
    let survivors: Vec<&Agent> = agents.iter().filter(|a| a.id != "n3").collect();
    wait_all_see(&survivors, &["n1", "n2", "n4", "n5", "n6"], "n3 dead");
    for a in &survivors {
        assert!(
            a.log()
                .contains("node declared dead; its tasks are lost node=n3"),
            "{} saw n3 gone without a death verdict:\n{}",
            a.id,
            a.log()
        );
    }

    // A graceful leave (SIGTERM) is seen as gone too, by every survivor.
    agents[3].signal("-TERM");
    let rest: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.id != "n3" && a.id != "n4")
        .collect();
    wait_all_see(&rest, &["n1", "n2", "n5", "n6"], "n4 gone");
    // Nobody else was ever declared dead.
    for a in &rest {
        for other in ["n1", "n2", "n5", "n6"] {
            assert!(
                !a.log().contains(&format!(
                    "node declared dead; its tasks are lost node={other}\n"
                )),
                "{} declared live {other} dead:\n{}",
                a.id,
                a.log()
            );
        }
    }
}

/// On the old detector (chitchat's phi accrual, judged at its next gossip
/// round) a node resumed after a stop longer than the detection time
/// declared its peers dead: their heartbeats were still unread in its
/// socket. With local health the late tick passes no verdict and raises the
/// node's thresholds, so it hears them again first.
#[test]
fn a_node_stopped_longer_than_the_detector_does_not_declare_its_peers_dead() {
    let (root, key) = setup();
    let seed = Agent::start(root.path(), &key, "n1", None);
    let s = seed.port;
    let agents = [
        seed,
        Agent::start(root.path(), &key, "n2", Some(s)),
        Agent::start(root.path(), &key, "n3", Some(s)),
        Agent::start(root.path(), &key, "n4", Some(s)),
    ];
    let all: Vec<&Agent> = agents.iter().collect();
    let everyone = ["n1", "n2", "n3", "n4"];
    wait_all_see(&all, &everyone, "everyone");
    // Let heartbeat statistics settle, as in a running cluster.
    std::thread::sleep(Duration::from_secs(3));

    // Stop n2 well past the detection time, then let it run.
    let pid = agents[1].child.as_ref().map(Child::id).unwrap();
    agents[1].signal("-STOP");
    let resume = Resume(pid);
    let others: Vec<&Agent> = agents.iter().filter(|a| a.id != "n2").collect();
    wait_all_see(&others, &["n1", "n3", "n4"], "the stopped n2 dead");
    std::thread::sleep(Duration::from_secs(2));
    drop(resume);

    // It comes back: everyone sees everyone again.
    wait_all_see(&all, &everyone, "n2 back");
    let log = agents[1].log();
    assert!(
        !log.contains("node declared dead"),
        "n2 took its own stop for its peers' death:\n{log}"
    );
}
