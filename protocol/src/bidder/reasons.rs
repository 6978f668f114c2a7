//! Why a bid or a task failed, in words a person can act on: the reason a
//! node gave for a reject, the explanation a task that could not be placed
//! ends with, and the test that a task can never be placed at all.
//!
//! Constraints are examined in the spec's order and each node a constraint
//! refuses is counted against the first constraint that refuses it, so a
//! reason can say which constraint excluded how many nodes. The constraints
//! a node's own attributes decide (`==`, `!=`, `in`, and that a `unique` or
//! `spread` key is present) are examined first, then the nodes' totals, then
//! `unique` against where the job's tasks already are.

use super::*;

pub(super) fn describe_reject(
    node: &NodeId,
    reason: &RejectReason,
    free: &Resources,
    task: Option<&Task>,
) -> String {
    match reason {
        RejectReason::Insufficient(dims) => {
            let asked = task.map(|t| t.spec.resources).unwrap_or_default();
            let parts: Vec<String> = dims
                .iter()
                .map(|d| {
                    format!(
                        "{} free of {} asked",
                        d.format(free.get(*d)),
                        d.format(asked.get(*d))
                    )
                })
                .collect();
            if parts.is_empty() {
                format!("node {node} had too little free")
            } else {
                format!("node {node} has {}", parts.join(", "))
            }
        }
        RejectReason::Outbid => {
            format!("node {node} gave its free resources to higher-ranked bids")
        }
        RejectReason::Constraints => format!("node {node} does not satisfy the task's constraints"),
        RejectReason::Busy => format!("node {node} is busy with other bids"),
        RejectReason::InvalidSpec(why) => format!("node {node} refused the task: {why}"),
        RejectReason::Draining => format!("node {node} is leaving the cluster"),
        RejectReason::Withdrawn => format!("the bid on node {node} was withdrawn"),
    }
}

/// Why a task could not be placed by its placement timeout, in words a
/// person can act on. `placed` is the task's job tally (attribute key →
/// value → tasks of the job placed there or with a bid out there; the
/// bidder's own, or empty), which `unique` constraints are judged against.
pub fn explain(
    spec: &TaskSpec,
    last: Option<&str>,
    view: &ClusterView,
    waited: Duration,
    placed: &Placed,
) -> String {
    let asked = spec.resources;
    let alive: Vec<&NodeInfo> = view.iter().filter(|n| n.alive).collect();
    let secs = waited.as_secs_f64();
    if alive.is_empty() {
        return format!("no node is alive in this node's view (waited {secs:.0}s)");
    }
    if let Some(mut why) = never_on(spec, &alive) {
        if let Some(dead) = view.iter().find(|n| !n.alive && could_ever_hold(spec, n)) {
            why.push_str(&format!("; node {}, which could, is not alive", dead.id));
        }
        return why;
    }
    let none = Placed::new();
    let matching = narrow(&spec.constraints, &alive, &none);
    let (big, small): (Vec<&NodeInfo>, Vec<&NodeInfo>) =
        matching.kept.iter().partition(|n| asked.fits_in(&n.total));
    let unique: Vec<Constraint> = spec
        .constraints
        .iter()
        .filter(|c| matches!(c, Constraint::Unique { .. }))
        .cloned()
        .collect();
    let free_of_job = narrow(&unique, &big, placed);
    let job = &spec.name;
    let mut others: Vec<String> = matching
        .by
        .iter()
        .map(|(c, n)| format!("{c} excluded {n}"))
        .collect();
    if !small.is_empty() {
        others.push(format!("{} too small in total", small.len()));
    }
    if free_of_job.kept.is_empty() {
        // The job's own tasks hold every node that could otherwise take it.
        let k = big.len();
        let msg = match free_of_job.by.as_slice() {
            [(c, _)] if others.is_empty() && k == 1 => format!(
                "{c}: the only live node already has a task of job {job}, running or being placed"
            ),
            [(c, _)] if others.is_empty() => format!(
                "{c}: every one of the {k} live nodes already has a task of job {job}, running or being placed"
            ),
            [(c, _)] => format!(
                "{c}: every one of the {k} live nodes that could otherwise take it already has a task of job {job}, running or being placed ({} more: {})",
                alive.len() - k,
                others.join(", ")
            ),
            by => {
                let parts: Vec<String> = by
                    .iter()
                    .map(|(c, n)| format!("{c} excluded {n}"))
                    .collect();
                let mut msg = format!(
                    "every one of the {k} live nodes that could otherwise take it already has a task of job {job}, running or being placed, on a value that must be unique: {}",
                    parts.join(", ")
                );
                if !others.is_empty() {
                    msg.push_str(&format!(
                        " ({} more: {})",
                        alive.len() - k,
                        others.join(", ")
                    ));
                }
                msg
            }
        };
        return msg;
    }
    for (c, n) in &free_of_job.by {
        others.push(format!(
            "{c} excluded {n} (they already have a task of job {job}, running or being placed)"
        ));
    }
    let excluded = if others.is_empty() {
        String::new()
    } else {
        format!("; of the {} live nodes, {}", alive.len(), others.join(", "))
    };
    let kept = &free_of_job.kept;
    for d in Dimension::ALL {
        let want = asked.get(d);
        if want == 0 {
            continue;
        }
        if let Some(best) = kept
            .iter()
            .max_by_key(|n| (n.free.get(d), std::cmp::Reverse(&n.id)))
            && best.free.get(d) < want
        {
            return format!(
                "no node has {} free; largest free is {} on {} (waited {secs:.0}s){excluded}",
                d.format(want),
                d.format(best.free.get(d)),
                best.id
            );
        }
    }
    let mut msg = format!(
        "no node had {asked} free at once while it was tried for {secs:.0}s ({} nodes match)",
        kept.len()
    );
    if let Some(last) = last {
        msg.push_str("; last answer: ");
        msg.push_str(last);
    }
    msg.push_str(&excluded);
    msg
}

