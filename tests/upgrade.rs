//! Live upgrade (`shimgate upgrade`), for every personality, through a private containerd:
//! running shims move to a differently-versioned build of this tree (built once into
//! `target/upgrade-next`) and keep their pid, their containers' pids, the output flowing with
//! no byte lost, stdin, a running exec's terminal, and their exits (including exits while no
//! image serves, delivered once with the right status); containerd notices nothing. Also: an
//! unusable binary is refused with the old one still serving, and a new image that fails to
//! adopt rolls back to the old binary, which answers with the reason.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::pty::PtySession;
use common::*;

const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");
const NEXT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-next");

/// A build of this tree that reports [`NEXT_VERSION`]: the binary to upgrade to. Its own
/// target directory keeps it apart from the binary under test (cargo rebuilds it
/// incrementally; the first build compiles the dependencies once).
fn next_binary() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/upgrade-next");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = run_cmd(
            Command::new(cargo)
                .current_dir(root)
                .args(["build", "--quiet", "--bin", "shimgate", "--target-dir"])
                .arg(&dir)
                .env("SHIMGATE_VERSION", NEXT_VERSION)
                .env("CARGO_PROFILE_DEV_DEBUG", "0"),
            None,
            Duration::from_secs(1200),
        );
        assert_eq!(out.code, 0, "build the next binary: {}", out.err());
        dir.join("debug/shimgate")
    })
    .clone()
}

