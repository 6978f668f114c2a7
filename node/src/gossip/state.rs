//! How a node's [`LocalState`] is spelled as chitchat keys, and read back.
//!
//! Keys are one or two letters and values are compact text, so that one
//! node's whole public state stays a few hundred bytes (chitchat sends the
//! key-values that changed, and its full digest every round):
//!
//! | key | value | example |
//! |-----|-------|---------|
//! | `v` | format version | `1` |
//! | `a` | libp2p multiaddr | `/ip4/10.0.0.5/tcp/7001` |
//! | `p` | libp2p peer id | `12D3KooW…` |
//! | `t` | total resources `cpu,mem,disk,gpus,ports` | `4000,8192,100000,0,1000` |
//! | `f` | `version;` free resources | `17;2500,6144,100000,0,998` |
//! | `l` | attributes, a JSON object of strings | `{"os":"linux","zone":"eu-1"}` |
//! | `u` | allocations `fw=weight;cpu,mem,disk,gpus,ports` joined by `\|` | `batch=1;1500,2048,0,0,2` |
//! | `c` | the node's cell, when the cluster runs in cells | `rack-12` |
//! | `g` | a gateway's federation gossip address (cell gossip) | `10.0.0.5:7002` |
//! | `s` | the cell's aggregate (federation gossip, gateways only) | see below |
//! | `x` | present when the node is leaving | `1` |
//!
//! `c`, `g` and `s` are optional (a flat cluster has none). The aggregate
//! `s` is `members,alive;TOTAL;FREE;cpu_fit;mem_fit` with resources as in
//! `t` and each fit list the counts per size class joined by `,` (see
//! `agora_protocol::cell::CellAggregate`).
//!
//! Free resources and their ledger version share one key so they always
//! arrive together. Framework ids cannot contain `=`, `;`, `,` or `|`
//! (see `agora_protocol::ids`), so the allocation list needs no escaping.
//!
//! Decoding never trusts a peer: a missing or malformed key makes the
//! member's state `None` (with the reason returned for the log), and never
//! panics.

use super::LocalState;
use agora_protocol::cell::CellAggregate;
use agora_protocol::constraint::Attributes;
use agora_protocol::fairness::FrameworkUsage;
use agora_protocol::ids::FrameworkId;
use agora_protocol::resources::Resources;
use std::collections::BTreeMap;

/// The format this node writes.
pub const FORMAT_VERSION: &str = "1";

/// Key of the format version.
pub const KEY_VERSION: &str = "v";
/// Key of the libp2p address.
pub const KEY_P2P_ADDR: &str = "a";
/// Key of the libp2p peer id.
pub const KEY_PEER_ID: &str = "p";
/// Key of the total resources.
pub const KEY_TOTAL: &str = "t";
/// Key of the ledger version and free resources.
pub const KEY_FREE: &str = "f";
/// Key of the attributes.
pub const KEY_ATTRS: &str = "l";
/// Key of the per-framework allocations.
pub const KEY_ALLOCATIONS: &str = "u";
/// Key of the node's cell.
pub const KEY_CELL: &str = "c";
/// Key of a gateway's federation address.
pub const KEY_FEDERATION: &str = "g";
/// Key of a gateway's cell aggregate.
pub const KEY_AGGREGATE: &str = "s";
/// Key set while the node leaves the cluster gracefully.
pub const KEY_LEAVING: &str = "x";

/// The longest value accepted from a peer for any key (a guard against a
/// peer that publishes absurd state; ours are far smaller).
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// The key-values that publish `state`, in a fixed order.
pub fn encode(state: &LocalState) -> Vec<(&'static str, String)> {
    let mut kvs = vec![
        (KEY_VERSION, FORMAT_VERSION.to_string()),
        (KEY_P2P_ADDR, state.p2p_addr.clone()),
        (KEY_PEER_ID, state.peer_id.clone()),
        (KEY_TOTAL, encode_resources(&state.total)),
        (
            KEY_FREE,
            format!("{};{}", state.version, encode_resources(&state.free)),
        ),
        (KEY_ATTRS, encode_attrs(&state.attrs)),
        (KEY_ALLOCATIONS, encode_allocations(&state.allocations)),
    ];
    if let Some(c) = &state.cell {
        kvs.push((KEY_CELL, c.clone()));
    }
    if let Some(g) = &state.federation {
        kvs.push((KEY_FEDERATION, g.clone()));
    }
    if let Some(a) = &state.aggregate {
        kvs.push((KEY_AGGREGATE, encode_aggregate(a)));
    }
    kvs
}

