//! Workloads: the jobs every scheduler is given, generated lazily from a seed
//! so that each scheduler sees the identical sequence.
//!
//! - `short`: Sparrow-style jobs of [`SHORT_TASKS_PER_JOB`] tasks, each task
//!   one core and 2 GiB for a duration uniform in 100 ms–1 s, arriving as a
//!   Poisson process sized to the target load. One framework per cell (the
//!   "one scheduler per cell" of a distributed scheduler).
//! - `mixed`: long-running services that hold about a fifth of the cluster
//!   from time zero, plus heavy-tailed batch jobs (see [`Workload::mixed_job`]
//!   for the Google-trace figures the shape follows).
//! - `fair`: four frameworks with weights 1, 1, 2 and 1 and different dominant
//!   resources (CPU-heavy, memory-heavy, CPU-heavy, balanced), each offering
//!   the same arrival rate, for DRF comparisons.
//! - a CSV file: `arrival_s,framework,cpus,mem_mib,duration_s` per line (a
//!   header line is skipped); each line is one single-task job.

use crate::engine::{Micros, SEC};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Tasks per `short` job.
pub const SHORT_TASKS_PER_JOB: usize = 10;

/// Duration given to a service: it outlives any run.
pub const SERVICE_DURATION: Micros = u64::MAX / 4;

/// One task of a job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskReq {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// How long it runs once started.
    pub duration: Micros,
}

/// A job: tasks submitted together by one framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Sequence number (0, 1, …).
    pub id: u64,
    /// When it is submitted.
    pub arrival: Micros,
    /// Index into [`Workload::frameworks`].
    pub framework: usize,
    /// Its tasks.
    pub tasks: Vec<TaskReq>,
    /// A long-running service (never completes; excluded from response times).
    pub service: bool,
}

/// A framework of the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkDef {
    /// Its name (used as its framework id).
    pub name: String,
    /// DRF weight.
    pub weight: u32,
    /// The cell its home node is in.
    pub cell: usize,
}

/// Which workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Sparrow-style short tasks.
    Short,
    /// Services plus heavy-tailed batch.
    Mixed,
    /// Weighted frameworks with different dominant resources.
    Fair,
    /// Rows of a CSV file.
    Csv(PathBuf),
}

impl Kind {
    /// Parses `short`, `mixed`, `fair` or a path ending in `.csv`.
    ///
    /// # Errors
    /// A message listing the accepted names.
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "short" => Ok(Kind::Short),
            "mixed" => Ok(Kind::Mixed),
            "fair" => Ok(Kind::Fair),
            p if p.ends_with(".csv") => Ok(Kind::Csv(PathBuf::from(p))),
            other => Err(format!(
                "unknown workload {other:?}: use short, mixed, fair or a FILE.csv"
            )),
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> String {
        match self {
            Kind::Short => "short".into(),
            Kind::Mixed => "mixed".into(),
            Kind::Fair => "fair".into(),
            Kind::Csv(p) => p.display().to_string(),
        }
    }
}

/// The cluster a workload is sized for.
#[derive(Clone, Copy, Debug)]
pub struct Sizing {
    /// Nodes.
    pub nodes: usize,
    /// Cores per node.
    pub cores_per_node: u64,
    /// Target load (fraction of all cores busy on average).
    pub load: f64,
    /// Number of cells.
    pub cells: usize,
}

/// Memory per core of a simulated node, in MiB.
pub const MEM_PER_CORE_MIB: u64 = 4096;

/// A lazy, seeded job generator.
pub struct Workload {
    kind: Kind,
    sizing: Sizing,
    frameworks: Vec<FrameworkDef>,
    rng: ChaCha8Rng,
    next_id: u64,
    next_arrival: Micros,
    /// Mean gap between job arrivals, in µs (0 for CSV).
    gap: f64,
    pending_services: Vec<Job>,
    csv: std::vec::IntoIter<Job>,
}

