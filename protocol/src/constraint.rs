//! Node attributes and the placement constraints tasks put on them.
//!
//! A node advertises [`Attributes`]: `os`, `arch`, `hostname` and operator
//! labels such as `zone=eu-1`. A task may carry [`Constraint`]s over them,
//! written on the command line as:
//!
//! | text | meaning |
//! |---|---|
//! | `os==linux` | the attribute equals the value |
//! | `zone!=eu-1` | the attribute is absent or differs |
//! | `zone in eu-1,eu-2` | the attribute is one of the values |
//! | `rack:unique` | no two tasks of the same name on nodes with the same value |
//! | `zone:spread` | each next task goes to the value that holds the fewest tasks of the same name |
//!
//! `unique` and `spread` need the attribute: a node without it is not a
//! candidate. "Tasks of the same name" are a job: the unit `agora run
//! --count N --name NAME` creates. The bidder counts a job's tasks per value
//! in a [`Placed`] tally that includes tasks whose bids are still out, and
//! `spread` prefers a value with room now over a less-used full one; see
//! docs/PROTOCOL.md, "Constraints".

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Well-known attribute keys.
pub mod keys {
    /// Operating system, as Rust's `std::env::consts::OS` names it.
    pub const OS: &str = "os";
    /// CPU architecture, as `std::env::consts::ARCH` names it.
    pub const ARCH: &str = "arch";
    /// The machine's host name.
    pub const HOSTNAME: &str = "hostname";
}

/// A node's attributes: key → value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes(pub BTreeMap<String, String>);

impl Attributes {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Parses one `KEY=VALUE` operator label.
    ///
    /// # Errors
    /// [`ConstraintError`] when there is no `=`, or the key or value is
    /// empty or has characters outside `[A-Za-z0-9._/-]`.
    pub fn parse_label(input: &str) -> Result<(String, String), ConstraintError> {
        let (k, v) = input
            .split_once('=')
            .ok_or_else(|| ConstraintError::BadLabel {
                input: input.to_string(),
            })?;
        let (k, v) = (k.trim(), v.trim());
        check_word(input, k)?;
        check_word(input, v)?;
        Ok((k.to_string(), v.to_string()))
    }
}

/// A placement constraint over node attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// `key==value`
    Eq {
        /// Attribute key.
        key: String,
        /// Required value.
        value: String,
    },
    /// `key!=value`
    Ne {
        /// Attribute key.
        key: String,
        /// Excluded value.
        value: String,
    },
    /// `key in a,b,c`
    In {
        /// Attribute key.
        key: String,
        /// Accepted values.
        values: BTreeSet<String>,
    },
    /// `key:unique`
    Unique {
        /// Attribute key.
        key: String,
    },
    /// `key:spread`
    Spread {
        /// Attribute key.
        key: String,
    },
}

/// How many tasks of one job sit on nodes with each value of each attribute:
/// key → value → count. The bidder fills it from its tasks that are placed
/// (or leased) there or have a bid out there, each task at most once per
/// value.
pub type Placed = BTreeMap<String, BTreeMap<String, u32>>;

impl Constraint {
    /// The attribute key this constraint is about.
    pub fn key(&self) -> &str {
        match self {
            Constraint::Eq { key, .. }
            | Constraint::Ne { key, .. }
            | Constraint::In { key, .. }
            | Constraint::Unique { key }
            | Constraint::Spread { key } => key,
        }
    }

    /// True when a node with `attrs` may take one more task of a job whose
    /// tasks are already spread as `placed`.
    pub fn admits(&self, attrs: &Attributes, placed: &Placed) -> bool {
        let have = attrs.get(self.key());
        match self {
            Constraint::Eq { value, .. } => have == Some(value.as_str()),
            Constraint::Ne { value, .. } => have != Some(value.as_str()),
            Constraint::In { values, .. } => have.is_some_and(|h| values.contains(h)),
            Constraint::Unique { key } => have
                .is_some_and(|h| placed.get(key).and_then(|m| m.get(h)).copied().unwrap_or(0) == 0),
            Constraint::Spread { .. } => have.is_some(),
        }
    }

    /// For `spread`: how many of the job's tasks already sit on this node's
    /// value (lower is better). Zero for every other constraint.
    pub fn spread_penalty(&self, attrs: &Attributes, placed: &Placed) -> u32 {
        match self {
            Constraint::Spread { key } => attrs
                .get(key)
                .and_then(|h| placed.get(key).and_then(|m| m.get(h)))
                .copied()
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// True when every constraint admits the node.
pub fn admits_all(constraints: &[Constraint], attrs: &Attributes, placed: &Placed) -> bool {
    constraints.iter().all(|c| c.admits(attrs, placed))
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Eq { key, value } => write!(f, "{key}=={value}"),
            Constraint::Ne { key, value } => write!(f, "{key}!={value}"),
            Constraint::In { key, values } => {
                let v: Vec<&str> = values.iter().map(String::as_str).collect();
                write!(f, "{key} in {}", v.join(","))
            }
            Constraint::Unique { key } => write!(f, "{key}:unique"),
            Constraint::Spread { key } => write!(f, "{key}:spread"),
        }
    }
}

/// Why a constraint or label is not valid text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Nothing was given.
    #[error(
        "empty constraint; write one such as os==linux, zone!=eu-1, zone in eu-1,eu-2, rack:unique or zone:spread"
    )]
    Empty,
    /// No operator was found.
    #[error(
        "{input:?} has no operator; use KEY==VALUE, KEY!=VALUE, KEY in A,B, KEY:unique or KEY:spread"
    )]
    NoOperator {
        /// The text given.
        input: String,
    },
    /// A single `=` was used where `==` was meant.
    #[error("{input:?} uses '='; a constraint compares with '==' (e.g. os==linux)")]
    SingleEquals {
        /// The text given.
        input: String,
    },
    /// `KEY:something` with an unknown modifier.
    #[error("{input:?}: unknown modifier {modifier:?}; after ':' write unique or spread")]
    UnknownModifier {
        /// The text given.
        input: String,
        /// The modifier found.
        modifier: String,
    },
    /// An empty or malformed key or value.
    #[error("{input:?}: {part:?} is not a valid key or value; use letters, digits and . _ / -")]
    BadWord {
        /// The text given.
        input: String,
        /// The offending part.
        part: String,
    },
    /// An operator label without `=`.
    #[error("{input:?} is not a label; write KEY=VALUE, such as zone=eu-1")]
    BadLabel {
        /// The text given.
        input: String,
    },
}

