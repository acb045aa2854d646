//! Unit tests of `reaper/spawner.rs`, kept beside it so the module reads as its job alone.

use super::*;
use std::sync::OnceLock;

/// One reaper for the test binary, polling only claimed pids (it must not steal the
/// children other tests wait for themselves).
fn spawner() -> Spawner {
    static R: OnceLock<Reaper> = OnceLock::new();
    let r = R.get_or_init(|| {
        let r = Reaper::new();
        r.start_polling_thread(Duration::from_millis(5)).unwrap();
        r
    });
    Spawner::new(r.clone())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

/// The same script as a std `Command` (forked) and as a [`Cmd`] (vfork-style): every
/// behaviour of `output` must be the same for both.
fn both(script: &str) -> [Program; 2] {
    let mut raw = Cmd::new("sh");
    raw.args(["-c", script]);
    [sh(script).into(), raw.into()]
}

#[test]
fn output_collects_status_and_streams() {
    for p in both("read x; echo out-$x; echo err >&2; exit 3") {
        let o = block_on(spawner().output(p, Some(b"hi\n".to_vec()), None, 1 << 20)).unwrap();
        assert_eq!(
            (o.status, o.stdout.as_slice(), o.stderr.as_slice()),
            (3, &b"out-hi\n"[..], &b"err\n"[..])
        );
        assert!(!o.timed_out);
    }
}

#[test]
fn deadline_kills_and_still_collects_exit() {
    for p in both("exec sleep 30") {
        let o =
            block_on(spawner().output(p, None, Some(Duration::from_millis(100)), 1024)).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.status, 137);
    }
}

