//! Tasks: what a framework asks to run, and the states a task moves through.
//!
//! A task is born `Staging` at its framework's home node, becomes `Starting`
//! when a node confirms its lease and launches it, `Running` once the process
//! is up, and ends in exactly one terminal state: `Finished`, `Failed`,
//! `Killed` or `Lost`. States only move forward ([`TaskState::transition`]);
//! an update may skip a state (a fast task can go from `Starting` straight to
//! `Finished`), but nothing leaves a terminal state.

use crate::constraint::Constraint;
use crate::ids::{NodeId, TaskId};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What to execute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A program and its arguments, executed directly.
    Argv(Vec<String>),
    /// A line for `sh -c`.
    Shell(String),
}

/// Scheduling priority: a higher class wins contention first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Priority(pub u8);

/// Largest number of environment variables and constraints per task.
pub const MAX_ENV: usize = 256;
/// Largest number of constraints per task.
pub const MAX_CONSTRAINTS: usize = 32;
/// Largest total size of a task's command, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest single argument or environment entry (`KEY=VALUE`) a task may
/// have, in bytes: Linux's exec refuses a longer string (`MAX_ARG_STRLEN`,
/// 32 pages of 4 KiB including the string's NUL) with E2BIG.
pub const MAX_EXEC_STRING: usize = 128 * 1024 - 1;
/// Largest total of a task's command line and environment as exec counts
/// them (each string with its NUL, plus an 8-byte pointer to it): 512 KiB.
/// Linux refuses more than a quarter of the stack limit (2 MiB under the
/// usual 8 MiB stack) with E2BIG; this cap leaves the rest to the agent's
/// own environment, which tasks inherit, and to the `AGORA_*` variables.
/// A spec over it is refused at submit, not when its node starts it.
pub const MAX_EXEC_BYTES: usize = 512 * 1024;

/// Everything needed to place and run one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// A name shared by the tasks of one job (used by `unique` and `spread`).
    pub name: String,
    /// What to run.
    pub command: Command,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// What the task needs.
    pub resources: Resources,
    /// Where it may run.
    pub constraints: Vec<Constraint>,
    /// Its priority class.
    pub priority: Priority,
    /// Time between TERM and KILL when the task is killed, in milliseconds.
    pub kill_grace_ms: u32,
    /// How long to keep trying to place it before giving up, in milliseconds
    /// (0: the bidder's default).
    pub placement_timeout_ms: u32,
}

/// Why a task spec is refused before any bidding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The command is empty.
    #[error("the task has no command; give a program (and arguments) or a shell line")]
    EmptyCommand,
    /// The command is too large.
    #[error("the command is {len} bytes; the limit is {MAX_COMMAND_BYTES}")]
    CommandTooLarge {
        /// Its size.
        len: usize,
    },
    /// Too many environment variables or constraints.
    #[error("the task has {count} {what}; the limit is {limit}")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The command line and environment are larger than exec accepts.
    #[error(
        "the task's command and environment come to {len} bytes as exec counts them \
         (each string, its NUL and a pointer); the limit is {limit} bytes (exec would \
         fail with E2BIG): pass large data in a file or over the network instead"
    )]
    ExecTooLarge {
        /// Their size.
        len: usize,
        /// The limit ([`MAX_EXEC_BYTES`]).
        limit: usize,
    },
    /// One argument or environment entry is longer than exec accepts (NUL
    /// bytes and bad names are [`SpecError::NulInCommand`] and
    /// [`SpecError::BadEnv`], checked before).
    #[error("{what}: {problem}")]
    BadExecString {
        /// Which string (`argument 2`, `environment variable BIG`).
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The task asks for nothing at all.
    #[error("the task asks for no resources; give it at least some cpu or memory")]
    NoResources,
    /// The name is empty or too long.
    #[error("task name {name:?} must be 1 to 128 characters")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The program, an argument or the shell line holds a NUL byte, which
    /// no process can be started with.
    #[error("the command has a NUL byte in {arg:?}; a program or argument cannot hold one")]
    NulInCommand {
        /// The argument (or shell line), cut to 64 characters.
        arg: String,
    },
    /// An environment variable that cannot be passed as itself: a NUL makes
    /// exec fail, and a name that is empty or holds `=` would reach the
    /// process as another variable (`A=B` set to `c` is `A` set to `B=c`).
    #[error(
        "environment variable {name:?} cannot be passed to a process: a name must be non-empty \
         without '=' or NUL, and a value without NUL"
    )]
    BadEnv {
        /// The variable's name, cut to 64 characters.
        name: String,
    },
}

