//! The process state machine, as one pure function per process kind.
//!
//! Every operation first asks [`check`] whether it is allowed in the current state and which
//! state it leads to; only then does the caller run runc, and only when runc succeeded does it
//! commit the new state ("check -> runc -> commit"). Refusals carry the same messages and
//! classes as the Go shims (`pkg/process/*_state.go`), because containerd and its users see them.

use super::error::Error;

/// States of a process. Init uses all of them; an exec never is `Paused` or
/// `CreatedCheckpoint` (an exec *reports* paused while its container is, but that is a view,
/// not its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    Created,
    /// Created from a checkpoint: runc has not run yet; Start restores.
    CreatedCheckpoint,
    Running,
    Paused,
    Stopped,
    Deleted,
}

/// Operations that depend on state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Delete,
    Pause,
    Resume,
    Update,
    Checkpoint,
    Exec,
    Kill,
    /// Kill with `all`: also allowed on a stopped init, to finish processes left in its
    /// cgroup (runc permits `kill --all` on a stopped container).
    KillAll,
    Resize,
    /// The process was reaped.
    Exited,
}

/// What an allowed operation does to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Run the operation; on success the process is in this state.
    To(State),
    /// Run the operation; the state does not change.
    Stay,
    /// Nothing to do (e.g. a second exit notification for a stopped process).
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Exec,
}

pub const ALL_STATES: [State; 6] = [
    State::Created,
    State::CreatedCheckpoint,
    State::Running,
    State::Paused,
    State::Stopped,
    State::Deleted,
];

pub const ALL_OPS: [Op; 11] = [
    Op::Start,
    Op::Delete,
    Op::Pause,
    Op::Resume,
    Op::Update,
    Op::Checkpoint,
    Op::Exec,
    Op::Kill,
    Op::KillAll,
    Op::Resize,
    Op::Exited,
];

/// May `op` run on a process of `kind` in state `s`, and where does it lead?
pub fn check(kind: Kind, s: State, op: Op) -> Result<Transition, Error> {
    match kind {
        Kind::Init => check_init(s, op),
        Kind::Exec => check_exec(s, op),
    }
}

fn refuse(msg: &str) -> Result<Transition, Error> {
    Err(Error::unknown(msg))
}