impl Workload {
    /// A generator for `kind` on a cluster of `sizing`, seeded by `seed`.
    ///
    /// # Errors
    /// A message when the CSV file cannot be read or a line is malformed.
    pub fn new(kind: Kind, sizing: Sizing, seed: u64) -> Result<Self, String> {
        let rng = ChaCha8Rng::seed_from_u64(seed ^ 0x776f_726b_6c6f_6164);
        let cells = sizing.cells.max(1);
        let total_cores = sizing.nodes as f64 * sizing.cores_per_node as f64;
        let (frameworks, work_per_job, csv) = match &kind {
            Kind::Short => (
                (0..cells)
                    .map(|c| FrameworkDef {
                        name: format!("short-c{c}"),
                        weight: 1,
                        cell: c,
                    })
                    .collect(),
                // core-seconds per job: tasks × 1 core × mean 0.55 s
                SHORT_TASKS_PER_JOB as f64 * 0.55,
                Vec::new(),
            ),
            Kind::Mixed => (
                (0..cells)
                    .map(|c| FrameworkDef {
                        name: format!("mixed-c{c}"),
                        weight: 1,
                        cell: c,
                    })
                    .collect(),
                mixed_mean_work(),
                Vec::new(),
            ),
            Kind::Fair => (
                [("fair-a", 1), ("fair-b", 1), ("fair-c", 2), ("fair-d", 1)]
                    .iter()
                    .enumerate()
                    .map(|(i, (n, w))| FrameworkDef {
                        name: (*n).to_string(),
                        weight: *w,
                        cell: i % cells,
                    })
                    .collect(),
                fair_mean_work(),
                Vec::new(),
            ),
            Kind::Csv(path) => {
                let (fws, jobs) = read_csv(path, cells)?;
                (fws, 1.0, jobs)
            }
        };
        let load = sizing.load.max(1e-6);
        // Services take ~20% of the cluster in `mixed`; batch fills the rest of the load.
        let batch_load = match kind {
            Kind::Mixed => (load - 0.2).max(0.05),
            _ => load,
        };
        let jobs_per_s = batch_load * total_cores / work_per_job;
        let gap = if matches!(kind, Kind::Csv(_)) {
            0.0
        } else {
            1e6 / jobs_per_s
        };
        let mut w = Workload {
            kind,
            sizing,
            frameworks,
            rng,
            next_id: 0,
            next_arrival: 0,
            gap,
            pending_services: Vec::new(),
            csv: csv.into_iter(),
        };
        if w.kind == Kind::Mixed {
            w.pending_services = w.services();
        }
        if w.gap > 0.0 {
            w.next_arrival = w.exp_gap();
        }
        Ok(w)
    }

    /// The frameworks of this workload.
    pub fn frameworks(&self) -> &[FrameworkDef] {
        &self.frameworks
    }

    /// The next job in arrival order, or `None` when a CSV runs out.
    pub fn next_job(&mut self) -> Option<Job> {
        if let Some(job) = self.pending_services.pop() {
            return Some(job);
        }
        if let Kind::Csv(_) = self.kind {
            return self.csv.next();
        }
        let arrival = self.next_arrival;
        self.next_arrival = arrival + self.exp_gap();
        let framework = self.rng.random_range(0..self.frameworks.len());
        let id = self.next_id;
        self.next_id += 1;
        let (tasks, service) = match self.kind {
            Kind::Short => (self.short_tasks(), false),
            Kind::Mixed => (self.mixed_job(), false),
            Kind::Fair => (self.fair_tasks(framework), false),
            Kind::Csv(_) => (Vec::new(), false),
        };
        Some(Job {
            id,
            arrival,
            framework,
            tasks,
            service,
        })
    }

    fn exp_gap(&mut self) -> Micros {
        let u: f64 = self.rng.random::<f64>();
        (-(1.0 - u).ln() * self.gap).max(1.0) as Micros
    }

    fn short_tasks(&mut self) -> Vec<TaskReq> {
        (0..SHORT_TASKS_PER_JOB)
            .map(|_| TaskReq {
                cpu_millis: 1000,
                mem_mib: 2048,
                duration: self.rng.random_range(100_000..=1_000_000),
            })
            .collect()
    }