impl TaskSpec {
    /// A spec with default priority, grace and timeout.
    pub fn new(name: impl Into<String>, command: Command, resources: Resources) -> Self {
        TaskSpec {
            name: name.into(),
            command,
            env: BTreeMap::new(),
            resources,
            constraints: Vec::new(),
            priority: Priority::default(),
            kill_grace_ms: 5_000,
            placement_timeout_ms: 0,
        }
    }

    /// Checks the limits every node enforces on specs from frameworks and peers.
    ///
    /// # Errors
    /// [`SpecError`] naming the first limit that is broken.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(SpecError::BadName {
                name: self.name.clone(),
            });
        }
        let len = match &self.command {
            Command::Argv(argv) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(SpecError::EmptyCommand);
                }
                argv.iter().map(String::len).sum()
            }
            Command::Shell(line) => {
                if line.trim().is_empty() {
                    return Err(SpecError::EmptyCommand);
                }
                line.len()
            }
        };
        if len > MAX_COMMAND_BYTES {
            return Err(SpecError::CommandTooLarge { len });
        }
        // What execve(2) takes: checked here, at submit, not first on the
        // node that won the task.
        let cut = |s: &str| s.chars().take(64).collect::<String>();
        let nul = match &self.command {
            Command::Argv(argv) => argv.iter().find(|a| a.contains('\0')),
            Command::Shell(line) => Some(line).filter(|l| l.contains('\0')),
        };
        if let Some(arg) = nul {
            return Err(SpecError::NulInCommand { arg: cut(arg) });
        }
        if let Some((name, _)) = self
            .env
            .iter()
            .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return Err(SpecError::BadEnv { name: cut(name) });
        }
        if self.env.len() > MAX_ENV {
            return Err(SpecError::TooMany {
                what: "environment variables",
                count: self.env.len(),
                limit: MAX_ENV,
            });
        }
        self.check_exec_size()?;
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(SpecError::TooMany {
                what: "constraints",
                count: self.constraints.len(),
                limit: MAX_CONSTRAINTS,
            });
        }
        if self.resources.cpu_millis == 0 && self.resources.mem_mib == 0 {
            return Err(SpecError::NoResources);
        }
        Ok(())
    }
}

