//! Crashes on a schedule: `--crash NODE@START_S[:REJOIN_S]`.
//!
//! Random crashes come from `--failure-rate`; these are the ones an operator
//! wants to place by hand ("what if node 17 dies at 30 s and comes back at
//! 90 s?"). A node crashed here loses every task it runs, exactly as with a
//! random crash, and rejoins as a new chitchat generation with an empty
//! ledger, or stays down when no rejoin time is given.

use crate::engine::Micros;

/// One scheduled crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashAt {
    /// The node's index (node id `n00017` is index 17).
    pub node: u32,
    /// When it crashes.
    pub at: Micros,
    /// When it rejoins, if it does.
    pub rejoin: Option<Micros>,
}

impl CrashAt {
    /// Parses `NODE@START_S[:REJOIN_S]`, where NODE is an index (`17`) or an
    /// id (`n00017`) below `nodes`.
    ///
    /// # Errors
    /// A message that says what was wrong and shows the expected form.
    pub fn parse(text: &str, nodes: u32) -> Result<Self, String> {
        let form = "NODE@START_S[:REJOIN_S], e.g. 17@30:90 or n00017@30";
        let Some((node, times)) = text.split_once('@') else {
            return Err(format!("crash {text:?} must be {form}"));
        };
        let digits = node.strip_prefix('n').unwrap_or(node);
        let node: u32 = digits.parse().map_err(|_| {
            format!("crash {text:?}: node {node:?} is not a node index or id; use {form}")
        })?;
        if node >= nodes {
            return Err(format!(
                "crash {text:?}: node {node} does not exist; nodes are numbered 0 to {}",
                nodes.saturating_sub(1)
            ));
        }
        let secs = |x: &str, what: &str| -> Result<Micros, String> {
            match x.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => Ok((s * 1e6) as Micros),
                _ => Err(format!(
                    "crash {text:?}: {what} {x:?} is not a number of seconds >= 0; use {form}"
                )),
            }
        };
        let (at, rejoin) = match times.split_once(':') {
            None => (secs(times, "start")?, None),
            Some((s, r)) => (secs(s, "start")?, Some(secs(r, "rejoin time")?)),
        };
        if rejoin.is_some_and(|r| r <= at) {
            return Err(format!(
                "crash {text:?}: the rejoin time must come after the crash"
            ));
        }
        Ok(CrashAt { node, at, rejoin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_errors() {
        assert_eq!(
            CrashAt::parse("17@30:90", 100),
            Ok(CrashAt {
                node: 17,
                at: 30_000_000,
                rejoin: Some(90_000_000)
            })
        );
        assert_eq!(
            CrashAt::parse("n00017@1.5", 100),
            Ok(CrashAt {
                node: 17,
                at: 1_500_000,
                rejoin: None
            })
        );
        for (bad, says) in [
            ("17", "must be NODE@START_S"),
            ("x@3", "not a node index"),
            ("100@3", "does not exist; nodes are numbered 0 to 99"),
            ("3@-1", "start \"-1\" is not a number"),
            ("3@5:2", "must come after"),
            ("3@5:later", "rejoin time \"later\""),
        ] {
            let e = CrashAt::parse(bad, 100).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
