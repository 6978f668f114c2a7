//! Cells in the node (issue 13): three cells of three agents on loopback,
//! one gateway per cell. Each cell gossips on its own; the gateways form
//! the federation. A task that fits only on nodes of another cell is placed
//! there from its home node, its output read from the home node and from
//! nodes that are not its home (one in a third cell), and it can be killed
//! from a third cell; killing that cell's gateway moves the role to
//! another member and cross-cell placement still works. A job larger than
//! its home cell spills one task over, as the simulator predicts for the
//! same scenario (sim/tests/runs.rs).

mod common;
mod prom;

use common::http::request;
use common::{Cluster, Node, free_tcp_addr, wait_for};
use std::net::UdpSocket;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cells(node: &Node) -> Option<serde_json::Value> {
    let out = node.cli(&["cells", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The home cell's row as `node` sees it.
fn home_row(node: &Node) -> Option<serde_json::Value> {
    let c = cells(node)?;
    c["cells"]
        .as_array()?
        .iter()
        .find(|r| r["home"] == true)
        .cloned()
}

/// The node's cell's gateways as it sees them.
fn gateways(node: &Node) -> Vec<String> {
    home_row(node)
        .and_then(|r| {
            r["gateways"].as_array().map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn run_big(node: &Node, text: &str) -> String {
    let out = node.cli(&[
        "run",
        "--cpus",
        "4",
        "--wait",
        "--json",
        "--",
        "sh",
        "-c",
        &format!("echo {text} from $AGORA_NODE_ID"),
    ]);
    assert!(
        out.status.success(),
        "run on {} failed: {}\n{}",
        node.id,
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    first_id(&out.stdout)
}

/// The first task id `agora run --json` printed (an array of rows).
fn first_id(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("run --json printed {text:?}: {e}"));
    v[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id in {v}"))
        .to_string()
}

/// The agent flags of a node of cell `cell` with one gateway per cell, its
/// federation gossip on `fed_listen`, joining through `fed_seeds`, and
/// `seeds` (none for the first node).
fn cell_flags(cell: &str, fed_listen: u16, fed_seeds: &str, seeds: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        "--cell".into(),
        cell.into(),
        "--gateways".into(),
        "1".into(),
        "--federation-listen".into(),
        format!("127.0.0.1:{fed_listen}"),
        "--federation-seeds".into(),
        fed_seeds.into(),
    ];
    if !seeds.is_empty() {
        flags.push("--seeds".into());
        flags.push(seeds.join(","));
    }
    flags
}

/// Federation ports for `n` nodes, and all of them as one seed list.
fn federation_ports(n: usize) -> (Vec<u16>, String) {
    let ports: Vec<u16> = (0..n).map(|_| free_udp()).collect();
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    (ports, seeds.join(","))
}

fn task_row(node: &Node, id: &str) -> Option<serde_json::Value> {
    node.ps()?.into_iter().find(|r| r["id"] == id)
}

#[test]
fn three_cells_place_far_tasks_and_survive_a_gateway_death() {
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    let names = ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"];
    let (fed, fed_seeds) = federation_ports(names.len());
    let mut seeds: Vec<String> = Vec::new();
    // a2 (the home of the far tasks) serves the HTTP API.
    let http = free_tcp_addr();
    for (i, name) in names.iter().enumerate() {
        // Only b2 and b3 can take a 4-cpu task.
        let cpus = if *name == "b2" || *name == "b3" {
            "8"
        } else {
            "1"
        };
        let mut extra = cell_flags(&name[..1], fed[i], &fed_seeds, &seeds);
        extra.extend(["--cpus".into(), cpus.into()]);
        if *name == "a2" {
            extra.extend(["--http".into(), http.clone(), "--http-public-read".into()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let at = cluster.add(name, &key, &extra);
        if name.ends_with('1') {
            seeds.push(cluster.nodes[at].addr());
        }
    }

    // Every cell forms on its own: each node sees its own cell's three
    // members alive, and only them among its nodes.
    for node in &cluster.nodes {
        wait_for(&format!("{} to see its cell of 3", node.id), WAIT, || {
            let r = home_row(node)?;
            (r["alive"] == 3 && r["name"] == node.id[..1]).then_some(())
        });
        let alive = node.alive();
        assert!(
            alive.iter().all(|n| n[..1] == node.id[..1]),
            "{} sees nodes of other cells in its gossip: {alive:?}",
            node.id
        );
    }
    // The federation forms: every node knows the three cells, each with a
    // gateway, and exactly one member of each cell says it is the gateway.
    for node in &cluster.nodes {
        wait_for(&format!("{} to know 3 cells", node.id), WAIT, || {
            let c = cells(node)?;
            let rows = c["cells"].as_array()?;
            (rows.len() == 3
                && rows.iter().all(|r| {
                    r["gateways"].as_array().is_some_and(|g| g.len() == 1) && r["alive"] == 3
                }))
            .then_some(())
        });
    }
    for cell in ["a", "b", "c"] {
        let members: Vec<&Node> = cluster
            .nodes
            .iter()
            .filter(|n| n.id[..1] == *cell)
            .collect();
        let gws: Vec<&str> = members
            .iter()
            .filter(|n| cells(n).is_some_and(|c| c["gateway"] == true))
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(gws.len(), 1, "cell {cell} has one gateway: {gws:?}");
        assert_eq!(gateways(members[0]), vec![gws[0].to_string()]);
    }

    // `agora nodes --all` lists every cell's members, asked of the other
    // cells' gateways; the API does the same with ?all=true.
    let out = cluster.nodes[1].cli(&["nodes", "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["cell"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    let expect: Vec<(String, String)> = names
        .iter()
        .map(|n| (n[..1].to_string(), n.to_string()))
        .collect();
    assert_eq!(listed, expect, "{all}");
    let table = cluster.nodes[7].cli(&["nodes", "--all"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.starts_with("CELL"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("a ")).count(),
        3,
        "{text}"
    );
    let v = request(&http, "GET", "/api/v1/nodes?all=true", &[], None)
        .unwrap()
        .json();
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(9), "{v}");
    assert_eq!(v["unanswered_cells"], serde_json::json!([]), "{v}");
    let bad = request(&http, "GET", "/api/v1/nodes?all=yes", &[], None).unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());

    // The API and /metrics of a2 tell the same.
    let v = request(&http, "GET", "/api/v1/cells", &[], None)
        .unwrap()
        .json();
    assert_eq!(v["cell"], "a", "{v}");
    let names_seen: Vec<&str> = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(names_seen, ["a", "b", "c"], "{v}");
    assert_eq!(v["cells"][1]["cpus_total"], 17.0, "{v}");
    let text = wait_for("metrics with three cells", WAIT, || {
        let t = request(&http, "GET", "/metrics", &[], None).ok()?.text();
        t.contains("agora_cells_known 3").then_some(t)
    });
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(prom::metric(&scrape, "agora_cells_known", &[]), 3.0);

    // The simulator's scenario (sim/tests/runs.rs,
    // a_task_the_home_cell_cannot_take_crosses_as_on_the_node): four tasks
    // of a whole small node from one framework; its home cell takes three
    // and the fourth crosses to another cell.
    let home = &cluster.nodes[1]; // a2
    let out = home.cli(&[
        "run", "--count", "4", "--cpus", "1", "--name", "fill", "--", "sleep", "600",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placed = wait_for("the four fill tasks to run", WAIT, || {
        let rows: Vec<serde_json::Value> = home
            .ps()?
            .into_iter()
            .filter(|r| r["name"] == "fill" && r["state"] == "running")
            .collect();
        (rows.len() == 4).then_some(rows)
    });
    let away: Vec<&str> = placed
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .filter(|n| !n.starts_with('a'))
        .collect();
    assert_eq!(away.len(), 1, "one of four crosses: {placed:?}");
    let kill = home.cli(&["kill", "--name", "fill"]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    wait_for("the fill tasks to end", WAIT, || {
        home.ps()?
            .iter()
            .filter(|r| r["name"] == "fill")
            .all(|r| r["state"] == "killed")
            .then_some(())
    });

    // A 4-cpu task submitted in cell a runs in cell b.
    let id = run_big(home, "first");
    let row = wait_for("the far task to finish", WAIT, || {
        task_row(home, &id).filter(|r| r["state"] == "finished")
    });
    let ran_on = row["node"].as_str().unwrap().to_string();
    assert!(ran_on == "b2" || ran_on == "b3", "ran on {ran_on}: {row}");
    // Its output is read from the home node, in another cell.
    let logs = home.cli(&["logs", &id]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout).trim(),
        format!("first from {ran_on}")
    );
    // The home node imported cell b.
    let c = cells(home).unwrap();
    assert!(
        c["cells"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "b" && r["imported"] == true),
        "{c}"
    );

    // Any node finds it: a3 (the home's cell, not its home) and c1
    // (a third cell, which imported nothing) list it by its framework,
    // which asks its home, and read its output from b's node. Neither
    // has an address for that node: they look for it through the other
    // cells' gateways.
    let framework = row["framework"].as_str().unwrap().to_string();
    let (a3, c1) = (&cluster.nodes[2], &cluster.nodes[6]);
    for asker in [a3, c1] {
        let out = asker.cli(&["ps", "--json", "--framework", &framework]);
        assert!(
            out.status.success(),
            "ps on {}: {}",
            asker.id,
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == id.as_str() && r["node"] == ran_on.as_str()),
            "{} lists {rows}",
            asker.id
        );
        let logs = asker.cli(&["logs", &id]);
        assert!(
            logs.status.success(),
            "logs on {}: {}\n{}",
            asker.id,
            String::from_utf8_lossy(&logs.stderr),
            asker.log()
        );
        assert_eq!(
            String::from_utf8_lossy(&logs.stdout).trim(),
            format!("first from {ran_on}")
        );
    }
    // A long far task is killed from a node of a third cell.
    let out = home.cli(&["run", "--cpus", "4", "--json", "--", "sleep", "600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let long = first_id(&out.stdout);
    wait_for("the long far task to run", WAIT, || {
        task_row(home, &long).filter(|r| r["state"] == "running")
    });
    let kill = c1.cli(&["kill", &long]);
    assert!(
        kill.status.success(),
        "kill on c1: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
    wait_for("the long far task to be killed", WAIT, || {
        task_row(home, &long).filter(|r| r["state"] == "killed")
    });

    // Kill cell b's gateway: another member takes the role, the federation
    // learns it, and cross-cell placement still works.
    let b_gateway = gateways(&cluster.nodes[3]).remove(0);
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.id == b_gateway)
        .unwrap();
    let _ = cluster.nodes[victim].signal_and_wait("-KILL");
    let home = &cluster.nodes[1];
    let survivor = if victim == 3 { 4 } else { 3 };
    let new_gateway = wait_for("another gateway in cell b", WAIT, || {
        let g = gateways(&cluster.nodes[survivor]);
        (g.len() == 1 && g[0] != b_gateway).then(|| g[0].clone())
    });
    wait_for("the home node to learn cell b's new gateway", WAIT, || {
        let c = cells(home)?;
        c["cells"]
            .as_array()?
            .iter()
            .any(|r| {
                r["name"] == "b" && r["gateways"][0] == new_gateway.as_str() && r["alive"] == 2
            })
            .then_some(())
    });
    let id2 = run_big(home, "second");
    let row2 = wait_for("the second far task to finish", WAIT, || {
        task_row(home, &id2).filter(|r| r["state"] == "finished")
    });
    let ran2 = row2["node"].as_str().unwrap();
    assert!(
        (ran2 == "b2" || ran2 == "b3") && ran2 != b_gateway,
        "second ran on {ran2} (b's dead gateway was {b_gateway}): {row2}"
    );
}

#[test]
fn nodes_whose_seeds_are_all_in_another_cell_still_form_their_cell() {
    // One seed list for every node, all of cell a (as an operator gives
    // with --cells K): the nodes of cell b cannot gossip with their seeds
    // (each cell seals its gossip under its own name), and each stayed
    // alone in a cell of its own. They now ask the seeds for the directory
    // and find each other through it.
    let mut cluster = Cluster::new();
    let key = cluster.key.clone();
    let names = ["a1", "a2", "b1", "b2", "b3"];
    let (fed, fed_seeds) = federation_ports(names.len());
    let mut a_seeds: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let extra = cell_flags(&name[..1], fed[i], &fed_seeds, &a_seeds);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let at = cluster.add(name, &key, &extra);
        if name.starts_with('a') {
            a_seeds.push(cluster.nodes[at].addr());
        }
    }
    for node in &cluster.nodes {
        let want = if node.id.starts_with('a') { 2 } else { 3 };
        wait_for(
            &format!("{} to see its cell of {want}", node.id),
            WAIT,
            || {
                let r = home_row(node)?;
                (r["alive"] == want && r["name"] == node.id[..1]).then_some(())
            },
        );
        wait_for(&format!("{} to know 2 cells", node.id), WAIT, || {
            let c = cells(node)?;
            let rows = c["cells"].as_array()?;
            (rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r["gateways"].as_array().is_some_and(|g| g.len() == 1)))
            .then_some(())
        });
    }
    let b1 = &cluster.nodes[2];
    assert!(
        b1.log()
            .contains("alone in this cell: gossiping with its members"),
        "{}",
        b1.log()
    );
}