#[test]
fn a_grandchild_holding_the_pipes_does_not_wedge_the_caller() {
    for p in both("echo early; sleep 30 & exit 0") {
        let t = std::time::Instant::now();
        let o = block_on(spawner().output(p, None, None, 1024)).unwrap();
        assert_eq!(o.status, 0);
        assert_eq!(o.stdout, b"early\n");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn flood_is_capped() {
    for p in both("head -c 1000000 /dev/zero") {
        let o = block_on(spawner().output(p, None, None, 1000)).unwrap();
        assert_eq!((o.status, o.stdout.len()), (0, 1000));
    }
}

#[test]
fn missing_binary_is_an_error_not_a_panic() {
    let progs: [Program; 4] = [
        Command::new("/nonexistent/shimgate-test").into(),
        Cmd::new("/nonexistent/shimgate-test").into(),
        Command::new("shimgate-no-such-program").into(),
        Cmd::new("shimgate-no-such-program").into(),
    ];
    for p in progs {
        let e = block_on(spawner().output(p, None, None, 10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}

/// What a vfork-started child gets: its argv, the environment with the changes applied,
/// the working directory, the descriptors given for 0..2 (and no other of ours), the
/// default disposition of SIGPIPE and an empty signal mask, like a std child.
#[test]
fn a_raw_child_gets_what_was_asked_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut c = Cmd::new("sh");
    c.args([
        "-c",
        "echo \"$0|$1|${SHIMGATE_T_GONE-unset}|$SHIMGATE_T_SET|$(pwd)\"; \
             ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
             grep -E '^(SigBlk|SigIgn)' /proc/self/status",
        "zero",
        "arg 1",
    ])
    .env_remove("SHIMGATE_T_GONE")
    .env("SHIMGATE_T_SET", "v=1")
    .current_dir(dir.path())
    .stdout(ChildIo::Fd(OwnedFd::from(out)));
    std::env::set_var("SHIMGATE_T_GONE", "present");
    let st = block_on(async {
        let child = spawner().spawn_cmd(c).unwrap();
        child.wait().await.unwrap()
    });
    assert_eq!(st.status, 0);
    let text = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(lines[0], format!("zero|arg 1|unset|v=1|{}", cwd.display()));
    // The same descriptors as a std child gets (0..2, what the test harness leaves
    // inheritable, the one `ls` opens).
    let std_fds = Command::new("sh")
        .args(["-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"])
        .output()
        .unwrap()
        .stdout;
    let count = |s: &str| s.split_whitespace().count();
    assert_eq!(
        count(lines[1]),
        count(&String::from_utf8_lossy(&std_fds)),
        "{text}"
    );
    assert_eq!(lines[2], "SigBlk:\t0000000000000000", "{text}");
    // The shell ignores nothing on its own; SIGPIPE (ignored by Rust) is back to default.
    let ign = u64::from_str_radix(lines[3].trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
}

/// A program that exists but cannot be executed is an error too (execvp's EACCES).
#[test]
fn a_raw_child_that_cannot_exec_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("not-executable");
    std::fs::write(&f, "#!/bin/sh\n").unwrap();
    let e = block_on(spawner().output(Cmd::new(&f), None, None, 10)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
}

/// Run one test of this binary again in a child process (with `role` in its environment)
/// and return its exit code and output. What the shim does process-wide (a SIGCHLD loop
/// reaping `waitpid(-1)`, becoming a subreaper) cannot run beside the other tests of this
/// binary: it would steal their children.
fn rerun(test: &str, role: &str) -> (i32, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SHIMGATE_SPAWNER_TEST_ROLE", role)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn role() -> Option<String> {
    std::env::var("SHIMGATE_SPAWNER_TEST_ROLE").ok()
}

/// The production reaper (SIGCHLD + `waitpid(-1)`, which reaps every child, claimed or
/// not) and children that exit before their pid is claimed: none of those exits is lost.
/// (The polling reaper of the other tests only reaps claimed pids, so it cannot tell.)
#[test]
fn exit_before_claim_is_not_lost() {
    const TEST: &str = "reaper::spawner::tests::exit_before_claim_is_not_lost";
    if role().as_deref() == Some("reaper") {
        // Several workers: the SIGCHLD task may run while a spawn is between its fork and
        // its claim, which is the window the subscription covers.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = Reaper::new();
            let _loop = r.start().unwrap();
            let sp = Spawner::new(r);
            let all = async {
                for i in 0..200u32 {
                    let [std, raw] = both(&format!("exit {}", i % 7));
                    let p = if i % 2 == 0 { std } else { raw };
                    let o = sp.output(p, None, None, 10).await.unwrap();
                    assert_eq!(o.status, i % 7);
                }
                // A storm: many at once, every exit routed to its own caller.
                let many = (0..50u32).map(|i| {
                    let sp = sp.clone();
                    let [std, raw] = both(&format!("exit {i}"));
                    let p = if i % 2 == 0 { std } else { raw };
                    async move { (i, sp.output(p, None, None, 10).await) }
                });
                for (i, o) in futures_join_all(many).await {
                    assert_eq!(o.unwrap().status, i);
                }
            };
            tokio::time::timeout(Duration::from_secs(30), all)
                .await
                .expect("an exit was lost (a caller waited for ever)");
        });
        println!("ROLE-DONE");
        return;
    }
    if role().is_some() {
        return;
    }
    let (code, out) = rerun(TEST, "reaper");
    assert!(code == 0 && out.contains("ROLE-DONE"), "{out}");
}

async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let hs: Vec<_> = fs.map(tokio::spawn).collect();
    let mut v = Vec::new();
    for h in hs {
        v.push(h.await.unwrap());
    }
    v
}

/// The deadline and the child's exit become ready in the same turn of the runtime (the
/// thread was busy when both happened): the exit wins. The call finished; its pid may
/// already be someone else's, so it must not be SIGKILLed, and it is no timeout. (A paused
/// clock makes the turn exact: the child is reaped while the task is not polled, then the
/// clock jumps past the deadline, so both are ready at the next poll.)
#[test]
fn deadline_ready_together_with_the_exit_is_no_timeout() {
    for _ in 0..20 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let o = rt.block_on(async {
            let sp = spawner();
            let mut call = std::pin::pin!(sp.output(
                Command::new("true"),
                None,
                Some(Duration::from_millis(100)),
                10,
            ));
            // One poll: the child is spawned and its exit, pipes and deadline watched.
            std::future::poll_fn(|cx| {
                assert!(std::future::Future::poll(call.as_mut(), cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            // The child exits and the polling reaper delivers it, meanwhile.
            std::thread::sleep(Duration::from_millis(100));
            tokio::time::advance(Duration::from_millis(500)).await;
            call.await.unwrap()
        });
        assert_eq!((o.status, o.timed_out), (0, false));
    }
}

/// A shim that dies between forking a runtime call and the child's `PR_SET_PDEATHSIG`
/// never sends the signal; the child must see it has been re-parented and not run on.
/// Roles: the test starts `middle` (a subreaper, so the orphan comes to it), which starts
/// `parent`; `parent` spawns `sleep 3` through the spawner with a slow pre-exec step and
/// exits while the child is still in it.
#[test]
fn a_child_whose_parent_died_before_pdeathsig_does_not_run_on() {
    const TEST: &str =
        "reaper::spawner::tests::a_child_whose_parent_died_before_pdeathsig_does_not_run_on";
    match role().as_deref() {
        Some(p @ ("parent" | "raw-parent")) => {
            // The parent dies while the child sleeps in its pre-exec step.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                // SAFETY: ends this helper process at once, as a SIGKILLed shim would.
                unsafe { libc::_exit(0) };
            });
            if p == "raw-parent" {
                let mut cmd = Cmd::new("sleep");
                cmd.arg("3").pdeathsig(true);
                cmd.delay_before_pdeathsig = Duration::from_millis(300);
                let _ = Spawner::new(Reaper::new()).spawn_cmd(cmd);
            } else {
                let mut cmd = Command::new("sleep");
                cmd.arg("3");
                // SAFETY: runs in the forked child before exec; only nanosleep via libc.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::usleep(300_000);
                        Ok(())
                    });
                }
                let _ = Spawner::new(Reaper::new()).spawn(cmd, true);
            }
            std::thread::sleep(Duration::from_secs(10));
        }
        Some(m @ ("middle" | "middle-raw")) => {
            crate::reaper::set_subreaper().unwrap();
            let started = std::time::Instant::now();
            let parent_role = if m == "middle" {
                "parent"
            } else {
                "raw-parent"
            };
            let mut parent = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--test-threads=1"])
                .env("SHIMGATE_SPAWNER_TEST_ROLE", parent_role)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            parent.wait().unwrap();
            // Then the orphan: how long it ran and how it ended.
            let mut status = 0;
            // SAFETY: waitpid on our children (the orphan is re-parented to us).
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            println!(
                "ORPHAN pid={pid} exited={} code={} after_ms={}",
                libc::WIFEXITED(status),
                libc::WEXITSTATUS(status),
                started.elapsed().as_millis()
            );
        }
        Some(_) => {}
        None => {
            for middle in ["middle", "middle-raw"] {
                let (code, out) = rerun(TEST, middle);
                assert_eq!(code, 0, "{out}");
                let line = out
                    .lines()
                    .find_map(|l| l.find("ORPHAN").map(|i| &l[i..]))
                    .unwrap_or("");
                let ms: u64 = line
                    .rsplit("after_ms=")
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                // `sleep 3` running to completion takes 3 s; refusing to run takes ~0.3 s.
                assert!(
                    ms < 2000 && !line.contains("exited=true code=0"),
                    "the orphaned child ran on: {line}\n{out}"
                );
            }
        }
    }
}
