//! Resource vectors, port ranges and the arithmetic the auction relies on.
//!
//! A [`Resources`] vector is what a node has or a task asks for: CPU in
//! millicores, memory and disk in MiB, whole GPUs and a number of ports.
//! Arithmetic is checked: the auctioneer subtracts with [`Resources::checked_sub`]
//! and so can never record more awarded than it has. Concrete port numbers
//! live in a node's [`PortSet`] and are handed out on award.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A resource vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Disk in MiB.
    pub disk_mib: u64,
    /// Whole GPUs.
    pub gpus: u32,
    /// Number of ports.
    pub ports: u32,
}

/// The dimensions of a [`Resources`] vector, for messages that name one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// CPU millicores.
    Cpu,
    /// Memory MiB.
    Mem,
    /// Disk MiB.
    Disk,
    /// GPUs.
    Gpus,
    /// Ports.
    Ports,
}

impl Dimension {
    /// Every dimension, in a fixed order.
    pub const ALL: [Dimension; 5] = [
        Dimension::Cpu,
        Dimension::Mem,
        Dimension::Disk,
        Dimension::Gpus,
        Dimension::Ports,
    ];

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Cpu => "cpu",
            Dimension::Mem => "mem",
            Dimension::Disk => "disk",
            Dimension::Gpus => "gpus",
            Dimension::Ports => "ports",
        }
    }

    /// A quantity of this dimension, formatted for a person.
    pub fn format(self, amount: u64) -> String {
        match self {
            Dimension::Cpu => format!("{} cpus", format_cpus(amount)),
            Dimension::Mem | Dimension::Disk => format!("{} {}", format_mib(amount), self.name()),
            Dimension::Gpus => format!("{amount} gpus"),
            Dimension::Ports => format!("{amount} ports"),
        }
    }
}

impl Resources {
    /// The empty vector.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        mem_mib: 0,
        disk_mib: 0,
        gpus: 0,
        ports: 0,
    };

    /// A vector with only CPU and memory set.
    pub const fn cpu_mem(cpu_millis: u64, mem_mib: u64) -> Self {
        Resources {
            cpu_millis,
            mem_mib,
            disk_mib: 0,
            gpus: 0,
            ports: 0,
        }
    }

    /// The amount of one dimension.
    pub fn get(&self, d: Dimension) -> u64 {
        match d {
            Dimension::Cpu => self.cpu_millis,
            Dimension::Mem => self.mem_mib,
            Dimension::Disk => self.disk_mib,
            Dimension::Gpus => u64::from(self.gpus),
            Dimension::Ports => u64::from(self.ports),
        }
    }

    /// True when every dimension is zero.
    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    /// True when `self` fits inside `available` in every dimension.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu_millis <= available.cpu_millis
            && self.mem_mib <= available.mem_mib
            && self.disk_mib <= available.disk_mib
            && self.gpus <= available.gpus
            && self.ports <= available.ports
    }

    /// The dimensions in which `self` does not fit inside `available`.
    pub fn shortfall(&self, available: &Resources) -> Vec<Dimension> {
        Dimension::ALL
            .into_iter()
            .filter(|d| self.get(*d) > available.get(*d))
            .collect()
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            mem_mib: self.mem_mib.checked_add(other.mem_mib)?,
            disk_mib: self.disk_mib.checked_add(other.disk_mib)?,
            gpus: self.gpus.checked_add(other.gpus)?,
            ports: self.ports.checked_add(other.ports)?,
        })
    }

    /// `self + other`, saturating in each dimension.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
            gpus: self.gpus.saturating_add(other.gpus),
            ports: self.ports.saturating_add(other.ports),
        }
    }

    /// `self - other`, or `None` if any dimension would go negative.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            mem_mib: self.mem_mib.checked_sub(other.mem_mib)?,
            disk_mib: self.disk_mib.checked_sub(other.disk_mib)?,
            gpus: self.gpus.checked_sub(other.gpus)?,
            ports: self.ports.checked_sub(other.ports)?,
        })
    }

    /// `self - other`, flooring each dimension at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
            ports: self.ports.saturating_sub(other.ports),
        }
    }

    /// The largest fraction of `total` that `self` takes in any dimension
    /// (0.0 for dimensions `total` lacks). This is DRF's dominant share.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        Dimension::ALL
            .into_iter()
            .filter(|d| total.get(*d) > 0)
            .map(|d| self.get(d) as f64 / total.get(d) as f64)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cpus, {} mem",
            format_cpus(self.cpu_millis),
            format_mib(self.mem_mib)
        )?;
        if self.disk_mib > 0 {
            write!(f, ", {} disk", format_mib(self.disk_mib))?;
        }
        if self.gpus > 0 {
            write!(f, ", {} gpus", self.gpus)?;
        }
        if self.ports > 0 {
            write!(f, ", {} ports", self.ports)?;
        }
        Ok(())
    }
}

