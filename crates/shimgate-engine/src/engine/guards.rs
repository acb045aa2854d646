//! Flags that say "an operation is half-way", lowered by a guard's `Drop`: however the
//! operation ends (it returns, its handler panics, or its request task is dropped) the flag
//! does not stay up. A flag left up would refuse every later Create of that id and every live
//! upgrade (`creating`), stash a process's exit forever (`starting`), hold its container's init
//! exit for a minute (the exec gate's `starting`), or refuse upgrades (`pausing`).
//!
//! Each guard's normal path still does its own bookkeeping where it always did; the guard
//! repeats only what is idempotent (or is disarmed first), so it changes nothing when the
//! operation ends normally.
//!
//! [`CreateUndo`] is the one guard whose clean-up must await (a runtime call, closing the IO,
//! unmounting off the serving thread). A `Drop` cannot await, so the failure paths undo
//! explicitly (awaited: the caller's error is answered only once nothing is left), and the
//! `Drop` covers the ends no path sees (a panic, the request's future dropped) by handing the
//! same steps to the runtime as a task of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::container::{lock, Container, Process};
use super::lifecycle;
use super::ops::Inner;
use super::runtime::OciRuntime;
use super::types::ContainerId;
use crate::io::ProcessIo;

/// `id` is in `Inner::creating` while this lives.
pub(super) struct Creating<'a> {
    pub(super) inner: &'a Inner,
    pub(super) id: ContainerId,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        lock(&self.inner.creating).remove(&self.id);
        self.inner.notify_changed();
    }
}

/// A start is running for `p` (its `starting` flag): on drop, the start is finished as far as
/// the exit routing is concerned (flag down, a stashed exit handled). Idempotent, so the normal
/// path's own `finish_start` is unaffected.
pub(super) struct Starting {
    pub(super) inner: Arc<Inner>,
    pub(super) c: Arc<Container>,
    pub(super) p: Arc<Process>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        lifecycle::start_finished(&self.inner, &self.c, &self.p);
    }
}

/// One exec start counted in its container's gate until [`GateStarting::settled`] (the start
/// path moved the count itself) or drop (the start ended some other way).
pub(super) struct GateStarting {
    c: Option<Arc<Container>>,
}

impl GateStarting {
    pub(super) fn new(c: &Arc<Container>) -> GateStarting {
        GateStarting { c: Some(c.clone()) }
    }

    /// The caller moved the gate's `starting` count on itself.
    pub(super) fn settled(mut self) {
        self.c = None;
    }
}

impl Drop for GateStarting {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            let mut g = c.gate();
            g.starting = g.starting.saturating_sub(1);
            drop(g);
            c.gate_changed.notify_waiters();
        }
    }
}

/// Init's `pausing` flag is up while this lives.
pub(super) struct Pausing<'a>(pub(super) &'a Process);

impl Drop for Pausing<'_> {
    fn drop(&mut self) {
        self.0.st().pausing = false;
    }
}

/// What a Create has made so far, undone in one order (the runtime's container, then its IO,
/// then the rootfs mounts) unless [`CreateUndo::commit`] says the container is kept. Each
/// step is recorded right after it succeeded, so the undo touches only what exists.
pub(super) struct CreateUndo {
    id: ContainerId,
    /// The rootfs directory, once something was mounted below it.
    rootfs: Option<PathBuf>,
    io: Option<Arc<ProcessIo>>,
    /// The runtime, once its create was called (a failed create may still have left state,
    /// so the undo deletes with force then too).
    runtime: Option<Arc<dyn OciRuntime>>,
}

impl CreateUndo {
    pub(super) fn new(id: &ContainerId) -> CreateUndo {
        CreateUndo {
            id: id.clone(),
            rootfs: None,
            io: None,
            runtime: None,
        }
    }

    pub(super) fn mounted(&mut self, rootfs: PathBuf) {
        self.rootfs = Some(rootfs);
    }

    pub(super) fn io_opened(&mut self, io: Arc<ProcessIo>) {
        self.io = Some(io);
    }

    pub(super) fn runtime_called(&mut self, runtime: Arc<dyn OciRuntime>) {
        self.runtime = Some(runtime);
    }

    /// The container is kept: nothing to undo.
    pub(super) fn commit(mut self) {
        self.rootfs = None;
        self.io = None;
        self.runtime = None;
    }

    /// Undo now, before the failed Create is answered.
    pub(super) async fn undo(mut self) {
        let steps = self.take();
        steps.run().await;
    }

    fn take(&mut self) -> CreateUndo {
        CreateUndo {
            id: self.id.clone(),
            rootfs: self.rootfs.take(),
            io: self.io.take(),
            runtime: self.runtime.take(),
        }
    }

    fn armed(&self) -> bool {
        self.rootfs.is_some() || self.io.is_some() || self.runtime.is_some()
    }

    async fn run(mut self) {
        if let Some(runtime) = self.runtime.take() {
            if let Err(e) = runtime.delete(self.id.as_str(), true).await {
                tracing::debug!(id = %self.id, error = %e, "runtime delete after failed create");
            }
        }
        if let Some(io) = self.io.take() {
            io.close(Duration::ZERO).await;
        }
        if let Some(dir) = self.rootfs.take() {
            if let Err(e) = super::ops::unmount_rootfs(&dir).await {
                tracing::warn!(id = %self.id, error = %e, "unmount rootfs after failed create");
            }
        }
    }
}

impl Drop for CreateUndo {
    fn drop(&mut self) {
        if !self.armed() {
            return;
        }
        let steps = self.take();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                tracing::warn!(id = %steps.id, "create ended without an answer: undoing it");
                rt.spawn(steps.run());
            }
            // Only a Create outside any runtime could get here (none exists): say what stays.
            Err(_) => tracing::error!(
                id = %steps.id,
                "create ended outside the runtime: its mounts and runtime state may remain"
            ),
        }
    }
}
