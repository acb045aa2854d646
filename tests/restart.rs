//! containerd killed and restarted at every step of a task's life, for every personality:
//! while runc creates, starts, execs, kills and deletes (a wrapper makes the chosen runc call
//! slow enough to land the kill inside it), and while the container exits. Afterwards the task
//! is reachable, its true state is reported, its exit status arrives exactly once, and it can
//! be cleaned up without leaks. Also: output resumes when a client reattaches, and a SIGKILLed
//! shim's container reports its real exit status.

#[macro_use]
mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A runc wrapper that sleeps before the subcommand named by a flag file in `dir`.
struct SlowRunc {
    dir: tempfile::TempDir,
}

impl SlowRunc {
    /// Installed as `runc` in front of the real one on the shims' PATH (the shims run `runc`
    /// from PATH unless the options name a binary), so every personality goes through it.
    fn new(c: &Ctd) -> SlowRunc {
        let dir = tempfile::tempdir().unwrap();
        let runc = which("runc").expect("runc");
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  case \"$a\" in\n    create|start|exec|kill|delete)\n      if [ -e {d}/slow-$a ]; then rm -f {d}/slow-$a; touch {d}/in-$a; sleep 3; fi\n      break;;\n  esac\ndone\nexec {runc} \"$@\"\n",
            d = dir.path().display(),
            runc = runc.display()
        );
        let p = c.shims.join("runc");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        SlowRunc { dir }
    }
    /// Make the next `op` slow.
    fn arm(&self, op: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(format!("in-{op}")));
        std::fs::write(self.dir.path().join(format!("slow-{op}")), "").unwrap();
    }
    /// Wait until runc is inside the slow `op`.
    fn wait_inside(&self, op: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.dir.path().join(format!("in-{op}")).exists() {
            assert!(Instant::now() < deadline, "runc {op} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run `ctr` in the background (it dies with containerd; we only care about the shim).
fn background(c: &Ctd, args: &[String]) -> std::process::Child {
    spawn(
        c.ctr_cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn kill_ctr(ch: std::process::Child) {
    // SAFETY: signalling the ctr this test started.
    unsafe {
        libc::kill(ch.id() as i32, libc::SIGKILL);
    }
    let _ = finish(ch, Duration::from_secs(10));
}

/// Kill containerd while runc creates / starts the container; after the restart the task is
/// there in its true state and can be run to the end.
fn restart_during_create_and_start(rt: Runtime) {
    let Some(mut c) = Ctd::start() else { return };
    let slow = SlowRunc::new(&c);
    for op in ["create", "start"] {
        let id = c.id(op);
        slow.arm(op);
        let args = c.run_args(rt, &id, &["-d"], &["sh", "-c", "sleep 2; exit 7"]);
        let ctr = background(&c, &args);
        slow.wait_inside(op);
        c.restart(libc::SIGKILL);
        kill_ctr(ctr);
        // The runc call finished while containerd was away.
        std::thread::sleep(Duration::from_secs(4));
        let tasks = c.tasks();
        let st = tasks.get(&id).map(|t| t.1.clone());
        match op {
            // Created but never started (ctr died before Start): start it now.
            "create" => {
                assert_eq!(st.as_deref(), Some("CREATED"), "{op}: {tasks:?}");
                // ctr has no command to start an existing task: containerd's gRPC has.
                let (code, msg) = grpc::unary(
                    &c.addr,
                    &c.ns,
                    "/containerd.services.tasks.v1.Tasks/Start",
                    grpc::start_task_request(&id),
                );
                assert_eq!(code, 0, "start after restart: {msg}");
            }
            _ => assert!(
                matches!(st.as_deref(), Some("RUNNING") | Some("STOPPED")),
                "{op}: {tasks:?}"
            ),
        }
        assert!(
            c.wait_status(&id, "STOPPED", Duration::from_secs(15)),
            "{op}: {:?}",
            c.tasks()
        );
        let r = c.ctr(&["task", "rm", &id]);
        assert!(r.code == 0 || r.code == 7, "{op}: {}", r.brief());
    }
    c.assert_clean();
}

/// Kill containerd during an exec's runc call and during a kill's; the task stays
/// controllable and the kill's exit status arrives after the restart, exactly once.
fn restart_during_exec_and_kill(rt: Runtime) {
    let Some(mut c) = Ctd::start() else { return };
    let slow = SlowRunc::new(&c);
    let id = c.id("ek");
    let r = c.run(rt, &id, &["-d"], &["sleep", "300"]);
    assert_eq!(r.code, 0, "{}", r.brief());
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(10)));

    slow.arm("exec");
    let ctr = background(
        &c,
        &[
            "task",
            "exec",
            "-d",
            "--exec-id",
            "during",
            &id,
            "sleep",
            "300",
        ]
        .map(String::from),
    );
    slow.wait_inside("exec");
    c.restart(libc::SIGKILL);
    kill_ctr(ctr);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        c.wait_status(&id, "RUNNING", Duration::from_secs(10)),
        "{:?}",
        c.tasks()
    );
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        &id,
        "sh",
        "-c",
        "echo alive",
    ]);
    assert!(e.code == 0 && e.stdout == b"alive\n", "{}", e.brief());

    let ev = Events::watch(&c);
    slow.arm("kill");
    let ctr = background(
        &c,
        &["task", "kill", "-s", "SIGKILL", &id].map(String::from),
    );
    slow.wait_inside("kill");
    c.restart(libc::SIGKILL);
    kill_ctr(ctr);
    let ev = {
        drop(ev);
        Events::watch(&c)
    };
    assert!(
        c.wait_status(&id, "STOPPED", Duration::from_secs(20)),
        "{:?}",
        c.tasks()
    );
    ev.wait_until("init exit", Duration::from_secs(20), |_| {
        ev.of("/tasks/exit", &id).iter().any(|e| e.str("id") == id)
    });
    std::thread::sleep(Duration::from_millis(500));
    let init_exits: Vec<_> = ev
        .of("/tasks/exit", &id)
        .into_iter()
        .filter(|e| e.str("id") == id)
        .collect();
    assert_eq!(init_exits.len(), 1, "{}", ev.dump());
    assert_eq!(init_exits[0].num("exit_status"), 137);
    let r = c.ctr(&["task", "rm", &id]);
    assert!(r.code == 0 || r.code == 137, "{}", r.brief());
    c.assert_clean();
}

