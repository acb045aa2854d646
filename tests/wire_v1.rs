//! The legacy shim API (`containerd.runtime.linux.shim.v1.Shim`) on the wire, spoken directly
//! to a live `containerd-shim` (the socket in the task bundle's `address`, which containerd
//! wrote) with a real ttrpc client: first against shimgate, then, in the same run, against the
//! Go `containerd-shim`. Both must answer every situation as `compat/go-v1-shim.json` records
//! (what the Go shim does, plus the deliberate deviations with their reasons).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use protobuf::Message;
use shimgate::protos::runc_linux::ProcessDetails;
use shimgate::protos::shim_v1::*;
use shimgate::protos::shim_v1_ttrpc::ShimClient;
use shimgate::protos::{Any, Empty};

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64)
}

/// A blocking handle on one shim's socket.
struct Shim {
    rt: tokio::runtime::Runtime,
    c: ShimClient,
}

impl Shim {
    fn connect(path: &Path) -> Shim {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = rt
            .block_on(ttrpc::r#async::Client::connect(&format!(
                "unix://{}",
                path.display()
            )))
            .unwrap();
        Shim {
            rt,
            c: ShimClient::new(c),
        }
    }
}

fn socket_of(bundle: &Path) -> PathBuf {
    let a = std::fs::read_to_string(bundle.join("address")).unwrap();
    PathBuf::from(a.trim().strip_prefix("unix://").unwrap())
}

/// One observation: the answer's code and message (0 and a description of the payload for a
/// success), with the container id replaced by `{cid}`.
type Obs = Vec<(String, i32, String)>;

fn outcome<T>(r: ttrpc::Result<T>, ok: impl FnOnce(T) -> String) -> (i32, String) {
    match r {
        Ok(v) => (0, ok(v)),
        Err(ttrpc::Error::RpcStatus(s)) => (s.code.value(), s.message),
        Err(e) => (-1, e.to_string()),
    }
}

