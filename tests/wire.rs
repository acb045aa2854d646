//! The task API on the wire, spoken directly to a live shim (the socket named in a bundle's
//! `address`), next to the same requests against the Go shim in the same run. The status
//! codes and messages containerd depends on are recorded in `compat/go-error-codes.json`; this
//! test checks both shims against that table, so the table stays true: under Debian's 1.6 and
//! under containerd 1.7.34, 2.2.7 and 2.3.4 with each series' own Go runc.v2 shim (where a
//! series' Go shim answers differently, the table records it per series).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::raw_ttrpc::{Raw, Reply};
use common::*;
use protobuf::Message;
use shimgate::protos::task::*;
use shimgate::protos::Any;

/// The socket of `id`'s shim and the task API version containerd speaks with it: from
/// `bootstrap.json` where containerd 2.x recorded them (the Go shim of 2.3 writes no `address`
/// file), else `address` and version 2.
fn shim_bootstrap(c: &Ctd, id: &str) -> (PathBuf, u64) {
    let b = c.bundle(id);
    let (a, v) = match std::fs::read(b.join("bootstrap.json")) {
        Ok(j) => {
            let j: serde_json::Value = serde_json::from_slice(&j).unwrap();
            (
                j["address"].as_str().unwrap().to_string(),
                j["version"].as_u64().unwrap_or(2),
            )
        }
        Err(_) => (std::fs::read_to_string(b.join("address")).unwrap(), 2),
    };
    (PathBuf::from(a.trim().strip_prefix("unix://").unwrap()), v)
}

fn shim_socket(c: &Ctd, id: &str) -> PathBuf {
    shim_bootstrap(c, id).0
}

/// A connection to a shim that calls the task service in the version containerd uses with it
/// (the Go shim of 2.3 serves only `containerd.task.v3.Task`).
struct TaskConn {
    raw: Raw,
    service: &'static str,
}

impl TaskConn {
    fn open(c: &Ctd, id: &str) -> TaskConn {
        let (path, version) = shim_bootstrap(c, id);
        TaskConn {
            raw: Raw::connect(&path, Duration::from_secs(20)),
            service: if version >= 3 {
                "containerd.task.v3.Task"
            } else {
                "containerd.task.v2.Task"
            },
        }
    }

    fn task(&mut self, method: &str, msg: &dyn protobuf::MessageDyn) -> Reply {
        self.raw.call(self.service, method, msg)
    }

    fn call(&mut self, service: &str, method: &str, msg: &dyn protobuf::MessageDyn) -> Reply {
        self.raw.call(service, method, msg)
    }
}

#[derive(serde::Deserialize)]
struct Case {
    situation: String,
    code: i32,
    message: String,
    /// Where the Go shim of a containerd series answers otherwise: series -> answer.
    #[serde(default)]
    series: std::collections::HashMap<String, Answer>,
}

#[derive(serde::Deserialize)]
struct Answer {
    code: i32,
    message: String,
}

impl Case {
    /// The (code, message) the Go shim of series `s` gives.
    fn expected(&self, s: Series) -> (i32, String) {
        let (code, message) = match self.series.get(s.name()) {
            Some(a) => (a.code, a.message.as_str()),
            None => (self.code, self.message.as_str()),
        };
        (code, message.replace("{id}", "e1"))
    }
}