/// Kill containerd while runc deletes the task; afterwards nothing is left running and the
/// cleanup completes.
fn restart_during_delete(rt: Runtime) {
    let Some(mut c) = Ctd::start() else { return };
    let slow = SlowRunc::new(&c);
    let id = c.id("del");
    let r = c.run(rt, &id, &["-d"], &["sh", "-c", "exit 5"]);
    assert_eq!(r.code, 0, "{}", r.brief());
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    slow.arm("delete");
    let ctr = background(&c, &["task", "rm", &id].map(String::from));
    slow.wait_inside("delete");
    c.restart(libc::SIGKILL);
    kill_ctr(ctr);
    std::thread::sleep(Duration::from_secs(4));
    // The shim finished the delete while containerd was away; containerd still lists the
    // task. It reads as stopped with its real status, and removing it completes the cleanup.
    let t = c.tasks();
    assert!(
        t.get(&id).is_none_or(|x| x.1 == "STOPPED"),
        "after restart: {t:?}"
    );
    if t.contains_key(&id) {
        let r = c.ctr(&["task", "rm", &id]);
        assert!(r.code == 0 || r.code == 5, "{}", r.brief());
    }
    assert_eq!(c.ctr(&["c", "rm", &id]).code, 0);
    c.assert_clean();
}