impl TaskSpec {
    /// Checks the command line and environment against the sizes exec
    /// accepts ([`MAX_EXEC_STRING`], [`MAX_EXEC_BYTES`]). A shell line counts
    /// as `sh -c LINE`.
    fn check_exec_size(&self) -> Result<(), SpecError> {
        const POINTER: usize = 8;
        let too_long = |what: String, len: usize| SpecError::BadExecString {
            what,
            problem: format!(
                "{len} bytes, longer than the {MAX_EXEC_STRING} bytes exec accepts for one string"
            ),
        };
        let mut total = 0usize;
        let args: Vec<&str> = match &self.command {
            Command::Argv(argv) => argv.iter().map(String::as_str).collect(),
            Command::Shell(line) => vec!["sh", "-c", line],
        };
        for (i, arg) in args.iter().enumerate() {
            let what = || match (&self.command, i) {
                (Command::Shell(_), _) => "the shell line".to_string(),
                (_, 0) => "the program".to_string(),
                (_, i) => format!("argument {i}"),
            };
            if arg.len() > MAX_EXEC_STRING {
                return Err(too_long(what(), arg.len()));
            }
            total += arg.len() + 1 + POINTER;
        }
        for (key, value) in &self.env {
            let what = || format!("environment variable {:?}", truncate(key, 64));
            let len = key.len() + 1 + value.len();
            if len > MAX_EXEC_STRING {
                return Err(too_long(what(), len));
            }
            total += len + 1 + POINTER;
        }
        if total > MAX_EXEC_BYTES {
            return Err(SpecError::ExecTooLarge {
                len: total,
                limit: MAX_EXEC_BYTES,
            });
        }
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The life cycle of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted by the home node, not yet placed.
    Staging,
    /// Placed; the node is starting the process.
    Starting,
    /// The process is running.
    Running,
    /// Exited with status 0.
    Finished,
    /// Exited non-zero, was killed by a signal it did not ask for, could not
    /// start, or could not be placed before its deadline.
    Failed,
    /// Killed on request.
    Killed,
    /// Its node died or stopped answering.
    Lost,
}

/// A state change that the life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// Current state.
    pub from: TaskState,
    /// Requested state.
    pub to: TaskState,
}

impl TaskState {
    /// True for finished, failed, killed and lost.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }

    fn rank(self) -> u8 {
        match self {
            TaskState::Staging => 0,
            TaskState::Starting => 1,
            TaskState::Running => 2,
            _ => 3,
        }
    }

    /// True when a task in `self` may move to `next`: forward only, never out
    /// of a terminal state.
    pub fn can_transition_to(self, next: TaskState) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }

    /// Moves to `next`.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the move goes backwards, stays put, or
    /// leaves a terminal state.
    pub fn transition(self, next: TaskState) -> Result<TaskState, IllegalTransition> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                from: self,
                to: next,
            })
        }
    }

    /// The lower-case name used in the CLI and JSON.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "staging",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task's state as reported to its framework.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub task_id: TaskId,
    /// Its new state.
    pub state: TaskState,
    /// The node it was placed on, if any.
    pub node: Option<NodeId>,
    /// Exit code, for a process that exited.
    pub exit_code: Option<i32>,
    /// Signal number, for a process ended by a signal.
    pub signal: Option<i32>,
    /// Why, in words a person can act on (failures, losses, give-ups).
    pub reason: Option<String>,
}

impl TaskStatus {
    /// A status with only the state and node set.
    pub fn new(task_id: TaskId, state: TaskState, node: Option<NodeId>) -> Self {
        TaskStatus {
            task_id,
            state,
            node,
            exit_code: None,
            signal: None,
            reason: None,
        }
    }