    /// Long services placed at time zero: ~20% of all cores, in tasks of 2 or
    /// 4 cores with 4 GiB per core (Google's 2011 trace: production-priority
    /// jobs are few but hold most of the memory and a large part of the CPU;
    /// Reiss et al., "Towards understanding heterogeneous clouds at scale:
    /// Google trace analysis", ISTC-CC-TR-12-101, 2012, on a 12,500+ machine
    /// cluster over 29 days).
    fn services(&mut self) -> Vec<Job> {
        let total = self.sizing.nodes as u64 * self.sizing.cores_per_node * 1000;
        let mut placed = 0u64;
        let mut out = Vec::new();
        while placed < total / 5 {
            let cores = if self.rng.random_bool(0.5) { 2 } else { 4 };
            let tasks = self.rng.random_range(1..=8usize);
            let reqs: Vec<TaskReq> = (0..tasks)
                .map(|_| TaskReq {
                    cpu_millis: cores * 1000,
                    mem_mib: cores * MEM_PER_CORE_MIB,
                    duration: SERVICE_DURATION,
                })
                .collect();
            placed += cores * 1000 * tasks as u64;
            let id = self.next_id;
            self.next_id += 1;
            let framework = self.rng.random_range(0..self.frameworks.len());
            out.push(Job {
                id,
                arrival: 0,
                framework,
                tasks: reqs,
                service: true,
            });
        }
        out.reverse();
        out
    }

    /// A heavy-tailed batch job. Shape after the Google 2011 trace (same
    /// sources as [`Workload::services`]; per-tier figures as tabulated by
    /// C. Maggioni, "Understanding and comparing unsuccessful executions in
    /// large datacenters", USI 2021, from the 2011 data): mean task response
    /// times range from 58 s to 9,683 s across best-effort batch priorities
    /// and ~500 s for production, i.e. spanning more than two orders of
    /// magnitude; most jobs have few tasks while a few have very many.
    ///
    /// Scaled to a simulation of minutes, we draw: tasks per job 1 with
    /// probability 0.6, else Pareto(α = 1.2, x_m = 2) capped at 200; task
    /// duration Pareto(α = 1.5, x_m = 2 s) capped at 600 s (mean ≈ 5.4 s);
    /// CPU 0.5, 1 or 2 cores; memory 1–8 GiB independent of CPU.
    pub fn mixed_job(&mut self) -> Vec<TaskReq> {
        let n = if self.rng.random_bool(0.6) {
            1
        } else {
            (pareto(&mut self.rng, 1.2, 2.0).min(200.0)) as usize
        };
        let cpu = [500, 1000, 2000][self.rng.random_range(0..3usize)];
        let mem = 1024 * self.rng.random_range(1..=8u64);
        (0..n.max(1))
            .map(|_| TaskReq {
                cpu_millis: cpu,
                mem_mib: mem,
                duration: (pareto(&mut self.rng, 1.5, 2.0).min(600.0) * 1e6) as Micros,
            })
            .collect()
    }

    fn fair_tasks(&mut self, framework: usize) -> Vec<TaskReq> {
        let (cpu, mem) = match framework % 4 {
            0 => (2000, 2048),
            1 => (500, 8192),
            2 => (2000, 2048),
            _ => (1000, 4096),
        };
        (0..SHORT_TASKS_PER_JOB)
            .map(|_| TaskReq {
                cpu_millis: cpu,
                mem_mib: mem,
                duration: self.rng.random_range(1_000_000..=5_000_000),
            })
            .collect()
    }
}

fn pareto(rng: &mut ChaCha8Rng, alpha: f64, xm: f64) -> f64 {
    let u: f64 = rng.random::<f64>();
    xm / (1.0 - u).max(1e-12).powf(1.0 / alpha)
}

/// Mean core-seconds of a `mixed` batch job (estimated numerically once:
/// mean tasks ≈ 0.6 + 0.4 × E[Pareto(1.2, 2) ∧ 200] ≈ 3.5; mean duration
/// ≈ 5.4 s; mean cores ≈ 1.17).
fn mixed_mean_work() -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut sum = 0.0;
    let n = 20_000;
    for _ in 0..n {
        let tasks = if rng.random_bool(0.6) {
            1.0
        } else {
            (pareto(&mut rng, 1.2, 2.0).min(200.0)).floor().max(1.0)
        };
        let d = pareto(&mut rng, 1.5, 2.0).min(600.0);
        let c = [0.5, 1.0, 2.0][rng.random_range(0..3usize)];
        sum += tasks * d * c;
    }
    sum / f64::from(n)
}

