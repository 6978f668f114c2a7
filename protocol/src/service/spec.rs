//! What a service is: its spec, as every node holds it, and the checks a
//! spec passes before any node accepts it.
//!
//! The spec is the protocol's normalized form (resources in millicores and
//! MiB, fractions in thousandths, durations in milliseconds): the node reads
//! a TOML or JSON file into it and reports errors by the file's field names
//! and lines; [`ServiceSpec::validate`] names the field of anything out of
//! range.

use crate::constraint::Constraint;
use crate::resources::Resources;
use crate::task::{Command, MAX_COMMAND_BYTES, MAX_CONSTRAINTS, MAX_ENV};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most instances of one service.
pub const MAX_INSTANCES: u32 = 1000;
/// Most ports one instance asks for.
pub const MAX_PORTS: u16 = 16;
/// Longest service name.
pub const MAX_NAME: usize = 64;
/// Longest health-check HTTP path.
pub const MAX_PATH: usize = 1024;
/// Longest backoff cap: an hour, Marathon's.
pub const MAX_BACKOFF_MS: u32 = 3_600_000;

/// A long-running service: `instances` copies of one task, kept running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Its name, unique in the cluster: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What each instance runs.
    pub command: Command,
    /// What each instance needs.
    pub resources: Resources,
    /// How many instances to keep running.
    pub instances: u32,
    /// Where instances may run.
    pub constraints: Vec<Constraint>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Ports each instance gets from its node's range (`PORT0`...).
    pub ports: u16,
    /// How an instance is judged healthy (`None`: running is healthy).
    pub health: Option<HealthCheck>,
    /// How restarts of a crashing service are spaced.
    pub backoff: Backoff,
    /// How a new version replaces the old.
    pub upgrade: UpgradeStrategy,
    /// Time between TERM and KILL when an instance is stopped, ms.
    pub kill_grace_ms: u32,
}

/// What a health check probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A command run on the instance's node, in its sandbox and with its
    /// environment: healthy when it exits 0.
    Cmd(Command),
    /// `GET http://127.0.0.1:PORT<port>/<path>`: healthy on a 2xx or 3xx.
    Http {
        /// Which of the instance's ports (`PORT0` is 0).
        port: u16,
        /// The path, starting with `/`.
        path: String,
    },
    /// A TCP connect to `127.0.0.1:PORT<port>`.
    Tcp {
        /// Which of the instance's ports.
        port: u16,
    },
}

/// A health check, run by the instance's own node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is probed.
    pub probe: Probe,
    /// Failures during this long after start do not count, ms.
    pub grace_ms: u32,
    /// Time between probes, ms.
    pub interval_ms: u32,
    /// A probe not answered in this long failed, ms.
    pub timeout_ms: u32,
    /// Consecutive failures after which the instance is unhealthy (and is
    /// replaced).
    pub failures: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            probe: Probe::Tcp { port: 0 },
            grace_ms: 10_000,
            interval_ms: 2_000,
            timeout_ms: 1_000,
            failures: 3,
        }
    }
}

/// Restart spacing: the n-th consecutive failure waits
/// `initial × factor^(n-1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The first wait, ms.
    pub initial_ms: u32,
    /// The growth per failure, in thousandths (1150: ×1.15).
    pub factor_milli: u32,
    /// The longest wait, ms.
    pub max_ms: u32,
}

impl Default for Backoff {
    /// Marathon's: 1 s × 1.15ⁿ, at most an hour.
    fn default() -> Self {
        Backoff {
            initial_ms: 1_000,
            factor_milli: 1_150,
            max_ms: MAX_BACKOFF_MS,
        }
    }
}

impl Backoff {
    /// The wait before the next start after `failures` consecutive failed
    /// instances (0: none).
    pub fn delay_ms(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let factor = f64::from(self.factor_milli) / 1000.0;
        let d = f64::from(self.initial_ms) * factor.powi((failures - 1).min(1000) as i32);
        let cap = f64::from(self.max_ms);
        if d.is_finite() {
            d.min(cap) as u64
        } else {
            self.max_ms.into()
        }
    }
}

/// How a deployment of a new version proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    /// The fraction of `instances`, in thousandths, that must stay healthy
    /// throughout (Marathon's `minimumHealthCapacity`; default 1000: all).
    pub min_healthy_milli: u32,
    /// The fraction of `instances`, in thousandths, that may run on top of
    /// `instances` meanwhile (`maximumOverCapacity`; default 1000).
    pub max_over_milli: u32,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            min_healthy_milli: 1000,
            max_over_milli: 1000,
        }
    }
}

impl UpgradeStrategy {
    /// The fewest healthy instances a deployment keeps (of `instances`).
    pub fn min_healthy(&self, instances: u32) -> u32 {
        (u64::from(instances) * u64::from(self.min_healthy_milli)).div_ceil(1000) as u32
    }

