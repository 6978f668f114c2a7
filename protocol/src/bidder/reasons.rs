//! Why a bid or a task failed, in words a person can act on: the reason a
//! node gave for a reject, and the explanation a task that could not be
//! placed ends with.

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

/// Why a task could not be placed, in words a person can act on.
pub fn explain(
    spec: &TaskSpec,
    last: Option<&str>,
    view: &ClusterView,
    waited: Duration,
) -> String {
    let asked = spec.resources;
    let alive: Vec<&NodeInfo> = view.iter().filter(|n| n.alive).collect();
    let secs = waited.as_secs_f64();
    if alive.is_empty() {
        return format!("no node is alive in this node's view (waited {secs:.0}s)");
    }
    let none = Placed::new();
    let matching: Vec<&NodeInfo> = alive
        .iter()
        .copied()
        .filter(|n| admits_all(&spec.constraints, &n.attrs, &none))
        .collect();
    if matching.is_empty() {
        let cs: Vec<String> = spec.constraints.iter().map(ToString::to_string).collect();
        return format!(
            "no alive node matches the constraints {} ({} nodes alive)",
            cs.join(", "),
            alive.len()
        );
    }
    for d in Dimension::ALL {
        let want = asked.get(d);
        if want == 0 {
            continue;
        }
        if let Some(big) = matching
            .iter()
            .max_by_key(|n| (n.total.get(d), std::cmp::Reverse(&n.id)))
            && big.total.get(d) < want
        {
            return format!(
                "no node has {} in all; the largest has {} ({})",
                d.format(want),
                d.format(big.total.get(d)),
                big.id
            );
        }
        if let Some(best) = matching
            .iter()
            .max_by_key(|n| (n.free.get(d), std::cmp::Reverse(&n.id)))
            && best.free.get(d) < want
        {
            return format!(
                "no node has {} free; largest free is {} on {} (waited {secs:.0}s)",
                d.format(want),
                d.format(best.free.get(d)),
                best.id
            );
        }
    }
    let mut msg = format!(
        "no node had {asked} free at once while it was tried for {secs:.0}s ({} nodes match)",
        matching.len()
    );
    if let Some(last) = last {
        msg.push_str("; last answer: ");
        msg.push_str(last);
    }
    msg
}
