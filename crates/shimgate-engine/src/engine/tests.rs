//! The event-ordering invariants of `lifecycle`, driven with synthetic exits in the
//! interleavings that matter. A fake runtime hands out pids above any kernel's `pid_max` (so no
//! real process is ever signalled) and can deliver a process's exit *while* the runtime call
//! that starts it is still running, which is exactly the race the Go shims got wrong for years.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::event::{Event, EventKind, EventSink};
use super::runtime::{CreateOpts, ExecOpts, OciRuntime, RestoreOpts};
use super::types::*;
use super::*;
use crate::reaper::{RawExit, Reaper, Spawner};

const PID_BASE: u32 = 1 << 30;

/// When the fake runtime reports a process's death itself.
#[derive(Default)]
struct Hooks {
    /// Init exits (with this status) while `runc start` is running.
    init_exits_during_start: Option<u32>,
    /// This exec exits while `runc exec` is running, before its pid file is read.
    exec_exits_during_exec: HashMap<String, u32>,
    /// Init exits while this exec's `runc exec` is running.
    init_exits_during_exec: HashMap<String, u32>,
    /// These runtime calls (`create`, `start`, `exec`, `pause`) panic, once each: a bug in a
    /// handler, as far as the core can tell.
    panics: std::collections::HashSet<&'static str>,
}

struct Fake {
    reaper: Reaper,
    next: AtomicU32,
    pids: Mutex<HashMap<String, u32>>,
    hooks: Mutex<Hooks>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn pid_of(&self, name: &str) -> u32 {
        self.pids.lock().unwrap()[name]
    }
    fn exit(&self, pid: u32, status: u32) {
        self.reaper.deliver(RawExit {
            pid: pid as i32,
            status,
            at: SystemTime::now(),
        });
    }
    fn new_pid(&self, name: &str, pid_file: &Path) -> u32 {
        let pid = PID_BASE + self.next.fetch_add(1, Ordering::SeqCst);
        std::fs::write(pid_file, pid.to_string()).unwrap();
        self.pids.lock().unwrap().insert(name.to_string(), pid);
        pid
    }
    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn maybe_panic(&self, call: &'static str) {
        if self.hooks.lock().unwrap().panics.remove(call) {
            panic!("injected panic in {call}");
        }
    }
}

