//! Operations on a running container: exec (registration), kill, pause/resume, checkpoint,
//! update, terminal resize and closing stdin.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- Exec

    pub async fn exec(&self, spec: ExecSpec) -> Result<()> {
        let c = self.container(&spec.id)?;
        // Refuse exec into a paused/stopped/checkpoint container like the Go state table.
        state::check(state::Kind::Init, c.init.st().state, Op::Exec)?;
        // Validate the spec now, so a bad one fails Exec rather than Start.
        process_with_terminal(&spec.process, spec.stdio.terminal)?;
        {
            let mut execs = lock(&c.execs);
            if execs.contains_key(&spec.exec_id) {
                return Err(Error::already_exists(format!("id {}", spec.exec_id)));
            }
            execs.insert(
                spec.exec_id.clone(),
                Arc::new(Process::new(
                    Some(spec.exec_id.clone()),
                    spec.stdio.clone(),
                    Some(spec.process.clone()),
                )),
            );
        }
        self.inner.emit(Event::ExecAdded {
            container_id: spec.id.to_string(),
            exec_id: spec.exec_id.to_string(),
        });
        Ok(())
    }

    // ---------------------------------------------------------------- Kill

    pub async fn kill(
        &self,
        id: &ContainerId,
        which: &ProcessRef,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let c = self.container(id)?;
        let p = self.process(&c, which)?;
        let _op = p.op.lock().await;
        let cur = p.st().state;
        match which {
            ProcessRef::Init => {
                let op = if all { Op::KillAll } else { Op::Kill };
                state::check(state::Kind::Init, cur, op)?;
                c.runtime.kill(c.id.as_str(), signal, all).await
            }
            ProcessRef::Exec(_) => {
                state::check(state::Kind::Exec, cur, Op::Kill)?;
                let pid = p.st().pid;
                if pid == 0 {
                    return Err(Error::failed_precondition("process not created"));
                }
                let sig = nix::sys::signal::Signal::try_from(signal as i32)
                    .map_err(|_| Error::invalid_argument(format!("invalid signal {signal}")))?;
                match p.signal(sig as i32) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Error::not_found("process already finished")),
                    Err(e) => Err(Error::unknown(format!("exec kill error: {e}"))),
                }
            }
        }
    }

    // ---------------------------------------------------------------- Pause / Resume

    pub async fn pause(&self, id: &ContainerId) -> Result<()> {
        let c = self.container(id)?;
        let p = c.init.clone();
        let _op = p.op.lock().await;
        state::check(state::Kind::Init, p.st().state, Op::Pause)?;
        p.st().pausing = true;
        let _pausing = guards::Pausing(&p);
        let r = c.runtime.pause(c.id.as_str()).await;
        {
            let mut st = p.st();
            st.pausing = false;
            if r.is_ok() && st.state == State::Running {
                st.state = State::Paused;
            }
        }
        r?;
        self.inner.emit(Event::Paused {
            container_id: c.id.to_string(),
        });
        Ok(())
    }

    pub async fn resume(&self, id: &ContainerId) -> Result<()> {
        let c = self.container(id)?;
        let p = c.init.clone();
        let _op = p.op.lock().await;
        state::check(state::Kind::Init, p.st().state, Op::Resume)?;
        c.runtime.resume(c.id.as_str()).await?;
        {
            let mut st = p.st();
            if st.state == State::Paused {
                st.state = State::Running;
            }
        }
        self.inner.emit(Event::Resumed {
            container_id: c.id.to_string(),
        });
        Ok(())
    }

    // ---------------------------------------------------------------- Checkpoint / Update

    pub async fn checkpoint(&self, id: &ContainerId, mut spec: CheckpointSpec) -> Result<()> {
        let c = self.container(id)?;
        let p = c.init.clone();
        let _op = p.op.lock().await;
        state::check(state::Kind::Init, p.st().state, Op::Checkpoint)?;
        let temp_work = spec.work_path.is_none();
        let work = spec
            .work_path
            .clone()
            .unwrap_or_else(|| c.work_dir.join("criu-work"));
        spec.work_path = Some(work.clone());
        let r = c.runtime.checkpoint(c.id.as_str(), &c.bundle, &spec).await;
        let r = match r {
            Ok(()) => Ok(()),
            Err(e) => {
                // Keep CRIU's own log where the operator (and containerd's message) can find it.
                let dump = c.bundle.join("criu-dump.log");
                let _ = std::fs::copy(work.join("dump.log"), &dump);
                let first = e.message().lines().next().unwrap_or("").to_string();
                Err(Error::new(
                    e.kind(),
                    format!("{first} path= {}", dump.display()),
                ))
            }
        };
        if temp_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        r
    }

    pub async fn update(&self, id: &ContainerId, resources: &[u8]) -> Result<()> {
        let c = self.container(id)?;
        let p = c.init.clone();
        let _op = p.op.lock().await;
        state::check(state::Kind::Init, p.st().state, Op::Update)?;
        c.runtime.update(c.id.as_str(), resources).await
    }

    // ---------------------------------------------------------------- IO

    pub async fn resize_pty(
        &self,
        id: &ContainerId,
        which: &ProcessRef,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let c = self.container(id)?;
        let p = self.process(&c, which)?;
        state::check(p.kind(), p.st().state, Op::Resize)?;
        p.io()
            .resize(width, height)
            .map_err(|e| Error::from(e).context("resize pty"))
    }

    pub async fn close_io(&self, id: &ContainerId, which: &ProcessRef, stdin: bool) -> Result<()> {
        let c = self.container(id)?;
        let p = self.process(&c, which)?;
        if stdin {
            p.io().close_stdin();
        }
        Ok(())
    }
}
