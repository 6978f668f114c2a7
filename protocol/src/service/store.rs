//! The replicated set of service specs, without consensus.
//!
//! Every node keeps every spec ([`Store`]). A write (create, update, scale,
//! remove) is an [`Entry`] stamped with a [`Version`] by the node that took
//! it; a node applies an entry when its version is larger than the one it
//! holds (last writer wins), so nodes that have seen the same entries hold
//! the same set, whatever order they saw them in. A removal is an entry
//! without a spec, a **tombstone**: it wins over the older spec everywhere,
//! and is collected [`TOMBSTONE_TTL`] after it was applied here. A node cut
//! off for longer than that may bring the removed spec back when it
//! returns; remove it again.
//!
//! Nodes converge by anti-entropy: each publishes a [`Summary`] (the count
//! and an order-independent hash of every name and version, tombstones
//! included, a few bytes in gossip); a node whose summary differs from a
//! peer's sends it its [`Digest`] (every name and version), and each side
//! sends the other the entries it holds newer ([`Store::newer_than`]).
//! Thousands of specs fit: a digest is about 50 bytes per service and goes
//! only between two nodes that differ.

use super::spec::ServiceSpec;
use super::version::Version;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a tombstone is kept after it was applied here.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most services (live and removed) a node holds.
pub const MAX_SERVICES: usize = 10_000;

/// One write of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The service.
    pub name: String,
    /// Who wrote it when.
    pub version: Version,
    /// The spec (`None`: the service was removed).
    pub spec: Option<ServiceSpec>,
}

/// What [`Store::apply`] did with an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It replaced what was held (or was new).
    Taken,
    /// What is held is as new or newer: nothing changed.
    Stale,
    /// Refused, with the reason: a spec that does not validate, a name that
    /// differs from its spec's, or a store that is full.
    Refused(String),
}

/// The anti-entropy summary: equal on two nodes that hold the same entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Entries held, tombstones included.
    pub count: u32,
    /// XOR of every entry's hash of name and version.
    pub hash: u64,
}

/// Every name and version a node holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// By name.
    pub entries: Vec<(String, Version)>,
}

#[derive(Clone, Debug)]
struct Held {
    entry: Entry,
    /// When a tombstone was applied here.
    removed_at: Option<Instant>,
}

/// The spec set.
#[derive(Clone, Debug, Default)]
pub struct Store {
    held: BTreeMap<String, Held>,
    summary: Summary,
}