#[async_trait]
impl OciRuntime for Fake {
    async fn create(&self, id: &str, _b: &Path, opts: CreateOpts) -> Result<()> {
        self.maybe_panic("create");
        self.new_pid(id, &opts.pid_file);
        Ok(())
    }
    async fn start(&self, id: &str) -> Result<()> {
        let s = self.hooks.lock().unwrap().init_exits_during_start.take();
        if let Some(status) = s {
            self.exit(self.pid_of(id), status);
            // Let the exit reach the lifecycle before the start finishes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.maybe_panic("start");
        Ok(())
    }
    async fn exec(&self, id: &str, _b: &Path, _p: &[u8], opts: ExecOpts) -> Result<()> {
        let exec_id = opts
            .pid_file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let pid = self.new_pid(&exec_id, &opts.pid_file);
        let (mine, init) = {
            let mut h = self.hooks.lock().unwrap();
            (
                h.exec_exits_during_exec.remove(&exec_id),
                h.init_exits_during_exec.remove(&exec_id),
            )
        };
        if let Some(status) = init {
            self.exit(self.pid_of(id), status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(status) = mine {
            self.exit(pid, status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.maybe_panic("exec");
        Ok(())
    }
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.record(format!("kill {id} {signal} {all}"));
        Ok(())
    }
    async fn delete(&self, id: &str, _force: bool) -> Result<()> {
        self.record(format!("delete {id}"));
        Ok(())
    }
    async fn pause(&self, _id: &str) -> Result<()> {
        self.maybe_panic("pause");
        Ok(())
    }
    async fn resume(&self, id: &str) -> Result<()> {
        self.record(format!("resume {id}"));
        Ok(())
    }
    async fn ps(&self, _id: &str) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    async fn update(&self, _id: &str, _r: &[u8]) -> Result<()> {
        Ok(())
    }
    async fn checkpoint(&self, _id: &str, _b: &Path, _s: &CheckpointSpec) -> Result<()> {
        Ok(())
    }
    async fn restore(&self, _id: &str, _b: &Path, _o: RestoreOpts) -> Result<()> {
        Ok(())
    }
}

struct Factory(Arc<Fake>);

impl RuntimeFactory for Factory {
    fn runtime(&self, _o: &RuncOptions, _b: &Path) -> Arc<dyn OciRuntime> {
        self.0.clone()
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn publish(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

const ALL_EVENTS: &[EventKind] = &[
    EventKind::Create,
    EventKind::Start,
    EventKind::ExecAdded,
    EventKind::ExecStarted,
    EventKind::Exit,
    EventKind::Delete,
    EventKind::Paused,
    EventKind::Resumed,
    EventKind::Oom,
];

struct Rig {
    core: Engine,
    fake: Arc<Fake>,
    sink: Arc<Sink>,
    dir: tempfile::TempDir,
}

/// A short, readable trace of the events: `start`, `exit e1 3`, ...
fn trace(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Create { .. } => "create".to_string(),
            Event::Start { .. } => "start".to_string(),
            Event::ExecAdded { exec_id, .. } => format!("added {exec_id}"),
            Event::ExecStarted { exec_id, .. } => format!("started {exec_id}"),
            Event::Exit {
                id, exit_status, ..
            } => format!("exit {id} {exit_status}"),
            Event::Delete { .. } => "delete".to_string(),
            Event::Paused { .. } => "paused".to_string(),
            Event::Resumed { .. } => "resumed".to_string(),
            Event::Oom { .. } => "oom".to_string(),
        })
        .collect()
}

impl Rig {
    fn new() -> Rig {
        let reaper = Reaper::new();
        let fake = Arc::new(Fake {
            reaper: reaper.clone(),
            next: AtomicU32::new(0),
            pids: Mutex::new(HashMap::new()),
            hooks: Mutex::new(Hooks::default()),
            calls: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Sink::default());
        let core = Engine::new(
            ApiProfile {
                runtime_name: "test",
                publishes: ALL_EVENTS,
                shutdown: ShutdownPolicy::WhenEmpty,
                missing_container: (Kind::NotFound, "container not created"),
                missing_process: (Kind::NotFound, "process does not exist {id}"),
                addressing: Addressing::PerRequest,
                bundle_dir: None,
            },
            "ns",
            Spawner::new(reaper),
            Arc::new(Factory(fake.clone())),
            sink.clone(),
        );
        Rig {
            core,
            fake,
            sink,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Create container `id` (own pid namespace unless `shared_pidns`).
    async fn create(&self, id: &str, shared_pidns: bool) -> ContainerId {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir(&bundle).unwrap();
        let ns = if shared_pidns {
            "[]"
        } else {
            r#"[{"type":"pid"}]"#
        };
        std::fs::write(
            bundle.join("config.json"),
            format!(r#"{{"linux":{{"namespaces":{ns}}}}}"#),
        )
        .unwrap();
        let cid = ContainerId::new(id).unwrap();
        self.core
            .create(CreateSpec {
                id: cid.clone(),
                bundle,
                rootfs: vec![],
                stdio: StdioRequest::default(),
                checkpoint: None,
                parent_checkpoint: None,
                options: RuncOptions::default(),
                work_dir: None,
                deadline: None,
            })
            .await
            .unwrap();
        cid
    }

    async fn add_exec(&self, c: &ContainerId, e: &str) -> ProcessRef {
        let exec_id = ExecId::new(e).unwrap();
        self.core
            .exec(ExecSpec {
                id: c.clone(),
                exec_id: exec_id.clone(),
                stdio: StdioRequest::default(),
                process: br#"{"args":["true"]}"#.to_vec(),
            })
            .await
            .unwrap();
        ProcessRef::Exec(exec_id)
    }

    fn events(&self) -> Vec<String> {
        trace(&self.sink.0.lock().unwrap())
    }

    /// Wait until the trace has `n` exit events.
    async fn exits(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let t = self.events();
            if t.iter().filter(|e| e.starts_with("exit")).count() >= n {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("fewer than {n} exits: {:?}", self.events());
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn init_exiting_during_start_publishes_start_first() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.fake.hooks.lock().unwrap().init_exits_during_start = Some(3);
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let t = r.exits(1).await;
        assert_eq!(t, ["create", "start", "exit c1 3"]);
        assert_eq!(r.core.wait(&c, &ProcessRef::Init).await.unwrap().status, 3);
    });
}

#[test]
fn exec_exiting_before_its_pid_is_known_keeps_status_and_order() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let e = r.add_exec(&c, "e1").await;
        r.fake
            .hooks
            .lock()
            .unwrap()
            .exec_exits_during_exec
            .insert("e1".into(), 42);
        r.core.start(&c, &e).await.unwrap();
        let t = r.exits(1).await;
        assert_eq!(
            t,
            ["create", "start", "added e1", "started e1", "exit e1 42"]
        );
        assert_eq!(r.core.wait(&c, &e).await.unwrap().status, 42);
    });
}

#[test]
fn every_exec_exit_precedes_the_init_exit() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let mut execs = Vec::new();
        for i in 0..5 {
            let e = r.add_exec(&c, &format!("e{i}")).await;
            r.core.start(&c, &e).await.unwrap();
            execs.push(e);
        }
        // Init dies first; the execs' deaths are reaped afterwards, in reverse order.
        r.fake.exit(r.fake.pid_of("c1"), 137);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !r.events().iter().any(|e| e == "exit c1 137"),
            "init exit published while execs still run: {:?}",
            r.events()
        );
        for i in (0..5).rev() {
            r.fake.exit(r.fake.pid_of(&format!("e{i}")), 137);
        }
        let t = r.exits(6).await;
        assert_eq!(t.last().unwrap(), "exit c1 137", "{t:?}");
        assert_eq!(t.iter().filter(|e| e.starts_with("exit e")).count(), 5);
    });
}

#[test]
fn no_exec_starts_after_init_exited() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let e = r.add_exec(&c, "late").await;
        r.fake.exit(r.fake.pid_of("c1"), 0);
        r.exits(1).await;
        let err = r.core.start(&c, &e).await.unwrap_err();
        assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
        assert_eq!(err.message(), "container c1 init process is not running");
    });
}