fn join_counts(counts: &[u32]) -> String {
    counts
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The aggregate as key `s` spells it.
pub fn encode_aggregate(a: &CellAggregate) -> String {
    format!(
        "{},{};{};{};{};{}",
        a.members,
        a.alive,
        encode_resources(&a.total),
        encode_resources(&a.free),
        join_counts(&a.cpu_fit),
        join_counts(&a.mem_fit)
    )
}

fn decode_counts<const N: usize>(text: &str, what: &str) -> Result<[u32; N], String> {
    let mut out = [0u32; N];
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() != N {
        return Err(format!("{what}: expected {N} counts, got {}", parts.len()));
    }
    for (slot, p) in out.iter_mut().zip(parts) {
        *slot = p.parse::<u32>().map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(out)
}

/// Reads key `s`.
///
/// # Errors
/// What is malformed.
pub fn decode_aggregate(text: &str) -> Result<CellAggregate, String> {
    let parts: Vec<&str> = text.split(';').collect();
    let [counts, total, free, cpu, mem] = parts[..] else {
        return Err("expected MEMBERS,ALIVE;TOTAL;FREE;CPU_FIT;MEM_FIT".to_string());
    };
    let (members, alive) = counts.split_once(',').ok_or("expected MEMBERS,ALIVE")?;
    Ok(CellAggregate {
        members: members.parse().map_err(|e| format!("members: {e}"))?,
        alive: alive.parse().map_err(|e| format!("alive: {e}"))?,
        total: decode_resources(total)?,
        free: decode_resources(free)?,
        cpu_fit: decode_counts(cpu, "cpu fit")?,
        mem_fit: decode_counts(mem, "memory fit")?,
    })
}

/// Bytes of keys plus values that publish `state` (what chitchat carries
/// for it, before chitchat's own per-entry framing).
pub fn encoded_len(state: &LocalState) -> usize {
    encode(state).iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn encode_resources(r: &Resources) -> String {
    format!(
        "{},{},{},{},{}",
        r.cpu_millis, r.mem_mib, r.disk_mib, r.gpus, r.ports
    )
}

fn encode_attrs(attrs: &Attributes) -> String {
    // A map of strings always serializes; fall back to empty rather than panic.
    serde_json::to_string(&attrs.0).unwrap_or_else(|_| "{}".to_string())
}

fn encode_allocations(allocations: &BTreeMap<FrameworkId, FrameworkUsage>) -> String {
    let mut out = String::new();
    for (fw, usage) in allocations {
        if !out.is_empty() {
            out.push('|');
        }
        out.push_str(fw.as_str());
        out.push('=');
        out.push_str(&usage.weight.to_string());
        out.push(';');
        out.push_str(&encode_resources(&usage.resources));
    }
    out
}

/// Why a member's published state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A key has not arrived (yet).
    #[error("key {0:?} is missing")]
    Missing(&'static str),
    /// The peer writes a format this node does not read.
    #[error("state format {0:?} is not supported (this node reads {FORMAT_VERSION:?})")]
    Version(String),
    /// A value is malformed.
    #[error("key {key:?} has a malformed value: {reason}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn malformed(key: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        key,
        reason: reason.into(),
    }
}

/// Reads a member's state through `get` (a key lookup in its chitchat state).
///
/// # Errors
/// [`DecodeError`] when a key is missing or malformed.
pub fn decode<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<LocalState, DecodeError> {
    let need = |key: &'static str| -> Result<&'a str, DecodeError> {
        let value = get(key).ok_or(DecodeError::Missing(key))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(malformed(key, format!("{} bytes is too long", value.len())));
        }
        Ok(value)
    };
    let version = need(KEY_VERSION)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version.chars().take(16).collect()));
    }
    let p2p_addr = need(KEY_P2P_ADDR)?.to_string();
    let peer_id = need(KEY_PEER_ID)?.to_string();
    let total = decode_resources(need(KEY_TOTAL)?).map_err(|r| malformed(KEY_TOTAL, r))?;
    let (ledger_version, free) = need(KEY_FREE)?
        .split_once(';')
        .ok_or_else(|| malformed(KEY_FREE, "expected VERSION;RESOURCES"))?;
    let version = ledger_version
        .parse::<u64>()
        .map_err(|e| malformed(KEY_FREE, format!("version: {e}")))?;
    let free = decode_resources(free).map_err(|r| malformed(KEY_FREE, r))?;
    let attrs: BTreeMap<String, String> =
        serde_json::from_str(need(KEY_ATTRS)?).map_err(|e| malformed(KEY_ATTRS, e.to_string()))?;
    let allocations =
        decode_allocations(need(KEY_ALLOCATIONS)?).map_err(|r| malformed(KEY_ALLOCATIONS, r))?;
    let optional = |key: &'static str| -> Result<Option<&'a str>, DecodeError> {
        match get(key) {
            Some(v) if v.len() > MAX_VALUE_LEN => {
                Err(malformed(key, format!("{} bytes is too long", v.len())))
            }
            other => Ok(other),
        }
    };
    let cell = optional(KEY_CELL)?
        .map(|c| {
            agora_protocol::cell::check_cell_name(c)
                .map(|()| c.to_string())
                .map_err(|e| malformed(KEY_CELL, e))
        })
        .transpose()?;
    let federation = optional(KEY_FEDERATION)?
        .map(|g| {
            g.parse::<std::net::SocketAddr>()
                .map(|_| g.to_string())
                .map_err(|e| malformed(KEY_FEDERATION, e.to_string()))
        })
        .transpose()?;
    let aggregate = optional(KEY_AGGREGATE)?
        .map(|a| decode_aggregate(a).map_err(|e| malformed(KEY_AGGREGATE, e)))
        .transpose()?;
    Ok(LocalState {
        cell,
        federation,
        aggregate,
        p2p_addr,
        peer_id,
        total,
        free,
        version,
        attrs: Attributes(attrs),
        allocations,
    })
}

