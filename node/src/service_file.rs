//! Service spec files (TOML or JSON) read into the protocol's
//! [`ServiceSpec`]: a file names things as people write them (`cpus = 0.5`,
//! `mem = "256M"`, `interval = "2s"`, `factor = 1.15`); unknown keys and
//! wrong types are errors with the file's line and column, values out of
//! range errors that name the field ([`ServiceSpec::validate`]).
//!
//! The keys (docs/SERVICES.md): `name`, `instances`, `cmd` (a shell line)
//! or `argv` (a program and its arguments), `cpus`, `mem`, `disk`, `gpus`,
//! `ports`, `constraints` (as `agora run --constraint`), `env` (a table),
//! `kill_grace`, and the tables `[health]` (`http` = PATH, `tcp` = true or
//! `cmd` = LINE; `port`, `grace`, `interval`, `timeout`, `failures`),
//! `[backoff]` (`initial`, `factor`, `max`) and `[upgrade]`
//! (`min_healthy`, `max_over`, fractions 0 to 1).

// A number or a string (`cpus = 0.5` or `cpus = "0.5"`, `mem = 64` or
// `mem = "64M"`), as the HTTP API's task specs take them.
use crate::http::spec::Quantity;
use agora_protocol::constraint::Constraint;
use agora_protocol::resources::{Resources, parse_cpus, parse_mib};
use agora_protocol::service::{Backoff, HealthCheck, Probe, ServiceSpec, UpgradeStrategy};
use agora_protocol::task::Command;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default = "one")]
    instances: u32,
    cmd: Option<String>,
    argv: Option<Vec<String>>,
    cpus: Option<Quantity>,
    mem: Option<Quantity>,
    disk: Option<Quantity>,
    gpus: Option<u32>,
    #[serde(default)]
    ports: u16,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    kill_grace: Option<String>,
    health: Option<HealthFile>,
    backoff: Option<BackoffFile>,
    upgrade: Option<UpgradeFile>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    http: Option<String>,
    tcp: Option<bool>,
    cmd: Option<String>,
    #[serde(default)]
    port: u16,
    grace: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffFile {
    initial: Option<String>,
    factor: Option<f64>,
    max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeFile {
    min_healthy: Option<f64>,
    max_over: Option<f64>,
}

/// A duration as a file writes it: a number with `ms`, `s`, `m` or `h`
/// (`500ms`, `2s`, `1h`), in milliseconds.
fn millis(field: &str, text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => {
            return Err(format!(
                "{field}: {text:?} is not a duration; write a number with ms, s, m or h (500ms, 2s, 1h)"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{field}: {text:?} is not a duration; write e.g. 500ms, 2s, 1h"))?;
    let ms = n * scale;
    if !(0.0..=f64::from(u32::MAX)).contains(&ms) {
        return Err(format!("{field}: {text:?} is too long"));
    }
    Ok(ms.round() as u32)
}

fn thousandths(field: &str, v: f64, max: f64) -> Result<u32, String> {
    if !v.is_finite() || !(0.0..=max).contains(&v) {
        return Err(format!("{field}: {v} must be between 0 and {max}"));
    }
    Ok((v * 1000.0).round() as u32)
}

fn shell_or_argv(
    field: &str,
    cmd: Option<String>,
    argv: Option<Vec<String>>,
) -> Result<Command, String> {
    match (cmd, argv) {
        (Some(c), None) => Ok(Command::Shell(c)),
        (None, Some(a)) => Ok(Command::Argv(a)),
        (Some(_), Some(_)) => Err(format!(
            "{field}: give `cmd` (a shell line) or `argv` (a program and its arguments), not both"
        )),
        (None, None) => Err(format!(
            "{field}: missing; give `cmd` (a shell line) or `argv` (a program and its arguments)"
        )),
    }
}

impl File {
    fn into_spec(self) -> Result<ServiceSpec, String> {
        let command = shell_or_argv("cmd", self.cmd, self.argv)?;
        let quantity =
            |field: &str,
             q: &Option<Quantity>,
             parse: fn(&str) -> Result<u64, agora_protocol::resources::QuantityError>|
             -> Result<u64, String> {
                match q {
                    None => Ok(0),
                    Some(q) => parse(&q.text()).map_err(|e| format!("{field}: {e}")),
                }
            };
        let resources = Resources {
            cpu_millis: quantity("cpus", &self.cpus, parse_cpus)?,
            mem_mib: quantity("mem", &self.mem, parse_mib)?,
            disk_mib: quantity("disk", &self.disk, parse_mib)?,
            gpus: self.gpus.unwrap_or(0),
            ports: 0,
        };
        let mut spec = ServiceSpec::new(self.name, command, resources);
        spec.instances = self.instances;
        spec.ports = self.ports;
        spec.env = self.env;
        spec.constraints = self
            .constraints
            .iter()
            .map(|c| {
                c.parse::<Constraint>()
                    .map_err(|e| format!("constraints: {c:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        if let Some(g) = self.kill_grace {
            spec.kill_grace_ms = millis("kill_grace", &g)?;
        }
        if let Some(h) = self.health {
            let probe = match (h.http, h.tcp.unwrap_or(false), h.cmd) {
                (Some(path), false, None) => Probe::Http { port: h.port, path },
                (None, true, None) => Probe::Tcp { port: h.port },
                (None, false, Some(c)) => Probe::Cmd(Command::Shell(c)),
                _ => {
                    return Err(
                        "health: give exactly one of http = \"/PATH\", tcp = true or cmd = \"LINE\""
                            .into(),
                    );
                }
            };
            let d = HealthCheck::default();
            let or = |field: &str, v: Option<String>, default: u32| -> Result<u32, String> {
                v.map_or(Ok(default), |t| millis(field, &t))
            };
            spec.health = Some(HealthCheck {
                probe,
                grace_ms: or("health.grace", h.grace, d.grace_ms)?,
                interval_ms: or("health.interval", h.interval, d.interval_ms)?,
                timeout_ms: or("health.timeout", h.timeout, d.timeout_ms)?,
                failures: h.failures.unwrap_or(d.failures),
            });
        }
        if let Some(b) = self.backoff {
            let d = Backoff::default();
            spec.backoff = Backoff {
                initial_ms: b
                    .initial
                    .map_or(Ok(d.initial_ms), |t| millis("backoff.initial", &t))?,
                factor_milli: b.factor.map_or(Ok(d.factor_milli), |f| {
                    thousandths("backoff.factor", f, 10.0)
                })?,
                max_ms: b.max.map_or(Ok(d.max_ms), |t| millis("backoff.max", &t))?,
            };
        }
        if let Some(u) = self.upgrade {
            let d = UpgradeStrategy::default();
            spec.upgrade = UpgradeStrategy {
                min_healthy_milli: u.min_healthy.map_or(Ok(d.min_healthy_milli), |f| {
                    thousandths("upgrade.min_healthy", f, 1.0)
                })?,
                max_over_milli: u.max_over.map_or(Ok(d.max_over_milli), |f| {
                    thousandths("upgrade.max_over", f, 1.0)
                })?,
            };
        }
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

/// Reads a spec from `text`, TOML or (when `path` ends in `.json` or the
/// text starts with `{`) JSON. Errors name the file, and the line and
/// column for syntax, unknown keys and wrong types.
pub fn parse(path: &Path, text: &str) -> Result<ServiceSpec, String> {
    let shown = path.display();
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let file: File = if json {
        serde_json::from_str(text)
            .map_err(|e| format!("{shown}:{}:{}: {e}", e.line(), e.column()))?
    } else {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            format!("{shown}:{at}{}", e.message())
        })?
    };
    file.into_spec().map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<ServiceSpec, String> {
        parse(Path::new("web.toml"), text)
    }

    #[test]
    fn the_shipped_example_reads_as_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/services/web.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let s = parse(Path::new(path), &text).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.instances, 3);
        assert_eq!(s.resources, Resources::cpu_mem(100, 64));
        assert_eq!(s.ports, 1);
        let h = s.health.unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                port: 0,
                path: "/".into()
            }
        );
        assert_eq!(
            (h.grace_ms, h.interval_ms, h.timeout_ms, h.failures),
            (10_000, 2_000, 1_000, 3)
        );
        assert_eq!(s.backoff, Backoff::default());
        assert_eq!(s.upgrade, UpgradeStrategy::default());
        assert_eq!(s.kill_grace_ms, 5_000);
    }

    #[test]
    fn json_reads_the_same_keys() {
        let s = parse(
            Path::new("api.json"),
            r#"{"name": "api", "argv": ["sleep", "1000"], "cpus": "0.25", "mem": 32, "instances": 2,
                "constraints": ["os==linux"], "upgrade": {"min_healthy": 0.5, "max_over": 0}}"#,
        )
        .unwrap();
        assert_eq!(
            s.command,
            Command::Argv(vec!["sleep".into(), "1000".into()])
        );
        assert_eq!(s.resources, Resources::cpu_mem(250, 32));
        assert_eq!(s.upgrade.min_healthy_milli, 500);
        assert_eq!(s.constraints.len(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_line_or_the_field() {
        let err = toml("name = \"web\"\ncmd = \"x\"\ncpus = 1\nreplicas = 3\n").unwrap_err();
        assert!(
            err.starts_with("web.toml:4:1: unknown field `replicas`"),
            "{err}"
        );
        let err =
            toml("name = \"web\"\ncmd = \"x\"\ncpus = 1\ninstances = \"three\"\n").unwrap_err();
        assert!(err.starts_with("web.toml:4:13:"), "{err}");
        let err = toml("name = \"web\"\ncpus = 1\n").unwrap_err();
        assert!(err.contains("cmd: missing"), "{err}");
        let err = toml(
            "name = \"web\"\ncmd = \"x\"\ncpus = 1\n[health]\ninterval = \"2x\"\ntcp = true\n",
        )
        .unwrap_err();
        assert!(
            err.contains("health.interval: \"2x\" is not a duration"),
            "{err}"
        );
        let err =
            toml("name = \"web\"\ncmd = \"x\"\ncpus = 1\n[health]\ntcp = true\n").unwrap_err();
        assert!(
            err.contains("health.port") && err.contains("raise `ports`"),
            "{err}"
        );
        let err = toml("name = \"web\"\ncmd = \"x\"\ncpus = 1\n[upgrade]\nmin_healthy = 2\n")
            .unwrap_err();
        assert!(err.contains("upgrade.min_healthy"), "{err}");
        let err = toml("name = \"web\"\ncmd = \"x\"\ncpus = \"lots\"\n").unwrap_err();
        assert!(err.contains("cpus:"), "{err}");
        let err =
            toml("name = \"web\"\ncmd = \"x\"\ncpus = 1\nconstraints = [\"os=\"]\n").unwrap_err();
        assert!(err.contains("constraints: \"os=\""), "{err}");
        let err = parse(Path::new("x.json"), "{\"name\": \"web\",\n \"cmd\": 3}").unwrap_err();
        assert!(err.starts_with("x.json:2:"), "{err}");
    }
}