/// A shim nobody will ever stop (containerd died before Shutdown and forgot it) ends itself
/// after a while without containers; containerd's dead-shim cleanup then removes the rest.
fn forgotten_shim_exits(rt: Runtime) {
    let Some(c) = Ctd::start_env(Shims::Ours, &[("SHIMGATE_IDLE_EXIT_SECS", "2")]) else {
        return;
    };
    let id = c.id("idle");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    // Busy shims stay: longer than the idle limit with a container.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.shim_pids().len(), 1);
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    c.ctr(&["task", "rm", &id]);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

/// A container exits while containerd is down: its exit status is delivered after the
/// restart, exactly once and with the right value.
fn restart_while_exiting(rt: Runtime) {
    let Some(mut c) = Ctd::start() else { return };
    let id = c.id("exiting");
    c.run_detached(rt, &id, &[], &["sh", "-c", "sleep 1; exit 9"]);
    let pid = c.pid();
    // SAFETY: stopping our own containerd child for the outage.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_secs(3)); // the container exits meanwhile
    c.restart(libc::SIGKILL);
    let ev = Events::watch(&c);
    assert!(
        c.wait_status(&id, "STOPPED", Duration::from_secs(20)),
        "{:?}",
        c.tasks()
    );
    // The status is in the task (containerd's Delete returns it).
    let r = c.ctr(&["task", "rm", &id]);
    assert!(r.code == 0 || r.code == 9, "{}", r.brief());
    drop(ev);
    c.assert_clean();
}

/// Output keeps flowing to a client that reattaches after containerd restarted.
fn output_resumes_after_reattach(rt: Runtime) {
    let Some(mut c) = Ctd::start() else { return };
    let id = c.id("attach");
    // Detached: its FIFOs stay (a foreground ctr removes them when containerd goes away).
    c.run_detached(
        rt,
        &id,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    c.restart(libc::SIGKILL);
    let mut att = spawn(
        c.ctr_cmd()
            .args(["task", "attach", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut out = att.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && v.len() < 2000 {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => v.extend_from_slice(&buf[..n]),
            }
        }
        v
    });
    let got = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    kill_ctr(att);
    let nums: Vec<u32> = got
        .lines()
        .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
        .collect();
    assert!(nums.len() >= 10, "no output after reattach: {got:?}");
    // Nothing was lost while nobody read: the FIFO kept everything after what the first
    // client (ctr run -d, which reads until it exits) took.
    assert!(nums[0] <= 1, "{nums:?}");
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps or disorder: {nums:?}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    c.ctr(&["task", "rm", &id]);
    c.assert_clean();
}

/// A SIGKILLed shim whose container had already exited: containerd's cleanup (`delete`)
/// reports the container's real status, not a generic 137. Task API personalities only (for
/// the v1 runtime containerd cleans up a dead shim itself).
fn shim_killed_after_exit_reports_real_status(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let ev = Events::watch(&c);
    let id = c.id("realexit");
    // The init exits with 23 while ctr is not looking; then its shim is killed before
    // containerd deletes the task.
    c.run_detached(rt, &id, &[], &["sh", "-c", "sleep 1; exit 23"]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let bundle = c.bundle(&id);
    assert!(Path::new(&bundle).join("shimgate-exit.json").exists());
    for p in c.shim_pids() {
        // SAFETY: killing the shim this test started.
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
    // containerd runs `delete` and republishes the exit with what it returned.
    ev.wait_until("delete after shim death", Duration::from_secs(20), |_| {
        !ev.of("/tasks/delete", &id).is_empty()
    });
    let deletes = ev.of("/tasks/delete", &id);
    assert_eq!(deletes[0].num("exit_status"), 23, "{}", ev.dump());
    c.ctr(&["task", "rm", "-f", &id]);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

/// A critical task of the shim (the SIGCHLD/waitpid loop, the exit dispatcher, the event
/// delivery) that ends must not leave a shim that answers requests but never reports another
/// exit: the shim exits loudly and containerd cleans up after it as after any dead shim (the
/// container is killed, the task is gone or stopped). The end is forced with a fault of the
/// tests' second build (`SHIMGATE_TEST_FAULT`), armed once the container runs.
fn losing_a_critical_task_ends_the_shim(rt: Runtime, fault: &str) {
    let arm = tempfile::tempdir().unwrap();
    let armed = arm.path().join("armed");
    let armed_s = armed.display().to_string();
    let Some(c) = Ctd::start_env(
        Shims::Ours,
        &[
            ("SHIMGATE_TEST_FAULT", fault),
            ("SHIMGATE_TEST_FAULT_ARM", &armed_s),
        ],
    ) else {
        return;
    };
    // The shims of this containerd are the test build (it has the fault knobs).
    let next = common::next::next_binary();
    for n in [
        "containerd-shim",
        "containerd-shim-runc-v1",
        "containerd-shim-runc-v2",
    ] {
        let link = c.shims.join(n);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&next, &link).unwrap();
    }
    let before = c.shim_pids();
    let id = c.id("crit");
    c.run_detached(rt, &id, &[], &["sleep", "600"]);
    let shim = c
        .shim_pids()
        .into_iter()
        .find(|p| !before.contains(p))
        .unwrap();
    let init = c.tasks()[&id].0;
    std::fs::write(&armed, "").unwrap();
    // Anything that makes a child exit, an exit and events: an exec.
    let _ = c.ctr_timeout(
        &["task", "exec", "--exec-id", "x", &id, "true"],
        Duration::from_secs(20),
    );
    let alive = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        reap_orphans();
        let task = c.tasks().get(&id).map(|t| t.1.clone());
        let settled = task.as_deref().is_none_or(|s| s == "STOPPED");
        if !alive(shim) && !alive(init) && settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fault}: shim alive {}, container init alive {}, task {task:?}\n{}",
            alive(shim),
            alive(init),
            c.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ctr(&["task", "rm", "-f", &id]);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

#[test]
fn runcv2_losing_the_sigchld_loop_ends_the_shim() {
    losing_a_critical_task_ends_the_shim(RUNC_V2, "sigchld-loop-ends");
}

#[test]
fn v1linux_losing_the_exit_dispatcher_ends_the_shim() {
    losing_a_critical_task_ends_the_shim(V1_LINUX, "exit-dispatcher-ends");
}

#[test]
fn runcv1_losing_event_delivery_ends_the_shim() {
    losing_a_critical_task_ends_the_shim(RUNC_V1, "event-delivery-ends");
}

/// `assert_clean` looks before it cleans: a task the test left exited but undeleted (as when
/// its own teardown failed) is reported, although the clean-up that follows removes it.
#[test]
fn assert_clean_reports_what_the_test_left_behind() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("left");
    c.run_detached(RUNC_V2, &id, &[], &["sh", "-c", "sleep 1; exit 3"]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.assert_clean()));
    let err = r.expect_err("assert_clean passed with an undeleted task");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains(&format!("task {id} exited but was never deleted")),
        "{msg}"
    );
    // The clean-up ran all the same.
    c.assert_clean();
}

personalities!(
    restart_during_create_and_start,
    restart_during_exec_and_kill,
    restart_during_delete,
    restart_while_exiting,
    output_resumes_after_reattach,
    forgotten_shim_exits,
);

#[test]
fn runcv2_shim_killed_after_exit_reports_real_status() {
    shim_killed_after_exit_reports_real_status(RUNC_V2);
}

#[test]
fn runcv1_shim_killed_after_exit_reports_real_status() {
    shim_killed_after_exit_reports_real_status(RUNC_V1);
}
