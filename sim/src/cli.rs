//! The command line: parse, run the chosen schedulers on the same workload
//! and seed, print the summary table, write DIR/report.json and the plots.

use crate::auction::{self, AuctionSim, GossipOutcome, Params};
use crate::baselines;
use crate::engine::{Micros, SEC, TraceHash};
use crate::failures::CrashAt;
use crate::gossip;
use crate::invariants::Violation;
use crate::metrics::{Collector, GossipReport, P50P99, Report, RunReport};
use crate::network::{NetConfig, Partition};
use crate::plots;
use crate::workload::{self, Sizing, Workload};
use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Deterministic simulator of Agora's auction at up to 10,000 nodes.
#[derive(Parser, Debug, Clone)]
#[command(name = "agora-sim", version, args_override_self = true)]
pub struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Seed: the same seed gives the same run (and trace hash).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Target load: fraction of all cores busy on average.
    #[arg(long, default_value_t = 0.8)]
    pub load: f64,
    /// short, mixed, fair, or a FILE.csv (arrival_s,framework,cpus,mem_mib,duration_s).
    #[arg(long, default_value = "short")]
    pub workload: String,
    /// auction, central, random, sparrow, or all.
    #[arg(long, default_value = "all")]
    pub scheduler: String,
    /// Cores per node.
    #[arg(long, default_value_t = 16)]
    pub cores_per_node: u64,
    /// Nodes per cell (one chitchat cluster); the whole cluster when larger.
    #[arg(long, default_value_t = 500)]
    pub cell_size: usize,
    /// Gossip interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub gossip_interval_ms: u64,
    /// Node crashes per node per hour (each rejoins after --rejoin-after-s).
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Seconds a crashed node stays down.
    #[arg(long, default_value_t = 30.0)]
    pub rejoin_after_s: f64,
    /// A crash at a given time: NODE@START_S[:REJOIN_S], e.g. 17@30:90 (node
    /// n00017 down from 30 s to 90 s) or 17@30 (never back); repeatable.
    /// Framework home nodes cannot be crashed.
    #[arg(long, value_name = "NODE@START_S[:REJOIN_S]")]
    pub crash: Vec<String>,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// One-way base latency in microseconds (per link: base to 2 × base).
    #[arg(long, default_value_t = 100)]
    pub latency_us: u64,
    /// Mean exponential jitter added to every message, microseconds.
    #[arg(long, default_value_t = 50)]
    pub jitter_us: u64,
    /// A partition START_S:END_S:FRACTION (nodes below FRACTION × N on one side); repeatable.
    #[arg(long)]
    pub partition: Vec<String>,
    /// Bidder: bids sent per placement attempt when no candidate has room
    /// in the bidder's view (d of power-of-d; the bids wait for room).
    #[arg(long, default_value_t = 2)]
    pub candidates: usize,
    /// Bidder: bids sent per placement attempt when the best candidate has
    /// room in the bidder's view (after its own unanswered bids); at most
    /// --candidates. Such bids do not wait at their node: a reject sends
    /// the task elsewhere at once.
    #[arg(long, default_value_t = agora_protocol::bidder::Config::default().candidates_with_room)]
    pub candidates_with_room: usize,
    /// Bidder: nodes examined per attempt (random sample of its view).
    #[arg(long, default_value_t = 8)]
    pub scan_limit: usize,
    /// Bidder: candidates are drawn among this many best-scored nodes.
    #[arg(long, default_value_t = 4)]
    pub best_of: usize,
    /// Bidder: how long a bid may wait at a full node, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub bid_wait_ms: u64,
    /// Bidder: a bid with no answer after this long counts as lost, in
    /// milliseconds (keep it above --bid-wait-ms plus a round trip)
    /// [default: the node's, 1000].
    #[arg(long)]
    pub bid_timeout_ms: Option<u64>,
    /// Bidder: a confirm with no answer after this long is sent again, in
    /// milliseconds [default: the node's, 200].
    #[arg(long)]
    pub confirm_timeout_ms: Option<u64>,
    /// Cells: a bidder also bids in a freer cell when less than this fraction
    /// of its home cell is free (0: only when no home node can take the
    /// task at all).
    #[arg(long, default_value_t = agora_protocol::cell::SPILL_FREE_FRACTION)]
    pub spill_below: f64,
    /// Auctioneer: contention window in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub window_ms: u64,
    /// Auctioneer: how long an award stays reserved without a confirm, in
    /// milliseconds [default: the node's, 2000].
    #[arg(long)]
    pub lease_ttl_ms: Option<u64>,
    /// Auctioneer: first delay before re-sending an unacknowledged status
    /// update, in milliseconds (doubling up to 10 s) [default: the node's, 200].
    #[arg(long)]
    pub status_retry_ms: Option<u64>,
    /// Auctioneer: most bids held at once per node (more are rejected as busy).
    #[arg(long, default_value_t = 4096)]
    pub max_pending_bids: usize,
    /// Auctioneer: answers (and confirmations) remembered per node, to answer
    /// a re-sent (duplicated) bid the same way. It needs to cover a bid
    /// timeout's worth of one node's bids (about 45 per second at 10,000
    /// nodes and load 0.8). Each entry costs ~460 bytes per node:
    /// the node's default of 8192 would need 38 GB at 10,000 nodes.
    #[arg(long, default_value_t = 128)]
    pub answer_cache: usize,
    /// Threads for the auction's run, which runs its cells side by side
    /// (0: one per core). The result is the same for any number: only the
    /// wall time changes. With `--scheduler all` the baselines run first,
    /// side by side on as many threads, then the auction.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Output directory for report.json and the SVG plots.
    #[arg(long, default_value = "sim-out")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Everything a run produced.
