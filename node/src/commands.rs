//! The CLI's framework commands: `run`, `ps`, `nodes`, `logs`, `kill`.
//! Each connects to the node's socket as a client ([`crate::client`]);
//! `run` and `kill` register as the framework `cli`.
//!
//! Exit codes: 0 success; 1 `run --wait` saw a task end other than
//! finished; 2 an error (printed as one line on stderr).
//!
//! Every request waits at most the client's timeout (`--timeout`) for its
//! answer. `run --wait` waits for task events without a limit, but after a
//! timeout's worth of silence it sends the node a cheap request (a
//! reconcile of one unfinished task) and gives up if nothing at all comes
//! back within another timeout.

use crate::cli::{KillArgs, ListArgs, LogsArgs, NodesArgs, PsArgs, RunArgs};
use crate::client::Client;
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME};
use agora_protocol::constraint::Constraint;
use agora_protocol::resources::{format_cpus, parse_cpus, parse_mib};
use agora_protocol::task::{Command, Priority, TaskSpec, TaskState};
use agora_protocol::wire::TaskQuery;
use agora_protocol::wire::{
    CellList, CellRow, ClientMessage, ErrorReply, ListTasks, LogStream, NodeRow, ReadLog, Register,
    ServerMessage, StatusAck, Submit, TaskPage,
};
use agora_protocol::{FrameworkId, NodeId, Resources, TaskId};
use anyhow::{Context, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often `run --wait` redraws its progress line.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Sent in the CLI's registration; the node ignores it for operators: every
/// operator connection joins the node's operator framework, which never
/// fails over (docs/FRAMEWORK_API.md, "Operators share one framework").
pub const CLI_FAILOVER_MS: u32 = 7 * 24 * 3600 * 1000;

fn error_text(e: &ErrorReply) -> String {
    format!("the node refused: {} ({:?})", e.message, e.code)
}

/// Registers as an operator: the connection joins the node's one operator
/// framework and hears about the tasks it submits.
///
/// # Errors
/// Connection problems or a refused registration.
pub async fn register_cli(client: &mut Client) -> anyhow::Result<()> {
    client
        .send(&ClientMessage::Register(Register {
            name: "cli".into(),
            role: agora_protocol::wire::OPERATOR_ROLE.into(),
            weight: 1,
            failover_timeout_ms: CLI_FAILOVER_MS,
            framework_id: None,
        }))
        .await?;
    let deadline = client.deadline();
    loop {
        match client.recv_by(deadline).await? {
            ServerMessage::Registered(_) => return Ok(()),
            ServerMessage::Error(e) => bail!(error_text(&e)),
            // Nothing else is due before the answer; skip what comes.
            _ => {}
        }
    }
}

/// Builds the task specs of `agora run`.
///
/// # Errors
/// Invalid quantities, constraints or environment variables.
pub fn specs(args: &RunArgs) -> anyhow::Result<Vec<TaskSpec>> {
    if args.count == 0 {
        bail!("--count 0 runs nothing: give --count 1 or more");
    }
    let cpu = parse_cpus(&args.cpus).context("--cpus")?;
    let mem = parse_mib(&args.mem).context("--mem")?;
    let constraints = args
        .constraints
        .iter()
        .map(|c| c.parse::<Constraint>())
        .collect::<Result<Vec<_>, _>>()
        .context("--constraint")?;
    let mut env = BTreeMap::new();
    for e in &args.env {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("--env {e:?} is not KEY=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let name = args.name.clone().unwrap_or_else(|| {
        args.command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
            .unwrap_or_else(|| "task".into())
    });
    let mut spec = TaskSpec::new(
        name,
        Command::Argv(args.command.clone()),
        Resources::cpu_mem(cpu, mem),
    );
    spec.env = env;
    spec.constraints = constraints;
    spec.priority = Priority(args.priority);
    spec.placement_timeout_ms = args.placement_timeout.saturating_mul(1000);
    spec.validate().context("invalid task")?;
    Ok(vec![spec; args.count as usize])
}

/// Room a submit frame keeps for the message around its specs (the
/// variant, the request id and the list's length).
const SUBMIT_OVERHEAD: usize = 64;

/// Most tasks in one submit: at most [`MAX_SUBMIT`], and few enough that
/// the answer, one task id (at most [`MAX_ID_LEN`] bytes, plus its quotes
/// and comma in JSON or its length in postcard) per task, fits one frame.
///
/// [`MAX_SUBMIT`]: agora_protocol::wire::MAX_SUBMIT
/// [`MAX_ID_LEN`]: agora_protocol::ids::MAX_ID_LEN
pub const MAX_TASKS_PER_SUBMIT: usize = {
    let by_answer = (DEFAULT_MAX_FRAME - 1024) / (agora_protocol::ids::MAX_ID_LEN + 3);
    if by_answer < agora_protocol::wire::MAX_SUBMIT {
        by_answer
    } else {
        agora_protocol::wire::MAX_SUBMIT
    }
};

/// Splits `specs` into runs that each go in one submit: each run's frame
/// (postcard) is at most [`DEFAULT_MAX_FRAME`] bytes and holds at most
/// [`MAX_TASKS_PER_SUBMIT`] tasks, so `run --count 100000` with a long
/// command is many submits instead of one frame the node refuses.
///
/// # Errors
/// One spec alone does not fit a frame.
pub fn submit_batches(specs: &[TaskSpec]) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
    let budget = DEFAULT_MAX_FRAME - SUBMIT_OVERHEAD;
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    let mut last: Option<(&TaskSpec, usize)> = None;
    for (i, spec) in specs.iter().enumerate() {
        // `agora run` repeats one spec: encode it once.
        let len = match last {
            Some((prev, len)) if prev == spec => len,
            _ => Codec::Postcard
                .encode(spec)
                .context("cannot encode a task")?
                .len(),
        };
        last = Some((spec, len));
        if len > budget {
            bail!(
                "one task is {len} bytes encoded, more than a submit frame holds \
                 ({budget} bytes); make its command, environment or constraints smaller"
            );
        }
        if i > start && (bytes + len > budget || i - start == MAX_TASKS_PER_SUBMIT) {
            batches.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < specs.len() {
        batches.push(start..specs.len());
    }
    Ok(batches)
}

/// What `submit_and_wait` observed.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Task ids in submit order.
    pub ids: Vec<TaskId>,
    /// Final (or last seen) state per task.
    pub states: BTreeMap<TaskId, (TaskState, Option<String>, Option<agora_protocol::NodeId>)>,
    /// Submit → `starting` (or later) per placed task.
    pub placement: Vec<Duration>,
}

/// Submits specs and, if `wait`, follows their status until all have ended,
/// showing progress (with the elapsed time) on stderr if `progress`.
///
/// # Errors
/// Connection problems, a refused submit, or a node that stops answering
/// (see the module doc).
pub async fn submit_and_wait(
    client: &mut Client,
    specs: Vec<TaskSpec>,
    wait: bool,
    progress: bool,
) -> anyhow::Result<RunOutcome> {
    let mut out = RunOutcome::default();
    let started = Instant::now();
    let total = specs.len();
    for (i, batch) in submit_batches(&specs)?.into_iter().enumerate() {
        let request_id = i as u64 + 1;
        client
            .send(&ClientMessage::Submit(Submit {
                request_id,
                tasks: specs[batch].to_vec(),
            }))
            .await?;
        let deadline = client.deadline();
        loop {
            match client.recv_by(deadline).await? {
                ServerMessage::Submitted(s) if s.request_id == request_id => {
                    out.ids.extend(s.task_ids);
                    break;
                }
                ServerMessage::Error(e) => bail!(error_text(&e)),
                ServerMessage::Status(ev) => {
                    note(client, &mut out, started, ev)?;
                }
                _ => {}
            }
        }
    }
    if !wait {
        return Ok(out);
    }
    let ids: BTreeSet<TaskId> = out.ids.iter().cloned().collect();
    let mut ended = out
        .states
        .iter()
        .filter(|(id, s)| ids.contains(*id) && s.0.is_terminal())
        .count();
    let mut last_print: Option<Instant> = None;
    // When the node last sent anything, and when we last asked it whether
    // it is still there (unanswered).
    let mut heard = Instant::now();
    let mut probe: Option<Instant> = None;
    loop {
        if progress && (last_print.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || ended == total)
        {
            last_print = Some(Instant::now());
            print_progress(&out, ended, total, started.elapsed());
        }
        if ended == total {
            if progress {
                eprintln!();
            }
            return Ok(out);
        }
        let Some(msg) = client.recv_within(PROGRESS_EVERY).await? else {
            match probe {
                Some(sent) if sent.elapsed() >= client.timeout() => {
                    if progress {
                        eprintln!();
                    }
                    return Err(client.no_answer());
                }
                Some(_) => {}
                None if heard.elapsed() >= client.timeout() => {
                    // A cheap request whose answer (a seq-0 status event)
                    // proves the node is alive; it is also a fresh state.
                    let unfinished = out
                        .ids
                        .iter()
                        .find(|id| out.states.get(*id).is_none_or(|s| !s.0.is_terminal()));
                    if let Some(id) = unfinished {
                        client
                            .send(&ClientMessage::Reconcile(vec![id.clone()]))
                            .await?;
                        probe = Some(Instant::now());
                    }
                }
                None => {}
            }
            continue;
        };
        heard = Instant::now();
        probe = None;
        match msg {
            ServerMessage::Status(ev) => {
                let id = ev.status.task_id.clone();
                if note(client, &mut out, started, ev)? && ids.contains(&id) {
                    ended += 1;
                }
            }
            ServerMessage::Error(e) => eprintln!("warning: {}", error_text(&e)),
            _ => {}
        }
    }
}

fn print_progress(out: &RunOutcome, ended: usize, total: usize, elapsed: Duration) {
    let running = out
        .states
        .values()
        .filter(|s| matches!(s.0, TaskState::Starting | TaskState::Running))
        .count();
    let failed = out
        .states
        .values()
        .filter(|s| s.0.is_terminal() && s.0 != TaskState::Finished)
        .count();
    eprint!(
        "\r{ended}/{total} ended, {running} running, {failed} not finished ok, {:.1} s   ",
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

/// Records a status event (and acks it); true when it ended the task.
fn note(
    client: &mut Client,
    out: &mut RunOutcome,
    started: Instant,
    ev: agora_protocol::wire::StatusEvent,
) -> anyhow::Result<bool> {
    // Acks never wait: when the send queue is full this one is skipped,
    // and the node re-sends the event later.
    if ev.seq > 0 {
        client.try_send(&ClientMessage::Ack(StatusAck {
            task_id: ev.status.task_id.clone(),
            seq: ev.seq,
        }))?;
    }
    let s = ev.status;
    let first_placed = s.state != TaskState::Staging
        && out
            .states
            .get(&s.task_id)
            .is_none_or(|p| p.0 == TaskState::Staging);
    if first_placed && s.node.is_some() {
        out.placement.push(started.elapsed());
    }
    let old = out.states.get(&s.task_id).map(|p| p.0);
    if old.is_none_or(|o| o.can_transition_to(s.state)) {
        let ends = s.state.is_terminal();
        out.states.insert(
            s.task_id.clone(),
            (s.state, s.reason.clone(), s.node.clone()),
        );
        return Ok(ends);
    }
    Ok(false)
}

/// `agora run`.
///
/// # Errors
/// Bad flags, connection problems, a refused submit.
pub async fn run(socket: &Path, timeout: Duration, args: RunArgs) -> anyhow::Result<i32> {
    let specs = specs(&args)?;
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    register_cli(&mut client).await?;
    let outcome = submit_and_wait(&mut client, specs, args.wait, !args.json).await?;
    // The last acks are still queued.
    client.close().await;
    if args.json {
        let rows: Vec<serde_json::Value> = outcome
            .ids
            .iter()
            .map(|id| {
                let st = outcome.states.get(id);
                serde_json::json!({
                    "id": id.as_str(),
                    "state": st.map_or("staging", |s| s.0.name()),
                    "node": st.and_then(|s| s.2.as_ref()).map(|n| n.as_str()),
                    "reason": st.and_then(|s| s.1.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if !args.wait {
        for id in &outcome.ids {
            println!("{id}");
        }
    }
    if !args.wait {
        return Ok(0);
    }
    let bad: Vec<_> = outcome
        .states
        .iter()
        .filter(|(_, s)| s.0 != TaskState::Finished)
        .collect();
    if !args.json {
        eprintln!(
            "{} tasks: {} finished, {} did not finish ok",
            outcome.ids.len(),
            outcome.ids.len() - bad.len(),
            bad.len()
        );
        for (id, (state, reason, _)) in bad.iter().take(20) {
            eprintln!(
                "  {id}: {state}{}",
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

/// Lists the tasks the cluster knows that match `query` (through the
/// client's node): at most one answer's worth, in task order, and how many
/// matched in all.
///
/// # Errors
/// Connection problems.
pub async fn list_tasks(client: &mut Client, query: TaskQuery) -> anyhow::Result<TaskPage> {
    let rid = query.request_id;
    client.send(&ClientMessage::ListTasks(query)).await?;
    let deadline = client.deadline();
    loop {
        match client.recv_by(deadline).await? {
            ServerMessage::Tasks(t) if t.request_id == rid => return Ok(t),
            ServerMessage::Error(e) => bail!(error_text(&e)),
            _ => {}
        }
    }
}

/// Lists the nodes as the socket's node sees them.
///
/// # Errors
/// Connection problems.
pub async fn list_nodes(client: &mut Client) -> anyhow::Result<Vec<NodeRow>> {
    client
        .send(&ClientMessage::ListNodes(ListTasks { request_id: 1 }))
        .await?;
    let deadline = client.deadline();
    loop {
        match client.recv_by(deadline).await? {
            ServerMessage::Nodes(n) => return Ok(n.nodes),
            ServerMessage::Error(e) => bail!(error_text(&e)),
            _ => {}
        }
    }
}

/// `agora ps`.
///
/// # Errors
/// Connection problems.
pub async fn ps(socket: &Path, timeout: Duration, args: PsArgs) -> anyhow::Result<i32> {
    let node = args
        .node
        .as_deref()
        .map(NodeId::new)
        .transpose()
        .with_context(|| format!("--node {:?} is not a node id", args.node))?;
    let framework = args
        .framework
        .as_deref()
        .map(FrameworkId::new)
        .transpose()
        .with_context(|| format!("--framework {:?} is not a framework id", args.framework))?;
    let query = TaskQuery {
        request_id: 1,
        state: args.state,
        name: args.name.clone(),
        node,
        framework,
        limit: args.limit,
        ..TaskQuery::default()
    };
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    let page = list_tasks(&mut client, query).await?;
    let (rows, matched) = (page.tasks, page.matched);
    if let Some(note) = crate::surface::unreachable_note(&page.unreachable) {
        eprintln!("note: {note}");
    }
    if matched > rows.len() as u64 {
        eprintln!(
            "showing {} of {matched} matching tasks (the first in task order); narrow the \
             list with --state, --name, --node or --framework",
            rows.len()
        );
    }
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.task_id.as_str(),
                    "name": r.name,
                    "state": r.state.name(),
                    "node": r.node.as_ref().map(|n| n.as_str()),
                    "exit_code": r.exit_code,
                    "framework": r.framework.as_str(),
                    "cpus": r.resources.cpu_millis as f64 / 1000.0,
                    "mem_mib": r.resources.mem_mib,
                    "reason": r.reason,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<44} {:<16} {:<9} {:<20} EXIT",
        "ID", "NAME", "STATE", "NODE"
    );
    for r in rows {
        println!(
            "{:<44} {:<16} {:<9} {:<20} {}",
            r.task_id.as_str(),
            r.name,
            r.state.name(),
            r.node.as_ref().map_or("-", |n| n.as_str()),
            r.exit_code.map_or("-".to_string(), |c| c.to_string())
        );
    }
    Ok(0)
}

/// `agora nodes`.
///
/// # Errors
/// Connection problems.
pub async fn nodes(socket: &Path, timeout: Duration, args: NodesArgs) -> anyhow::Result<i32> {
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    if args.all {
        return all_nodes(&mut client, args.json).await;
    }
    let rows = list_nodes(&mut client).await?;
    if args.json {
        let v: Vec<serde_json::Value> = rows.iter().map(node_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<24} {:<22} {:<6} {:>11} {:>15} ATTRS",
        "ID", "ADDR", "ALIVE", "CPUS FREE", "MEM FREE MIB"
    );
    let cells = list_cells(&mut client)
        .await
        .ok()
        .filter(|c| c.cell.is_some());
    for n in rows {
        println!("{}", node_line(&n));
    }
    if let Some(list) = cells {
        // The nodes above are this node's cell, and the members of cells
        // it imported; every cell's totals follow.
        println!();
        print_cells(&list);
    }
    Ok(0)
}

/// `agora nodes --all`: every cell's members.
async fn all_nodes(client: &mut Client, json: bool) -> anyhow::Result<i32> {
    client
        .send(&ClientMessage::ListAllNodes(ListTasks { request_id: 1 }))
        .await?;
    let deadline = client.deadline();
    let list = loop {
        match client.recv_by(deadline).await? {
            ServerMessage::CellNodes(c) => break c,
            ServerMessage::Error(e) => bail!(error_text(&e)),
            _ => {}
        }
    };
    for c in &list.cells {
        if let Some(e) = &c.error {
            eprintln!("note: {e}; its members are missing");
        }
    }
    if json {
        let v: Vec<serde_json::Value> = list
            .cells
            .iter()
            .flat_map(|c| {
                c.nodes.iter().map(move |n| {
                    let mut row = node_json(n);
                    row["cell"] = serde_json::json!(c.cell);
                    row
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<12} {:<24} {:<22} {:<6} {:>11} {:>15} ATTRS",
        "CELL", "ID", "ADDR", "ALIVE", "CPUS FREE", "MEM FREE MIB"
    );
    for c in &list.cells {
        let cell = c.cell.as_deref().unwrap_or("-");
        for n in &c.nodes {
            println!("{cell:<12} {}", node_line(n));
        }
    }
    Ok(0)
}

fn node_line(n: &NodeRow) -> String {
    let attrs: Vec<String> = n.attrs.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{:<24} {:<22} {:<6} {:>11} {:>15} {}",
        n.id.as_str(),
        n.addr,
        if n.alive { "yes" } else { "DEAD" },
        cpus_free(&n.free, &n.total),
        mem_free(&n.free, &n.total),
        attrs.join(",")
    )
}

fn node_json(n: &NodeRow) -> serde_json::Value {
    serde_json::json!({
        "id": n.id.as_str(),
        "addr": n.addr,
        "alive": n.alive,
        "cpus_total": n.total.cpu_millis as f64 / 1000.0,
        "cpus_free": n.free.cpu_millis as f64 / 1000.0,
        "mem_total_mib": n.total.mem_mib,
        "mem_free_mib": n.free.mem_mib,
        "disk_total_mib": n.total.disk_mib,
        "disk_free_mib": n.free.disk_mib,
        "gpus_total": n.total.gpus,
        "gpus_free": n.free.gpus,
        "attrs": n.attrs.0,
    })
}

/// The cells as the socket's node knows them.
///
/// # Errors
/// Connection problems.
pub async fn list_cells(client: &mut Client) -> anyhow::Result<CellList> {
    client
        .send(&ClientMessage::ListCells(ListTasks { request_id: 1 }))
        .await?;
    let deadline = client.deadline();
    loop {
        match client.recv_by(deadline).await? {
            ServerMessage::Cells(c) => return Ok(c),
            ServerMessage::Error(e) => bail!(error_text(&e)),
            _ => {}
        }
    }
}

fn cell_json(c: &CellRow) -> serde_json::Value {
    let a = &c.aggregate;
    serde_json::json!({
        "name": c.name,
        "home": c.home,
        "imported": c.imported,
        "members": a.members,
        "alive": a.alive,
        "cpus_total": a.total.cpu_millis as f64 / 1000.0,
        "cpus_free": a.free.cpu_millis as f64 / 1000.0,
        "mem_total_mib": a.total.mem_mib,
        "mem_free_mib": a.free.mem_mib,
        "gateways": c.gateways.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
    })
}

/// `FREE/TOTAL` CPUs, as the node and cell tables show them.
fn cpus_free(free: &Resources, total: &Resources) -> String {
    format!(
        "{}/{}",
        format_cpus(free.cpu_millis),
        format_cpus(total.cpu_millis)
    )
}

/// `FREE/TOTAL` MiB of memory.
fn mem_free(free: &Resources, total: &Resources) -> String {
    format!("{}/{}", free.mem_mib, total.mem_mib)
}

fn print_cells(list: &CellList) {
    println!(
        "{:<20} {:<9} {:>9} {:>13} {:>17} GATEWAYS",
        "CELL", "", "ALIVE", "CPUS FREE", "MEM FREE MIB"
    );
    for c in &list.cells {
        let a = &c.aggregate;
        let gws: Vec<&str> = c.gateways.iter().map(|g| g.as_str()).collect();
        println!(
            "{:<20} {:<9} {:>9} {:>13} {:>17} {}",
            c.name,
            if c.home {
                "home"
            } else if c.imported {
                "imported"
            } else {
                ""
            },
            format!("{}/{}", a.alive, a.members),
            cpus_free(&a.free, &a.total),
            mem_free(&a.free, &a.total),
            gws.join(",")
        );
    }
}

/// `agora cells`.
///
/// # Errors
/// Connection problems.
pub async fn cells(socket: &Path, timeout: Duration, args: ListArgs) -> anyhow::Result<i32> {
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    let list = list_cells(&mut client).await?;
    if args.json {
        let v = serde_json::json!({
            "cell": list.cell,
            "gateway": list.gateway,
            "cells": list.cells.iter().map(cell_json).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(0);
    }
    match &list.cell {
        None => println!(
            "this node runs in a flat cluster (no --cell or --cells): `agora nodes` lists every node"
        ),
        Some(name) => {
            println!(
                "this node is in cell {name}{}",
                if list.gateway {
                    ", as one of its gateways"
                } else {
                    ""
                }
            );
            print_cells(&list);
        }
    }
    Ok(0)
}

/// Reads a whole log stream of a task.
///
/// # Errors
/// Connection problems or the node's error (unknown task, unreadable file).
pub async fn read_log(
    client: &mut Client,
    task: &TaskId,
    stream: LogStream,
    mut sink: impl Write,
) -> anyhow::Result<()> {
    let mut offset = 0;
    for request_id in 1u64.. {
        client
            .send(&ClientMessage::ReadLog(ReadLog {
                request_id,
                task_id: task.clone(),
                stream,
                offset,
                max_bytes: agora_protocol::wire::MAX_LOG_CHUNK,
            }))
            .await?;
        let deadline = client.deadline();
        let chunk = loop {
            match client.recv_by(deadline).await? {
                ServerMessage::Log(c) if c.request_id == request_id => break c,
                ServerMessage::Error(e) => bail!(error_text(&e)),
                _ => {}
            }
        };
        if let Some(e) = chunk.error {
            bail!("cannot read the log of {task}: {e}");
        }
        sink.write_all(&chunk.data)
            .context("cannot write the log out")?;
        if chunk.eof || chunk.data.is_empty() {
            break;
        }
        offset = chunk.next_offset;
    }
    Ok(())
}

/// `agora logs`.
///
/// # Errors
/// Bad id, connection problems, unreadable log.
pub async fn logs(socket: &Path, timeout: Duration, args: LogsArgs) -> anyhow::Result<i32> {
    let task =
        TaskId::new(&args.task).with_context(|| format!("{:?} is not a task id", args.task))?;
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    let stream = if args.stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    read_log(&mut client, &task, stream, std::io::stdout().lock()).await?;
    Ok(0)
}

/// `agora kill`.
///
/// # Errors
/// Bad id, connection problems, unknown task.
pub async fn kill(socket: &Path, timeout: Duration, args: KillArgs) -> anyhow::Result<i32> {
    let mut ids = Vec::with_capacity(args.tasks.len());
    for t in &args.tasks {
        ids.push(TaskId::new(t).with_context(|| format!("{t:?} is not a task id"))?);
    }
    // No register: an unregistered connection kills as the operator, and
    // `agora kill` needs no framework of its own.
    let mut client = Client::connect_with_timeout(socket, timeout).await?;
    if args.name.is_none() && ids.len() == 1 {
        return kill_one(&mut client, ids.remove(0)).await;
    }
    if let Some(name) = &args.name {
        let page = list_tasks(
            &mut client,
            TaskQuery {
                name: Some(name.clone()),
                limit: 2000,
                ..TaskQuery::all(2)
            },
        )
        .await?;
        if let Some(note) = crate::surface::unreachable_note(&page.unreachable) {
            eprintln!("warning: {note}; tasks of {name} there are not killed");
        }
        if page.matched > page.tasks.len() as u64 {
            eprintln!(
                "warning: {} tasks are named {name}; this kill reaches the first {} (run it again \
                 for the rest)",
                page.matched,
                page.tasks.len()
            );
        }
        ids.extend(
            page.tasks
                .into_iter()
                .filter(|r| !r.state.is_terminal())
                .map(|r| r.task_id),
        );
        if ids.is_empty() {
            eprintln!("no task named {name} is running or waiting");
            return Ok(0);
        }
    }
    kill_many(&mut client, &ids).await
}

/// Kills sent before the client waits for their answers.
const KILL_WINDOW: usize = 256;

/// Kills `ids` on one connection: each window of [`KILL_WINDOW`] kills
/// followed by a listing of the window's last task, whose answer comes
/// after the window's refusals (the node answers a kill of a task homed on
/// it at once, and one homed elsewhere after the same look-up as that
/// listing). Prints each refusal; exits 1 if any.
async fn kill_many(client: &mut Client, ids: &[TaskId]) -> anyhow::Result<i32> {
    let mut refused = 0usize;
    for (n, window) in ids.chunks(KILL_WINDOW).enumerate() {
        for id in window {
            client
                .send(&ClientMessage::Kill(agora_protocol::wire::Kill {
                    task_id: id.clone(),
                }))
                .await?;
        }
        let rid = 10 + n as u64;
        let last = window.last().cloned();
        client
            .send(&ClientMessage::ListTasks(TaskQuery {
                task_id: last,
                ..TaskQuery::all(rid)
            }))
            .await?;
        let deadline = client.deadline();
        loop {
            match client.recv_by(deadline).await? {
                ServerMessage::Error(e) if e.request_id.is_none() => {
                    refused += 1;
                    eprintln!("error: {}", error_text(&e));
                }
                ServerMessage::Error(e) if e.request_id == Some(rid) => bail!(error_text(&e)),
                ServerMessage::Tasks(t) if t.request_id == rid => break,
                _ => {}
            }
        }
    }
    eprintln!(
        "kill requested for {} tasks{}",
        ids.len() - refused,
        if refused > 0 {
            format!("; {refused} refused (above)")
        } else {
            String::new()
        }
    );
    Ok(if refused > 0 { 1 } else { 0 })
}

/// Kills one task, looking first so that an ended or unknown task is
/// answered with the reason.
async fn kill_one(client: &mut Client, task: TaskId) -> anyhow::Result<i32> {
    // Look first, to answer at once for a task that ended or that no node
    // knows (the node's own look-up answers the same, with the error).
    let only = TaskQuery {
        task_id: Some(task.clone()),
        ..TaskQuery::all(2)
    };
    let page = list_tasks(client, only).await?;
    match page.tasks.first() {
        Some(row) if row.state.is_terminal() => {
            bail!("task {task} has already ended ({})", row.state)
        }
        None => match crate::surface::unreachable_note(&page.unreachable) {
            Some(note) => bail!("no node that answered knows task {task} ({note})"),
            None => bail!("no node knows task {task}; `agora ps` lists the tasks"),
        },
        _ => {}
    }
    client
        .send(&ClientMessage::Kill(agora_protocol::wire::Kill {
            task_id: task.clone(),
        }))
        .await?;
    // A listing after the kill: an error about the kill arrives first.
    client
        .send(&ClientMessage::ListTasks(TaskQuery {
            task_id: Some(task.clone()),
            ..TaskQuery::all(3)
        }))
        .await?;
    let deadline = client.deadline();
    loop {
        match client.recv_by(deadline).await? {
            ServerMessage::Error(e) => bail!(error_text(&e)),
            ServerMessage::Tasks(_) => break,
            _ => {}
        }
    }
    eprintln!("kill requested for {task}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_command(bytes: usize) -> TaskSpec {
        TaskSpec::new(
            "t",
            Command::Argv(vec!["true".into(), "x".repeat(bytes)]),
            Resources::cpu_mem(100, 0),
        )
    }

    #[test]
    fn submits_are_split_to_fit_a_frame_and_their_answer() {
        // 10,000 tasks of a 200-byte command made one 2.3 MB frame.
        let specs = vec![spec_with_command(200); 100_000];
        let batches = submit_batches(&specs).unwrap();
        let mut next = 0;
        for b in &batches {
            assert_eq!(b.start, next, "batches cover every spec once, in order");
            next = b.end;
            assert!(b.len() <= MAX_TASKS_PER_SUBMIT);
            let msg = ClientMessage::Submit(Submit {
                request_id: u64::MAX,
                tasks: specs[b.clone()].to_vec(),
            });
            let len = Codec::Postcard.encode(&msg).unwrap().len();
            assert!(len <= DEFAULT_MAX_FRAME, "{len} bytes in one submit");
        }
        assert_eq!(next, specs.len());
        // Small specs are held back by the answer's size, not the frame's.
        let small = vec![spec_with_command(1); 20_000];
        let batches = submit_batches(&small).unwrap();
        assert_eq!(batches[0].len(), MAX_TASKS_PER_SUBMIT);
        // docs/FRAMEWORK_API.md section 14 quotes it.
        assert_eq!(MAX_TASKS_PER_SUBMIT, 7996);
        let ids = MAX_TASKS_PER_SUBMIT * (agora_protocol::ids::MAX_ID_LEN + 3);
        assert!(ids < DEFAULT_MAX_FRAME, "{ids}");
        assert!(submit_batches(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_spec_larger_than_a_frame_is_refused_with_its_size() {
        let mut spec = spec_with_command(10);
        spec.env.insert("BIG".into(), "x".repeat(DEFAULT_MAX_FRAME));
        let e = submit_batches(&[spec]).unwrap_err().to_string();
        assert!(e.contains("more than a submit frame holds"), "{e}");
    }
}