fn fair_mean_work() -> f64 {
    // Mean cores over the four frameworks (2, 0.5, 2, 1) × 10 tasks × 3 s.
    (2.0 + 0.5 + 2.0 + 1.0) / 4.0 * SHORT_TASKS_PER_JOB as f64 * 3.0
}

fn read_csv(path: &Path, cells: usize) -> Result<(Vec<FrameworkDef>, Vec<Job>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read workload file {}: {e}; give a CSV of arrival_s,framework,cpus,mem_mib,duration_s",
            path.display()
        )
    })?;
    let mut fws: Vec<FrameworkDef> = Vec::new();
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 && cols.first().is_some_and(|c| c.parse::<f64>().is_err()) {
            continue; // header
        }
        let bad = |what: &str| format!("{}:{}: {what} in {line:?}", path.display(), i + 1);
        let [arr, fw, cpus, mem, dur] = cols.as_slice() else {
            return Err(bad(
                "expected 5 columns arrival_s,framework,cpus,mem_mib,duration_s",
            ));
        };
        let num = |x: &str, what: &str| x.parse::<f64>().map_err(|_| bad(what));
        let arrival = num(arr, "arrival_s is not a number")?;
        let cpus = num(cpus, "cpus is not a number")?;
        let mem = num(mem, "mem_mib is not a number")?;
        let dur = num(dur, "duration_s is not a number")?;
        if arrival < 0.0 || cpus < 0.0 || mem < 0.0 || dur <= 0.0 || (cpus == 0.0 && mem == 0.0) {
            return Err(bad(
                "values must be positive and ask for some cpu or memory",
            ));
        }
        let fw_idx = match fws.iter().position(|f| f.name == *fw) {
            Some(i) => i,
            None => {
                agora_protocol::FrameworkId::new(*fw)
                    .map_err(|e| bad(&format!("framework name: {e}")))?;
                fws.push(FrameworkDef {
                    name: (*fw).to_string(),
                    weight: 1,
                    cell: fws.len() % cells,
                });
                fws.len() - 1
            }
        };
        jobs.push(Job {
            id: jobs.len() as u64,
            arrival: (arrival * SEC as f64) as Micros,
            framework: fw_idx,
            tasks: vec![TaskReq {
                cpu_millis: (cpus * 1000.0) as u64,
                mem_mib: mem as u64,
                duration: (dur * SEC as f64) as Micros,
            }],
            service: false,
        });
    }
    jobs.sort_by_key(|j| (j.arrival, j.id));
    if fws.is_empty() {
        return Err(format!("{}: no jobs in the file", path.display()));
    }
    Ok((fws, jobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing() -> Sizing {
        Sizing {
            nodes: 100,
            cores_per_node: 16,
            load: 0.8,
            cells: 2,
        }
    }

    #[test]
    fn same_seed_same_jobs_and_load_is_right() {
        let mut a = Workload::new(Kind::Short, sizing(), 3).unwrap();
        let mut b = Workload::new(Kind::Short, sizing(), 3).unwrap();
        let mut work = 0.0;
        let mut last = 0;
        for _ in 0..5000 {
            let (x, y) = (a.next_job().unwrap(), b.next_job().unwrap());
            assert_eq!(x, y);
            work += x.tasks.iter().map(|t| t.duration as f64 / 1e6).sum::<f64>();
            last = x.arrival;
        }
        let load = work / (last as f64 / 1e6) / 1600.0;
        assert!((load - 0.8).abs() < 0.05, "offered load {load}");
    }

    #[test]
    fn csv_rows_are_parsed_and_errors_name_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ok = dir.join("ok.csv");
        std::fs::write(
            &ok,
            "arrival_s,framework,cpus,mem_mib,duration_s\n0.5,etl,2,1024,3\n0.1,web,1,512,1\n",
        )
        .unwrap();
        let mut w = Workload::new(Kind::Csv(ok), sizing(), 1).unwrap();
        assert_eq!(w.frameworks().len(), 2);
        let j = w.next_job().unwrap();
        assert_eq!(j.arrival, 100_000);
        assert_eq!(j.tasks[0].cpu_millis, 1000);
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "0.5,etl,two,1024,3\n").unwrap();
        let err = Workload::new(Kind::Csv(bad), sizing(), 1).err().unwrap();
        assert!(err.contains(":1:") && err.contains("cpus"), "{err}");
    }
}
