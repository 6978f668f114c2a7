//! The body of `POST /api/v1/tasks`: the same task spec as `agora run`, as
//! JSON, turned into validated [`TaskSpec`]s with errors a person can act on.

use agora_protocol::constraint::Constraint;
use agora_protocol::resources::{Resources, parse_cpus, parse_mib};
use agora_protocol::task::{Command, Priority, TaskSpec};
use agora_protocol::wire::MAX_SUBMIT;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A number or a string: `"cpus": 0.5` and `"cpus": "0.5"` are both accepted,
/// and sizes may carry units (`"mem": "2G"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON string.
    Text(String),
}

impl Quantity {
    pub(crate) fn text(&self) -> String {
        match self {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(s) => s.clone(),
        }
    }
}

/// The command: an argv array (run directly) or a string (run with `sh -c`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SpecCommand {
    /// `["echo", "hello"]`.
    Argv(Vec<String>),
    /// `"echo hello; sleep 1"`.
    Shell(String),
}

/// The JSON body of `POST /api/v1/tasks`, field for field `agora run`'s flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    /// How many tasks (default 1, at most `MAX_SUBMIT`).
    #[serde(default)]
    pub count: Option<u32>,
    /// CPUs per task as a decimal (default 0.1).
    #[serde(default)]
    pub cpus: Option<Quantity>,
    /// Memory per task in MiB, or with a unit (default 0).
    #[serde(default)]
    pub mem: Option<Quantity>,
    /// Disk per task in MiB, or with a unit (default 0).
    #[serde(default)]
    pub disk: Option<Quantity>,
    /// GPUs per task (default 0).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Ports per task (default 0).
    #[serde(default)]
    pub ports: Option<u32>,
    /// Constraints as text: `os==linux`, `zone in eu-1,eu-2`, `rack:unique`.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// The job name (default: the program's file name, or "sh" for a shell line).
    #[serde(default)]
    pub name: Option<String>,
    /// What to run.
    pub command: SpecCommand,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Priority class, 0-255 (default 0).
    #[serde(default)]
    pub priority: Option<u8>,
    /// Milliseconds between TERM and KILL (default 5000).
    #[serde(default)]
    pub kill_grace_ms: Option<u32>,
    /// Give up placing after this many seconds (default 0: the node's default).
    #[serde(default)]
    pub placement_timeout: Option<u32>,
}

/// Reads the body of `POST /api/v1/tasks` into validated specs.
///
/// # Errors
/// A message for the client: the body is not JSON of a [`SpecBody`] (with
/// an example of one), or a field is wrong ([`SpecBody::into_specs`]).
pub fn submit_specs(body: &[u8]) -> Result<Vec<TaskSpec>, String> {
    let spec: SpecBody = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not a task spec: {e}; send JSON such as \
             {{\"count\": 2, \"cpus\": 0.5, \"mem\": 128, \"command\": [\"echo\", \"hi\"]}}"
        )
    })?;
    spec.into_specs()
}

impl SpecBody {
    /// Builds `count` validated specs.
    ///
    /// # Errors
    /// A message naming the field that is wrong and how to write it.
    pub fn into_specs(self) -> Result<Vec<TaskSpec>, String> {
        let count = self.count.unwrap_or(1) as usize;
        if count == 0 || count > MAX_SUBMIT {
            return Err(format!(
                "count is {count}; submit between 1 and {MAX_SUBMIT} tasks at once"
            ));
        }
        let cpu_millis = match &self.cpus {
            None => 100,
            Some(q) => parse_cpus(&q.text()).map_err(|e| format!("cpus: {e}"))?,
        };
        let mem_mib = match &self.mem {
            None => 0,
            Some(q) => parse_mib(&q.text()).map_err(|e| format!("mem: {e}"))?,
        };
        let disk_mib = match &self.disk {
            None => 0,
            Some(q) => parse_mib(&q.text()).map_err(|e| format!("disk: {e}"))?,
        };
        let constraints = self
            .constraints
            .iter()
            .map(|c| {
                c.parse::<Constraint>()
                    .map_err(|e| format!("constraints: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "env: {key:?} is not a valid variable name (no '=' or NUL, not empty)"
                ));
            }
        }
        let command = match self.command {
            SpecCommand::Argv(argv) => Command::Argv(argv),
            SpecCommand::Shell(line) => Command::Shell(line),
        };
        let name = match self.name {
            Some(name) => name,
            None => match &command {
                Command::Argv(argv) => argv
                    .first()
                    .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "task".into()),
                Command::Shell(_) => "sh".into(),
            },
        };
        let resources = Resources {
            cpu_millis,
            mem_mib,
            disk_mib,
            gpus: self.gpus.unwrap_or(0),
            ports: self.ports.unwrap_or(0),
        };
        let mut spec = TaskSpec::new(name, command, resources);
        spec.env = self.env;
        spec.constraints = constraints;
        spec.priority = Priority(self.priority.unwrap_or(0));
        if let Some(grace) = self.kill_grace_ms {
            spec.kill_grace_ms = grace;
        }
        spec.placement_timeout_ms = self.placement_timeout.unwrap_or(0).saturating_mul(1000);
        spec.validate().map_err(|e| format!("invalid task: {e}"))?;
        Ok(vec![spec; count])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<Vec<TaskSpec>, String> {
        let b: SpecBody = serde_json::from_str(json).map_err(|e| e.to_string())?;
        b.into_specs()
    }

    #[test]
    fn defaults_follow_agora_run() {
        let specs = body(r#"{"command": ["/bin/echo", "hi"]}"#).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "echo");
        assert_eq!(specs[0].resources, Resources::cpu_mem(100, 0));
        let specs = body(
            r#"{"count": 3, "cpus": "0.5", "mem": "1G", "command": "echo $X",
                "constraints": ["os==linux", "zone in a,b"], "env": {"X": "1"}}"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].name, "sh");
        assert_eq!(specs[0].resources, Resources::cpu_mem(500, 1024));
        assert_eq!(specs[0].constraints.len(), 2);
        assert_eq!(
            body(r#"{"cpus": 1.25, "command": "x"}"#).unwrap()[0]
                .resources
                .cpu_millis,
            1250
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = body(r#"{"cpus": "lots", "command": "x"}"#).unwrap_err();
        assert!(e.starts_with("cpus:"), "{e}");
        let e = body(r#"{"constraints": ["os=linux"], "command": "x"}"#).unwrap_err();
        assert!(e.contains("'=='"), "{e}");
        let e = body(r#"{"command": []}"#).unwrap_err();
        assert!(e.contains("no command"), "{e}");
        let e = body(r#"{"count": 0, "command": "x"}"#).unwrap_err();
        assert!(e.contains("count"), "{e}");
        let e = body(r#"{"cpus": 0, "command": "x"}"#).unwrap_err();
        assert!(e.contains("no resources"), "{e}");
    }
}
