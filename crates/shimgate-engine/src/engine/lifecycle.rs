//! Exit routing and the event-ordering invariants, written down once.
//!
//! Invariants (each enforced here or at the one place named):
//! 1. A process's start event (`Start` / `ExecStarted`) is queued before its `Exit`.
//!    A start marks the process `starting` before asking the runtime; an exit reaped meanwhile
//!    is stashed and handled by the start itself right after it queued the start event
//!    ([`finish_start`]).
//! 2. Exactly one `Exit` per process: the reaper delivers a pid's exit once (a claim fires
//!    once), and the state machine ignores a second `Exited` for a stopped process.
//! 3. Every exec's `Exit` is queued before its container's init `Exit`: the init exit handler
//!    waits until no exec start is in flight and no started exec is unpublished
//!    ([`super::container::ExecGate`]).
//! 4. No exec starts after init exited: the gate refuses new starts once `init_exited` is set
//!    (FAILED_PRECONDITION, as the Go shims since 1.6.36/1.7.22/2.0).
//! 5. An `Exit` is queued only after the process's output was drained (bounded by
//!    `io::DRAIN_LIMIT` when the consumer stalls), so a reader that stops at the exit event has
//!    every byte.
//! 6. A container's `Delete` event is its last: Delete requires init stopped (or never
//!    started), i.e. after invariant 3's init exit.
//! 7. An OOM kill's event is queued before the exit it caused: the exit path reads the
//!    cgroup's OOM-kill counter and reports unreported kills before queueing the exit; the
//!    watcher and the exit path share the last reading, so each kill is reported once
//!    (`Inner::report_ooms`).
//! 8. A process's `Exit` has left (delivered to containerd) before its Delete is answered, so
//!    nothing containerd does after the Delete (the legacy runtime's own `/tasks/delete`, a
//!    client's next step) can come before it (`Engine::delete`, bounded). The exit is queued in
//!    the same poll that makes the process stopped (the daemons run on one thread), so a
//!    Delete that sees it stopped always finds the exit queued.
//!
//! All events leave through the one `EventSink` queue, so "queued before" means "delivered
//! before".

use std::sync::Arc;
use std::time::Duration;

use super::container::{lock, Container, Process};
use super::event::Event;
use super::ops::Inner;
use super::state::{self, Op, State, Transition};
use super::types::Exit;
use crate::reaper::RawExit;

/// How long an init exit waits for its execs' exits before going out anyway (logged). The
/// kernel kills a pid namespace's processes when its init dies, and we kill them ourselves
/// otherwise, so this only bounds a misbehaving runtime.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(60);

/// One exit for the dispatcher: which process of which container.
pub struct ExitNote {
    pub container: Arc<Container>,
    pub process: Arc<Process>,
    pub exit: RawExit,
}

/// Entry point from the exit dispatcher.
pub async fn on_exit(inner: Arc<Inner>, note: ExitNote) {
    let ExitNote {
        container,
        process,
        exit,
    } = note;
    {
        let mut st = process.st();
        if st.starting {
            st.stashed_exit = Some(exit);
            return;
        }
    }
    handle_exit(&inner, &container, &process, exit).await;
}

/// Called by a start once its start event is queued (or once it failed).
pub async fn finish_start(inner: &Arc<Inner>, c: &Arc<Container>, p: &Arc<Process>) {
    start_finished(inner, c, p);
}

/// [`finish_start`] without the `async`, for a guard's `Drop` (a start that panicked or was
/// dropped must not stash its process's exit forever). Idempotent.
pub fn start_finished(inner: &Arc<Inner>, c: &Arc<Container>, p: &Arc<Process>) {
    let stashed = {
        let mut st = p.st();
        st.starting = false;
        st.stashed_exit.take()
    };
    if let Some(exit) = stashed {
        let (inner, c, p) = (inner.clone(), c.clone(), p.clone());
        // Handled in its own task: the init path may wait for execs, and the start RPC must
        // not wait for that. (No runtime only while the shim itself is being torn down.)
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle_exit(&inner, &c, &p, exit).await });
        }
    }
}

async fn handle_exit(inner: &Arc<Inner>, c: &Arc<Container>, p: &Arc<Process>, raw: RawExit) {
    let exit = Exit {
        pid: raw.pid as u32,
        status: raw.status,
        at: raw.at,
    };
    let is_init = p.exec_id.is_none();
    tracing::debug!(id = %c.id, exec_id = p.exec_id.as_ref().map(|e| e.as_str()), pid = exit.pid, status = exit.status, "process exited");

    if is_init {
        {
            let mut g = c.gate();
            g.init_exited = true;
        }
        c.gate_changed.notify_waiters();
        let was_paused = p.st().state == State::Paused;
        if was_paused {
            // Frozen processes cannot die; thaw them so the kill below (or the kernel's pid
            // namespace teardown) can finish them.
            if let Err(e) = c.runtime.resume(c.id.as_str()).await {
                tracing::debug!(id = %c.id, error = %e, "resume after init exit");
            }
        }
        if !c.own_pidns {
            if let Err(e) = c
                .runtime
                .kill(c.id.as_str(), libc::SIGKILL as u32, true)
                .await
            {
                tracing::debug!(id = %c.id, error = %e, "kill --all after init exit");
            }
        }
    }

    p.io().drain(crate::io::DRAIN_LIMIT).await;

    if is_init {
        wait_for_exec_exits(c).await;
    }
    // Invariant 7: an OOM kill that caused this exit is reported before it.
    inner.report_ooms(c, false);

    let publish = {
        let mut st = p.st();
        match state::check(p.kind(), st.state, Op::Exited) {
            Ok(Transition::To(s)) => {
                st.state = s;
                st.exit = Some(exit);
                true
            }
            // Deleted or already stopped: nothing to publish (invariant 2).
            _ => false,
        }
    };
    if publish && is_init {
        // Before anyone hears of it: if the shim dies now, `delete` still knows the truth.
        if let Err(e) = super::exitfile::write(&c.bundle, &exit) {
            tracing::warn!(id = %c.id, error = %e, "cannot record the exit in the bundle");
        }
    }
    p.publish_exit_to_waiters(exit);
    if publish {
        inner.emit(Event::Exit {
            container_id: c.id.to_string(),
            id: p
                .exec_id
                .as_ref()
                .map_or_else(|| c.id.to_string(), |e| e.to_string()),
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit.at,
        });
    }
    if !is_init {
        if p.take_gate_count() {
            let mut g = c.gate();
            g.running = g.running.saturating_sub(1);
        }
        c.gate_changed.notify_waiters();
    }
}

async fn wait_for_exec_exits(c: &Arc<Container>) {
    let wait = async {
        let mut killed_stragglers = false;
        loop {
            let notified = c.gate_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let g = c.gate();
                if g.starting == 0 && g.running == 0 {
                    return;
                }
                if g.starting == 0 && !killed_stragglers && !c.own_pidns {
                    // Without a pid namespace, an exec that started just before init died
                    // escaped `kill --all`; finish it by pid (never a reaped one).
                    killed_stragglers = true;
                    let execs: Vec<_> = lock(&c.execs).values().cloned().collect();
                    for e in execs {
                        if e.st().pid != 0 {
                            let _ = e.signal(libc::SIGKILL);
                        }
                    }
                }
            }
            notified.await;
        }
    };
    if tokio::time::timeout(EXEC_EXIT_WAIT, wait).await.is_err() {
        tracing::error!(id = %c.id, "exec exits still outstanding {}s after init exited; publishing init exit first", EXEC_EXIT_WAIT.as_secs());
    }
}