/// `shimgate upgrade --json` for these shims; the parsed outcomes.
fn upgrade(pids: &[u32], binary: Option<&Path>, extra: &[&str]) -> (Out, Vec<serde_json::Value>) {
    let mut cmd = Command::new(shimgate_bin());
    cmd.arg("upgrade").arg("--json");
    for p in pids {
        cmd.arg("--pid").arg(p.to_string());
    }
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    cmd.args(extra);
    let out = run_cmd(&mut cmd, None, Duration::from_secs(120));
    let parsed = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default();
    (out, parsed)
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// An attached `ctr run`: its stdin to write to and its stdout as it arrives.
struct Attached {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Attached {
    fn start(c: &Ctd, args: Vec<String>, stdin: bool) -> Attached {
        let mut child = spawn(
            c.ctr_cmd()
                .args(args)
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut so = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match so.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Attached {
            stdin: child.stdin.take(),
            child,
            out,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn write(&mut self, b: &[u8]) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(b).unwrap();
        s.flush().unwrap();
    }

    fn finish(mut self, limit: Duration) -> (i32, String) {
        drop(self.stdin.take());
        let (code, timed_out) = finish(self.child, limit);
        assert!(
            !timed_out,
            "ctr did not end; output:\n{}",
            String::from_utf8_lossy(&self.out.lock().unwrap())
        );
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let out = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
        (code, out)
    }
}

/// The container exits (init and execs) published for `id`: (exec id, status).
fn exits(ev: &Events, id: &str) -> Vec<(String, u64)> {
    ev.of("/tasks/exit", id)
        .iter()
        .map(|e| (e.str("id").to_string(), e.num("exit_status")))
        .collect()
}

/// Shims of this containerd that were not there in `before`.
fn new_shims(c: &Ctd, before: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = c
        .shim_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    v.sort_unstable();
    v
}

/// Everything keeps working across an upgrade: see the module docs.
fn keeps_everything(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let next = next_binary();
    let ev = Events::watch(&c);
    let ann = format!("io.containerd.runc.v2.group={}", c.id("grp"));
    let flags: Vec<&str> = if rt.groups {
        vec!["--annotation", &ann]
    } else {
        Vec::new()
    };
    let before = c.shim_pids();

    // Output that keeps coming through the hand-over.
    let counter = c.id("count");
    let count = Attached::start(
        &c,
        c.run_args(
            rt,
            &counter,
            &flags,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 1000 ]; do echo n$i; i=$((i+1)); usleep 3000; done; exit 3",
            ],
        ),
        false,
    );
    // Stdin before and after.
    let echo = c.id("echo");
    let mut echoer = Attached::start(
        &c,
        c.run_args(
            rt,
            &echo,
            &flags,
            &["sh", "-c", "while read l; do echo got-$l; done; exit 4"],
        ),
        true,
    );
    assert!(
        c.wait_status(&echo, "RUNNING", Duration::from_secs(10)),
        "{:?}",
        c.tasks()
    );
    echoer.write(b"before\n");
    assert!(echoer.wait_for("got-before", Duration::from_secs(10)));
    // A running exec with a terminal.
    let sleeper = c.id("sleep");
    c.run_detached(rt, &sleeper, &flags, &["sleep", "600"]);
    let mut tty_cmd = c.ctr_cmd();
    tty_cmd.args(["task", "exec", "-t", "--exec-id", "tty1", &sleeper, "sh"]);
    let mut tty = PtySession::start(tty_cmd);
    tty.write(b"echo pre-$((1+1))\n");
    assert!(
        tty.wait_for("pre-2", Duration::from_secs(10)),
        "{}",
        tty.output()
    );
    assert!(count.wait_for("n20\n", Duration::from_secs(10)));

    let shims = new_shims(&c, &before);
    assert_eq!(shims.len(), if rt.groups { 1 } else { 3 }, "{shims:?}");
    let tasks = c.tasks();
    let exes: Vec<PathBuf> = shims.iter().map(|p| exe_of(*p)).collect();

    let (out, outcomes) = upgrade(&shims, Some(&next), &[]);
    eprintln!("{}: {}", rt.short, out.text());
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes.len(), shims.len(), "{}", out.text());
    for o in &outcomes {
        assert_eq!(o["from"], THIS_VERSION, "{o}");
        assert_eq!(o["to"], NEXT_VERSION, "{o}");
        assert!(o["handover_micros"].as_u64().unwrap() > 0, "{o}");
    }
    // Same processes, new program.
    assert_eq!(new_shims(&c, &before), shims);
    for (pid, old) in shims.iter().zip(&exes) {
        let now = exe_of(*pid);
        assert_ne!(&now, old);
        assert_eq!(now, next.canonicalize().unwrap());
    }
    let after = c.tasks();
    for id in [&counter, &echo, &sleeper] {
        assert_eq!(after.get(id), tasks.get(id), "{id}: {after:?} vs {tasks:?}");
    }

    // Stdin and the terminal still work, in both directions.
    echoer.write(b"after\n");
    assert!(
        echoer.wait_for("got-after", Duration::from_secs(10)),
        "{}",
        echoer.text()
    );
    tty.write(b"echo post-$((2+3))\n");
    assert!(
        tty.wait_for("post-5", Duration::from_secs(10)),
        "{}",
        tty.output()
    );
    tty.write(b"exit 6\n");
    let (code, shown) = tty.finish(Duration::from_secs(20));
    assert_eq!(code, 6, "{shown}");
    // A new exec, a kill and the waits behind them.
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &sleeper,
        "sh",
        "-c",
        "echo hi; exit 5",
    ]);
    assert_eq!((e.code, e.text()), (5, "hi\n".to_string()), "{}", e.brief());
    let (code, text) = echoer.finish(Duration::from_secs(20));
    assert_eq!(code, 4, "{text}");
    assert_eq!(text, "got-before\ngot-after\n");
    // Every line of the counter, in order, none twice.
    let (code, text) = count.finish(Duration::from_secs(60));
    assert_eq!(code, 3);
    let lines: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    assert!(
        lines == want,
        "output changed: {} lines, first difference at {:?}",
        lines.len(),
        lines.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &sleeper]).code, 0);
    assert!(c.wait_status(&sleeper, "STOPPED", Duration::from_secs(10)));

    // Each exit exactly once, with its status.
    ev.wait_until("the exits", Duration::from_secs(20), |_| {
        exits(&ev, &sleeper).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut s = exits(&ev, &sleeper);
    s.sort();
    assert_eq!(
        s,
        vec![
            ("e2".to_string(), 5),
            (sleeper.clone(), 137),
            ("tty1".to_string(), 6)
        ],
        "{}",
        ev.dump()
    );
    assert_eq!(exits(&ev, &counter), vec![(counter.clone(), 3)]);
    assert_eq!(exits(&ev, &echo), vec![(echo.clone(), 4)]);
    for id in [&counter, &echo, &sleeper] {
        let _ = c.ctr(&["task", "rm", id]);
        let _ = c.ctr(&["container", "rm", id]);
    }
    // containerd saw nothing wrong with any shim.
    let log = c.log();
    for line in log.lines().filter(|l| l.contains("level=error")) {
        assert!(
            ![&counter, &echo, &sleeper]
                .iter()
                .any(|id| line.contains(id.as_str())),
            "containerd complained: {line}"
        );
    }
    c.assert_clean();
}

#[test]
fn runcv2_group_keeps_everything() {
    keeps_everything(RUNC_V2);
}

#[test]
fn runcv1_keeps_everything() {
    keeps_everything(RUNC_V1);
}

#[test]
fn v1linux_keeps_everything() {
    keeps_everything(V1_LINUX);
}