fn check_init(s: State, op: Op) -> Result<Transition, Error> {
    use Op::*;
    use State::*;
    use Transition::*;
    let op = match (s, op) {
        (Stopped, KillAll) => return Ok(Stay),
        (_, KillAll) => Kill,
        _ => op,
    };
    match (s, op) {
        (Created, Start) => Ok(To(Running)),
        (Created, Delete) => Ok(To(Deleted)),
        (Created, Pause) => refuse("cannot pause task in created state"),
        (Created, Resume) => refuse("cannot resume task in created state"),
        (Created, Update) => Ok(Stay),
        (Created, Checkpoint) => refuse("cannot checkpoint a task in created state"),
        (Created, Exec) => Ok(Stay),
        (Created, Kill) => Ok(Stay),
        (Created, Resize) => Ok(Stay),
        (Created, Exited) => Ok(To(Stopped)),

        (CreatedCheckpoint, Start) => Ok(To(Running)),
        (CreatedCheckpoint, Delete) => Ok(To(Deleted)),
        (CreatedCheckpoint, Pause) => refuse("cannot pause task in created state"),
        (CreatedCheckpoint, Resume) => refuse("cannot resume task in created state"),
        (CreatedCheckpoint, Update) => Ok(Stay),
        (CreatedCheckpoint, Checkpoint) => refuse("cannot checkpoint a task in created state"),
        (CreatedCheckpoint, Exec) => refuse("cannot exec in a created state"),
        (CreatedCheckpoint, Kill) => Ok(Stay),
        (CreatedCheckpoint, Resize) => Ok(Stay),
        (CreatedCheckpoint, Exited) => Ok(To(Stopped)),

        (Running, Start) => refuse("cannot start a running process"),
        (Running, Delete) => refuse("cannot delete a running process"),
        (Running, Pause) => Ok(To(Paused)),
        (Running, Resume) => refuse("cannot resume a running process"),
        (Running, Update) => Ok(Stay),
        (Running, Checkpoint) => Ok(Stay),
        (Running, Exec) => Ok(Stay),
        (Running, Kill) => Ok(Stay),
        (Running, Resize) => Ok(Stay),
        (Running, Exited) => Ok(To(Stopped)),

        (Paused, Start) => refuse("cannot start a paused process"),
        (Paused, Delete) => refuse("cannot delete a paused process"),
        (Paused, Pause) => refuse("cannot pause a paused container"),
        (Paused, Resume) => Ok(To(Running)),
        (Paused, Update) => Ok(Stay),
        (Paused, Checkpoint) => Ok(Stay),
        (Paused, Exec) => refuse("cannot exec in a paused state"),
        (Paused, Kill) => Ok(Stay),
        (Paused, Resize) => Ok(Stay),
        (Paused, Exited) => Ok(To(Stopped)),

        (Stopped, Start) => refuse("cannot start a stopped process"),
        (Stopped, Delete) => Ok(To(Deleted)),
        (Stopped, Pause) => refuse("cannot pause a stopped container"),
        (Stopped, Resume) => refuse("cannot resume a stopped container"),
        (Stopped, Update) => refuse("cannot update a stopped container"),
        (Stopped, Checkpoint) => refuse("cannot checkpoint a stopped container"),
        (Stopped, Exec) => refuse("cannot exec in a stopped state"),
        (Stopped, Kill) => Err(Error::not_found("process already finished")),
        (Stopped, Resize) => Ok(Stay),
        (Stopped, Exited) => Ok(Ignore),

        (Deleted, Start) => refuse("cannot start a deleted process"),
        (Deleted, Delete) => Err(Error::not_found("cannot delete a deleted process")),
        (Deleted, Pause) => refuse("cannot pause a deleted process"),
        (Deleted, Resume) => refuse("cannot resume a deleted process"),
        (Deleted, Update) => refuse("cannot update a deleted process"),
        (Deleted, Checkpoint) => refuse("cannot checkpoint a deleted process"),
        (Deleted, Exec) => refuse("cannot exec in a deleted state"),
        (Deleted, Kill) => Err(Error::not_found("cannot kill a deleted process")),
        (Deleted, Resize) => refuse("cannot resize a deleted process"),
        (Deleted, Exited) => Ok(Ignore),
        (_, KillAll) => Ok(Stay),
    }
}

