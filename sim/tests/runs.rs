//! End-to-end runs of the simulator binary's library: determinism, the
//! invariant checker, and every scheduler on every workload.

use agora_protocol::Resources;
use agora_sim::auction::home_node;
use agora_sim::cli::{Args, params, simulate};
use agora_sim::invariants::{Fault, Violation};
use agora_sim::workload::{Kind, Sizing, Workload};
use clap::Parser;

fn args(extra: &[&str]) -> Args {
    let mut v = vec![
        "agora-sim",
        "--nodes",
        "16",
        "--cell-size",
        "8",
        "--duration",
        "2",
        "--load",
        "0.5",
        "--quiet",
    ];
    v.extend_from_slice(extra);
    Args::parse_from(v)
}

fn hash(a: &Args) -> String {
    let p = params(a).unwrap();
    simulate(a, &p).unwrap().report.run.trace_hash
}

#[test]
fn same_seed_same_trace_and_different_seed_different_trace() {
    let a = args(&[
        "--seed",
        "7",
        "--failure-rate",
        "60",
        "--rejoin-after-s",
        "1",
    ]);
    let h1 = hash(&a);
    assert_eq!(h1, hash(&a), "same seed, same trace");
    let b = args(&[
        "--seed",
        "8",
        "--failure-rate",
        "60",
        "--rejoin-after-s",
        "1",
    ]);
    assert_ne!(h1, hash(&b), "different seed, different trace");
}

/// The report of a run with its wall-clock times zeroed: what must not
/// depend on the machine or the thread count.
fn report_without_walls(a: &Args) -> agora_sim::metrics::Report {
    let mut r = simulate(a, &params(a).unwrap()).unwrap().report;
    r.run.wall_s = 0.0;
    for s in r.schedulers.values_mut() {
        s.wall_s = 0.0;
    }
    r
}

#[test]
fn the_auction_gives_the_same_report_on_any_number_of_threads() {
    // Four cells at load 0.95 of 4-core nodes, so bidders cross cells (the
    // messages between shards), imports are answered between windows, and
    // crashes and rejoins (cluster-wide events) happen.
    let run = |threads: &str| {
        report_without_walls(&args(&[
            "--nodes",
            "64",
            "--cell-size",
            "16",
            "--cores-per-node",
            "4",
            "--load",
            "0.95",
            "--duration",
            "4",
            "--failure-rate",
            "120",
            "--rejoin-after-s",
            "1",
            "--seed",
            "5",
            "--threads",
            threads,
        ]))
    };
    let one = run("1");
    let a = &one.schedulers["auction"];
    assert!(
        a.tasks_placed_across_cells > 0,
        "no task crossed cells: {a:?}"
    );
    assert!(a.tasks_lost_reported > 0, "no crash lost a task: {a:?}");
    assert_eq!(one, run("2"), "1 thread and 2 threads");
    assert_eq!(one, run("3"), "1 thread and 3 threads");
    assert_eq!(run("2"), run("2"), "2 threads twice");
}

#[test]
fn the_checker_stops_a_run_whose_ledger_is_broken() {
    let a = args(&["--scheduler", "auction", "--seed", "3"]);
    let mut p = params(&a).unwrap();
    p.fault = Some(Fault {
        at: 1_000_000,
        node: 5,
        extra: Resources::cpu_mem(17_000, 0),
    });
    let err = simulate(&a, &p)
        .err()
        .expect("the broken ledger must stop the run");
    let v = err.downcast_ref::<Violation>().expect("a Violation");
    assert_eq!(v.seed, 3);
    assert_eq!(v.time, 1_000_000);
    assert!(
        v.what.contains("overcommit") && v.what.contains("n00005"),
        "{}",
        v.what
    );
    assert!(v.to_string().contains("--seed 3"));
    // Without the fault the same run passes.
    p.fault = None;
    assert!(simulate(&a, &p).is_ok());
}