/// Millicores as a decimal number of cores: 2500 → "2.5".
pub fn format_cpus(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        let s = format!("{}.{:03}", millis / 1000, millis % 1000);
        s.trim_end_matches('0').to_string()
    }
}

/// MiB for a person: 512 → "512 MiB", 65536 → "64 GiB", 1536 → "1.5 GiB".
pub fn format_mib(mib: u64) -> String {
    if mib >= 1024 {
        if mib.is_multiple_of(1024) {
            format!("{} GiB", mib / 1024)
        } else {
            format!("{:.1} GiB", mib as f64 / 1024.0)
        }
    } else {
        format!("{mib} MiB")
    }
}

/// Why a quantity on the command line or in a config file is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number in the accepted form.
    #[error("{input:?} is not a {what}; {hint}")]
    Invalid {
        /// What was given.
        input: String,
        /// What was expected, e.g. "cpu count".
        what: &'static str,
        /// How to write it.
        hint: &'static str,
    },
    /// A number too large to represent.
    #[error("{input:?} is too large")]
    TooLarge {
        /// What was given.
        input: String,
    },
}

/// Parses a CPU count with up to three decimals ("2", "0.5", "1.25") into millicores.
///
/// # Errors
/// [`QuantityError`] when the text is not a non-negative decimal with at most
/// three fractional digits.
pub fn parse_cpus(input: &str) -> Result<u64, QuantityError> {
    let invalid = || QuantityError::Invalid {
        input: input.to_string(),
        what: "cpu count",
        hint: "write cores as a decimal such as 2, 0.5 or 1.25 (at most 3 decimals)",
    };
    let s = input.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(invalid());
    }
    if !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 3
    {
        return Err(invalid());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| QuantityError::TooLarge {
            input: input.to_string(),
        })?
    };
    let frac_millis: u64 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<3}");
        padded.parse().map_err(|_| invalid())?
    };
    whole
        .checked_mul(1000)
        .and_then(|m| m.checked_add(frac_millis))
        .ok_or_else(|| QuantityError::TooLarge {
            input: input.to_string(),
        })
}

/// Parses a memory or disk size into MiB: a plain number is MiB; the suffixes
/// `M`, `MiB`, `G`, `GiB`, `T`, `TiB` (any case) are accepted.
///
/// # Errors
/// [`QuantityError`] when the text is not a whole number with an optional
/// unit, or the result overflows.
pub fn parse_mib(input: &str) -> Result<u64, QuantityError> {
    let invalid = || QuantityError::Invalid {
        input: input.to_string(),
        what: "size",
        hint: "write a whole number of MiB such as 512, or use a unit: 512M, 2G, 1T",
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(invalid());
    }
    let n: u64 = num.parse().map_err(|_| QuantityError::TooLarge {
        input: input.to_string(),
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mi" | "mib" | "mb" => 1,
        "g" | "gi" | "gib" | "gb" => 1024,
        "t" | "ti" | "tib" | "tb" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| QuantityError::TooLarge {
            input: input.to_string(),
        })
}

/// An inclusive range of port numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Number of ports in the range (0 if `end < start`).
    pub fn len(&self) -> u32 {
        if self.end < self.start {
            0
        } else {
            u32::from(self.end - self.start) + 1
        }
    }

    /// True when the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of free ports kept as sorted, disjoint ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSet {
    ranges: Vec<PortRange>,
}

impl PortSet {
    /// The set holding exactly the given ranges (overlaps are merged).
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Self {
        let mut set = PortSet::default();
        for r in ranges {
            if r.is_empty() {
                continue;
            }
            for p in r.start..=r.end {
                set.insert(p);
            }
        }
        set
    }