fn check_exec(s: State, op: Op) -> Result<Transition, Error> {
    use Op::*;
    use State::*;
    use Transition::*;
    // Container-level operations never address an exec; reaching here is a caller bug, refused
    // with a message rather than a panic.
    if matches!(op, Pause | Resume | Update | Checkpoint | Exec) {
        return refuse("operation applies to the container, not to an exec process");
    }
    let op = if op == KillAll { Kill } else { op };
    match (s, op) {
        (Created | CreatedCheckpoint, Start) => Ok(To(Running)),
        (Created | CreatedCheckpoint, Delete) => Ok(To(Deleted)),
        (Created | CreatedCheckpoint, Kill) => {
            Err(Error::failed_precondition("process not created"))
        }
        (Created | CreatedCheckpoint, Resize) => Ok(Stay),
        (Created | CreatedCheckpoint, Exited) => Ok(To(Stopped)),

        (Running | Paused, Start) => refuse("cannot start a running process"),
        (Running | Paused, Delete) => refuse("cannot delete a running process"),
        (Running | Paused, Kill) => Ok(Stay),
        (Running | Paused, Resize) => Ok(Stay),
        (Running | Paused, Exited) => Ok(To(Stopped)),

        (Stopped, Start) => refuse("cannot start a stopped process"),
        (Stopped, Delete) => Ok(To(Deleted)),
        (Stopped, Kill) => Err(Error::not_found("process already finished")),
        (Stopped, Resize) => refuse("cannot resize a stopped container"),
        (Stopped, Exited) => Ok(Ignore),

        (Deleted, Start) => refuse("cannot start a deleted process"),
        (Deleted, Delete) => Err(Error::not_found("cannot delete a deleted process")),
        (Deleted, Kill) => Err(Error::not_found("cannot kill a deleted process")),
        (Deleted, Resize) => refuse("cannot resize a deleted process"),
        (Deleted, Exited) => Ok(Ignore),

        (_, Pause | Resume | Update | Checkpoint | Exec | KillAll) => {
            refuse("operation applies to the container, not to an exec process")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::Kind as EK;

    /// The whole table, written out as the Go shims behave (`✓` = allowed, target state).
    #[test]
    fn init_table_matches_go() {
        use State::*;
        use Transition::*;
        let allowed = |s, op| check(Kind::Init, s, op);
        assert_eq!(allowed(Created, Op::Start).unwrap(), To(Running));
        assert_eq!(allowed(CreatedCheckpoint, Op::Start).unwrap(), To(Running));
        assert_eq!(allowed(Running, Op::Pause).unwrap(), To(Paused));
        assert_eq!(allowed(Paused, Op::Resume).unwrap(), To(Running));
        assert_eq!(allowed(Stopped, Op::Delete).unwrap(), To(Deleted));
        assert_eq!(allowed(Created, Op::Delete).unwrap(), To(Deleted));
        assert_eq!(allowed(Paused, Op::Exited).unwrap(), To(Stopped));
        assert_eq!(allowed(Stopped, Op::Exited).unwrap(), Ignore);
        let e = allowed(Running, Op::Delete).unwrap_err();
        assert_eq!(
            (e.kind(), e.message()),
            (EK::Unknown, "cannot delete a running process")
        );
        let e = allowed(Stopped, Op::Kill).unwrap_err();
        assert_eq!(e.to_string(), "process already finished: not found");
        let e = allowed(Deleted, Op::Kill).unwrap_err();
        assert_eq!(e.to_string(), "cannot kill a deleted process: not found");
        let e = allowed(Deleted, Op::Delete).unwrap_err();
        assert_eq!(e.kind(), EK::NotFound);
        assert!(allowed(CreatedCheckpoint, Op::Exec).is_err());
        assert!(allowed(Paused, Op::Exec).is_err());
        assert!(allowed(Stopped, Op::Update).is_err());
        assert_eq!(allowed(Stopped, Op::KillAll).unwrap(), Stay);
        assert_eq!(allowed(Running, Op::KillAll).unwrap(), Stay);
        assert!(allowed(Deleted, Op::KillAll).is_err());
    }

    #[test]
    fn exec_table_matches_go() {
        use State::*;
        use Transition::*;
        let allowed = |s, op| check(Kind::Exec, s, op);
        assert_eq!(allowed(Created, Op::Start).unwrap(), To(Running));
        assert_eq!(allowed(Created, Op::Delete).unwrap(), To(Deleted));
        assert_eq!(allowed(Running, Op::Exited).unwrap(), To(Stopped));
        assert_eq!(allowed(Stopped, Op::Delete).unwrap(), To(Deleted));
        let e = allowed(Created, Op::Kill).unwrap_err();
        assert_eq!(e.to_string(), "process not created: failed precondition");
        let e = allowed(Stopped, Op::Kill).unwrap_err();
        assert_eq!(e.kind(), EK::NotFound);
        let e = allowed(Running, Op::Delete).unwrap_err();
        assert_eq!(e.message(), "cannot delete a running process");
        assert!(allowed(Stopped, Op::Resize).is_err());
    }

    /// Every (state, op) pair has an answer, no pair panics, and the invariants that the rest of
    /// the core relies on hold across the whole table.
    #[test]
    fn every_pair_is_defined_and_consistent() {
        for kind in [Kind::Init, Kind::Exec] {
            for s in ALL_STATES {
                for op in ALL_OPS {
                    let r = check(kind, s, op);
                    // An exit is always accepted: exits are never refused or dropped.
                    if op == Op::Exited {
                        assert!(r.is_ok(), "{kind:?} {s:?} exit refused");
                    }
                    // Nothing leaves Deleted, and nothing but Delete enters it.
                    if let Ok(Transition::To(t)) = r {
                        assert_ne!(s, State::Deleted, "{kind:?} left Deleted via {op:?}");
                        if t == State::Deleted {
                            assert_eq!(op, Op::Delete);
                        }
                        if t == State::Stopped {
                            assert_eq!(op, Op::Exited, "only an exit stops a process");
                        }
                    }
                    // A running process can never be deleted.
                    if matches!(s, State::Running | State::Paused) && op == Op::Delete {
                        assert!(r.is_err());
                    }
                }
            }
        }
    }
}