fn check_word(input: &str, w: &str) -> Result<(), ConstraintError> {
    let ok = !w.is_empty()
        && w.len() <= 128
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ConstraintError::BadWord {
            input: input.to_string(),
            part: w.to_string(),
        })
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(input: &str) -> Result<Self, ConstraintError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ConstraintError::Empty);
        }
        let word = |w: &str| -> Result<String, ConstraintError> {
            let w = w.trim();
            check_word(input, w)?;
            Ok(w.to_string())
        };
        if let Some((k, v)) = s.split_once("==") {
            return Ok(Constraint::Eq {
                key: word(k)?,
                value: word(v)?,
            });
        }
        if let Some((k, v)) = s.split_once("!=") {
            return Ok(Constraint::Ne {
                key: word(k)?,
                value: word(v)?,
            });
        }
        if let Some((k, vs)) = s.split_once(" in ") {
            let values = vs
                .split(',')
                .map(word)
                .collect::<Result<BTreeSet<_>, _>>()?;
            return Ok(Constraint::In {
                key: word(k)?,
                values,
            });
        }
        if let Some((k, m)) = s.split_once(':') {
            let key = word(k)?;
            return match m.trim() {
                "unique" => Ok(Constraint::Unique { key }),
                "spread" => Ok(Constraint::Spread { key }),
                other => Err(ConstraintError::UnknownModifier {
                    input: input.to_string(),
                    modifier: other.to_string(),
                }),
            };
        }
        if s.contains('=') {
            return Err(ConstraintError::SingleEquals {
                input: input.to_string(),
            });
        }
        Err(ConstraintError::NoOperator {
            input: input.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        let mut a = Attributes::default();
        for (k, v) in pairs {
            a.insert(*k, *v);
        }
        a
    }

    #[test]
    fn parses_every_form_and_round_trips() {
        for text in [
            "os==linux",
            "zone!=eu-1",
            "zone in eu-1,eu-2",
            "rack:unique",
            "zone:spread",
        ] {
            let c: Constraint = text.parse().unwrap();
            assert_eq!(c.to_string(), text);
        }
        assert_eq!(
            " os == linux ".parse::<Constraint>(),
            Ok(Constraint::Eq {
                key: "os".into(),
                value: "linux".into()
            })
        );
    }

    #[test]
    fn parser_errors_say_what_to_write() {
        assert_eq!("".parse::<Constraint>(), Err(ConstraintError::Empty));
        assert!(matches!(
            "os=linux".parse::<Constraint>(),
            Err(ConstraintError::SingleEquals { .. })
        ));
        assert!(matches!(
            "rack:uniq".parse::<Constraint>(),
            Err(ConstraintError::UnknownModifier { .. })
        ));
        assert!(matches!(
            "linux".parse::<Constraint>(),
            Err(ConstraintError::NoOperator { .. })
        ));
        assert!(matches!(
            "==linux".parse::<Constraint>(),
            Err(ConstraintError::BadWord { .. })
        ));
        assert!(matches!(
            "zone in a,,b".parse::<Constraint>(),
            Err(ConstraintError::BadWord { .. })
        ));
        let msg = "os=linux".parse::<Constraint>().unwrap_err().to_string();
        assert!(msg.contains("os==linux"), "{msg}");
        assert!(Attributes::parse_label("zone").is_err());
        assert_eq!(
            Attributes::parse_label("zone=eu-1"),
            Ok(("zone".into(), "eu-1".into()))
        );
    }

    #[test]
    fn constraints_admit_nodes() {
        let linux_a = attrs(&[("os", "linux"), ("rack", "a")]);
        let windows = attrs(&[("os", "windows")]);
        let none = Placed::default();
        let eq: Constraint = "os==linux".parse().unwrap();
        assert!(eq.admits(&linux_a, &none));
        assert!(!eq.admits(&windows, &none));
        let ne: Constraint = "rack!=a".parse().unwrap();
        assert!(!ne.admits(&linux_a, &none));
        assert!(ne.admits(&windows, &none), "absent attribute passes !=");
        let within: Constraint = "os in linux,darwin".parse().unwrap();
        assert!(within.admits(&linux_a, &none));
        assert!(!within.admits(&windows, &none));
        let unique: Constraint = "rack:unique".parse().unwrap();
        assert!(unique.admits(&linux_a, &none));
        assert!(
            !unique.admits(&windows, &none),
            "unique needs the attribute"
        );
        let mut placed = Placed::default();
        placed
            .entry("rack".into())
            .or_default()
            .insert("a".into(), 1);
        assert!(!unique.admits(&linux_a, &placed));
        let spread: Constraint = "rack:spread".parse().unwrap();
        assert_eq!(spread.spread_penalty(&linux_a, &placed), 1);
        assert!(spread.admits(&linux_a, &placed));
    }
}