#[test]
fn init_dying_while_an_exec_starts_still_ends_with_the_init_exit() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let e = r.add_exec(&c, "racer").await;
        {
            let mut h = r.fake.hooks.lock().unwrap();
            h.init_exits_during_exec.insert("racer".into(), 137);
        }
        // The exec's runtime call succeeds although init died meanwhile; the kernel then kills
        // the exec (simulated below). Its exit must come before init's.
        let _ = r.core.start(&c, &e).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if let Some(pid) = r.fake.pids.lock().unwrap().get("racer").copied() {
            r.fake.exit(pid, 137);
        }
        let t = r.exits(2).await;
        assert_eq!(t.last().unwrap(), "exit c1 137", "{t:?}");
        let started = t.iter().position(|e| e == "started racer").unwrap();
        let exited = t.iter().position(|e| e == "exit racer 137").unwrap();
        assert!(started < exited, "{t:?}");
    });
}

#[test]
fn exactly_one_exit_per_process_even_if_reported_twice() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let pid = r.fake.pid_of("c1");
        r.fake.exit(pid, 1);
        r.fake.exit(pid, 2);
        r.exits(1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t = r.events();
        assert_eq!(
            t.iter().filter(|e| e.starts_with("exit")).count(),
            1,
            "{t:?}"
        );
        assert!(t.contains(&"exit c1 1".to_string()));
    });
}

#[test]
fn a_container_that_dies_before_start_reports_its_exit_and_delete_is_last() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.fake.exit(r.fake.pid_of("c1"), 137);
        r.exits(1).await;
        let st = r.core.state(&c, &ProcessRef::Init).unwrap();
        assert_eq!(st.status, Status::Stopped);
        let d = r.core.delete(&c, &ProcessRef::Init).await.unwrap();
        assert_eq!(d.exit_status, 137);
        // Nothing can follow the delete: the container is gone.
        let t = r.events();
        assert_eq!(t, ["create", "exit c1 137", "delete"]);
        assert_eq!(
            r.core
                .delete(&c, &ProcessRef::Init)
                .await
                .unwrap()
                .exit_status,
            137
        );
        assert_eq!(r.events().iter().filter(|e| *e == "delete").count(), 1);
    });
}

