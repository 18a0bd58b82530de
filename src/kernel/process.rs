//! AgentProcess: identity, lineage, lifecycle status with only legal transitions, budgets.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

use super::capability::Pid;
use super::syscall::Budget;

/// Lifecycle status of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Created,
    Runnable,
    Running,
    WaitingEvent,
    WaitingTool,
    WaitingHuman,
    Paused,
    Suspended,
    Exited,
    Failed,
    Killed,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Created,
        Status::Runnable,
        Status::Running,
        Status::WaitingEvent,
        Status::WaitingTool,
        Status::WaitingHuman,
        Status::Paused,
        Status::Suspended,
        Status::Exited,
        Status::Failed,
        Status::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::Runnable => "RUNNABLE",
            Status::Running => "RUNNING",
            Status::WaitingEvent => "WAITING_EVENT",
            Status::WaitingTool => "WAITING_TOOL",
            Status::WaitingHuman => "WAITING_HUMAN",
            Status::Paused => "PAUSED",
            Status::Suspended => "SUSPENDED",
            Status::Exited => "EXITED",
            Status::Failed => "FAILED",
            Status::Killed => "KILLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Exited | Status::Failed | Status::Killed)
    }

    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            Status::WaitingEvent | Status::WaitingTool | Status::WaitingHuman
        )
    }

    /// The legal transitions. Terminal states have none.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        if self.is_terminal() {
            return false;
        }
        if matches!(to, Killed | Failed) {
            return true;
        }
        match self {
            Created => matches!(to, Runnable),
            Runnable => matches!(
                to,
                Running | WaitingEvent | WaitingTool | WaitingHuman | Paused | Suspended | Exited
            ),
            Running => matches!(
                to,
                Runnable | WaitingEvent | WaitingTool | WaitingHuman | Paused | Suspended | Exited
            ),
            WaitingEvent | WaitingTool | WaitingHuman => matches!(
                to,
                Running | Runnable | WaitingEvent | WaitingTool | WaitingHuman | Paused | Exited
            ),
            Paused | Suspended => matches!(
                to,
                Runnable | Running | WaitingEvent | WaitingTool | WaitingHuman
            ),
            Exited | Failed | Killed => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status '{s}'"))
    }
}

/// A process as the kernel holds it in memory (written through to the store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    pub pid: Pid,
    pub parent: Option<Pid>,
    pub image_id: String,
    pub image_version: String,
    pub goal: String,
    pub status: Status,
    /// The status to return to after a pause.
    #[serde(skip)]
    pub resume_to: Option<Status>,
    /// Workspace-relative working directory.
    pub cwd: String,
    pub budget: Budget,
    pub usage: Budget,
    pub exit_payload: Option<Value>,
    pub started_at: i64,
    /// Set by a `cancel` signal: the next syscall fails with `Cancelled`.
    #[serde(skip)]
    pub cancel_requested: bool,
    /// How many times the process was rolled back to a checkpoint. Keyed calls
    /// (`Kernel::syscall_once`) are keyed within a generation, so nothing journaled before
    /// a rollback is replayed after it.
    pub generation: i64,
}

impl Process {
    /// The namespace every process owns.
    pub fn own_namespace(&self) -> String {
        own_namespace(self.pid)
    }
}

pub fn own_namespace(pid: Pid) -> String {
    format!("proc/{pid}")
}

/// Splits a share of `parent`'s remaining budget for a child: the requested amounts, or
/// half of what remains, never more than remains.
pub fn divide_budget(budget: &Budget, usage: &Budget, requested: Option<&Budget>) -> Budget {
    let remaining = |total: u64, used: u64| total.saturating_sub(used);
    let share = |total: u64, used: u64, want: Option<u64>| {
        let left = remaining(total, used);
        want.map_or(left / 2, |w| w.min(left))
    };
    Budget {
        tool_calls: share(
            budget.tool_calls,
            usage.tool_calls,
            requested.map(|r| r.tool_calls),
        ),
        children: share(
            budget.children,
            usage.children,
            requested.map(|r| r.children),
        ),
        syscalls: share(
            budget.syscalls,
            usage.syscalls,
            requested.map(|r| r.syscalls),
        ),
        wall_time_ms: requested.map_or(budget.wall_time_ms, |r| {
            r.wall_time_ms.min(budget.wall_time_ms)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for to in Status::ALL {
            assert!(!Status::Exited.can_become(to));
            assert!(!Status::Killed.can_become(to));
        }
        assert!(Status::Created.can_become(Status::Runnable));
        assert!(!Status::Created.can_become(Status::WaitingHuman));
        assert!(Status::Running.can_become(Status::WaitingHuman));
        assert!(!Status::Paused.can_become(Status::Exited));
    }

    #[test]
    fn budgets_divide() {
        let budget = Budget {
            tool_calls: 100,
            children: 4,
            syscalls: 1000,
            wall_time_ms: 60_000,
        };
        let used = Budget {
            tool_calls: 20,
            children: 1,
            syscalls: 0,
            wall_time_ms: 0,
        };
        let child = divide_budget(&budget, &used, None);
        assert_eq!(child.tool_calls, 40);
        assert_eq!(child.children, 1);
        let asked = Budget {
            tool_calls: 1000,
            ..child
        };
        assert_eq!(divide_budget(&budget, &used, Some(&asked)).tool_calls, 80);
    }
}