    /// Parses `31000-32000,8080` style text.
    ///
    /// # Errors
    /// [`QuantityError`] when a part is not a port or a `LOW-HIGH` range.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let invalid = || QuantityError::Invalid {
            input: input.to_string(),
            what: "port list",
            hint: "write ports and ranges separated by commas, such as 31000-32000,8080",
        };
        let mut ranges = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let start: u16 = a.trim().parse().map_err(|_| invalid())?;
            let end: u16 = b.trim().parse().map_err(|_| invalid())?;
            if end < start {
                return Err(invalid());
            }
            ranges.push(PortRange { start, end });
        }
        Ok(Self::from_ranges(ranges))
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    /// Number of ports in the set.
    pub fn count(&self) -> u32 {
        self.ranges.iter().map(PortRange::len).sum()
    }

    /// Takes the `n` lowest free ports, or nothing if fewer are free.
    pub fn take(&mut self, n: u32) -> Option<Vec<u16>> {
        if self.count() < n {
            return None;
        }
        let mut out = Vec::with_capacity(n as usize);
        while (out.len() as u32) < n {
            let first = self.ranges.first_mut()?;
            out.push(first.start);
            if first.start == first.end {
                self.ranges.remove(0);
            } else {
                first.start += 1;
            }
        }
        Some(out)
    }

    /// Removes one given port; false if it was not in the set.
    pub fn take_specific(&mut self, port: u16) -> bool {
        let idx = self.ranges.partition_point(|r| r.end < port);
        let Some(r) = self.ranges.get(idx).copied() else {
            return false;
        };
        if r.start > port {
            return false;
        }
        match (r.start == port, r.end == port) {
            (true, true) => {
                self.ranges.remove(idx);
            }
            (true, false) => self.ranges[idx].start = port + 1,
            (false, true) => self.ranges[idx].end = port - 1,
            (false, false) => {
                self.ranges[idx].end = port - 1;
                self.ranges.insert(
                    idx + 1,
                    PortRange {
                        start: port + 1,
                        end: r.end,
                    },
                );
            }
        }
        true
    }

    /// Returns one port to the set.
    pub fn insert(&mut self, port: u16) {
        let idx = self.ranges.partition_point(|r| r.end < port);
        if let Some(r) = self.ranges.get(idx)
            && r.start <= port
        {
            return; // already present
        }
        self.ranges.insert(
            idx,
            PortRange {
                start: port,
                end: port,
            },
        );
        // merge with neighbours
        if idx + 1 < self.ranges.len()
            && u32::from(self.ranges[idx].end) + 1 == u32::from(self.ranges[idx + 1].start)
        {
            self.ranges[idx].end = self.ranges[idx + 1].end;
            self.ranges.remove(idx + 1);
        }
        if idx > 0 && u32::from(self.ranges[idx - 1].end) + 1 == u32::from(self.ranges[idx].start) {
            self.ranges[idx - 1].end = self.ranges[idx].end;
            self.ranges.remove(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_and_checked_arithmetic() {
        let node = Resources::cpu_mem(4000, 8192);
        let task = Resources::cpu_mem(500, 1024);
        assert!(task.fits_in(&node));
        assert_eq!(
            node.checked_sub(&task),
            Some(Resources::cpu_mem(3500, 7168))
        );
        assert_eq!(task.checked_sub(&node), None);
        let big = Resources { gpus: 1, ..task };
        assert!(!big.fits_in(&node));
        assert_eq!(big.shortfall(&node), vec![Dimension::Gpus]);
        let max = Resources::cpu_mem(u64::MAX, 1);
        assert_eq!(max.checked_add(&task), None);
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = Resources::cpu_mem(10_000, 10_000);
        assert_eq!(Resources::cpu_mem(1000, 4000).dominant_share(&total), 0.4);
        assert_eq!(Resources::ZERO.dominant_share(&total), 0.0);
        let gpu_task = Resources {
            gpus: 1,
            ..Resources::ZERO
        };
        // the cluster has no GPUs: that dimension is ignored
        assert_eq!(gpu_task.dominant_share(&total), 0.0);
    }

    #[test]
    fn quantities_parse_with_clear_errors() {
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus(".25"), Ok(250));
        assert!(parse_cpus("1.2345").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("").is_err());
        assert_eq!(parse_mib("512"), Ok(512));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert_eq!(parse_mib("1TiB"), Ok(1 << 20));
        let e = parse_mib("2 parsecs").unwrap_err();
        assert!(e.to_string().contains("512M"), "{e}");
        assert_eq!(format_cpus(2500), "2.5");
        assert_eq!(format_mib(65536), "64 GiB");
        assert_eq!(format_mib(31 * 1024 + 512), "31.5 GiB");
    }

    #[test]
    fn port_sets_take_and_merge() {
        let mut set = PortSet::parse("31000-31002, 8080").unwrap();
        assert_eq!(set.count(), 4);
        assert_eq!(set.take(2), Some(vec![8080, 31000]));
        assert_eq!(set.take(5), None);
        set.insert(31000);
        set.insert(8080);
        assert_eq!(set, PortSet::parse("8080,31000-31002").unwrap());
        assert!(set.take_specific(31001));
        assert!(!set.take_specific(31001));
        assert_eq!(set, PortSet::parse("8080,31000,31002").unwrap());
        assert!(PortSet::parse("9-3").is_err());
        assert!(PortSet::parse("70000").is_err());
    }
}