#[test]
fn without_a_pid_namespace_init_exit_kills_the_rest_and_thaws_a_paused_container() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", true).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        r.core.pause(&c).await.unwrap();
        r.fake.exit(r.fake.pid_of("c1"), 9);
        r.exits(1).await;
        let calls = r.fake.calls.lock().unwrap().clone();
        let resume = calls
            .iter()
            .position(|c| c == "resume c1")
            .expect("resumed");
        let kill = calls
            .iter()
            .position(|c| c == "kill c1 9 true")
            .expect("kill --all");
        assert!(resume < kill, "{calls:?}");
    });
}

#[test]
fn wait_returns_for_every_waiter_and_after_the_fact() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let core = r.core.clone();
                let c = c.clone();
                tokio::spawn(async move { core.wait(&c, &ProcessRef::Init).await.unwrap().status })
            })
            .collect();
        tokio::task::yield_now().await;
        r.fake.exit(r.fake.pid_of("c1"), 5);
        for w in waiters {
            assert_eq!(w.await.unwrap(), 5);
        }
        assert_eq!(r.core.wait(&c, &ProcessRef::Init).await.unwrap().status, 5);
    });
}

#[test]
fn a_deleted_container_reads_as_stopped_until_it_is_created_again() {
    rt().block_on(async {
        let r = Rig::new();
        let c = r.create("c1", false).await;
        r.core.start(&c, &ProcessRef::Init).await.unwrap();
        r.fake.exit(r.fake.pid_of("c1"), 7);
        r.exits(1).await;
        r.core.delete(&c, &ProcessRef::Init).await.unwrap();
        // containerd restarted mid-delete still asks: the answer lets it finish the removal.
        let st = r.core.state(&c, &ProcessRef::Init).unwrap();
        assert_eq!(
            (st.status, st.exit.map(|e| e.status)),
            (Status::Stopped, Some(7))
        );
        assert_eq!(r.core.wait(&c, &ProcessRef::Init).await.unwrap().status, 7);
        // Deleting again answers the same, without a second event.
        let again = r.core.delete(&c, &ProcessRef::Init).await.unwrap();
        assert_eq!(again.exit_status, 7);
        assert_eq!(r.events().iter().filter(|e| *e == "delete").count(), 1);
        assert_eq!(r.core.container_count(), 0);
        // A new container of the same id is a new container.
        std::fs::remove_dir_all(r.dir.path().join("c1")).unwrap();
        let c = r.create("c1", false).await;
        assert_eq!(
            r.core.state(&c, &ProcessRef::Init).unwrap().status,
            Status::Created
        );
    });
}

/// A live upgrade of the core in miniature: capture in one core, thaw into a fresh one (new
/// reaper, new event sink), and the processes carry on: their exits arrive once, in order,
/// including an init exit that was reaped but not yet handled when the snapshot was taken.
#[test]
fn capture_and_thaw_carry_processes_and_unhandled_exits() {
    rt().block_on(async {
        let a = Rig::new();
        let c = a.create("c1", false).await;
        a.core.start(&c, &ProcessRef::Init).await.unwrap();
        let e1 = a.add_exec(&c, "e1").await;
        a.core.start(&c, &e1).await.unwrap();
        let e2 = a.add_exec(&c, "e2").await;
        a.core.start(&c, &e2).await.unwrap();
        // e2 finishes before the upgrade; init dies during it, while e1 still runs: its exit
        // handler waits for e1, so init is reaped but unhandled at capture.
        a.fake.exit(a.fake.pid_of("e2"), 2);
        a.exits(1).await;
        a.fake.exit(a.fake.pid_of("c1"), 137);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let frozen = a.core.freeze_io().await;
        let snap = a.core.capture(&frozen);
        let json = serde_json::to_string(&snap).unwrap();
        let snap: handover::CoreSnap = serde_json::from_str(&json).unwrap();
        let init = &snap.containers[0].init;
        assert_eq!(init.reaped_exit.map(|e| e.status), Some(137));
        assert_eq!(init.state, state::State::Running);

        // The new image.
        let b = Rig::new();
        let core = Engine::thaw(
            &snap,
            b.core.profile().clone(),
            "ns",
            Spawner::new(b.fake.reaper.clone()),
            Arc::new(Factory(b.fake.clone())),
            b.sink.clone(),
        )
        .unwrap();
        // Finished processes read as finished, with their status.
        assert_eq!(core.wait(&c, &e2).await.unwrap().status, 2);
        assert_eq!(core.state(&c, &e1).unwrap().status, Status::Running);
        // e1's pid was re-claimed in the new image: its exit arrives there, then init's.
        let e1_pid = a.fake.pid_of("e1");
        b.fake.exit(e1_pid, 137);
        let t = b.exits(2).await;
        assert_eq!(t, ["exit e1 137", "exit c1 137"], "{t:?}");
        assert_eq!(core.wait(&c, &ProcessRef::Init).await.unwrap().status, 137);
        let d = core.delete(&c, &ProcessRef::Init).await.unwrap();
        assert_eq!(d.exit_status, 137);
    });
}