pub struct Outcome {
    /// The report as written.
    pub report: Report,
    /// Per-scheduler collectors, in run order.
    pub collectors: Vec<(String, Collector)>,
    /// Gossip outcome, when the auction ran.
    pub gossip: Option<GossipOutcome>,
}

/// Builds the parameters of a run from the arguments.
///
/// # Errors
/// A message naming the argument that is wrong.
pub fn params(a: &Args) -> anyhow::Result<Params> {
    if a.nodes == 0 || a.nodes > 99_999 {
        bail!("--nodes must be between 1 and 99999 (got {})", a.nodes);
    }
    if a.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if !(0.0..=1.0).contains(&a.spill_below) {
        bail!("--spill-below must be a fraction in [0, 1]");
    }
    if !(0.0..=1.0).contains(&a.loss) {
        bail!("--loss must be a probability in [0, 1]");
    }
    if a.cell_size == 0 || a.gossip_interval_ms == 0 || a.cores_per_node == 0 {
        bail!("--cell-size, --gossip-interval-ms and --cores-per-node must be positive");
    }
    let partitions = a
        .partition
        .iter()
        .map(|p| Partition::parse(p, a.nodes as u32))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let crashes = a
        .crash
        .iter()
        .map(|c| CrashAt::parse(c, a.nodes as u32))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    for (flag, v) in [
        ("--bid-timeout-ms", a.bid_timeout_ms),
        ("--confirm-timeout-ms", a.confirm_timeout_ms),
        ("--lease-ttl-ms", a.lease_ttl_ms),
        ("--status-retry-ms", a.status_retry_ms),
    ] {
        if v == Some(0) {
            bail!("{flag} must be at least 1 (or left out for the node's default)");
        }
    }
    let ms = std::time::Duration::from_millis;
    let (bd, ad) = (
        agora_protocol::bidder::Config::default(),
        agora_protocol::auctioneer::Config::default(),
    );
    Ok(Params {
        nodes: a.nodes,
        cores: a.cores_per_node,
        cell_size: a.cell_size.min(a.nodes),
        gossip_interval: a.gossip_interval_ms * 1000,
        net: NetConfig {
            base: a.latency_us,
            jitter: a.jitter_us,
            loss: a.loss,
            partitions,
        },
        failure_rate: a.failure_rate.max(0.0),
        rejoin_after: (a.rejoin_after_s.max(0.0) * 1e6) as Micros,
        crashes,
        duration: (a.duration * 1e6) as Micros,
        seed: a.seed,
        fault: None,
        bidder: agora_protocol::bidder::Config {
            candidates: a.candidates.max(1),
            candidates_with_room: a.candidates_with_room.max(1),
            scan_limit: a.scan_limit.max(1),
            best_of: a.best_of.max(1),
            bid_wait: std::time::Duration::from_millis(a.bid_wait_ms),
            bid_timeout: a.bid_timeout_ms.map_or(bd.bid_timeout, ms),
            confirm_timeout: a.confirm_timeout_ms.map_or(bd.confirm_timeout, ms),
            ..bd
        },
        auctioneer: agora_protocol::auctioneer::Config {
            window: std::time::Duration::from_millis(a.window_ms),
            max_pending_bids: a.max_pending_bids.max(1),
            answer_cache: a.answer_cache.max(1),
            lease_ttl: a.lease_ttl_ms.map_or(ad.lease_ttl, ms),
            status_retry: a.status_retry_ms.map_or(ad.status_retry, ms),
            ..ad
        },
        spill_below: a.spill_below,
    })
}

