//! The v1 adapter end to end without root: a real ttrpc client, our server on a temp-dir
//! socket, the v1 service, and an `Engine` over a fake runtime whose processes exist only as pids
//! (above `pid_max`, so no signal can reach a real process) with exits delivered through the
//! reaper by the test. Checks the translation: addressing, error codes and messages,
//! ListPids's shape, options from flags and requests, and that only exits are published.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use protobuf::Message;
use tokio::sync::watch;

use super::options::Settings;
use super::service::ShimService;
use crate::engine::event::{Event, EventSink};
use crate::engine::runtime::{CreateOpts, ExecOpts, OciRuntime, RestoreOpts};
use crate::engine::types::{CheckpointSpec, RuncOptions};
use crate::engine::{Engine, Result, RuntimeFactory};
use crate::protos::runc_linux::{CreateOptions, ProcessDetails};
use crate::protos::shim_v1::*;
use crate::protos::shim_v1_ttrpc::ShimClient;
use crate::protos::task_types::Status;
use crate::protos::{any_bare, time, Empty};
use crate::reaper::{RawExit, Reaper, Spawner};

/// Fake pids start here: above any kernel's `pid_max` (2^22), so `kill(2)` finds nothing.
const PID_BASE: u32 = 1 << 30;

#[derive(Default)]
struct Fake {
    next: AtomicU32,
    calls: Mutex<Vec<String>>,
    /// What `ps` reports.
    ps: Mutex<Vec<u32>>,
}

impl Fake {
    fn record(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }
    fn pid_file(&self, path: &Path) -> Result<()> {
        let pid = PID_BASE + self.next.fetch_add(1, Ordering::SeqCst);
        std::fs::write(path, pid.to_string())?;
        Ok(())
    }
}

#[async_trait]
impl OciRuntime for Fake {
    async fn create(&self, id: &str, _bundle: &Path, opts: CreateOpts) -> Result<()> {
        self.record(format!("create {id}"));
        self.pid_file(&opts.pid_file)
    }
    async fn start(&self, id: &str) -> Result<()> {
        self.record(format!("start {id}"));
        Ok(())
    }
    async fn exec(&self, id: &str, _b: &Path, process: &[u8], opts: ExecOpts) -> Result<()> {
        self.record(format!("exec {id} {}", String::from_utf8_lossy(process)));
        self.pid_file(&opts.pid_file)
    }
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.record(format!("kill {id} {signal} {all}"));
        Ok(())
    }
    async fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.record(format!("delete {id} {force}"));
        Ok(())
    }
    async fn pause(&self, id: &str) -> Result<()> {
        self.record(format!("pause {id}"));
        Ok(())
    }
    async fn resume(&self, id: &str) -> Result<()> {
        self.record(format!("resume {id}"));
        Ok(())
    }
    async fn ps(&self, _id: &str) -> Result<Vec<u32>> {
        Ok(self.ps.lock().unwrap().clone())
    }
    async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        self.record(format!(
            "update {id} {}",
            String::from_utf8_lossy(resources)
        ));
        Ok(())
    }
    async fn checkpoint(&self, id: &str, _b: &Path, spec: &CheckpointSpec) -> Result<()> {
        self.record(format!(
            "checkpoint {id} {} {:?} exit={}",
            spec.image_path.display(),
            spec.work_path,
            spec.exit
        ));
        Ok(())
    }
    async fn restore(&self, _id: &str, _b: &Path, _o: RestoreOpts) -> Result<()> {
        Err(crate::engine::Error::unimplemented("restore"))
    }
}

struct Factory {
    fake: Arc<Fake>,
    seen: Mutex<Vec<RuncOptions>>,
}

