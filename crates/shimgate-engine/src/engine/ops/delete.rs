//! Delete of an exec or of the container (init), with the tombstones that keep answering
//! for a deleted process.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- Delete

    pub async fn delete(&self, id: &ContainerId, which: &ProcessRef) -> Result<Deleted> {
        let c = match self.container(id) {
            Ok(c) => c,
            // Deleted already (containerd asks again after a restart): same answer, no event.
            Err(e) => return self.tombstone(id, which).map(|t| t.deleted).ok_or(e),
        };
        let p = self.process(&c, which)?;
        let _op = p.op.lock().await;
        let cur = p.st().state;
        state::check(p.kind(), cur, Op::Delete)?;
        let exited = p.st().exit.is_some();
        let r = self.delete_process(&c, &p, which).await;
        if exited && r.is_ok() {
            // The process's exit left before this answer does (see `EXIT_BEFORE_DELETE`).
            if !self.inner.sink.delivered(EXIT_BEFORE_DELETE).await {
                tracing::warn!(id = %c.id, exec_id = p.exec_id.as_ref().map(|e| e.as_str()), "exit event still undelivered; answering delete anyway");
            }
        }
        r
    }

    async fn delete_process(
        &self,
        c: &Arc<Container>,
        p: &Arc<Process>,
        which: &ProcessRef,
    ) -> Result<Deleted> {
        match which {
            ProcessRef::Init => self.delete_init(c, p).await,
            ProcessRef::Exec(e) => {
                p.io().close(CLOSE_WAIT).await;
                let _ = std::fs::remove_file(exec_pid_file(&c.bundle, e));
                lock(&c.execs).remove(e);
                let st = {
                    let mut st = p.st();
                    st.state = State::Deleted;
                    (st.pid, st.exit)
                };
                Ok(Deleted {
                    pid: st.0,
                    exit_status: st.1.map_or(0, |e| e.status),
                    exited_at: st.1.map(|e| e.at),
                })
            }
        }
    }

    async fn delete_init(&self, c: &Arc<Container>, p: &Arc<Process>) -> Result<Deleted> {
        // Output first (bounded), then the runtime state, then the mounts: the Go order.
        p.io().close(CLOSE_WAIT).await;
        let mut err = c
            .runtime
            .delete(c.id.as_str(), false)
            .await
            .err()
            .map(|e| e.context("failed to delete task"));
        if c.rootfs_mounted {
            if let Err(e) = unmount_rootfs(&c.bundle.join("rootfs")).await {
                tracing::warn!(id = %c.id, error = %e, "unmount rootfs");
                if err.is_none() {
                    err = Some(Error::unknown(format!("failed rootfs umount: {e}")));
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let (pid, exit) = {
            let mut st = p.st();
            st.state = State::Deleted;
            (st.pid, st.exit)
        };
        // Execs that never ran have nothing to wait for; finish their IO too.
        let execs: Vec<_> = lock(&c.execs).drain().map(|(_, e)| e).collect();
        for e in execs {
            e.io().close(std::time::Duration::ZERO).await;
        }
        lock(&self.inner.containers).remove(&c.id);
        self.inner.changed.notify_waiters();
        let d = Deleted {
            pid,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at),
        };
        {
            let mut t = lock(&self.inner.tombstones);
            if t.len() >= TOMBSTONES {
                t.pop_front();
            }
            t.push_back(Tombstone {
                id: c.id.clone(),
                bundle: c.bundle.clone(),
                deleted: d,
            });
        }
        self.inner.emit(Event::Delete {
            container_id: c.id.to_string(),
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: d.exited_at,
        });
        tracing::info!(id = %c.id, pid, "container deleted");
        Ok(d)
    }
}