fn bar(quiet: bool, len: u64, name: &str) -> Option<ProgressBar> {
    if quiet {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>8} [{bar:40}] {pos}/{len} simulated s  {elapsed_precise}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(name.to_string());
    Some(pb)
}

/// The threads a run may use: `--threads`, or one per core.
pub fn threads(a: &Args) -> usize {
    if a.threads > 0 {
        return a.threads;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the schedulers of `a` with `p` (which may carry a test fault).
///
/// # Errors
/// Bad arguments, or an invariant violation (as a [`Violation`] in the chain).
pub fn simulate(a: &Args, p: &Params) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let kind = workload::Kind::parse(&a.workload).map_err(anyhow::Error::msg)?;
    let sizing = Sizing {
        nodes: p.nodes,
        cores_per_node: p.cores,
        load: a.load,
        cells: p.cells(),
    };
    let names: Vec<&str> = match a.scheduler.as_str() {
        "all" => vec!["central", "auction", "random", "sparrow"],
        s @ ("auction" | "central" | "random" | "sparrow") => vec![s],
        other => bail!("unknown scheduler {other:?}: use auction, central, random, sparrow or all"),
    };
    if names.contains(&"auction") {
        let wl = Workload::new(kind.clone(), sizing, p.seed).map_err(anyhow::Error::msg)?;
        for c in &p.crashes {
            if let Some(def) = wl
                .frameworks()
                .iter()
                .find(|def| auction::home_node(p, def) == c.node)
            {
                bail!(
                    "--crash: node {} is the home of framework {}; a home's crash would take \
                     the framework's bidder with it, which the simulator does not model. \
                     Crash another node",
                    auction::node_id(c.node),
                    def.name
                );
            }
        }
    }
    let secs = (p.duration / SEC).max(1);
    let multi = MultiProgress::with_draw_target(if a.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let mut bars = Vec::new();
    for name in &names {
        let pb = bar(a.quiet, secs, name).map(|pb| multi.add(pb));
        let wl = Workload::new(kind.clone(), sizing, p.seed).map_err(anyhow::Error::msg)?;
        bars.push((*name, wl, pb));
    }
    // The baselines go first, side by side (each is a separate deterministic
    // simulation, so running them at once changes nothing in what they
    // compute); then the auction, by far the slowest, runs its cells on
    // every thread (see `auction`'s module doc). Running the auction beside
    // the baselines would leave its threads waiting for each other
    // whenever one lost its core to a baseline.
    let threads = threads(a);
    let mut gossip_out = None;
    let mut done: Vec<(usize, Collector)> = Vec::new();
    let mut auction = None;
    let mut baseline = Vec::new();
    for (i, (name, wl, pb)) in bars.into_iter().enumerate() {
        if name == "auction" {
            auction = Some((i, wl, pb));
        } else {
            baseline.push((i, name, wl, pb));
        }
    }
    let run_baseline = |name: &str, wl: Workload, pb: Option<ProgressBar>| {
        let kind = match name {
            "central" => baselines::Kind::Central,
            "random" => baselines::Kind::Random,
            _ => baselines::Kind::Sparrow,
        };
        let t0 = Instant::now();
        let mut c = baselines::run(kind, p, wl, pb.clone())?;
        c.wall_s = t0.elapsed().as_secs_f64();
        if let Some(pb) = pb {
            pb.finish();
        }
        anyhow::Ok(c)
    };
    if threads > 1 {
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let mut handles = Vec::new();
            for (i, name, wl, pb) in baseline {
                let run = &run_baseline;
                let h = std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || run(name, wl, pb))
                    .with_context(|| format!("cannot start the {name} thread"))?;
                handles.push((i, name, h));
            }
            for (i, name, h) in handles {
                let c = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))??;
                done.push((i, c));
            }
            Ok(())
        })?;
    } else {
        for (i, name, wl, pb) in baseline {
            done.push((i, run_baseline(name, wl, pb)?));
        }
    }
    if let Some((i, wl, pb)) = auction {
        let t0 = Instant::now();
        let (mut c, g) = AuctionSim::new(p.clone(), wl, pb.clone(), threads).run()?;
        c.wall_s = t0.elapsed().as_secs_f64();
        if let Some(pb) = pb {
            pb.finish();
        }
        gossip_out = Some(g);
        done.push((i, c));
    }
    // Report in the order of `names`.
    done.sort_by_key(|(i, _)| *i);
    let mut collectors: Vec<(String, Collector)> = done
        .into_iter()
        .map(|(i, c)| (names[i].to_string(), c))
        .collect();
    let central = collectors
        .iter()
        .find(|(n, _)| n == "central")
        .map(|(_, c)| (c.response.quantile(0.5), c.response.quantile(0.99)));
    let total_cpu = p.nodes as u64 * p.cores * 1000;
    let mut report = Report::default();
    let mut hash = TraceHash::default();
    let mut events = 0;
    for (name, c) in collectors.iter_mut() {
        report
            .schedulers
            .insert(name.clone(), c.report(p.duration, total_cpu, central));
        hash.mix(c.trace_hash);
        events += c.events;
    }
    let simulated_s = p.duration as f64 / SEC as f64;
    report.gossip = gossip_out.as_ref().map(|g| {
        let m = &g.metrics;
        let s = |v: u64| v as f64 / SEC as f64;
        GossipReport {
            bytes_per_node_per_s: m.bytes as f64 / p.nodes as f64 / simulated_s,
            convergence_s: P50P99 {
                p50: s(m.convergence.quantile(0.5)),
                p99: s(m.convergence.quantile(0.99)),
            },
            failure_detection_s: (m.detection.count() > 0).then(|| P50P99 {
                p50: s(m.detection.quantile(0.5)),
                p99: s(m.detection.quantile(0.99)),
            }),
            max_message_bytes: m.max_message,
            oversize_messages: m.oversize,
        }
    });
    report.run = RunReport {
        nodes: p.nodes,
        seed: p.seed,
        simulated_s,
        wall_s: started.elapsed().as_secs_f64(),
        events,
        trace_hash: format!("{:016x}", hash.value()),
    };
    Ok(Outcome {
        report,
        collectors,
        gossip: gossip_out,
    })
}