    /// The same status with a reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn only_forward_transitions_are_accepted() {
        assert_eq!(Staging.transition(Starting), Ok(Starting));
        assert_eq!(Starting.transition(Finished), Ok(Finished));
        assert_eq!(Staging.transition(Lost), Ok(Lost));
        assert!(Running.transition(Starting).is_err());
        assert!(Running.transition(Running).is_err());
        for t in [Finished, Failed, Killed, Lost] {
            for n in [Staging, Starting, Running, Finished, Failed, Killed, Lost] {
                assert!(t.transition(n).is_err(), "{t} -> {n}");
            }
        }
        assert_eq!(
            Finished.transition(Running).unwrap_err().to_string(),
            "a task cannot go from finished to running"
        );
    }

    #[test]
    fn specs_are_validated() {
        let ok = TaskSpec::new(
            "job",
            Command::Shell("true".into()),
            Resources::cpu_mem(100, 0),
        );
        assert_eq!(ok.validate(), Ok(()));
        let mut empty = ok.clone();
        empty.command = Command::Argv(vec![]);
        assert_eq!(empty.validate(), Err(SpecError::EmptyCommand));
        let mut nothing = ok.clone();
        nothing.resources = Resources::ZERO;
        assert_eq!(nothing.validate(), Err(SpecError::NoResources));
        let mut big = ok.clone();
        big.command = Command::Shell("x".repeat(MAX_COMMAND_BYTES + 1));
        assert!(matches!(
            big.validate(),
            Err(SpecError::CommandTooLarge { .. })
        ));
        // What a process cannot be started with as given (found by the fuzz
        // targets client_frame and peer_message: such specs were accepted
        // and placed; a NUL then failed at exec on the node that won them,
        // and a name with '=' or empty reached the task as another variable).
        for command in [
            Command::Argv(vec!["/bin/echo".into(), "a\0b".into()]),
            Command::Argv(vec!["\0".into()]),
            Command::Shell("echo \0".into()),
        ] {
            let mut bad = ok.clone();
            bad.command = command;
            assert!(
                matches!(bad.validate(), Err(SpecError::NulInCommand { .. })),
                "{:?}",
                bad.command
            );
        }
        for (name, value) in [
            ("", "x"),
            ("A=B", "x"),
            ("\u{1}\0\0\t", "test"),
            ("A", "x\0"),
        ] {
            let mut bad = ok.clone();
            bad.env.insert(name.into(), value.into());
            let e = bad.validate().unwrap_err();
            assert_eq!(e, SpecError::BadEnv { name: name.into() });
            assert!(e.to_string().contains("without '=' or NUL"), "{e}");
        }
        let mut fine = ok;
        fine.env.insert("A".into(), "=b c".into());
        assert_eq!(fine.validate(), Ok(()));
    }

    fn with_env(vars: &[(&str, String)]) -> TaskSpec {
        let mut spec = TaskSpec::new(
            "job",
            Command::Argv(vec!["true".into()]),
            Resources::cpu_mem(100, 0),
        );
        for (k, v) in vars {
            spec.env.insert(k.to_string(), v.clone());
        }
        spec
    }

    #[test]
    fn environments_exec_would_refuse_are_refused_at_submit() {
        // One variable of 900 KB: longer than exec takes for one string.
        let e = with_env(&[("BIG", "x".repeat(900_000))])
            .validate()
            .unwrap_err();
        assert!(matches!(e, SpecError::BadExecString { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("\"BIG\""), "{text}");
        assert!(text.contains("900004 bytes"), "{text}");
        assert!(text.contains(&MAX_EXEC_STRING.to_string()), "{text}");
        // The longest string exec takes passes.
        let key_and_sign = "BIG=".len();
        assert_eq!(
            with_env(&[("BIG", "x".repeat(MAX_EXEC_STRING - key_and_sign))]).validate(),
            Ok(())
        );
        // 900 KB in nine variables: each fits, their total does not.
        let nine: Vec<(&str, String)> = ["A", "B", "C", "D", "E", "F", "G", "H", "I"]
            .into_iter()
            .map(|k| (k, "x".repeat(100_000)))
            .collect();
        let e = with_env(&nine).validate().unwrap_err();
        assert_eq!(
            e,
            SpecError::ExecTooLarge {
                len: "true".len() + 1 + 8 + 9 * (2 + 100_000 + 1 + 8),
                limit: MAX_EXEC_BYTES
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("900112 bytes") && text.contains("524288"),
            "{text}"
        );
        // Five of them fit.
        assert_eq!(with_env(&nine[..5]).validate(), Ok(()));
        // Names exec cannot pass, and NUL bytes.
        for bad in [
            with_env(&[("", "v".into())]),
            with_env(&[("A=B", "v".into())]),
            with_env(&[("A", "v\0w".into())]),
        ] {
            assert!(
                matches!(bad.validate(), Err(SpecError::BadEnv { .. })),
                "{bad:?}"
            );
        }
        let mut nul_arg = with_env(&[]);
        nul_arg.command = Command::Argv(vec!["echo".into(), "a\0b".into()]);
        assert!(matches!(
            nul_arg.validate(),
            Err(SpecError::NulInCommand { .. })
        ));
    }
}