/// The reason a task can never be placed, when no node of the view (live or
/// not) could ever hold it by its total resources and the constraints a
/// node's own attributes decide, and the view has a live node; `None`
/// otherwise (including when no node is alive: then nothing is known yet).
pub(super) fn never_fits(spec: &TaskSpec, view: &ClusterView) -> Option<String> {
    if view.iter().any(|n| could_ever_hold(spec, n)) {
        return None;
    }
    let alive: Vec<&NodeInfo> = view.iter().filter(|n| n.alive).collect();
    if alive.is_empty() {
        return None;
    }
    never_on(spec, &alive)
}

/// True when `node` could hold the task were it empty and the job's other
/// tasks elsewhere: its total fits and its attributes meet the constraints.
fn could_ever_hold(spec: &TaskSpec, node: &NodeInfo) -> bool {
    spec.resources.fits_in(&node.total)
        && admits_all(&spec.constraints, &node.attrs, &Placed::new())
}

/// Why none of the `alive` nodes could ever hold the task, if none could:
/// the constraint(s) their attributes break, or the totals too small.
fn never_on(spec: &TaskSpec, alive: &[&NodeInfo]) -> Option<String> {
    let matching = narrow(&spec.constraints, alive, &Placed::new());
    if matching.kept.is_empty() {
        return Some(no_match(&matching.by, alive));
    }
    let asked = spec.resources;
    if matching.kept.iter().any(|n| asked.fits_in(&n.total)) {
        return None;
    }
    let among = if matching.by.is_empty() {
        "node".to_string()
    } else {
        let cs: Vec<String> = matching.by.iter().map(|(c, _)| c.to_string()).collect();
        format!("live node that satisfies {}", cs.join(" and "))
    };
    for d in Dimension::ALL {
        let want = asked.get(d);
        if want == 0 {
            continue;
        }
        if let Some(big) = matching
            .kept
            .iter()
            .max_by_key(|n| (n.total.get(d), std::cmp::Reverse(&n.id)))
            && big.total.get(d) < want
        {
            return Some(format!(
                "no node can ever fit {}: the largest {among} has {} in total ({})",
                d.format(want),
                d.format(big.total.get(d)),
                big.id
            ));
        }
    }
    // Each dimension fits on some node, but never all on one.
    let shown: Vec<String> = matching
        .kept
        .iter()
        .take(3)
        .map(|n| format!("{} has {}", n.id, n.total))
        .collect();
    let more = matching.kept.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(", and {more} more")
    } else {
        String::new()
    };
    Some(format!(
        "no node can ever fit {asked}: no {among} has all of it in total ({}{more})",
        shown.join(", ")
    ))
}

/// Nodes that passed some constraints, and how many each constraint
/// refused (each node counted against the first that refuses it).
struct Narrowed<'a> {
    kept: Vec<&'a NodeInfo>,
    /// In the spec's order; only constraints that refused some node.
    by: Vec<(Constraint, usize)>,
}

fn narrow<'a>(constraints: &[Constraint], nodes: &[&'a NodeInfo], placed: &Placed) -> Narrowed<'a> {
    let mut counts = vec![0usize; constraints.len()];
    let mut kept = Vec::new();
    for &n in nodes {
        match constraints.iter().position(|c| !c.admits(&n.attrs, placed)) {
            Some(i) => counts[i] += 1,
            None => kept.push(n),
        }
    }
    let by = constraints
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.clone(), n))
        .collect();
    Narrowed { kept, by }
}

/// Why no live node matches the constraints (`by` covers all of `alive`).
fn no_match(by: &[(Constraint, usize)], alive: &[&NodeInfo]) -> String {
    let [(c, _)] = by else {
        let parts: Vec<String> = by
            .iter()
            .map(|(c, n)| format!("{c} excluded {n}"))
            .collect();
        return format!(
            "no live node matches every constraint: of the {} live nodes, {}",
            alive.len(),
            parts.join(", ")
        );
    };
    let key = c.key();
    match c {
        Constraint::Eq { .. } | Constraint::In { .. } => {
            let seen: BTreeSet<&str> = alive.iter().filter_map(|n| n.attrs.get(key)).collect();
            if seen.is_empty() {
                return format!("no live node matches {c} (no live node has the attribute {key})");
            }
            let shown: Vec<&str> = seen.iter().copied().take(8).collect();
            let more = seen.len() - shown.len();
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "no live node matches {c} (values seen: {}{more})",
                shown.join(", ")
            )
        }
        Constraint::Ne { value, .. } => {
            format!("no live node matches {c} (every live node has {key}={value})")
        }
        Constraint::Unique { .. } | Constraint::Spread { .. } => {
            format!("no live node has the attribute {key}, which {c} needs")
        }
    }
}