fn exec_req(id: &str, args: &str) -> ExecProcessRequest {
    ExecProcessRequest {
        id: id.into(),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: format!(
                r#"{{"args":{args},"cwd":"/","env":["PATH=/bin"],"user":{{"uid":0,"gid":0}}}}"#
            )
            .into_bytes(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn observe(c: &Ctd) -> Obs {
    let rt = V1_LINUX;
    let cid = c.id("wv1");
    c.run_detached(rt, &cid, &[], &["sleep", "300"]);
    let bundle = c.bundle_v1(&cid);
    let s = Shim::connect(&socket_of(&bundle));
    let mut out: Obs = Vec::new();
    let mut note = |what: &str, (code, msg): (i32, String)| {
        out.push((what.to_string(), code, msg.replace(&cid, "{cid}")));
    };
    macro_rules! call {
        ($m:ident, $req:expr) => {
            s.rt.block_on(s.c.$m(ctx(), &$req))
        };
    }
    let state = |id: &str| StateRequest {
        id: id.into(),
        ..Default::default()
    };

    note(
        "state of init",
        outcome(call!(state, state(&cid)), |r| {
            format!(
                "id={} status={} bundle_is_ours={} pid_set={} exited_at={}",
                r.id,
                r.status.value(),
                r.bundle == bundle.display().to_string(),
                r.pid > 0,
                r.exited_at.seconds
            )
        }),
    );
    note(
        "state of an unknown process",
        outcome(call!(state, state("nope")), |_| String::new()),
    );
    note(
        "exec with the container's id",
        outcome(call!(exec, exec_req(&cid, r#"["true"]"#)), |_| {
            String::new()
        }),
    );
    let sleeper = exec_req("e1", r#"["sleep","30"]"#);
    note("exec", outcome(call!(exec, sleeper), |_| String::new()));
    note(
        "exec with an exec id in use",
        outcome(call!(exec, sleeper), |_| String::new()),
    );
    note(
        "state of a created exec",
        outcome(call!(state, state("e1")), |r| {
            format!("id={} status={} pid={}", r.id, r.status.value(), r.pid)
        }),
    );
    let kill = |id: &str, signal: u32| KillRequest {
        id: id.into(),
        signal,
        ..Default::default()
    };
    note(
        "kill of an exec that never started",
        outcome(call!(kill, kill("e1", 9)), |_| String::new()),
    );
    let start = |id: &str| StartRequest {
        id: id.into(),
        ..Default::default()
    };
    note(
        "start of an exec",
        outcome(call!(start, start("e1")), |r| {
            format!("id={} pid_set={}", r.id, r.pid > 0)
        }),
    );
    note(
        "start of a running container",
        outcome(call!(start, start(&cid)), |_| String::new()),
    );
    note(
        "start of an unknown process",
        outcome(call!(start, start("nope")), |_| String::new()),
    );
    let pids = ListPidsRequest {
        id: cid.clone(),
        ..Default::default()
    };
    note(
        "list pids",
        outcome(call!(list_pids, pids), |r| {
            let mut labels: Vec<String> = r
                .processes
                .iter()
                .filter_map(|p| p.info.as_ref())
                .map(|a| {
                    let d = ProcessDetails::parse_from_bytes(&a.value).unwrap();
                    format!("{}:{}", a.type_url, d.exec_id)
                })
                .collect();
            labels.sort();
            format!("{} processes, labelled {labels:?}", r.processes.len())
        }),
    );
    let dp = |id: &str| DeleteProcessRequest {
        id: id.into(),
        ..Default::default()
    };
    note(
        "delete process of init",
        outcome(call!(delete_process, dp(&cid)), |_| String::new()),
    );
    note(
        "delete process of a running exec",
        outcome(call!(delete_process, dp("e1")), |_| String::new()),
    );
    note(
        "delete of a running container",
        outcome(call!(delete, Empty::new()), |_| String::new()),
    );
    let resize = |id: &str| ResizePtyRequest {
        id: id.into(),
        width: 80,
        height: 25,
        ..Default::default()
    };
    note(
        "resize pty without id",
        outcome(call!(resize_pty, resize("")), |_| String::new()),
    );
    note(
        "resize pty of an unknown process",
        outcome(call!(resize_pty, resize("nope")), |_| String::new()),
    );
    note(
        "resize pty of a process without a terminal",
        outcome(call!(resize_pty, resize("e1")), |_| String::new()),
    );
    note(
        "pause",
        outcome(call!(pause, Empty::new()), |_| String::new()),
    );
    note(
        "state of an exec while paused",
        outcome(call!(state, state("e1")), |r| {
            format!("status={}", r.status.value())
        }),
    );
    note(
        "pause of a paused container",
        outcome(call!(pause, Empty::new()), |_| String::new()),
    );
    note(
        "resume",
        outcome(call!(resume, Empty::new()), |_| String::new()),
    );
    note(
        "resume of a running container",
        outcome(call!(resume, Empty::new()), |_| String::new()),
    );
    note(
        "kill of an exec",
        outcome(call!(kill, kill("e1", 9)), |_| String::new()),
    );
    let wait = |id: &str| WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    note(
        "wait of a killed exec",
        outcome(call!(wait, wait("e1")), |r| {
            format!(
                "status={} exited={}",
                r.exit_status,
                r.exited_at.seconds > 0
            )
        }),
    );
    note(
        "kill of an exited exec",
        outcome(call!(kill, kill("e1", 9)), |_| String::new()),
    );
    note(
        "delete process of an exited exec",
        outcome(call!(delete_process, dp("e1")), |r| {
            format!("status={} pid_set={}", r.exit_status, r.pid > 0)
        }),
    );
    note(
        "state of a deleted exec",
        outcome(call!(state, state("e1")), |_| String::new()),
    );
    note(
        "shim info",
        outcome(call!(shim_info, Empty::new()), |r| {
            let shim_pid = std::fs::read_to_string(bundle.join("shim.pid")).unwrap();
            format!(
                "pid_is_shim_pid={}",
                r.shim_pid.to_string() == shim_pid.trim()
            )
        }),
    );
    // Init: SIGKILL through the empty id, then everything a stopped container answers.
    note(
        "kill of init by empty id",
        outcome(call!(kill, kill("", 9)), |_| String::new()),
    );
    note(
        "wait of init",
        outcome(call!(wait, wait(&cid)), |r| {
            format!("status={}", r.exit_status)
        }),
    );
    note(
        "kill of an exited container",
        outcome(call!(kill, kill(&cid, 9)), |_| String::new()),
    );
    note(
        "exec in a stopped container",
        outcome(call!(exec, exec_req("x", r#"["true"]"#)), |_| String::new()),
    );
    note(
        "pause of a stopped container",
        outcome(call!(pause, Empty::new()), |_| String::new()),
    );
    note(
        "state of a stopped init",
        outcome(call!(state, state(&cid)), |r| {
            format!("status={} exit={}", r.status.value(), r.exit_status)
        }),
    );
    note(
        "unknown method",
        outcome(
            s.rt.block_on(async {
                let c = ttrpc::r#async::Client::connect(&format!(
                    "unix://{}",
                    socket_of(&bundle).display()
                ))
                .await?;
                let req = ttrpc::Request {
                    service: "containerd.runtime.linux.shim.v1.Shim".into(),
                    method: "Stats".into(),
                    timeout_nano: 5_000_000_000,
                    ..Default::default()
                };
                c.request(req).await
            }),
            |_| String::new(),
        ),
    );
    note(
        "delete",
        outcome(call!(delete, Empty::new()), |r| {
            format!("status={} pid_set={}", r.exit_status, r.pid > 0)
        }),
    );
    // The files containerd's cleanup of a dead shim relies on, and the log FIFOs.
    let files = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let b = files(&bundle);
    note(
        "bundle files",
        (
            0,
            format!(
                "address={} shim.pid={} init.pid={} log.json={}",
                b.contains(&"address".into()),
                b.contains(&"shim.pid".into()),
                b.contains(&"init.pid".into()),
                b.contains(&"log.json".into())
            ),
        ),
    );
    note(
        "workdir files",
        (0, format!("{:?}", files(&c.workdir_v1(&cid)))),
    );
    // What containerd does after its own Delete: SIGKILL the shim. It then cleans up after the
    // dead shim (bundle, work dir, socket) itself.
    let shim_pid: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the shim of this test's container.
    unsafe {
        libc::kill(shim_pid, libc::SIGKILL);
    }
    assert!(
        c.wait_gone(&cid, Duration::from_secs(15)),
        "task still listed: {:?}",
        c.tasks()
    );
    out
}

#[derive(serde::Deserialize)]
struct Case {
    situation: String,
    code: i32,
    message: String,
    /// Where shimgate deliberately answers otherwise: its answer and why.
    #[serde(default)]
    shimgate: Option<Deviation>,
}

#[derive(serde::Deserialize)]
struct Deviation {
    code: i32,
    message: String,
    #[allow(dead_code)]
    why: String,
}

fn table() -> Vec<Case> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/go-v1-shim.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn check(who: &str, got: &Obs, go: bool) {
    let t = table();
    let mut bad = Vec::new();
    for (situation, code, message) in got {
        let Some(case) = t.iter().find(|c| &c.situation == situation) else {
            bad.push(format!(
                "{situation}: not in the table (got {code} {message:?})"
            ));
            continue;
        };
        let (want_code, want_msg) = match (&case.shimgate, go) {
            (Some(d), false) => (d.code, d.message.as_str()),
            _ => (case.code, case.message.as_str()),
        };
        if (*code, message.as_str()) != (want_code, want_msg) {
            bad.push(format!(
                "{situation}: got {code} {message:?}, want {want_code} {want_msg:?}"
            ));
        }
    }
    for case in &t {
        if !got.iter().any(|(s, _, _)| *s == case.situation) {
            bad.push(format!("{}: not exercised", case.situation));
        }
    }
    assert!(bad.is_empty(), "{who}:\n{}", bad.join("\n"));
}

#[test]
fn v1_shim_answers_like_the_go_shim() {
    let Some(c) = Ctd::start() else { return };
    let ours = observe(&c);
    c.assert_clean();
    drop(c);
    let go = Ctd::start_with(Shims::Go).map(|g| {
        let o = observe(&g);
        g.assert_clean();
        o
    });
    if std::env::var_os("SHIMGATE_PRINT_WIRE").is_some() {
        for (s, code, m) in &ours {
            let g = go
                .as_ref()
                .and_then(|g| g.iter().find(|x| &x.0 == s))
                .map(|x| format!("{} {:?}", x.1, x.2));
            eprintln!("{s}: ours {code} {m:?} | go {g:?}");
        }
    }
    check("shimgate", &ours, false);
    match go {
        Some(go) => check("Go containerd-shim", &go, true),
        None => peer_missing("the Go containerd-shim"),
    }
}
