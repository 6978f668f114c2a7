//! Identifiers as newtypes, validated when built and when decoded.
//!
//! Node, framework and task ids are short printable strings (they appear in
//! logs, the CLI and file names); bid and lease ids are numbers local to the
//! node that made them.
//!
//! String ids are shared (`Arc<str>`): a task id is copied into bids, leases,
//! statuses and several maps, and a clone is a reference-count increment
//! instead of an allocation and a copy (the simulator clones millions per
//! simulated second).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string was empty.
    #[error("an id cannot be empty")]
    Empty,
    /// The string was longer than [`MAX_ID_LEN`].
    #[error("id is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The string held a character outside `[A-Za-z0-9._:@-]`.
    #[error("id {id:?} has the character {ch:?}; use letters, digits and . _ - : @")]
    BadChar {
        /// The offending id.
        id: String,
        /// The first character that is not allowed.
        ch: char,
    },
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: s.len() });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(IdError::BadChar {
            id: s.to_string(),
            ch,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds the id after checking length and characters.
            ///
            /// # Errors
            /// [`IdError`] when the string is empty, too long or has a character
            /// outside `[A-Za-z0-9._:@-]`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A node of the cluster (unique, stable across restarts of that node).
    NodeId
);
string_id!(
    /// A framework: one registered scheduler program, homed on one node.
    FrameworkId
);
string_id!(
    /// A task, unique in the cluster: `FRAMEWORK.SEQ`.
    TaskId
);

impl FrameworkId {
    /// The id of a framework homed on `home`: `NAME-NONCE@HOME`, the form
    /// every node gives the frameworks it registers. `name` must be made of
    /// letters, digits, `_` and `-` (no `@`), so that [`FrameworkId::home`]
    /// finds the home again.
    ///
    /// # Errors
    /// [`IdError`] when the result is not a valid id (too long, a bad
    /// character in `name`).
    pub fn homed(name: &str, nonce: u32, home: &NodeId) -> Result<Self, IdError> {
        if name.contains('@') {
            return Err(IdError::BadChar {
                id: name.to_string(),
                ch: '@',
            });
        }
        Self::new(format!("{name}-{nonce:08x}@{home}"))
    }

    /// The node this framework is homed on, for an id made by
    /// [`FrameworkId::homed`] (everything after the first `@`).
    pub fn home(&self) -> Option<NodeId> {
        let (_, home) = self.0.split_once('@')?;
        NodeId::new(home).ok()
    }
}

impl TaskId {
    /// The home node of the framework that made this id, when the id names
    /// it ([`FrameworkId::homed`] ids that were not cut to fit). An id of
    /// the greatest length may have been cut, and a cut could leave a
    /// prefix of the home's id that names another node: None for those.
    pub fn home(&self) -> Option<NodeId> {
        if self.0.len() >= MAX_ID_LEN {
            return None;
        }
        FrameworkId::new(self.framework_part()).ok()?.home()
    }

    /// The id of the `seq`-th task of `framework`.
    pub fn for_framework(framework: &FrameworkId, seq: u64) -> Self {
        // A framework id is at most MAX_ID_LEN; keep the result within bounds.
        let suffix = format!(".{seq}");
        let keep = MAX_ID_LEN
            .saturating_sub(suffix.len())
            .min(framework.0.len());
        TaskId(Arc::from(format!("{}{}", &framework.0[..keep], suffix)))
    }

    /// True when `framework` made this id ([`TaskId::for_framework`]), even
    /// when a long framework id was cut to fit.
    pub fn is_of(&self, framework: &FrameworkId) -> bool {
        self.0
            .rsplit_once('.')
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .is_some_and(|seq| Self::for_framework(framework, seq) == *self)
    }

    /// Listing order: by framework part, then by task number (so `f.2`
    /// comes before `f.10`), then by the whole id.
    pub fn list_order(&self, other: &TaskId) -> std::cmp::Ordering {
        (self.framework_part(), self.number())
            .cmp(&(other.framework_part(), other.number()))
            .then_with(|| self.0.cmp(&other.0))
    }

    /// The task number after the last '.', if there is one.
    fn number(&self) -> Option<u64> {
        self.0.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }

    /// The framework part of an id made by [`TaskId::for_framework`]
    /// (everything before the last '.'), to route a message to its bidder.
    pub fn framework_part(&self) -> &str {
        self.0.rsplit_once('.').map_or(&self.0, |(f, _)| f)
    }
}

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

number_id!(
    /// A bid, numbered by the bidder that sent it (unique per bidder).
    BidId
);
number_id!(
    /// A lease, numbered by the auctioneer that granted it (unique per node).
    LeaseId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_found_again_unless_cut() {
        let home = NodeId::new("node-7").unwrap();
        let fw = FrameworkId::homed("batch", 0xab, &home).unwrap();
        assert_eq!(fw.as_str(), "batch-000000ab@node-7");
        assert_eq!(fw.home(), Some(home.clone()));
        assert_eq!(TaskId::for_framework(&fw, 12).home(), Some(home));
        assert!(FrameworkId::homed("a@b", 1, &NodeId::new("n").unwrap()).is_err());
        assert_eq!(FrameworkId::new("plain").unwrap().home(), None);
        // A framework id so long that its task ids are cut: the cut could
        // leave "node-1" of "node-12345"; no home is claimed.
        let long_home = NodeId::new(format!("node-{}", "1".repeat(MAX_ID_LEN - 30))).unwrap();
        let fw = FrameworkId::homed(&"x".repeat(10), 1, &long_home).unwrap();
        let t = TaskId::for_framework(&fw, 123_456);
        assert!(t.is_of(&fw));
        assert_eq!(t.home(), None);
    }

    #[test]
    fn ids_are_validated_on_decode() {
        assert!(NodeId::new("n-1.eu:7000").is_ok());
        assert_eq!(NodeId::new(""), Err(IdError::Empty));
        assert!(matches!(
            NodeId::new("a b"),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            NodeId::new("x".repeat(200)),
            Err(IdError::TooLong { len: 200 })
        ));
        let bad: Result<NodeId, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn task_ids_list_by_number() {
        let mut ids: Vec<TaskId> = ["f.10", "g.1", "f.2", "f.1"]
            .iter()
            .map(|s| TaskId::new(*s).unwrap())
            .collect();
        ids.sort_by(|a, b| a.list_order(b));
        let got: Vec<&str> = ids.iter().map(|t| t.as_str()).collect();
        assert_eq!(got, ["f.1", "f.2", "f.10", "g.1"]);
    }

    #[test]
    fn task_ids_stay_within_bounds() {
        let fw = FrameworkId::new("f".repeat(MAX_ID_LEN)).unwrap();
        let t = TaskId::for_framework(&fw, 123456);
        assert!(TaskId::new(t.as_str()).is_ok());
        assert!(t.as_str().ends_with(".123456"));
        let fw = FrameworkId::new("cli-1a2b.x@n1").unwrap();
        let t = TaskId::for_framework(&fw, 7);
        assert_eq!(t.framework_part(), fw.as_str());
    }

    #[test]
    fn a_task_id_knows_its_framework_even_when_cut() {
        let long = FrameworkId::new(format!("batch-1a2b3c4d@{}", "n".repeat(113))).unwrap();
        let t = TaskId::for_framework(&long, 42);
        assert_ne!(t.framework_part(), long.as_str(), "the id was cut");
        assert!(t.is_of(&long));
        // Framework ids carry a random part before the node id, so a cut
        // never makes two frameworks' task ids alike.
        let other = FrameworkId::new(format!("batch-9f8e7d6c@{}", "n".repeat(113))).unwrap();
        assert!(!TaskId::for_framework(&other, 41).is_of(&long));
        let short = FrameworkId::new("cli-1a2b@n1").unwrap();
        assert!(TaskId::for_framework(&short, 3).is_of(&short));
        assert!(!TaskId::new("cli-1a2b@n1.x").unwrap().is_of(&short));
        assert!(!TaskId::new("cli-1a2b@n2.3").unwrap().is_of(&short));
    }
}
