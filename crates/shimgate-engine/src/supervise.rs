//! The shim's critical tasks, and noticing when one ends.
//!
//! A serving shim relies on a few long-lived tasks: the SIGCHLD + `waitpid` loop (reaper), the
//! exit dispatcher (core) and the event delivery task (publisher). If one of them ended (a
//! panic, a bug) the shim would go on answering requests while exits are no longer collected,
//! handled or published: containerd would wait forever for exits that never come. So each
//! holds a [`Lifeline`] for as long as it runs (dropped however it ends: return, panic,
//! abort), and the daemon watches the other end ([`Ended`]): an end it did not ask for makes
//! the shim exit loudly, and containerd's own clean-up of a dead shim (`shim delete`, which
//! reads the recorded exit, kills and deletes the container) takes over.
//!
//! Test builds (`test-faults` feature) can end each on purpose; see [`fault`].

use tokio::sync::watch;

/// Held by a critical task while it runs.
pub struct Lifeline(watch::Sender<bool>);

/// The watching side of a [`Lifeline`].
#[derive(Clone)]
pub struct Ended(watch::Receiver<bool>);

/// A new lifeline and its watcher.
pub fn lifeline() -> (Lifeline, Ended) {
    let (tx, rx) = watch::channel(false);
    (Lifeline(tx), Ended(rx))
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Ended {
    /// Resolves once the task holding the lifeline has ended.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|ended| *ended).await;
    }

    pub fn has_ended(&self) -> bool {
        *self.0.borrow()
    }
}

/// Test-only faults: whether the named fault is asked for in `SHIMGATE_TEST_FAULT`
/// (comma-separated) and armed: when `SHIMGATE_TEST_FAULT_ARM` names a path, only once that
/// path exists (so a test can let the shim start normally and break it later). Only builds
/// with the `test-faults` cargo feature (the tests' second build) read these; in any other
/// build this is `false` and the variables are not even named.
#[cfg(feature = "test-faults")]
pub fn fault(name: &str) -> bool {
    let asked = std::env::var("SHIMGATE_TEST_FAULT")
        .map(|v| v.split(',').any(|f| f.trim() == name))
        .unwrap_or(false);
    asked
        && std::env::var_os("SHIMGATE_TEST_FAULT_ARM")
            .is_none_or(|p| std::path::Path::new(&p).exists())
}

/// See the `test-faults` variant: never set in this build.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn fault(_name: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_drops_its_lifeline() {
        let (line, mut ended) = lifeline();
        let task = tokio::spawn(async move {
            let _line = line;
            tokio::task::yield_now().await;
            panic!("on purpose");
        });
        ended.wait().await;
        assert!(ended.has_ended());
        assert!(task.await.unwrap_err().is_panic());
    }
}
