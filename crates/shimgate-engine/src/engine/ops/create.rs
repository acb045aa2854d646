//! Create: the bundle checked, options persisted, rootfs mounted, stdio opened, the
//! runtime's create; past the caller's deadline or on failure, what was made is undone.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- Create

    pub async fn create(&self, spec: CreateSpec) -> Result<u32> {
        check_bundle(
            &spec.bundle,
            self.inner.profile.bundle_dir,
            &self.inner.namespace,
            spec.id.as_str(),
        )?;
        {
            let (exists, held) = {
                let containers = lock(&self.inner.containers);
                (containers.contains_key(&spec.id), containers.len())
            };
            let mut creating = lock(&self.inner.creating);
            if exists || creating.contains(&spec.id) {
                return Err(Error::already_exists(format!("id {}", spec.id)));
            }
            // Under sole-container addressing a second container would make every process
            // name ambiguous.
            if self.inner.profile.addressing == Addressing::SoleContainer
                && held + creating.len() > 0
            {
                return Err(Error::failed_precondition(
                    "this shim already serves a container",
                ));
            }
            creating.insert(spec.id.clone());
        }
        let _creating = guards::Creating {
            inner: &self.inner,
            id: spec.id.clone(),
        };
        self.inner.changed.notify_waiters();
        lock(&self.inner.tombstones).retain(|t| t.id != spec.id);
        self.create_inner(spec).await
    }

    /// Create a container. Everything that may block on the filesystem (mounting the rootfs,
    /// opening stdio targets) runs on the runtime's blocking threads, so a hung mount or a
    /// FIFO nobody reads holds only this Create. Past the caller's deadline
    /// (`spec.deadline`) the Create stops at its next safe point (after the mounts, after the
    /// opens, after the runtime's create) and undoes what it made: nobody would ever start or
    /// delete a container whose Create the caller saw fail.
    async fn create_inner(&self, spec: CreateSpec) -> Result<u32> {
        let bundle = spec.bundle.clone();
        let config = std::fs::read(bundle.join("config.json")).map_err(|e| {
            Error::from(e).context(format!("read {}", bundle.join("config.json").display()))
        })?;
        let own_pidns = spec_has_own_pidns(&config);
        let deadline = spec.deadline;
        let expired = |step: &str| match deadline {
            Some(d) if std::time::Instant::now() >= d => Some(Error::deadline_exceeded(format!(
                "create of {} given up {step}: the caller's deadline passed",
                spec.id
            ))),
            _ => None,
        };

        // Persist the options the way the Go shim does, so `delete` (ours or theirs) finds the
        // runtime and its root even after this process is gone.
        let opts_json = serde_json::to_vec(&spec.options)
            .map_err(|e| Error::unknown(format!("encode options: {e}")))?;
        write_private(&bundle.join("options.json"), &opts_json)?;
        write_private(&bundle.join("runtime"), spec.options.binary_name.as_bytes())?;

        let stdio_spec =
            StdioSpec::parse(&spec.stdio.stdin, &spec.stdio.stdout, &spec.stdio.stderr)
                .map_err(io_error)?;

        let mut undo = guards::CreateUndo::new(&spec.id);
        let rootfs_dir = bundle.join("rootfs");
        let mounted = !spec.rootfs.is_empty();
        if mounted {
            match std::fs::DirBuilder::new().mode(0o711).create(&rootfs_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::from(e).context("create rootfs directory")),
            }
            let (mounts, dir) = (spec.rootfs.clone(), rootfs_dir.clone());
            off_thread("mount rootfs", move || mount::mount_all(&mounts, &dir))
                .await?
                .map_err(|e| {
                    Error::unknown(crate::engine::error::chain(&e)).context("mount rootfs")
                })?;
            undo.mounted(rootfs_dir.clone());
        }
        if let Some(e) = expired("after mounting the rootfs") {
            undo.undo().await;
            return Err(e);
        }

        let runtime = self.inner.factory.runtime(&spec.options, &bundle);
        let io_deadline = std::time::Instant::now() + setup_limit();
        let (io, stdio, console) = match ProcessIo::prepare(
            IoConfig {
                id: spec.id.as_str(),
                namespace: &self.inner.namespace,
                spec: &stdio_spec,
                terminal: spec.stdio.terminal,
                uid: spec.options.io_uid,
                gid: spec.options.io_gid,
                deadline: deadline.map_or(io_deadline, |d| d.min(io_deadline)),
            },
            &self.inner.spawner,
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                undo.undo().await;
                return Err(io_error(e).context("failed to create init process IO"));
            }
        };
        let io = Arc::new(io);
        undo.io_opened(io.clone());
        if let Some(e) = expired("after opening its stdio") {
            undo.undo().await;
            return Err(e);
        }
        let init = Arc::new(Process::new(None, spec.stdio.clone(), None));
        init.set_io(io.clone());
        let restore = spec.checkpoint.is_some();
        let c = Arc::new(Container {
            id: spec.id.clone(),
            bundle: bundle.clone(),
            runtime: runtime.clone(),
            options: spec.options.clone(),
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
            gate: Mutex::new(ExecGate::default()),
            gate_changed: tokio::sync::Notify::new(),
            cgroup: Mutex::new(None),
            oom_seen: Mutex::new(None),
            own_pidns,
            rootfs: spec.rootfs.clone(),
            rootfs_mounted: mounted,
            checkpoint: spec.checkpoint.clone(),
            parent_checkpoint: spec.parent_checkpoint.clone(),
            restore_stdio: Mutex::new(None),
            work_dir: spec.work_dir.clone().unwrap_or_else(|| bundle.join("work")),
        });

        let pid = if restore {
            // Restoring: nothing runs until Start (runc restore); keep the stdio for it.
            *lock(&c.restore_stdio) = Some((stdio, console));
            init.st().state = State::CreatedCheckpoint;
            0
        } else {
            let sub = self.inner.reaper_subscribe();
            let pid_file = bundle.join("init.pid");
            undo.runtime_called(runtime.clone());
            let created = runtime
                .create(
                    spec.id.as_str(),
                    &bundle,
                    CreateOpts {
                        pid_file: pid_file.clone(),
                        console_socket: console,
                        no_pivot: spec.options.no_pivot_root,
                        no_new_keyring: spec.options.no_new_keyring,
                        stdio,
                    },
                )
                .await
                .and_then(|()| read_pid_file(&pid_file));
            let pid = match created {
                Ok(pid) => pid,
                Err(e) => {
                    undo.undo().await;
                    return Err(e);
                }
            };
            init.st().pid = pid;
            self.claim(&sub, pid, &c, &init);
            drop(sub);
            // The cgroup and its OOM count now, while init waits in the runtime's create: a
            // process OOM-killed within milliseconds of its start is then still reported
            // (found at start, the kill could already be in the baseline, or the pid gone).
            self.watch_cgroup(&c, pid, true);
            let started = match expired("after the runtime created it") {
                Some(e) => Err(e),
                None => io
                    .start()
                    .await
                    .map_err(|e| io_error(e).context("failed to start init process IO")),
            };
            if let Err(e) = started {
                // The process exists; without its IO (or its caller) it is useless, so undo
                // everything.
                undo.undo().await;
                return Err(e);
            }
            pid
        };

        undo.commit();
        lock(&self.inner.containers).insert(spec.id.clone(), c);
        self.inner.changed.notify_waiters();
        self.inner.emit(Event::Create {
            container_id: spec.id.to_string(),
            bundle,
            rootfs: spec.rootfs,
            stdio: spec.stdio,
            checkpoint: spec
                .checkpoint
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
        });
        tracing::info!(id = %spec.id, pid, "container created");
        Ok(pid)
    }
}