    /// The most instances a deployment runs at once: `instances` plus the
    /// over-capacity, and at least one more when every instance must stay
    /// healthy (else it could not progress).
    pub fn max_total(&self, instances: u32) -> u32 {
        let over = (u64::from(instances) * u64::from(self.max_over_milli) / 1000) as u32;
        let over = if self.min_healthy(instances) >= instances {
            over.max(1)
        } else {
            over
        };
        instances.saturating_add(over)
    }
}

/// Why a spec is refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// The field, as the spec file names it (`health.interval`).
    pub field: &'static str,
    /// What is wrong, and what to give instead.
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError {
        field,
        problem: problem.into(),
    }
}

/// Checks a service name: 1 to [`MAX_NAME`] letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad(
            "name",
            format!("must be 1 to {MAX_NAME} characters, is {}", name.len()),
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad(
            "name",
            format!(
                "{name:?} may hold only letters, digits, '-', '_' and '.', and must start with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn check_command(field: &'static str, c: &Command) -> Result<(), SpecError> {
    let len = match c {
        Command::Argv(a) => {
            if a.is_empty() || a[0].is_empty() {
                return Err(bad(
                    field,
                    "is empty; give a program (and arguments) or a shell line",
                ));
            }
            a.iter().map(String::len).sum()
        }
        Command::Shell(s) => {
            if s.trim().is_empty() {
                return Err(bad(
                    field,
                    "is empty; give a program (and arguments) or a shell line",
                ));
            }
            s.len()
        }
    };
    if len > MAX_COMMAND_BYTES {
        return Err(bad(
            field,
            format!("is {len} bytes; the limit is {MAX_COMMAND_BYTES}"),
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// A spec with the defaults: one instance of `command`, no ports, no
    /// health check, Marathon's backoff, an all-healthy rolling upgrade,
    /// 5 s kill grace.
    pub fn new(name: impl Into<String>, command: Command, resources: Resources) -> Self {
        ServiceSpec {
            name: name.into(),
            command,
            resources,
            instances: 1,
            constraints: Vec::new(),
            env: BTreeMap::new(),
            ports: 0,
            health: None,
            backoff: Backoff::default(),
            upgrade: UpgradeStrategy::default(),
            kill_grace_ms: 5_000,
        }
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name(&self.name)?;
        check_command("command", &self.command)?;
        if self.resources.cpu_millis == 0 && self.resources.mem_mib == 0 {
            return Err(bad(
                "resources",
                "asks for nothing; give cpus and/or mem (e.g. cpus = 0.1, mem = \"64M\")",
            ));
        }
        if self.resources.ports != 0 {
            return Err(bad(
                "resources",
                "ports are asked for with the `ports` field (a count), not as a resource",
            ));
        }
        if self.instances > MAX_INSTANCES {
            return Err(bad(
                "instances",
                format!("is {}; at most {MAX_INSTANCES}", self.instances),
            ));
        }
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(bad(
                "constraints",
                format!("has {}; at most {MAX_CONSTRAINTS}", self.constraints.len()),
            ));
        }
        if self.env.len() > MAX_ENV {
            return Err(bad(
                "env",
                format!("has {} variables; at most {MAX_ENV}", self.env.len()),
            ));
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(bad(
                    "env",
                    format!("{k:?} is not a variable name (no '=' or NUL, not empty)"),
                ));
            }
        }
        if self.ports > MAX_PORTS {
            return Err(bad(
                "ports",
                format!("is {}; at most {MAX_PORTS} per instance", self.ports),
            ));
        }
        if let Some(h) = &self.health {
            if let Probe::Http { port, .. } | Probe::Tcp { port } = &h.probe
                && *port >= self.ports
            {
                return Err(bad(
                    "health.port",
                    format!(
                        "is {port}, but the service has {} port(s) (PORT0..): raise `ports` or probe another",
                        self.ports
                    ),
                ));
            }
            match &h.probe {
                Probe::Cmd(c) => check_command("health.cmd", c)?,
                Probe::Tcp { .. } => {}
                Probe::Http { path, .. } => {
                    if !path.starts_with('/')
                        || path.len() > MAX_PATH
                        || path.chars().any(char::is_control)
                    {
                        return Err(bad(
                            "health.http",
                            format!(
                                "{path:?} is not a path: start it with '/', no control characters, at most {MAX_PATH} bytes"
                            ),
                        ));
                    }
                }
            }
            if h.interval_ms < 100 {
                return Err(bad("health.interval", "must be at least 100 ms"));
            }
            if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                return Err(bad(
                    "health.timeout",
                    format!(
                        "must be more than 0 and at most the interval ({} ms)",
                        h.interval_ms
                    ),
                ));
            }
            if h.failures == 0 || h.failures > 100 {
                return Err(bad("health.failures", "must be 1 to 100"));
            }
        }
        let b = &self.backoff;
        if b.initial_ms == 0 || b.initial_ms > MAX_BACKOFF_MS {
            return Err(bad(
                "backoff.initial",
                format!(
                    "must be more than 0 and at most {} s",
                    MAX_BACKOFF_MS / 1000
                ),
            ));
        }
        if b.factor_milli < 1000 || b.factor_milli > 10_000 {
            return Err(bad("backoff.factor", "must be 1.0 to 10.0"));
        }
        if b.max_ms < b.initial_ms || b.max_ms > MAX_BACKOFF_MS {
            return Err(bad(
                "backoff.max",
                format!(
                    "must be at least backoff.initial and at most {} s",
                    MAX_BACKOFF_MS / 1000
                ),
            ));
        }
        let u = &self.upgrade;
        if u.min_healthy_milli > 1000 {
            return Err(bad("upgrade.min_healthy", "must be 0.0 to 1.0"));
        }
        if u.max_over_milli > 1000 {
            return Err(bad("upgrade.max_over", "must be 0.0 to 1.0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceSpec {
        let mut s = ServiceSpec::new(
            "web",
            Command::Shell("python3 -m http.server $PORT0".into()),
            Resources::cpu_mem(100, 64),
        );
        s.instances = 3;
        s.ports = 1;
        s.health = Some(HealthCheck {
            probe: Probe::Http {
                port: 0,
                path: "/".into(),
            },
            ..HealthCheck::default()
        });
        s
    }

    #[test]
    fn a_good_spec_passes_and_each_bad_field_is_named() {
        assert_eq!(web().validate(), Ok(()));
        let field = |f: fn(&mut ServiceSpec)| {
            let mut s = web();
            f(&mut s);
            s.validate().unwrap_err().field
        };
        assert_eq!(field(|s| s.name = "-x".into()), "name");
        assert_eq!(field(|s| s.name = "a b".into()), "name");
        assert_eq!(field(|s| s.name = "x".repeat(65)), "name");
        assert_eq!(field(|s| s.command = Command::Shell(" ".into())), "command");
        assert_eq!(field(|s| s.command = Command::Argv(vec![])), "command");
        assert_eq!(field(|s| s.resources = Resources::ZERO), "resources");
        assert_eq!(field(|s| s.instances = MAX_INSTANCES + 1), "instances");
        assert_eq!(field(|s| s.ports = 0), "health.port");
        assert_eq!(field(|s| s.ports = MAX_PORTS + 1), "ports");
        assert_eq!(
            field(|s| s.env.insert("A=B".into(), "x".into()).map_or((), drop)),
            "env"
        );
        let health = |f: fn(&mut HealthCheck)| {
            let mut s = web();
            f(s.health.as_mut().unwrap());
            s.validate().unwrap_err().field
        };
        assert_eq!(
            health(|h| h.probe = Probe::Http {
                port: 0,
                path: "x".into()
            }),
            "health.http"
        );
        assert_eq!(health(|h| h.interval_ms = 10), "health.interval");
        assert_eq!(health(|h| h.timeout_ms = 5_000), "health.timeout");
        assert_eq!(health(|h| h.failures = 0), "health.failures");
        assert_eq!(field(|s| s.backoff.factor_milli = 900), "backoff.factor");
        assert_eq!(field(|s| s.backoff.max_ms = 10), "backoff.max");
        assert_eq!(field(|s| s.backoff.initial_ms = 0), "backoff.initial");
        assert_eq!(
            field(|s| s.upgrade.min_healthy_milli = 1001),
            "upgrade.min_healthy"
        );
        assert_eq!(
            field(|s| s.upgrade.max_over_milli = 2000),
            "upgrade.max_over"
        );
        let e = web();
        let mut e2 = e.clone();
        e2.ports = 0;
        assert!(
            e2.validate()
                .unwrap_err()
                .to_string()
                .contains("raise `ports`"),
            "errors say what to do"
        );
    }

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay_ms(0), 0);
        assert_eq!(b.delay_ms(1), 1_000);
        assert_eq!(b.delay_ms(2), 1_150);
        assert_eq!(b.delay_ms(3), 1_322);
        // 1.15^58 > 3,600: capped at an hour, and no overflow far beyond.
        assert_eq!(b.delay_ms(60), 3_600_000);
        assert_eq!(b.delay_ms(u32::MAX), 3_600_000);
    }

    #[test]
    fn upgrade_bounds_follow_the_fractions() {
        let all = UpgradeStrategy::default();
        assert_eq!(all.min_healthy(6), 6);
        assert_eq!(all.max_total(6), 12);
        let half = UpgradeStrategy {
            min_healthy_milli: 500,
            max_over_milli: 0,
        };
        assert_eq!(half.min_healthy(5), 3);
        assert_eq!(half.max_total(5), 5);
        // All must stay healthy and no over-capacity is allowed: one extra
        // is, else nothing could move.
        let stuck = UpgradeStrategy {
            min_healthy_milli: 1000,
            max_over_milli: 0,
        };
        assert_eq!(stuck.max_total(4), 5);
    }
}