fn table() -> Vec<Case> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/go-error-codes.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Drive every situation of the table against the shims of `c`; returns situation -> (code,
/// message).
fn observe(c: &Ctd) -> Vec<(String, i32, String)> {
    let rt = RUNC_V2;
    let running = c.id("wire");
    c.run_detached(rt, &running, &[], &["sleep", "300"]);
    let stopped = c.id("wstop");
    let r = c.run(rt, &stopped, &["-d"], &["true"]);
    assert_eq!(r.code, 0, "{}", r.brief());
    assert!(c.wait_status(&stopped, "STOPPED", Duration::from_secs(10)));

    let mut w = TaskConn::open(c, &running);
    let mut out = Vec::new();
    let mut note = |s: &str, r: Reply| out.push((s.to_string(), r.code, r.message));

    let st = |id: &str, exec: &str| StateRequest {
        id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    };
    note(
        "state of an unknown container",
        w.task("State", &st("nope", "")),
    );
    note(
        "state of an unknown exec",
        w.task("State", &st(&running, "e9")),
    );
    note(
        "delete of a running container",
        w.task(
            "Delete",
            &DeleteRequest {
                id: running.clone(),
                ..Default::default()
            },
        ),
    );
    let spec = Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: br#"{"args":["sleep","30"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#
            .to_vec(),
        ..Default::default()
    };
    let exec = ExecProcessRequest {
        id: running.clone(),
        exec_id: "e1".into(),
        spec: Some(spec).into(),
        ..Default::default()
    };
    let r = w.task("Exec", &exec);
    assert_eq!(r.code, 0, "exec: {}", r.message);
    note("exec with an exec id in use", w.task("Exec", &exec));
    note(
        "kill of an exec that never started",
        w.task(
            "Kill",
            &KillRequest {
                id: running.clone(),
                exec_id: "e1".into(),
                signal: 9,
                ..Default::default()
            },
        ),
    );
    note("pause of a paused container", {
        let p = PauseRequest {
            id: running.clone(),
            ..Default::default()
        };
        let r = w.task("Pause", &p);
        assert_eq!(r.code, 0, "pause: {}", r.message);
        let again = w.task("Pause", &p);
        let r = w.task(
            "Resume",
            &ResumeRequest {
                id: running.clone(),
                ..Default::default()
            },
        );
        assert_eq!(r.code, 0, "resume: {}", r.message);
        again
    });
    note(
        "resume of a running container",
        w.task(
            "Resume",
            &ResumeRequest {
                id: running.clone(),
                ..Default::default()
            },
        ),
    );
    note(
        "start of a running container",
        w.task(
            "Start",
            &StartRequest {
                id: running.clone(),
                ..Default::default()
            },
        ),
    );
    note(
        "unknown service",
        w.call("containerd.task.v9.Nope", "State", &st(&running, "")),
    );
    note("unknown method", w.task("Frobnicate", &st(&running, "")));

    // The stopped container lives in its own shim (no group).
    let mut w2 = TaskConn::open(c, &stopped);
    note(
        "kill of an exited container",
        w2.task(
            "Kill",
            &KillRequest {
                id: stopped.clone(),
                signal: 9,
                ..Default::default()
            },
        ),
    );
    note(
        "exec in a stopped container",
        w2.task(
            "Exec",
            &ExecProcessRequest {
                id: stopped.clone(),
                exec_id: "x".into(),
                ..exec.clone()
            },
        ),
    );
    // Done with it: the stopped task goes the normal way (assert_clean reports tasks left).
    let r = c.ctr(&["task", "rm", &stopped]);
    assert_eq!(r.code, 0, "{}", r.brief());
    out
}

#[test]
fn error_codes_match_the_go_shim_table() {
    let Some(c) = Ctd::start() else { return };
    let ours = observe(&c);
    let t = table();
    for case in &t {
        let got = ours
            .iter()
            .find(|(s, _, _)| *s == case.situation)
            .unwrap_or_else(|| panic!("situation {:?} not exercised", case.situation));
        assert_eq!(
            (got.1, got.2.as_str()),
            (case.code, case.message.replace("{id}", "e1").as_str()),
            "shimgate: {}",
            case.situation
        );
    }
    c.assert_clean();
    drop(c);

    // The same requests against the Go shim, in the same run: the table is what Go does.
    let Some(g) = Ctd::start_with(Shims::Go) else {
        peer_missing("the Go runc shims");
        return;
    };
    let go = observe(&g);
    for case in &t {
        let got = go.iter().find(|(s, _, _)| *s == case.situation).unwrap();
        assert_eq!(
            (got.1, got.2.as_str()),
            (case.code, case.message.replace("{id}", "e1").as_str()),
            "Go shim: {}",
            case.situation
        );
    }
}