fn entry_hash(name: &str, v: &Version) -> u64 {
    crate::cell::stable_hash(&[
        name.as_bytes(),
        &v.stamp.0.to_le_bytes(),
        v.writer.as_str().as_bytes(),
    ])
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// Applies one entry (see the module docs).
    pub fn apply(&mut self, now: Instant, entry: Entry) -> Applied {
        if let Some(spec) = &entry.spec {
            if spec.name != entry.name {
                return Applied::Refused(format!(
                    "the entry for {:?} carries the spec of {:?}",
                    entry.name, spec.name
                ));
            }
            if let Err(e) = spec.validate() {
                return Applied::Refused(format!("service {}: {e}", entry.name));
            }
        } else if let Err(e) = super::spec::check_name(&entry.name) {
            return Applied::Refused(e.to_string());
        }
        match self.held.get(&entry.name) {
            Some(h) if h.entry.version >= entry.version => return Applied::Stale,
            Some(h) => {
                self.summary.hash ^= entry_hash(&h.entry.name, &h.entry.version);
                self.summary.count -= 1;
            }
            None if self.held.len() >= MAX_SERVICES => {
                return Applied::Refused(format!(
                    "this cluster holds {MAX_SERVICES} services (removed ones count for a day); remove some first"
                ));
            }
            None => {}
        }
        self.summary.hash ^= entry_hash(&entry.name, &entry.version);
        self.summary.count += 1;
        let removed_at = entry.spec.is_none().then_some(now);
        self.held
            .insert(entry.name.clone(), Held { entry, removed_at });
        Applied::Taken
    }

    /// The entry held for `name` (a tombstone too).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.held.get(name).map(|h| &h.entry)
    }

    /// The live services, by name.
    pub fn services(&self) -> impl Iterator<Item = (&Version, &ServiceSpec)> {
        self.held
            .values()
            .filter_map(|h| Some((&h.entry.version, h.entry.spec.as_ref()?)))
    }

    /// Entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The summary to publish.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Every name and version held.
    pub fn digest(&self) -> Digest {
        Digest {
            entries: self
                .held
                .values()
                .map(|h| (h.entry.name.clone(), h.entry.version.clone()))
                .collect(),
        }
    }

    /// The entries held here that `theirs` lacks or holds older: what to
    /// send the peer whose digest it is.
    pub fn newer_than(&self, theirs: &Digest) -> Vec<Entry> {
        let theirs: BTreeMap<&str, &Version> = theirs
            .entries
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .collect();
        self.held
            .values()
            .filter(|h| {
                theirs
                    .get(h.entry.name.as_str())
                    .is_none_or(|v| **v < h.entry.version)
            })
            .map(|h| h.entry.clone())
            .collect()
    }

    /// Drops the tombstones applied more than [`TOMBSTONE_TTL`] ago.
    pub fn collect(&mut self, now: Instant) {
        let summary = &mut self.summary;
        self.held.retain(|name, h| {
            let keep = h.removed_at.is_none_or(|at| now < at + TOMBSTONE_TTL);
            if !keep {
                summary.hash ^= entry_hash(name, &h.entry.version);
                summary.count -= 1;
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::resources::Resources;
    use crate::service::version::Stamp;
    use crate::task::Command;

    fn v(stamp: u64, w: &str) -> Version {
        Version {
            stamp: Stamp(stamp),
            writer: NodeId::new(w).unwrap(),
        }
    }

    fn put(name: &str, instances: u32, version: Version) -> Entry {
        let mut s = ServiceSpec::new(
            name,
            Command::Shell("sleep 1000".into()),
            Resources::cpu_mem(100, 16),
        );
        s.instances = instances;
        Entry {
            name: name.into(),
            version,
            spec: Some(s),
        }
    }

    fn rm(name: &str, version: Version) -> Entry {
        Entry {
            name: name.into(),
            version,
            spec: None,
        }
    }

    #[test]
    fn stores_that_saw_the_same_writes_in_any_order_agree() {
        let writes = vec![
            put("web", 3, v(10, "a")),
            put("web", 5, v(12, "b")),
            put("db", 1, v(11, "a")),
            rm("db", v(13, "c")),
            put("web", 4, v(12, "a")), // same stamp, smaller writer: loses
            put("cache", 2, v(9, "b")),
        ];
        let mut a = Store::new();
        for w in &writes {
            a.apply(Instant::ZERO, w.clone());
        }
        let mut b = Store::new();
        for w in writes.iter().rev() {
            b.apply(Instant::ZERO, w.clone());
        }
        assert_eq!(a.summary(), b.summary());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.get("web").unwrap().spec.as_ref().unwrap().instances, 5);
        assert!(a.get("db").unwrap().spec.is_none(), "the removal wins");
        let live: Vec<&str> = a.services().map(|(_, s)| s.name.as_str()).collect();
        assert_eq!(live, ["cache", "web"]);
        // An older write changes nothing.
        assert_eq!(
            a.apply(Instant::ZERO, put("db", 9, v(12, "z"))),
            Applied::Stale
        );
    }

    #[test]
    fn anti_entropy_sends_each_side_what_the_other_lacks() {
        let mut a = Store::new();
        let mut b = Store::new();
        a.apply(Instant::ZERO, put("web", 3, v(10, "a")));
        a.apply(Instant::ZERO, put("db", 1, v(11, "a")));
        b.apply(Instant::ZERO, put("web", 6, v(20, "b")));
        b.apply(Instant::ZERO, put("cache", 1, v(5, "b")));
        assert_ne!(a.summary(), b.summary());
        let to_b = a.newer_than(&b.digest());
        let to_a = b.newer_than(&a.digest());
        assert_eq!(
            to_b.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["db"]
        );
        let mut names: Vec<&str> = to_a.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["cache", "web"]);
        for e in to_b {
            b.apply(Instant::ZERO, e);
        }
        for e in to_a {
            a.apply(Instant::ZERO, e);
        }
        assert_eq!(a.summary(), b.summary());
        assert!(a.newer_than(&b.digest()).is_empty());
    }

    #[test]
    fn tombstones_are_collected_after_their_ttl_and_bad_entries_refused() {
        let mut s = Store::new();
        s.apply(Instant::ZERO, put("web", 3, v(10, "a")));
        let t = Instant::from_millis(5_000);
        s.apply(t, rm("web", v(11, "a")));
        s.collect(t + (TOMBSTONE_TTL - Duration::from_millis(1)));
        assert_eq!(s.len(), 1, "kept until its ttl");
        s.collect(t + TOMBSTONE_TTL);
        assert!(s.is_empty());
        assert_eq!(s.summary(), Summary::default());
        // A spec that does not validate, or under another name, is refused.
        let mut bad = put("web", 3, v(20, "a"));
        bad.spec.as_mut().unwrap().instances = 100_000;
        assert!(matches!(s.apply(t, bad), Applied::Refused(m) if m.contains("instances")));
        let mut other = put("web", 3, v(20, "a"));
        other.name = "api".into();
        assert!(matches!(s.apply(t, other), Applied::Refused(_)));
        assert!(matches!(
            s.apply(t, rm("bad name", v(1, "a"))),
            Applied::Refused(_)
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn the_store_is_bounded() {
        let mut s = Store::new();
        for i in 0..MAX_SERVICES {
            assert_eq!(
                s.apply(Instant::ZERO, put(&format!("s{i}"), 1, v(1, "a"))),
                Applied::Taken
            );
        }
        assert!(matches!(
            s.apply(Instant::ZERO, put("one-more", 1, v(1, "a"))),
            Applied::Refused(_)
        ));
        // Updating a held service still works.
        assert_eq!(
            s.apply(Instant::ZERO, put("s0", 2, v(2, "a"))),
            Applied::Taken
        );
    }
}