/// A handler that panics half-way (here: inside the runtime call) leaves no "in progress" flag
/// behind: the same id can be created again (and what its create made is undone), a process's exit that came during the panicking
/// start is still published, a panicking exec start does not hold its container's init exit
/// back, and the shim can still be handed over (live upgrade).
#[test]
fn a_panicking_operation_leaves_no_flag_up() {
    rt().block_on(async {
        let r = Rig::new();
        let hooks = |call| r.fake.hooks.lock().unwrap().panics.insert(call);
        let bundle = r.dir.path().join("c1");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#,
        )
        .unwrap();
        let spec = CreateSpec {
            id: ContainerId::new("c1").unwrap(),
            bundle: bundle.clone(),
            rootfs: vec![],
            stdio: StdioRequest::default(),
            checkpoint: None,
            parent_checkpoint: None,
            options: RuncOptions::default(),
            work_dir: None,
            deadline: None,
        };
        // Create panics: the id is free again, and nothing is in progress.
        hooks("create");
        let core = r.core.clone();
        let again = CreateSpec {
            id: spec.id.clone(),
            bundle: spec.bundle.clone(),
            rootfs: vec![],
            stdio: StdioRequest::default(),
            checkpoint: None,
            parent_checkpoint: None,
            options: RuncOptions::default(),
            work_dir: None,
            deadline: None,
        };
        assert!(tokio::spawn(async move { core.create(spec).await })
            .await
            .unwrap_err()
            .is_panic());
        // What the panicking create had asked the runtime for is undone all the same (the
        // guard's drop hands the undo to the runtime as a task of its own).
        let mut undone = false;
        for _ in 0..200 {
            undone = r
                .fake
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c == "delete c1");
            if undone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(undone, "{:?}", r.fake.calls.lock().unwrap());
        r.core.can_hand_over().unwrap();
        let c = {
            r.core.create(again).await.unwrap();
            ContainerId::new("c1").unwrap()
        };

        // Start panics after init exited during it: the exit is not stashed for ever.
        r.fake.hooks.lock().unwrap().init_exits_during_start = Some(3);
        hooks("start");
        let (core, id) = (r.core.clone(), c.clone());
        assert!(
            tokio::spawn(async move { core.start(&id, &ProcessRef::Init).await })
                .await
                .unwrap_err()
                .is_panic()
        );
        let t = r.exits(1).await;
        assert!(t.contains(&"exit c1 3".to_string()), "{t:?}");
        r.core.can_hand_over().unwrap();

        // A second container: an exec start panics, then init dies: its exit goes out at once
        // (a stuck exec-start count would hold it back for a minute).
        let c2 = r.create("c2", false).await;
        r.core.start(&c2, &ProcessRef::Init).await.unwrap();
        let e = r.add_exec(&c2, "e1").await;
        hooks("exec");
        let (core, id, e2) = (r.core.clone(), c2.clone(), e.clone());
        assert!(tokio::spawn(async move { core.start(&id, &e2).await })
            .await
            .unwrap_err()
            .is_panic());
        r.core.can_hand_over().unwrap();
        // Pause panics: not "in progress" for ever either.
        hooks("pause");
        let (core, id) = (r.core.clone(), c2.clone());
        assert!(tokio::spawn(async move { core.pause(&id).await })
            .await
            .unwrap_err()
            .is_panic());
        r.core.can_hand_over().unwrap();
        r.fake.exit(r.fake.pid_of("c2"), 137);
        let t = tokio::time::timeout(Duration::from_secs(5), r.exits(2))
            .await
            .expect("init exit held back by a panicked exec start");
        assert!(t.contains(&"exit c2 137".to_string()), "{t:?}");
    });
}
