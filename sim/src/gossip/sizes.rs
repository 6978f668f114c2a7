//! What chitchat 0.13's messages weigh: the datagram limit, the digest and
//! key-value encodings, and the failure detector's settings, per group.

use crate::engine::Micros;

/// chitchat's `MAX_UDP_DATAGRAM_PAYLOAD_SIZE`.
pub const MAX_DATAGRAM: usize = 65_507;
/// chitchat's `GOSSIP_COUNT`.
pub const GOSSIP_COUNT: usize = 3;
/// Envelope header: protocol version byte and message tag.
pub const HEADER_LEN: usize = 2;

/// Sizes and timings of one gossip group.
#[derive(Clone, Debug)]
pub struct Config {
    /// Gossip interval.
    pub interval: Micros,
    /// Length of a node id string (ChitchatId = 2 + id + 8 generation + 7 addr).
    pub id_len: usize,
    /// Length of the cluster id string.
    pub cluster_id_len: usize,
    /// Serialized key+value bytes of the three static keys (p2p address,
    /// attributes, total).
    pub static_kv: [usize; 3],
    /// Serialized key+value bytes of `free` and `alloc`.
    pub dynamic_kv: [usize; 2],
    /// Seed nodes per group (the first members).
    pub seeds: usize,
    /// phi above which a member is dead (chitchat: 8).
    pub phi_threshold: f64,
    /// Prior mean heartbeat interval, seconds (chitchat: 5 s).
    pub prior_interval_s: f64,
    /// Prior weight (chitchat: 5).
    pub prior_weight: f64,
    /// Intervals above this are ignored, seconds (chitchat: 10 s).
    pub max_interval_s: f64,
    /// Sampling window (chitchat: 1000).
    pub window: u32,
}

impl Config {
    /// The cell group of Agora with gossip every `interval`: keys as
    /// DESIGN.md lists them, values at their realistic encoded size.
    pub fn cell(interval: Micros, id_len: usize) -> Self {
        Config {
            interval,
            id_len,
            cluster_id_len: 12,
            // key bytes + value bytes + 2+2 length prefixes + 8 version + 1 status + 1 op tag
            static_kv: [kv(3, 90), kv(5, 60), kv(5, 40)],
            dynamic_kv: [kv(4, 48), kv(5, 40)],
            seeds: 3,
            phi_threshold: 8.0,
            prior_interval_s: 5.0,
            prior_weight: 5.0,
            max_interval_s: 10.0,
            window: 1000,
        }
    }

    /// The federation group: each gateway publishes its cell's aggregate.
    pub fn federation(interval: Micros, id_len: usize) -> Self {
        Config {
            static_kv: [kv(3, 90), kv(4, 8), kv(5, 40)],
            dynamic_kv: [kv(3, 160), kv(4, 16)],
            ..Config::cell(interval, id_len)
        }
    }

    pub(super) fn chitchat_id_len(&self) -> usize {
        2 + self.id_len + 8 + 7
    }

    pub(super) fn digest_entry(&self) -> usize {
        self.chitchat_id_len() + 24
    }

    /// Bytes of a SYN for a group of `members` (header, cluster id, count, digest).
    pub fn syn_len(&self, members: usize) -> usize {
        HEADER_LEN + 2 + self.cluster_id_len + 2 + members * self.digest_entry()
    }

    /// The largest group whose SYN fits one datagram.
    pub fn max_flat_members(&self) -> usize {
        (MAX_DATAGRAM - HEADER_LEN - 4 - self.cluster_id_len) / self.digest_entry()
    }
}

pub(super) const fn kv(key: usize, value: usize) -> usize {
    1 + 2 + key + 2 + value + 8 + 1
}

/// Versions of the three static keys.
pub(super) const STATIC_VERSIONS: u32 = 3;