#[test]
fn every_scheduler_on_every_workload_finishes_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = dir.join("w.csv");
    let mut rows = String::from("arrival_s,framework,cpus,mem_mib,duration_s\n");
    for i in 0..200 {
        rows.push_str(&format!(
            "{:.3},{},1,1024,0.5\n",
            i as f64 * 0.01,
            if i % 2 == 0 { "etl" } else { "web" }
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    for wl in ["short", "mixed", "fair", csv.to_str().unwrap()] {
        let secs = if wl == "mixed" || wl == "fair" {
            "8"
        } else {
            "2"
        };
        let a = args(&[
            "--workload",
            wl,
            "--duration",
            secs,
            "--scheduler",
            "all",
            "--out",
            dir.to_str().unwrap(),
        ]);
        let p = params(&a).unwrap();
        let o = simulate(&a, &p).unwrap();
        agora_sim::cli::write_outputs(dir, &o).unwrap();
        for (name, r) in &o.report.schedulers {
            assert_eq!(r.overcommit_violations, 0, "{wl}/{name}");
            assert_eq!(r.tasks_lost_unreported, 0, "{wl}/{name}");
            assert!(r.tasks_submitted > 0, "{wl}/{name}");
            assert!(
                r.tasks_completed > 0 && r.tasks_completed <= r.tasks_submitted,
                "{wl}/{name}: {r:?}"
            );
            assert!(
                r.utilization > 0.0 && r.utilization <= 1.0,
                "{wl}/{name}: {r:?}"
            );
            assert!(
                r.placement_latency_ms.p50 <= r.placement_latency_ms.p99,
                "{wl}/{name}"
            );
            assert!(r.bids_per_task > 0.0, "{wl}/{name}");
            assert!(r.wall_s > 0.0, "{wl}/{name}: each run is timed");
        }
        let c = &o.report.schedulers["central"];
        assert!(
            c.placement_latency_ms.p50 < 1.0,
            "central decides instantly when there is room"
        );
        assert_eq!(c.response_time_ratio_to_central.p50, 1.0, "{wl}: {c:?}");
        let g = o.report.gossip.as_ref().unwrap();
        assert!(g.bytes_per_node_per_s > 0.0 && g.oversize_messages == 0);
        assert!(
            g.convergence_s.p50 > 0.0 && g.convergence_s.p50 < 10.0,
            "{g:?}"
        );
        let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
        for field in [
            "tasks_lost_unreported",
            "bytes_per_node_per_s",
            "trace_hash",
            "failure_detection_s",
            "response_time_ratio_to_central",
            "tasks_lost_reported",
            "wall_s",
        ] {
            assert!(json.contains(field), "{field} in report.json");
        }
        // No node failed: no detection time, rather than a 0.00 s one.
        assert_eq!(g.failure_detection_s, None, "{wl}");
        assert!(json.contains("\"failure_detection_s\": null"), "{json}");
        let table = agora_sim::cli::table(&o);
        assert!(table.contains("detection none"), "{table}");
        // Every scheduler is in the response-time plot, each with a line
        // style of its own (central and sparrow often draw the same curve).
        let cdf = std::fs::read_to_string(dir.join("response_cdf.svg")).unwrap();
        for name in o.report.schedulers.keys() {
            assert!(
                cdf.contains(&format!(">\n{name}\n<")),
                "{name} in the legend"
            );
        }
        let widths: std::collections::BTreeSet<&str> = cdf
            .split("stroke-width=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert!(widths.len() >= 3, "distinct line widths: {widths:?}");
        let gossip = std::fs::read_to_string(dir.join("gossip_bytes.svg")).unwrap();
        assert!(
            gossip.contains("KB/s per node"),
            "the gossip axis is in KB/s"
        );
        for svg in [
            "response_cdf.svg",
            "fairness.svg",
            "dissemination.svg",
            "gossip_bytes.svg",
        ] {
            assert!(
                std::fs::metadata(dir.join(svg)).unwrap().len() > 500,
                "{svg}"
            );
        }
    }
}

#[test]
fn crashes_are_detected_and_lost_tasks_reported() {
    let a = args(&[
        "--scheduler",
        "auction",
        "--duration",
        "25",
        "--load",
        "0.2",
        "--failure-rate",
        "300",
        "--rejoin-after-s",
        "60",
        "--nodes",
        "12",
        "--cell-size",
        "12",
    ]);
    let p = params(&a).unwrap();
    let o = simulate(&a, &p).unwrap();
    let g = o.report.gossip.unwrap();
    let d = g
        .failure_detection_s
        .expect("nodes failed: a detection time");
    assert!(d.p50 > 1.0 && d.p50 < 30.0, "{g:?}");
    assert_eq!(o.report.schedulers["auction"].tasks_lost_unreported, 0);
}

#[test]
fn a_scheduled_crash_is_detected_and_its_lost_tasks_reported() {
    let base = [
        "--scheduler",
        "auction",
        "--duration",
        "25",
        "--load",
        "0.6",
        "--nodes",
        "12",
        "--cell-size",
        "12",
    ];
    let a = args(&base);
    let p = params(&a).unwrap();
    let kind = Kind::parse("short").unwrap();
    let sizing = Sizing {
        nodes: 12,
        cores_per_node: 16,
        load: 0.6,
        cells: 1,
    };
    let wl = Workload::new(kind, sizing, p.seed).unwrap();
    let homes: Vec<u32> = wl.frameworks().iter().map(|d| home_node(&p, d)).collect();
    let victim = (0..12).find(|n| !homes.contains(n)).unwrap();
    let home = homes[0];

    // A home node cannot be crashed: the run is refused before it starts.
    let spec = format!("{home}@2:6");
    let mut v = base.to_vec();
    v.extend(["--crash", &spec]);
    let a = args(&v);
    let e = simulate(&a, &params(&a).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is the home of framework"), "{e}");

    let quiet = simulate(&args(&base), &p).unwrap();
    // Down long enough for the failure detector (p50 ~13 s at a 1 s interval).
    let spec = format!("{victim}@2:18");
    let mut v = base.to_vec();
    v.extend(["--crash", &spec]);
    let a = args(&v);
    let o = simulate(&a, &params(&a).unwrap()).unwrap();
    let (_, c) = &o.collectors[0];
    assert!(
        c.lost_reported > 0,
        "the crashed node's tasks are reported lost"
    );
    assert_eq!(c.lost_unreported, 0);
    assert_eq!(quiet.collectors[0].1.lost_reported, 0);
    let g = o.report.gossip.unwrap();
    assert!(
        g.failure_detection_s.is_some_and(|d| d.p50 > 1.0),
        "the crash was detected: {g:?}"
    );
    // The rest of the cluster went on placing and completing work.
    assert_ne!(o.report.run.trace_hash, quiet.report.run.trace_hash);
    assert!(
        o.report.schedulers["auction"].tasks_completed
            > quiet.report.schedulers["auction"].tasks_completed * 8 / 10,
        "{} vs {}",
        o.report.schedulers["auction"].tasks_completed,
        quiet.report.schedulers["auction"].tasks_completed
    );
}

#[test]
fn lost_messages_a_tiny_answer_cache_and_a_partition_break_no_invariant() {
    // With 5% of messages lost, bidders re-send bids, and with one answer
    // remembered per node most re-sends find their answer evicted and are
    // decided again. The checker runs after every event, so any overcommit
    // or bid answered two ways would end the run with an error.
    let a = args(&[
        "--scheduler",
        "auction",
        "--nodes",
        "40",
        "--cell-size",
        "20",
        "--duration",
        "15",
        "--load",
        "0.7",
        "--loss",
        "0.05",
        "--answer-cache",
        "1",
        "--partition",
        "4:8:0.5",
    ]);
    let o = simulate(&a, &params(&a).unwrap()).unwrap();
    let r = &o.report.schedulers["auction"];
    assert_eq!(r.overcommit_violations, 0);
    assert_eq!(r.tasks_lost_unreported, 0);
    // Two candidates per task: anything above 2 bids per task is re-sends.
    assert!(r.bids_per_task > 2.0, "loss makes bidders re-send: {r:?}");
    assert!(
        r.tasks_completed > r.tasks_submitted / 2,
        "work still gets done: {r:?}"
    );
}

#[test]
fn lost_messages_do_not_tie_up_the_cluster() {
    // Every lost award or withdrawal holds its lease until the lease
    // expires. With the node's default timers the cluster at 5% loss keeps
    // its utilization close to central's (which loses nothing); with the old
    // 3 s lease, 2 s bid timeout and 500 ms retries it lost about 5 points
    // and the backlog grew for the whole run.
    let a = args(&[
        "--scheduler",
        "all",
        "--nodes",
        "40",
        "--cell-size",
        "40",
        "--duration",
        "30",
        "--load",
        "0.8",
        "--loss",
        "0.05",
    ]);
    let o = simulate(&a, &params(&a).unwrap()).unwrap();
    let (auction, central) = (
        &o.report.schedulers["auction"],
        &o.report.schedulers["central"],
    );
    assert!(
        auction.utilization >= 0.97 * central.utilization,
        "auction {:.3} vs central {:.3}",
        auction.utilization,
        central.utilization
    );
    assert!(
        auction.response_time_ratio_to_central.p50 < 1.2,
        "{auction:?}"
    );
}

#[test]
fn a_saturated_cell_spills_into_a_freer_one() {
    // In `fair`, frameworks 0 and 2 (two cores per task) share cell 0 and
    // frameworks 1 and 3 cell 1, so cell 0 is asked for more CPU than it
    // has. Spilling when home is under 5% free places its backlog in cell 1.
    let run = |spill: &str| {
        let a = args(&[
            "--scheduler",
            "auction",
            "--workload",
            "fair",
            "--nodes",
            "400",
            "--cell-size",
            "200",
            "--duration",
            "20",
            "--load",
            "0.8",
            "--spill-below",
            spill,
        ]);
        let o = simulate(&a, &params(&a).unwrap()).unwrap();
        o.report.schedulers["auction"].clone()
    };
    let (spill, only_when_full) = (run("0.05"), run("0"));
    assert!(
        spill.placement_latency_ms.p99 < 0.75 * only_when_full.placement_latency_ms.p99,
        "p99 placement {} ms with spilling, {} ms without",
        spill.placement_latency_ms.p99,
        only_when_full.placement_latency_ms.p99
    );
    assert!(
        spill.rejects_per_task < only_when_full.rejects_per_task,
        "fewer rejects when bidding where there is room: {} against {}",
        spill.rejects_per_task,
        only_when_full.rejects_per_task
    );
}

#[test]
fn in_fair_the_auction_keeps_frameworks_near_their_drf_share() {
    // Four frameworks with different weights and dominant resources. The
    // fairness figure is the shortfall from progressive filling of the
    // moment's demand; the goal is under 5% of cluster share.
    let a = args(&[
        "--scheduler",
        "all",
        "--workload",
        "fair",
        "--nodes",
        "200",
        "--cell-size",
        "200",
        "--duration",
        "30",
        "--load",
        "0.8",
    ]);
    let o = simulate(&a, &params(&a).unwrap()).unwrap();
    let gap = |s: &str| o.report.schedulers[s].fairness_max_share_gap;
    assert!(gap("auction") < 0.05, "auction {}", gap("auction"));
    assert!(
        gap("random") > 2.0 * gap("auction"),
        "random ignores shares: random {} vs auction {}",
        gap("random"),
        gap("auction")
    );
    assert!(gap("central") <= gap("random"));
}

#[test]
fn status_updates_keep_the_bidders_view_fresh() {
    // Every status update carries its node's free vector, so a bidder
    // learns of a finished task's room with the `finished` update instead
    // of a gossip round later. With 0.1-1 s tasks its view would otherwise
    // be a second stale: about 0.3 rejects per task and a 26 ms placement
    // p99 at 100 nodes, against 0.03 and 1 ms.
    let a = args(&[
        "--scheduler",
        "auction",
        "--nodes",
        "100",
        "--cell-size",
        "100",
        "--duration",
        "10",
        "--load",
        "0.8",
    ]);
    let o = simulate(&a, &params(&a).unwrap()).unwrap();
    let r = &o.report.schedulers["auction"];
    assert!(r.rejects_per_task < 0.1, "{r:?}");
    assert!(r.placement_latency_ms.p99 < 10.0, "{r:?}");
}

#[test]
fn help_states_the_nodes_timer_defaults() {
    use clap::CommandFactory;
    let (b, au) = (
        agora_protocol::bidder::Config::default(),
        agora_protocol::auctioneer::Config::default(),
    );
    let help = Args::command().render_long_help().to_string();
    for (flag, d) in [
        ("--bid-timeout-ms", b.bid_timeout),
        ("--confirm-timeout-ms", b.confirm_timeout),
        ("--lease-ttl-ms", au.lease_ttl),
        ("--status-retry-ms", au.status_retry),
    ] {
        let at = help.find(flag).expect(flag);
        let rest = &help[at..];
        let end = rest.find("\n      --").unwrap_or(rest.len());
        let want = format!("[default: the node's, {}]", d.as_millis());
        assert!(rest[..end].contains(&want), "{flag}: {}", &rest[..end]);
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let a = args(&["--workload", "nope"]);
    let p = params(&a).unwrap();
    let e = simulate(&a, &p).err().unwrap().to_string();
    assert!(e.contains("short, mixed, fair"), "{e}");
    let a = args(&["--partition", "5:1:0.5"]);
    assert!(params(&a).is_err());
    let a = args(&["--crash", "99@1"]);
    let e = params(&a).err().unwrap().to_string();
    assert!(e.contains("nodes are numbered 0 to 15"), "{e}");
    let a = args(&["--spill-below", "2"]);
    assert!(
        params(&a)
            .err()
            .unwrap()
            .to_string()
            .contains("--spill-below")
    );
    let a = args(&["--lease-ttl-ms", "0"]);
    assert!(
        params(&a)
            .err()
            .unwrap()
            .to_string()
            .contains("--lease-ttl-ms")
    );
    let a = args(&["--scheduler", "best"]);
    let p = params(&a).unwrap();
    assert!(
        simulate(&a, &p)
            .err()
            .unwrap()
            .to_string()
            .contains("unknown scheduler")
    );
}

/// The scenario node/tests/cells.rs runs on real agents, in the simulator:
/// three cells of three nodes, and one framework that asks for four tasks
/// of a whole node each. Its home cell takes three; the host sends the
/// fourth to another cell (the node's `cells` test: a task home cannot take
/// is placed in another cell). Both drive the same `Host` code.
#[test]
fn a_task_the_home_cell_cannot_take_crosses_as_on_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("four.csv");
    std::fs::write(
        &csv,
        "arrival_s,framework,cpus,mem_mib,duration_s\n\
         0.5,big,2,1024,60\n0.5,big,2,1024,60\n0.5,big,2,1024,60\n0.5,big,2,1024,60\n",
    )
    .unwrap();
    let csv = csv.display().to_string();
    // Nine nodes of 2 cores in cells of `cell_size`, the four tasks only.
    let run = |cell_size: &str| {
        let a = Args::parse_from([
            "agora-sim",
            "--nodes",
            "9",
            "--cell-size",
            cell_size,
            "--cores-per-node",
            "2",
            "--duration",
            "15",
            "--workload",
            &csv,
            "--scheduler",
            "auction",
            "--quiet",
        ]);
        simulate(&a, &params(&a).unwrap()).unwrap()
    };
    let o = run("3");
    let r = &o.report.schedulers["auction"];
    assert_eq!(r.tasks_submitted, 4, "{r:?}");
    assert_eq!(
        r.tasks_placed_across_cells, 1,
        "three tasks fill the home cell and one crosses: {r:?}"
    );
    assert_eq!(r.overcommit_violations, 0);
    // One cell of nine: all four fit at home, nothing crosses.
    let o = run("9");
    assert_eq!(o.report.schedulers["auction"].tasks_placed_across_cells, 0);
}
