//! Flags that say "an operation is half-way", lowered by a guard's `Drop`: however the
//! operation ends (it returns, its handler panics, or its request task is dropped) the flag
//! does not stay up. A flag left up would refuse every later Create of that id and every live
//! upgrade (`creating`), stash a process's exit forever (`starting`), hold its container's init
//! exit for a minute (the exec gate's `starting`), or refuse upgrades (`pausing`).
//!
//! Each guard's normal path still does its own bookkeeping where it always did; the guard
//! repeats only what is idempotent (or is disarmed first), so it changes nothing when the
//! operation ends normally.

use std::sync::Arc;

use super::container::{lock, Container, Process};
use super::lifecycle;
use super::ops::Inner;
use super::types::ContainerId;

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
