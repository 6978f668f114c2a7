//! What a real `agora agent` takes from the shell it is started in:
//!
//! - not the CLI's `AGORA_SOCKET`: an agent started from a shell set up for
//!   the CLI (README, terminal 3) binds its own DATA_DIR/agora.sock, or its
//!   `--socket`, never the exported path (which may be another node's
//!   socket), while the client commands still read the variable;
//! - its log is plain text when stderr is a file: no ANSI colour codes.

mod common;

use common::{Cluster, exe, wait_for};
use std::process::Command;
use std::time::Duration;

#[test]
fn the_agent_ignores_the_clis_agora_socket() {
    let mut c = Cluster::new();
    let key = c.key.clone();
    let elsewhere = c.root.path().join("elsewhere.sock");
    let elsewhere_text = elsewhere.display().to_string();
    let env = [("AGORA_SOCKET", elsewhere_text.as_str())];
    c.add_with_env("n1", &key, &[], &env);
    let flagged = c.root.path().join("flagged.sock");
    c.add_with_env("n2", &key, &["--socket", flagged.to_str().unwrap()], &env);

    // n1 binds its default socket, n2 the one its flag names.
    let n1 = &c.nodes[0];
    wait_for("n1 to bind a socket", Duration::from_secs(30), || {
        (n1.socket().exists() || elsewhere.exists()).then_some(())
    });
    assert!(
        !elsewhere.exists(),
        "n1 bound the CLI's AGORA_SOCKET ({}) instead of DATA_DIR/agora.sock; log:\n{}",
        elsewhere.display(),
        n1.log()
    );
    wait_for("n1's socket to answer", Duration::from_secs(30), || {
        n1.nodes()
    });
    wait_for(
        "n2 to answer on its --socket",
        Duration::from_secs(30),
        || {
            let out = Command::new(exe())
                .arg("--socket")
                .arg(&flagged)
                .args(["nodes", "--json"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    );
    assert!(
        !c.nodes[1].socket().exists(),
        "n2 was given --socket but also made DATA_DIR/agora.sock"
    );
    assert!(
        !elsewhere.exists(),
        "an agent bound the CLI's AGORA_SOCKET ({}); logs:\n{}\n{}",
        elsewhere.display(),
        c.nodes[0].log(),
        c.nodes[1].log()
    );

    // A client command still takes its socket from AGORA_SOCKET.
    let out = Command::new(exe())
        .args(["nodes", "--json"])
        .env("AGORA_SOCKET", n1.socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nodes via AGORA_SOCKET: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        nodes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["id"] == "n1")),
        "{nodes}"
    );
    // In a flat cluster, --all lists the same nodes, with no cell.
    let all = n1.cli(&["nodes", "--all", "--json"]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&all), ids(&nodes));
    assert!(
        all.as_array().unwrap().iter().all(|n| n["cell"].is_null()),
        "{all}"
    );
}

#[test]
fn agent_logs_written_to_a_file_have_no_colour_codes() {
    // Node::start sends the agent's stderr to DATA_DIR.log (a file).
    let mut c = Cluster::new();
    let key = c.key.clone();
    c.add("n1", &key, &[]);
    c.wait_formed(1);
    let n1 = &c.nodes[0];
    let log = wait_for(
        "the agent to log a few lines",
        Duration::from_secs(30),
        || {
            let log = n1.log();
            (log.lines().count() >= 3).then_some(log)
        },
    );
    assert!(log.contains("INFO"), "{log}");
    let coloured = log.lines().find(|l| l.contains('\u{1b}'));
    assert!(
        coloured.is_none(),
        "ANSI escape in the agent's log file: {coloured:?}"
    );
}