/// The table under containerd series `s`: its Go runc.v2 shim and shimgate under the same
/// daemon, each held to the table's answers for `s` (the common answer unless the table
/// records one for the series). Calls go to the task service version containerd negotiated.
fn table_under(s: Series) {
    let t = table();
    for shims in [Shims::Go, Shims::Ours] {
        let Some(c) = Ctd::start_series(s, shims) else {
            return;
        };
        let got = observe(&c);
        let mut wrong = Vec::new();
        for case in &t {
            let g = got
                .iter()
                .find(|(x, _, _)| *x == case.situation)
                .unwrap_or_else(|| panic!("situation {:?} not exercised", case.situation));
            let want = case.expected(s);
            if (g.1, g.2.as_str()) != (want.0, want.1.as_str()) {
                wrong.push(format!(
                    "{}: got ({}, {:?}), table ({}, {:?})",
                    case.situation, g.1, g.2, want.0, want.1
                ));
            }
        }
        assert!(wrong.is_empty(), "{s} {shims:?}:\n{}", wrong.join("\n"));
        c.assert_clean();
    }
}

#[test]
fn error_codes_match_the_go_shim_table_on_1_7() {
    table_under(Series::V1_7);
}

#[test]
fn error_codes_match_the_go_shim_table_on_2_2() {
    table_under(Series::V2_2);
}

#[test]
fn error_codes_match_the_go_shim_table_on_2_3() {
    table_under(Series::V2_3);
}

#[test]
fn v3_service_and_connect_answer_like_v2() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("v3");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let mut w = Raw::connect(&shim_socket(&c, &id), Duration::from_secs(20));
    let req = StateRequest {
        id: id.clone(),
        ..Default::default()
    };
    let v2 = w.task("State", &req);
    let v3 = w.call("containerd.task.v3.Task", "State", &req);
    assert_eq!(
        (v2.code, v3.code),
        (0, 0),
        "{} / {}",
        v2.message,
        v3.message
    );
    let s2 = StateResponse::parse_from_bytes(&v2.payload).unwrap();
    let s3 = StateResponse::parse_from_bytes(&v3.payload).unwrap();
    assert_eq!(s2.pid, s3.pid);
    assert_eq!(s2.status.value(), 2, "RUNNING");
    assert_eq!(s2.id, id, "id = process id");
    assert!(s2.exec_id.is_empty());
    assert_eq!(
        s2.exited_at.seconds, -62_135_596_800,
        "not exited = Go zero time"
    );
    let conn = w.task(
        "Connect",
        &ConnectRequest {
            id: "not-there".into(),
            ..Default::default()
        },
    );
    assert_eq!(conn.code, 0, "Connect never fails");
    let cr = ConnectResponse::parse_from_bytes(&conn.payload).unwrap();
    assert!(cr.shim_pid > 0);
    assert_eq!(cr.task_pid, 0);
    c.assert_clean();
}

#[test]
fn oversize_frames_and_bad_envelopes_keep_the_connection() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("big");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let mut w = Raw::connect(&shim_socket(&c, &id), Duration::from_secs(20));
    let big = vec![0u8; (4 << 20) + 1];
    let sid = w.frame(&big, 1);
    let r = w.read_reply(sid);
    assert_eq!(r.code, 8, "RESOURCE_EXHAUSTED: {}", r.message);
    let sid = w.frame(b"\xff\xff\xff", 1);
    let r = w.read_reply(sid);
    assert_eq!(r.code, 3, "INVALID_ARGUMENT: {}", r.message);
    let ok = w.task(
        "State",
        &StateRequest {
            id: id.clone(),
            ..Default::default()
        },
    );
    assert_eq!(ok.code, 0, "connection still serves: {}", ok.message);
    c.assert_clean();
}
