//! How a task ended, in the words its framework reads: the supervisor's
//! exit record (or its absence) plus whether a kill was asked for becomes
//! the final [`TaskStatus`].

use super::LaunchRequest;
use super::checkpoint::KillState;
use super::fsutil::signal_name;
use super::supervisor::ExitRecord;
use agora_protocol::ids::NodeId;
use agora_protocol::task::{TaskState, TaskStatus};

/// The final status of a task from what its supervisor recorded.
pub(crate) fn final_status(
    node: &NodeId,
    request: &LaunchRequest,
    exit: Option<ExitRecord>,
    kill: Option<&KillState>,
    oom: bool,
    lost_note: Option<String>,
) -> TaskStatus {
    let mut status = TaskStatus::new(
        request.task_id.clone(),
        TaskState::Failed,
        Some(node.clone()),
    );
    match &exit {
        Some(ExitRecord::Exited { code }) => status.exit_code = Some(*code),
        Some(ExitRecord::Signaled { signal }) => status.signal = Some(*signal),
        _ => {}
    }
    if let Some(kill) = kill {
        status.state = TaskState::Killed;
        let how = match &exit {
            Some(ExitRecord::Signaled { signal: 9 }) => {
                format!(" (SIGKILL after a {} ms grace period)", kill.grace_ms)
            }
            Some(ExitRecord::Signaled { signal }) => format!(" (by {})", signal_name(*signal)),
            Some(ExitRecord::Exited { code }) => {
                format!(" (it exited with code {code} after SIGTERM)")
            }
            Some(ExitRecord::CannotStart { .. }) | None => " before it started".to_string(),
        };
        status.reason = Some(format!("killed on request{how}"));
        return status;
    }
    status.reason = Some(match exit {
        Some(ExitRecord::Exited { code: 0 }) => {
            status.state = TaskState::Finished;
            return status;
        }
        Some(ExitRecord::Exited { code }) => format!("exited with code {code}"),
        Some(ExitRecord::Signaled { signal }) => {
            let mut r = format!("killed by signal {signal} ({})", signal_name(signal));
            if oom {
                r.push_str(&format!(
                    ": out of memory (the task's limit is {} MiB)",
                    request.spec.resources.mem_mib
                ));
            }
            r
        }
        Some(ExitRecord::CannotStart { reason }) => reason,
        None => {
            status.state = TaskState::Lost;
            let mut r =
                "the task's supervisor ended without recording how the task ended".to_string();
            if let Some(note) = lost_note {
                r.push_str(&format!(" ({note})"));
            }
            r
        }
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::checkpoint::Checkpoint;
    use agora_protocol::ids::{FrameworkId, TaskId};
    use agora_protocol::resources::Resources;
    use agora_protocol::task::Command;
    use agora_protocol::task::TaskSpec;

    fn req() -> LaunchRequest {
        LaunchRequest {
            task_id: TaskId::new("t").unwrap(),
            framework: FrameworkId::new("fw").unwrap(),
            weight: 1,
            home: NodeId::new("n").unwrap(),
            spec: TaskSpec::new(
                "t",
                Command::Shell("true".into()),
                Resources {
                    mem_mib: 32,
                    ..Resources::default()
                },
            ),
            ports: vec![],
        }
    }

    #[test]
    fn exit_records_become_statuses() {
        let n = NodeId::new("n").unwrap();
        let r = req();
        let s = final_status(
            &n,
            &r,
            Some(ExitRecord::Exited { code: 0 }),
            None,
            false,
            None,
        );
        assert_eq!(
            (s.state, s.exit_code, s.reason),
            (TaskState::Finished, Some(0), None)
        );
        let s = final_status(
            &n,
            &r,
            Some(ExitRecord::Exited { code: 2 }),
            None,
            false,
            None,
        );
        assert_eq!(s.reason.as_deref(), Some("exited with code 2"));
        let s = final_status(
            &n,
            &r,
            Some(ExitRecord::Signaled { signal: 9 }),
            None,
            true,
            None,
        );
        assert_eq!(
            s.reason.as_deref(),
            Some("killed by signal 9 (SIGKILL): out of memory (the task's limit is 32 MiB)")
        );
        let kill = KillState {
            grace_ms: 500,
            deadline_unix_ms: 0,
        };
        let s = final_status(
            &n,
            &r,
            Some(ExitRecord::Exited { code: 0 }),
            Some(&kill),
            false,
            None,
        );
        assert_eq!(s.state, TaskState::Killed);
        let s = final_status(&n, &r, None, None, false, Some("gone".into()));
        assert_eq!(s.state, TaskState::Lost);
        assert!(s.reason.unwrap().ends_with("(gone)"));
        let s = final_status(
            &n,
            &r,
            Some(ExitRecord::CannotStart {
                reason: "cannot start `x`: boom".into(),
            }),
            None,
            false,
            None,
        );
        assert_eq!(
            (s.state, s.reason.as_deref()),
            (TaskState::Failed, Some("cannot start `x`: boom"))
        );
    }

    #[test]
    fn checkpoints_round_trip_through_json() {
        let mut cp = Checkpoint::new(req());
        cp.kill = Some(KillState {
            grace_ms: 1,
            deadline_unix_ms: 2,
        });
        let text = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cp);
    }
}