fn decode_resources(text: &str) -> Result<Resources, String> {
    let mut parts = text.split(',');
    let mut next = |name: &str| -> Result<u64, String> {
        parts
            .next()
            .ok_or_else(|| format!("{name} is missing"))?
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    let cpu_millis = next("cpu")?;
    let mem_mib = next("mem")?;
    let disk_mib = next("disk")?;
    let gpus = u32::try_from(next("gpus")?).map_err(|e| format!("gpus: {e}"))?;
    let ports = u32::try_from(next("ports")?).map_err(|e| format!("ports: {e}"))?;
    if parts.next().is_some() {
        return Err("more than five resource fields".to_string());
    }
    Ok(Resources {
        cpu_millis,
        mem_mib,
        disk_mib,
        gpus,
        ports,
    })
}

fn decode_allocations(text: &str) -> Result<BTreeMap<FrameworkId, FrameworkUsage>, String> {
    let mut out = BTreeMap::new();
    if text.is_empty() {
        return Ok(out);
    }
    for entry in text.split('|') {
        let (fw, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {entry:?}: expected FRAMEWORK=WEIGHT;RESOURCES"))?;
        let fw = FrameworkId::new(fw).map_err(|e| format!("framework id: {e}"))?;
        let (weight, resources) = rest
            .split_once(';')
            .ok_or_else(|| format!("entry {entry:?}: expected WEIGHT;RESOURCES"))?;
        let weight = weight
            .parse::<u32>()
            .map_err(|e| format!("weight of {fw}: {e}"))?;
        let resources = decode_resources(resources).map_err(|e| format!("{fw}: {e}"))?;
        if out
            .insert(fw.clone(), FrameworkUsage { resources, weight })
            .is_some()
        {
            return Err(format!("framework {fw} appears twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A realistic state: what a mid-sized node publishes.
    pub(crate) fn sample_state() -> LocalState {
        let mut attrs = Attributes::default();
        attrs.insert("os", "linux");
        attrs.insert("arch", "x86_64");
        attrs.insert("hostname", "worker-017.eu-1.example.com");
        attrs.insert("zone", "eu-1");
        attrs.insert("rack", "12");
        let mut allocations = BTreeMap::new();
        for (name, cpu, mem) in [("batch", 6500, 12288), ("services", 2000, 4096)] {
            allocations.insert(
                FrameworkId::new(name).unwrap(),
                FrameworkUsage {
                    resources: Resources {
                        cpu_millis: cpu,
                        mem_mib: mem,
                        disk_mib: 10_240,
                        gpus: 0,
                        ports: 3,
                    },
                    weight: 1,
                },
            );
        }
        LocalState {
            p2p_addr: "/ip4/10.20.30.40/tcp/7001".to_string(),
            peer_id: "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE".to_string(),
            total: Resources {
                cpu_millis: 16_000,
                mem_mib: 65_536,
                disk_mib: 1_000_000,
                gpus: 2,
                ports: 1000,
            },
            free: Resources {
                cpu_millis: 7_500,
                mem_mib: 49_152,
                disk_mib: 979_520,
                gpus: 2,
                ports: 994,
            },
            version: 123_456,
            attrs,
            allocations,
            ..LocalState::default()
        }
    }

    fn decode_map(map: &HashMap<String, String>) -> Result<LocalState, DecodeError> {
        decode(|k| map.get(k).map(String::as_str))
    }

    fn encode_map(state: &LocalState) -> HashMap<String, String> {
        encode(state)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn round_trip_and_size() {
        let state = sample_state();
        let map = encode_map(&state);
        assert_eq!(decode_map(&map).unwrap(), state);
        let len = encoded_len(&state);
        assert!(len < 1024, "{len} bytes");
        eprintln!("published state of a sample node: {len} bytes of keys and values");

        let mut empty = state.clone();
        empty.allocations.clear();
        empty.attrs = Attributes::default();
        assert_eq!(decode_map(&encode_map(&empty)).unwrap(), empty);

        // A gateway's state in its cell and in the federation.
        let mut gateway = state.clone();
        gateway.cell = Some("rack-12".into());
        gateway.federation = Some("10.0.0.5:7702".into());
        gateway.aggregate = Some(CellAggregate {
            members: 100,
            alive: 99,
            total: gateway.total,
            free: gateway.free,
            cpu_fit: [99, 98, 50, 10, 0, 0, 0, 0],
            mem_fit: [99, 90, 80, 70, 60, 50, 0, 0, 0, 0],
        });
        assert_eq!(decode_map(&encode_map(&gateway)).unwrap(), gateway);
        let len = encoded_len(&gateway);
        assert!(len < 1024, "{len} bytes");
    }

    #[test]
    fn malformed_cell_keys_are_rejected() {
        let state = sample_state();
        for (key, value) in [
            (KEY_CELL, "a/b"),
            (KEY_CELL, ""),
            (KEY_FEDERATION, "nowhere"),
            (KEY_AGGREGATE, "1,1;1,2,3,4,5;1,2,3,4,5;1,2;1"),
            (
                KEY_AGGREGATE,
                "1;1,2,3,4,5;1,2,3,4,5;0,0,0,0,0,0,0,0;0,0,0,0,0,0,0,0,0,0",
            ),
            (KEY_AGGREGATE, ""),
        ] {
            let mut map = encode_map(&state);
            map.insert(key.to_string(), value.to_string());
            assert!(decode_map(&map).is_err(), "{key}={value:?} was accepted");
        }
    }

    #[test]
    fn missing_keys_are_reported() {
        let state = sample_state();
        for (key, _) in encode(&state) {
            let mut map = encode_map(&state);
            map.remove(key);
            let err = decode_map(&map).unwrap_err();
            assert_eq!(err, DecodeError::Missing(key));
        }
    }

    #[test]
    fn malformed_values_are_rejected_not_panicked_on() {
        let state = sample_state();
        let bad_values: &[(&str, &str)] = &[
            (KEY_VERSION, "2"),
            (KEY_TOTAL, "1,2,3,4"),
            (KEY_TOTAL, "1,2,3,4,5,6"),
            (KEY_TOTAL, "-1,2,3,4,5"),
            (KEY_TOTAL, "1,2,3,99999999999,5"),
            (KEY_TOTAL, ""),
            (KEY_FREE, "1,2,3,4,5"),
            (KEY_FREE, "x;1,2,3,4,5"),
            (KEY_FREE, ";"),
            (KEY_ATTRS, "{"),
            (KEY_ATTRS, "[1]"),
            (KEY_ATTRS, "{\"a\":1}"),
            (KEY_ALLOCATIONS, "batch"),
            (KEY_ALLOCATIONS, "batch=1"),
            (KEY_ALLOCATIONS, "bad id=1;1,2,3,4,5"),
            (KEY_ALLOCATIONS, "b=1;1,2,3,4,5|b=1;1,2,3,4,5"),
            (KEY_ALLOCATIONS, "b=x;1,2,3,4,5"),
            (KEY_ALLOCATIONS, "|"),
        ];
        for (key, value) in bad_values {
            let mut map = encode_map(&state);
            map.insert(key.to_string(), value.to_string());
            assert!(decode_map(&map).is_err(), "{key}={value:?} was accepted");
        }
        let mut map = encode_map(&state);
        map.insert(KEY_PEER_ID.to_string(), "p".repeat(MAX_VALUE_LEN + 1));
        assert!(decode_map(&map).is_err());
    }

    #[test]
    fn arbitrary_values_never_panic() {
        // Deterministic fuzzing: every key gets strings built from the
        // separators and digits the format uses, plus arbitrary characters.
        let alphabet: Vec<char> = "0123456789,;|=:{}\"[]-.abé\u{0}\u{ffff}".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let state = sample_state();
        let mut accepted = 0;
        for _ in 0..5_000 {
            let mut map = encode_map(&state);
            let keys: Vec<&str> = encode(&state).iter().map(|(k, _)| *k).collect();
            let key = keys[(next() % keys.len() as u64) as usize];
            let len = (next() % 40) as usize;
            let value: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            map.insert(key.to_string(), value);
            if decode_map(&map).is_ok() {
                accepted += 1;
            }
        }
        // Most random values are rejected; some (e.g. any p2p address) are fine.
        assert!(accepted < 5_000);
    }

    #[test]
    fn attrs_with_any_characters_survive() {
        let mut state = sample_state();
        state.attrs.insert("note", "a=b;c,d|e \"quoted\" é\n");
        assert_eq!(decode_map(&encode_map(&state)).unwrap(), state);
    }
}
