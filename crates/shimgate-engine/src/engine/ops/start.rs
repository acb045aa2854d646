//! Start of the init process (or its restore from a checkpoint) and of an exec.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- Start

    pub async fn start(&self, id: &ContainerId, which: &ProcessRef) -> Result<u32> {
        let c = self.container(id)?;
        let p = self.process(&c, which)?;
        let _op = p.op.lock().await;
        let cur = p.st().state;
        state::check(p.kind(), cur, Op::Start)?;
        match which {
            ProcessRef::Init => self.start_init(&c, &p, cur).await,
            ProcessRef::Exec(_) => self.start_exec(&c, &p).await,
        }
    }

    async fn start_init(&self, c: &Arc<Container>, p: &Arc<Process>, cur: State) -> Result<u32> {
        p.st().starting = true;
        let _starting = self.starting(c, p);
        let started = if cur == State::CreatedCheckpoint {
            self.restore_init(c, p).await
        } else {
            c.runtime.start(c.id.as_str()).await.map(|()| p.st().pid)
        };
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                lifecycle::finish_start(&self.inner, c, p).await;
                return Err(e);
            }
        };
        {
            let mut st = p.st();
            if st.state == State::Created || st.state == State::CreatedCheckpoint {
                st.state = State::Running;
            }
        }
        // Created normally, the cgroup is watched since create; a restore has its pid only now.
        if lock(&c.cgroup).is_none() {
            self.watch_cgroup(c, pid, true);
        }
        self.inner.emit(Event::Start {
            container_id: c.id.to_string(),
            pid,
        });
        lifecycle::finish_start(&self.inner, c, p).await;
        tracing::info!(id = %c.id, pid, "container started");
        Ok(pid)
    }

    async fn restore_init(&self, c: &Arc<Container>, p: &Arc<Process>) -> Result<u32> {
        let (stdio, console) = lock(&c.restore_stdio)
            .take()
            .unwrap_or((RuntimeStdio::default(), None));
        let pid_file = c.bundle.join("init.pid");
        let work = if c.options.criu_work_path.is_empty() {
            c.work_dir.clone()
        } else {
            PathBuf::from(&c.options.criu_work_path)
        };
        let sub = self.inner.reaper_subscribe();
        c.runtime
            .restore(
                c.id.as_str(),
                &c.bundle,
                RestoreOpts {
                    create: CreateOpts {
                        pid_file: pid_file.clone(),
                        console_socket: console,
                        no_pivot: c.options.no_pivot_root,
                        no_new_keyring: c.options.no_new_keyring,
                        stdio,
                    },
                    checkpoint: CheckpointSpec {
                        image_path: c.checkpoint.clone().unwrap_or_default(),
                        work_path: Some(work),
                        parent_path: c.parent_checkpoint.clone(),
                        ..Default::default()
                    },
                },
            )
            .await?;
        let pid = read_pid_file(&pid_file)?;
        p.st().pid = pid;
        self.claim(&sub, pid, c, p);
        drop(sub);
        p.io().start().await.map_err(io_error)?;
        Ok(pid)
    }

    async fn start_exec(&self, c: &Arc<Container>, p: &Arc<Process>) -> Result<u32> {
        let exec_id = p
            .exec_id
            .clone()
            .ok_or_else(|| Error::unknown("exec start on a process without exec id"))?;
        {
            let mut g = c.gate();
            if g.init_exited {
                return Err(Error::failed_precondition(format!(
                    "container {} init process is not running",
                    c.id
                )));
            }
            g.starting += 1;
        }
        let gate_start = guards::GateStarting::new(c);
        let prepared = async {
            let stdio_spec = StdioSpec::parse(&p.stdio.stdin, &p.stdio.stdout, &p.stdio.stderr)
                .map_err(io_error)?;
            let process =
                process_with_terminal(p.spec.as_deref().unwrap_or(b"{}"), p.stdio.terminal)?;
            let (io, stdio, console) = ProcessIo::prepare(
                IoConfig {
                    id: c.id.as_str(),
                    namespace: &self.inner.namespace,
                    spec: &stdio_spec,
                    terminal: p.stdio.terminal,
                    uid: c.options.io_uid,
                    gid: c.options.io_gid,
                    deadline: std::time::Instant::now() + setup_limit(),
                },
                &self.inner.spawner,
            )
            .await
            .map_err(|e| io_error(e).context("failed to create exec process IO"))?;
            Ok::<_, Error>((process, Arc::new(io), stdio, console))
        }
        .await;
        let (process, io, stdio, console) = match prepared {
            Ok(x) => x,
            Err(e) => {
                drop(gate_start);
                return Err(e);
            }
        };
        p.set_io(io.clone());

        let pid_file = exec_pid_file(&c.bundle, &exec_id);
        let sub = self.inner.reaper_subscribe();
        p.st().starting = true;
        let _starting = self.starting(c, p);
        let ran = c
            .runtime
            .exec(
                c.id.as_str(),
                &c.bundle,
                &process,
                ExecOpts {
                    pid_file: pid_file.clone(),
                    console_socket: console,
                    stdio,
                },
            )
            .await
            .and_then(|()| read_pid_file(&pid_file));
        let pid = match ran {
            Ok(pid) => pid,
            Err(e) => {
                drop(gate_start);
                io.close(std::time::Duration::ZERO).await;
                lifecycle::finish_start(&self.inner, c, p).await;
                return Err(e);
            }
        };
        p.st().pid = pid;
        gate_start.settled();
        {
            let mut g = c.gate();
            g.starting = g.starting.saturating_sub(1);
            g.running += 1;
        }
        p.set_gate_count();
        c.gate_changed.notify_waiters();
        self.claim(&sub, pid, c, p);
        drop(sub);
        if let Err(e) = io.start().await {
            tracing::warn!(id = %c.id, exec_id = %exec_id, pid, error = %e, "exec IO could not start");
        }
        {
            let mut st = p.st();
            if st.state == State::Created {
                st.state = State::Running;
            }
        }
        self.inner.emit(Event::ExecStarted {
            container_id: c.id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
        });
        lifecycle::finish_start(&self.inner, c, p).await;
        Ok(pid)
    }

    /// Once init exists: find its cgroup (for Stats) and watch it for OOM kills.
    /// `fresh`: start counting OOM kills from now (a new container); otherwise keep the count
    /// the container already has (adopted in a live upgrade).
    pub(in crate::engine) fn watch_cgroup(&self, c: &Arc<Container>, pid: u32, fresh: bool) {
        let cg = match Cgroup::for_pid(pid) {
            Ok(cg) => Arc::new(cg),
            Err(e) => {
                tracing::debug!(id = %c.id, pid, error = %e, "no cgroup for container");
                return;
            }
        };
        if let Err(e) = cg.enable_all_controllers() {
            tracing::debug!(id = %c.id, error = %e, "enable cgroup controllers");
        }
        *lock(&c.cgroup) = Some(cg.clone());
        // Kills before the watch started are not this container's news.
        if fresh {
            *lock(&c.oom_seen) = cg.oom_kill_count();
        }
        match cg.watch_oom() {
            Ok(mut w) => {
                let inner = Arc::downgrade(&self.inner);
                let container = Arc::downgrade(c);
                tokio::spawn(async move {
                    while w.next().await.is_some() {
                        let (Some(inner), Some(c)) = (inner.upgrade(), container.upgrade()) else {
                            return;
                        };
                        inner.report_ooms(&c, true);
                    }
                });
            }
            Err(e) => tracing::debug!(id = %c.id, error = %e, "no OOM watch"),
        }
    }
}
