//! Questions that change nothing: wait, state, pids, stats, connect.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- Queries

    pub(super) fn tombstone(&self, id: &ContainerId, which: &ProcessRef) -> Option<Tombstone> {
        if *which != ProcessRef::Init {
            return None;
        }
        lock(&self.inner.tombstones)
            .iter()
            .rev()
            .find(|t| t.id == *id)
            .cloned()
    }

    pub async fn wait(&self, id: &ContainerId, which: &ProcessRef) -> Result<Exit> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) => {
                return match self.tombstone(id, which) {
                    Some(t) => Ok(Exit {
                        pid: t.deleted.pid,
                        status: t.deleted.exit_status,
                        at: t
                            .deleted
                            .exited_at
                            .unwrap_or_else(std::time::SystemTime::now),
                    }),
                    None => Err(e),
                }
            }
        };
        let p = self.process(&c, which)?;
        drop(c);
        Ok(p.wait().await)
    }

    pub fn state(&self, id: &ContainerId, which: &ProcessRef) -> Result<ProcessState> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) => {
                return match self.tombstone(id, which) {
                    Some(t) => Ok(ProcessState {
                        id: t.id.to_string(),
                        bundle: t.bundle,
                        pid: t.deleted.pid,
                        status: Status::Stopped,
                        stdio: Default::default(),
                        exit: t.deleted.exited_at.map(|at| Exit {
                            pid: t.deleted.pid,
                            status: t.deleted.exit_status,
                            at,
                        }),
                    }),
                    None => Err(e),
                }
            }
        };
        let p = self.process(&c, which)?;
        let (init_state, init_pausing) = {
            let st = c.init.st();
            (st.state, st.pausing)
        };
        let st = p.st();
        let mut status = match st.state {
            State::Created | State::CreatedCheckpoint => Status::Created,
            State::Running => Status::Running,
            State::Paused => Status::Paused,
            State::Stopped | State::Deleted => Status::Stopped,
        };
        if st.pausing {
            status = Status::Pausing;
        }
        if p.exec_id.is_some() && status == Status::Running {
            // An exec is as frozen as its container.
            if init_pausing {
                status = Status::Pausing;
            } else if init_state == State::Paused {
                status = Status::Paused;
            }
        }
        Ok(ProcessState {
            id: p
                .exec_id
                .as_ref()
                .map_or_else(|| c.id.to_string(), |e| e.to_string()),
            bundle: c.bundle.clone(),
            pid: st.pid,
            status,
            stdio: p.stdio.clone(),
            exit: st.exit,
        })
    }

    pub async fn pids(&self, id: &ContainerId) -> Result<Vec<PidInfo>> {
        let c = self.container(id)?;
        let pids = c.runtime.ps(c.id.as_str()).await?;
        let execs: HashMap<u32, String> = lock(&c.execs)
            .iter()
            .filter_map(|(id, p)| {
                let pid = p.st().pid;
                (pid != 0).then(|| (pid, id.to_string()))
            })
            .collect();
        let init_pid = c.init_pid();
        Ok(pids
            .into_iter()
            .map(|pid| PidInfo {
                pid,
                exec_id: execs.get(&pid).cloned(),
                init: pid == init_pid,
            })
            .collect())
    }

    /// `Stats`: the container's cgroup (found from its init pid once, then kept) handed to
    /// `read`, the wire side's statistics reader; its errors map to the API's codes here.
    pub fn stats<T>(
        &self,
        id: &ContainerId,
        read: impl FnOnce(&Cgroup) -> std::result::Result<T, CgroupError>,
    ) -> Result<T> {
        let c = self.container(id)?;
        let cg = lock(&c.cgroup).clone();
        let cg = match cg {
            Some(cg) => cg,
            None => {
                let pid = c.init_pid();
                let cg =
                    Cgroup::for_pid(pid).map_err(|_| Error::not_found("cgroup does not exist"))?;
                let cg = Arc::new(cg);
                *lock(&c.cgroup) = Some(cg.clone());
                cg
            }
        };
        read(&cg).map_err(|e| match e {
            CgroupError::NotFound { .. } => Error::not_found("cgroup does not exist"),
            e => Error::unknown(format!("failed to get stats: {e}")),
        })
    }

    /// `Connect`: (shim pid, init pid or 0). Never fails.
    pub fn connect(&self, id: &ContainerId) -> (u32, u32) {
        let task_pid = self.container(id).map(|c| c.init_pid()).unwrap_or(0);
        (self.inner.shim_pid, task_pid)
    }
}