/// Writes report.json and the plots into `dir`.
///
/// # Errors
/// The file that could not be written.
pub fn write_outputs(dir: &std::path::Path, o: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&o.report).context("cannot encode the report")?;
    let path = dir.join("report.json");
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    let cdf: Vec<(String, Vec<(f64, f64)>)> = o
        .collectors
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                c.response
                    .cdf()
                    .into_iter()
                    .map(|(v, f)| (v as f64 / SEC as f64, f))
                    .collect(),
            )
        })
        .collect();
    plots::line_chart(
        &dir.join("response_cdf.svg"),
        "Job response time CDF",
        "response time (s, log)",
        "fraction of jobs",
        &cdf,
        true,
    )
    .map_err(anyhow::Error::msg)?;
    let fair: Vec<(String, Vec<(f64, f64)>)> = o
        .collectors
        .iter()
        .map(|(n, c)| (n.clone(), c.fairness.clone()))
        .collect();
    plots::line_chart(
        &dir.join("fairness.svg"),
        "Fairness: largest shortfall from the DRF share of what is in use",
        "time (s)",
        "cluster share",
        &fair,
        false,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(g) = &o.gossip {
        let mut curve = vec![(0.0, 0.0)];
        for (i, (sum, n)) in g.metrics.deciles.iter().enumerate() {
            if *n > 0 {
                let frac = if i == 9 { 0.99 } else { (i + 1) as f64 / 10.0 };
                curve.push((sum / *n as f64, frac));
            }
        }
        plots::line_chart(
            &dir.join("dissemination.svg"),
            "State dissemination in a cell (mean of sampled changes)",
            "seconds since the change",
            "fraction of the cell informed",
            &[("cell gossip".into(), curve)],
            false,
        )
        .map_err(anyhow::Error::msg)?;
        let (unit, scale) = byte_unit(g.bytes_series.iter().map(|p| p.1).fold(0.0, f64::max));
        let series: Vec<(f64, f64)> = g
            .bytes_series
            .iter()
            .map(|(t, b)| (*t, b / scale))
            .collect();
        plots::line_chart(
            &dir.join("gossip_bytes.svg"),
            "Gossip sent per node per second",
            "time (s)",
            &format!("{unit}/s per node"),
            &[("cells + federation".into(), series)],
            false,
        )
        .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// The unit (B, KB, MB, GB; 1 KB = 1,000 B) that shows `max` bytes with a
/// few digits, and its size in bytes.
pub fn byte_unit(max: f64) -> (&'static str, f64) {
    match max {
        m if m >= 1e9 => ("GB", 1e9),
        m if m >= 1e6 => ("MB", 1e6),
        m if m >= 1e3 => ("KB", 1e3),
        _ => ("B", 1.0),
    }
}

/// The summary table.
pub fn table(o: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>6} {:>6} {:>6} {:>5} {:>7}",
        "scheduler",
        "submitted",
        "completed",
        "place50",
        "place99",
        "tput/s",
        "util",
        "fair",
        "resp50/c",
        "r99/c",
        "bids",
        "rejs",
        "over",
        "wall s"
    );
    for (name, r) in &o.report.schedulers {
        let _ = writeln!(
            s,
            "{:<9} {:>10} {:>10} {:>6.2}ms {:>6.1}ms {:>8.0} {:>7.3} {:>7.4} {:>9.3} {:>6.3} {:>6.2} {:>6.2} {:>5} {:>7.1}",
            name,
            r.tasks_submitted,
            r.tasks_completed,
            r.placement_latency_ms.p50,
            r.placement_latency_ms.p99,
            r.throughput_tasks_per_s,
            r.utilization,
            r.fairness_max_share_gap,
            r.response_time_ratio_to_central.p50,
            r.response_time_ratio_to_central.p99,
            r.bids_per_task,
            r.rejects_per_task,
            r.overcommit_violations,
            r.wall_s
        );
    }
    if let (Some(g), Some(go)) = (&o.report.gossip, &o.gossip) {
        let _ = writeln!(
            s,
            "gossip: {:.0} B/node/s, convergence p50 {:.2} s p99 {:.2} s, detection {}, max message {} B, oversize {}; largest flat cell that fits a datagram: {} nodes",
            g.bytes_per_node_per_s,
            g.convergence_s.p50,
            g.convergence_s.p99,
            g.failure_detection_s
                .map_or("none (no node failed)".to_string(), |d| format!(
                    "p50 {:.2} s p99 {:.2} s",
                    d.p50, d.p99
                )),
            g.max_message_bytes,
            g.oversize_messages,
            go.max_flat_cell
        );
    }
    let r = &o.report.run;
    let _ = writeln!(
        s,
        "run: {} nodes, seed {}, {:.0} simulated s, {:.1} wall s, {} events ({:.0}/s), trace {}",
        r.nodes,
        r.seed,
        r.simulated_s,
        r.wall_s,
        r.events,
        r.events as f64 / r.wall_s.max(1e-9),
        r.trace_hash
    );
    s
}

/// Parses the command line, runs, prints and writes; returns the exit code.
pub fn main_exit_code() -> i32 {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(v) = e.downcast_ref::<Violation>() {
                eprintln!("agora-sim: {v}");
                return 2;
            }
            eprintln!("agora-sim: {e:#}");
            1
        }
    }
}

/// Runs with `args`, prints the table and writes the outputs.
///
/// # Errors
/// Bad arguments, IO errors, or an invariant violation.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let p = params(args)?;
    let o = simulate(args, &p)?;
    use std::io::Write;
    // A closed stdout (e.g. piped into `head`) must not stop the run.
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", table(&o));
    write_outputs(&args.out, &o)?;
    let _ = writeln!(out, "wrote {}/report.json and plots", args.out.display());
    Ok(())
}

/// The largest flat cell whose SYN fits one datagram with this simulator's ids.
pub fn max_flat_cell() -> usize {
    gossip::Config::cell(SEC, 6).max_flat_members()
}