impl RuntimeFactory for Factory {
    fn runtime(&self, options: &RuncOptions, _bundle: &Path) -> Arc<dyn OciRuntime> {
        self.seen.lock().unwrap().push(options.clone());
        self.fake.clone()
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn publish(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

struct Rig {
    client: ShimClient,
    reaper: Reaper,
    fake: Arc<Fake>,
    factory: Arc<Factory>,
    sink: Arc<Sink>,
    dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

impl Rig {
    async fn new() -> Rig {
        Rig::with_cgroup_v2(false).await
    }

    async fn with_cgroup_v2(cgroup_v2: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let reaper = Reaper::new();
        let fake = Arc::new(Fake::default());
        let factory = Arc::new(Factory {
            fake: fake.clone(),
            seen: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Sink::default());
        let core = Engine::new(
            super::profile(),
            "ns1",
            Spawner::new(reaper.clone()),
            factory.clone(),
            sink.clone(),
        );
        let settings = Settings {
            runtime_root: "/run/test-root".into(),
            criu: Some("/opt/criu".into()),
            systemd_cgroup: true,
            work_dir: Some(dir.path().join("work")),
            cgroup_v2,
        };
        let services = crate::protos::shim_v1_ttrpc::create_shim(ShimService::new(core, settings));
        let sock = dir.path().join("shim.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(crate::api::server::serve(
            listener,
            Arc::new(services),
            crate::api::server::Control::new(),
            stop_rx,
        ));
        let c = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
            .await
            .unwrap();
        Rig {
            client: ShimClient::new(c),
            reaper,
            fake,
            factory,
            sink,
            dir,
            _stop: stop,
        }
    }

    /// The bundle of container `id`, where containerd's v1 runtime would put it.
    fn bundle(&self, id: &str) -> PathBuf {
        let b = self
            .dir
            .path()
            .join("io.containerd.runtime.v1.linux/ns1")
            .join(id);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("config.json"), "{}").unwrap();
        b
    }

    fn exit(&self, pid: u32, status: u32) {
        self.reaper.deliver(RawExit {
            pid: pid as i32,
            status,
            at: SystemTime::now(),
        });
    }

    async fn create(&self, id: &str) -> ttrpc::Result<CreateTaskResponse> {
        let options = CreateOptions {
            no_new_keyring: true,
            io_uid: 7,
            ..Default::default()
        };
        let req = CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle(id).display().to_string(),
            runtime: "crun".into(),
            options: Some(any_bare(&options).unwrap()).into(),
            ..Default::default()
        };
        self.client.create(ctx(), &req).await
    }

    async fn state(&self, id: &str) -> ttrpc::Result<StateResponse> {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.client.state(ctx(), &req).await
    }

    async fn exec(&self, id: &str) -> ttrpc::Result<Empty> {
        let req = ExecProcessRequest {
            id: id.into(),
            spec: Some(crate::protos::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: br#"{"args":["true"],"cwd":"/"}"#.to_vec(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.client.exec(ctx(), &req).await
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

/// The (code, message) of a failed call.
fn status<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message),
        other => panic!("expected an error status, got {other:?}"),
    }
}

const MUST_CREATE: (ttrpc::Code, &str) = (
    ttrpc::Code::FAILED_PRECONDITION,
    "container must be created: failed precondition",
);

fn missing(id: &str) -> (ttrpc::Code, String) {
    (
        ttrpc::Code::NOT_FOUND,
        format!("process {id} does not exist: not found"),
    )
}

fn must_create() -> (ttrpc::Code, String) {
    (MUST_CREATE.0, MUST_CREATE.1.to_string())
}

#[tokio::test]
async fn before_create_init_calls_are_failed_precondition_and_names_not_found() {
    let r = Rig::new().await;
    let c = &r.client;
    let e = Empty::new();
    assert_eq!(status(r.state("c1").await), missing("c1"));
    let wait = WaitRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(status(c.wait(ctx(), &wait).await), missing("c1"));
    assert_eq!(status(c.pause(ctx(), &e).await), must_create());
    assert_eq!(status(c.resume(ctx(), &e).await), must_create());
    assert_eq!(status(c.delete(ctx(), &e).await), must_create());
    let pids = ListPidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(status(c.list_pids(ctx(), &pids).await), must_create());
    let upd = UpdateTaskRequest::default();
    assert_eq!(status(c.update(ctx(), &upd).await), must_create());
    let ck = CheckpointTaskRequest::default();
    assert_eq!(status(c.checkpoint(ctx(), &ck).await), must_create());
    assert_eq!(status(r.exec("e1").await), must_create());
    let kill_init = KillRequest {
        signal: 9,
        ..Default::default()
    };
    assert_eq!(status(c.kill(ctx(), &kill_init).await), must_create());
    let resize = ResizePtyRequest::default();
    assert_eq!(
        status(c.resize_pty(ctx(), &resize).await),
        (
            ttrpc::Code::INVALID_ARGUMENT,
            "id not provided: invalid argument".to_string()
        )
    );
    let info = c.shim_info(ctx(), &e).await.unwrap();
    assert_eq!(info.shim_pid, std::process::id());
}

#[tokio::test]
async fn lifecycle_addressing_pids_and_exits() {
    let r = Rig::new().await;
    let c = &r.client;
    let init_pid = r.create("c1").await.unwrap().pid;
    assert_eq!(init_pid, PID_BASE);

    // Flags and request together make the runtime options; -workdir is the work directory.
    let seen = r.factory.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let o = &seen[0];
    assert_eq!(
        (
            o.binary_name.as_str(),
            o.root.as_str(),
            o.criu_path.as_str(),
            o.systemd_cgroup,
            o.no_new_keyring,
            o.io_uid
        ),
        ("crun", "/run/test-root", "/opt/criu", true, true, 7)
    );

    // The container id names init.
    let st = r.state("c1").await.unwrap();
    assert_eq!(st.id, "c1");
    assert_eq!(st.pid, init_pid);
    assert_eq!(st.status.enum_value(), Ok(Status::CREATED));
    assert_eq!(st.bundle, r.bundle("c1").display().to_string());
    assert_eq!(st.exited_at.seconds, time::GO_ZERO_SECONDS);

    // Exec ids share a namespace with the container id.
    assert_eq!(
        status(r.exec("c1").await),
        (
            ttrpc::Code::ALREADY_EXISTS,
            "id c1: already exists".to_string()
        )
    );
    r.exec("e1").await.unwrap();
    assert_eq!(
        status(r.exec("e1").await),
        (
            ttrpc::Code::ALREADY_EXISTS,
            "id e1: already exists".to_string()
        )
    );
    let st = r.state("e1").await.unwrap();
    assert_eq!(
        (st.id.as_str(), st.status.enum_value()),
        ("e1", Ok(Status::CREATED))
    );
    assert_eq!(status(r.state("nope").await), missing("nope"));
    assert_eq!(status(r.state("").await), missing(""));

    // Start answers with the API's id of the process.
    let start = |id: &str| StartRequest {
        id: id.into(),
        ..Default::default()
    };
    let s = c.start(ctx(), &start("c1")).await.unwrap();
    assert_eq!((s.id.as_str(), s.pid), ("c1", init_pid));
    let s = c.start(ctx(), &start("e1")).await.unwrap();
    let exec_pid = s.pid;
    assert_eq!(s.id, "e1");
    assert_eq!(status(c.start(ctx(), &start("e2")).await), missing("e2"));

    // DeleteProcess is for execs only.
    let dp = |id: &str| DeleteProcessRequest {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        status(c.delete_process(ctx(), &dp("c1")).await),
        (
            ttrpc::Code::INVALID_ARGUMENT,
            "cannot delete init process with DeleteProcess".to_string()
        )
    );

    // ListPids: init and execs labelled with containerd.linux.runc.ProcessDetails, others bare.
    *r.fake.ps.lock().unwrap() = vec![init_pid, exec_pid, 42];
    let req = ListPidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let procs = c.list_pids(ctx(), &req).await.unwrap().processes;
    let labels: Vec<(u32, Option<String>)> = procs
        .iter()
        .map(|p| {
            let label = p.info.as_ref().map(|a| {
                assert_eq!(a.type_url, "containerd.linux.runc.ProcessDetails");
                ProcessDetails::parse_from_bytes(&a.value).unwrap().exec_id
            });
            (p.pid, label)
        })
        .collect();
    assert_eq!(
        labels,
        [
            (init_pid, Some("c1".to_string())),
            (exec_pid, Some("e1".to_string())),
            (42, None)
        ]
    );

    // Pause / resume / update / checkpoint act on init; checkpoint's scratch space is -workdir.
    let e = Empty::new();
    c.pause(ctx(), &e).await.unwrap();
    assert_eq!(
        r.state("c1").await.unwrap().status.enum_value(),
        Ok(Status::PAUSED)
    );
    assert_eq!(
        r.state("e1").await.unwrap().status.enum_value(),
        Ok(Status::PAUSED)
    );
    c.resume(ctx(), &e).await.unwrap();
    let upd = UpdateTaskRequest {
        resources: Some(crate::protos::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: br#"{"pids":{"limit":5}}"#.to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    c.update(ctx(), &upd).await.unwrap();
    let ck = CheckpointTaskRequest {
        path: "/ckpt".into(),
        ..Default::default()
    };
    c.checkpoint(ctx(), &ck).await.unwrap();

    // An empty Kill id is init; `all` reaches the runtime.
    let kill = KillRequest {
        signal: 9,
        all: true,
        ..Default::default()
    };
    c.kill(ctx(), &kill).await.unwrap();
    // The exec was not started by a real runtime: its kill is a plain signal, to nobody.
    let kill_exec = KillRequest {
        id: "e1".into(),
        signal: 15,
        ..Default::default()
    };
    assert_eq!(
        status(c.kill(ctx(), &kill_exec).await).0,
        ttrpc::Code::NOT_FOUND
    );

    let calls = r.fake.calls.lock().unwrap().clone();
    let work = r.dir.path().join("work").join("criu-work");
    for want in [
        "create c1".to_string(),
        "start c1".to_string(),
        r#"exec c1 {"args":["true"],"cwd":"/","terminal":false}"#.to_string(),
        "pause c1".to_string(),
        "resume c1".to_string(),
        r#"update c1 {"pids":{"limit":5}}"#.to_string(),
        format!("checkpoint c1 /ckpt {:?} exit=false", Some(work)),
        "kill c1 9 true".to_string(),
    ] {
        assert!(calls.contains(&want), "{want} not in {calls:?}");
    }

    // Exits: the exec first, then init. Wait answers for both names.
    r.exit(exec_pid, 3);
    r.exit(init_pid, 137);
    let wait = |id: &str| WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(c.wait(ctx(), &wait("e1")).await.unwrap().exit_status, 3);
    let w = c.wait(ctx(), &wait("c1")).await.unwrap();
    assert_eq!(w.exit_status, 137);
    assert!(w.exited_at.seconds > 0);
    let st = r.state("c1").await.unwrap();
    assert_eq!(
        (st.status.enum_value(), st.exit_status),
        (Ok(Status::STOPPED), 137)
    );

    let d = c.delete_process(ctx(), &dp("e1")).await.unwrap();
    assert_eq!((d.pid, d.exit_status), (exec_pid, 3));
    assert_eq!(status(r.state("e1").await), missing("e1"));
    let d = c.delete(ctx(), &e).await.unwrap();
    assert_eq!((d.pid, d.exit_status), (init_pid, 137));
    // Deleted: the container is gone, but a containerd that restarted in the middle of the
    // removal still reads it as stopped and can delete it again (same answer, no event).
    let st = r.state("c1").await.unwrap();
    assert_eq!(
        (st.status.enum_value(), st.exit_status),
        (Ok(Status::STOPPED), 137)
    );
    let again = c.delete(ctx(), &e).await.unwrap();
    assert_eq!((again.pid, again.exit_status), (init_pid, 137));
    // Processes that never existed are still unknown.
    assert_eq!(status(r.state("e9").await), missing("e9"));

    // Only exits were published, the exec's before init's, with v1's ids.
    let events = r.sink.0.lock().unwrap().clone();
    let exits: Vec<(String, String, u32)> = events
        .iter()
        .map(|e| match e {
            Event::Exit {
                container_id,
                id,
                exit_status,
                ..
            } => (container_id.clone(), id.clone(), *exit_status),
            other => panic!("v1 published {other:?}"),
        })
        .collect();
    assert_eq!(
        exits,
        [
            ("c1".to_string(), "e1".to_string(), 3),
            ("c1".to_string(), "c1".to_string(), 137)
        ]
    );
}

#[tokio::test]
async fn one_container_per_shim() {
    let r = Rig::new().await;
    r.create("c1").await.unwrap();
    assert_eq!(
        status(r.create("c1").await),
        (
            ttrpc::Code::ALREADY_EXISTS,
            "id c1: already exists".to_string()
        )
    );
    assert_eq!(
        status(r.create("c2").await).0,
        ttrpc::Code::FAILED_PRECONDITION
    );
    // A wrong options type is the caller's error, not ours.
    let bad = CreateTaskRequest {
        id: "c3".into(),
        bundle: r.bundle("c3").display().to_string(),
        options: Some(crate::protos::Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    assert_eq!(
        status(r.client.create(ctx(), &bad).await).0,
        ttrpc::Code::INVALID_ARGUMENT
    );
}

/// On a cgroup v2 host containerd's legacy runtime fails every task right after `Create` and
/// SIGKILLs the shim, which would leave the created container behind: `Create` is refused
/// before the runtime runs.
#[tokio::test]
async fn create_refused_on_cgroup_v2() {
    let r = Rig::with_cgroup_v2(true).await;
    let (code, msg) = status(r.create("c1").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(
        msg.contains("cgroup v2") && msg.contains("io.containerd.runc.v2"),
        "{msg}"
    );
    assert!(r.fake.calls.lock().unwrap().is_empty(), "the runtime ran");
    assert!(r.factory.seen.lock().unwrap().is_empty());
    // Nothing was created: the container is unknown.
    assert!(r.state("c1").await.is_err());
}
