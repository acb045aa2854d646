//! Docker on shimgate: a private `dockerd` (Debian's docker.io 20.10) on a private containerd
//! whose shims are shimgate. The image is a busybox rootfs tarball this test builds and
//! `docker import`s (no registry, never a pull). Covers `docker run` (attached, with exit
//! code and both streams, and detached), `docker exec`, `docker logs`, a dockerd restart with
//! `--live-restore` that keeps the container running under the same shimgate process, and
//! `docker stop`.
//!
//! Needs root, containerd, runc, /bin/busybox and docker.io (`/usr/sbin/dockerd`,
//! `/usr/bin/docker`); fails loudly without them unless `SHIMGATE_SKIP_INTEGRATION=1`.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DOCKERD: &str = "/usr/sbin/dockerd";
/// The client from the same package (another `docker` earlier in $PATH may be a different
/// version).
const DOCKER: &str = "/usr/bin/docker";
const IMAGE: &str = "sgtest/busybox:latest";

fn docker_present() -> bool {
    let missing: Vec<&str> = [DOCKERD, DOCKER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("SHIMGATE_SKIP_INTEGRATION").is_some() {
        eprintln!("SKIP: {missing:?} missing (apt-get install docker.io)");
        return false;
    }
    panic!("the Docker test needs {missing:?}: apt-get install docker.io (or set SHIMGATE_SKIP_INTEGRATION=1)");
}

/// A private dockerd on the private containerd `ctd`.
struct Dockerd {
    dir: PathBuf,
    ctd_addr: PathBuf,
    ns: String,
    proc: Option<Child>,
}

impl Dockerd {
    fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn start(ctd: &Ctd) -> Dockerd {
        let dir = ctd.dir.join("docker");
        std::fs::create_dir_all(&dir).unwrap();
        // An empty config file, so the host's /etc/docker/daemon.json plays no part.
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut d = Dockerd {
            dir,
            ctd_addr: ctd.addr.clone(),
            // Docker's containers live in the test containerd's own namespace, so its
            // cleanup (and leak check) covers them.
            ns: ctd.ns.clone(),
            proc: None,
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = &self.dir;
        let child = spawn(
            Command::new(DOCKERD)
                .arg(format!("--config-file={}", d.join("daemon.json").display()))
                .arg(format!("--data-root={}", d.join("data").display()))
                .arg(format!("--exec-root={}", d.join("exec").display()))
                .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
                .arg(format!("--host=unix://{}", self.sock().display()))
                .arg(format!("--containerd={}", self.ctd_addr.display()))
                .arg(format!("--containerd-namespace={}", self.ns))
                .arg(format!("--containerd-plugins-namespace={}p", self.ns))
                .args([
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip6tables=false",
                    "--userland-proxy=false",
                    "--storage-driver=vfs",
                    "--live-restore",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        self.proc = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.sock().exists() && self.docker(&["version"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not come up:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(c) = self.proc.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let (_, timed_out) = finish(c, Duration::from_secs(30));
            assert!(!timed_out, "dockerd did not stop:\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Out {
        run_cmd(
            Command::new(DOCKER)
                .arg("-H")
                .arg(format!("unix://{}", self.sock().display()))
                .args(args),
            None,
            Duration::from_secs(120),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.docker(args);
        assert_eq!(
            r.code,
            0,
            "docker {args:?}: {}\ndockerd log tail:\n{}",
            r.brief(),
            tail(&self.log(), 30)
        );
        r.text()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.proc.is_some() {
            let _ = self.docker(&["rm", "-f", "sg-live", "sg-attached"]);
        }
        self.stop();
        // vfs layers and netns mounts under the data and exec roots.
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.display().to_string();
            for line in mi.lines().rev() {
                if let Some(mp) = line.split_whitespace().nth(4) {
                    if mp.starts_with(&prefix) {
                        let _ = Command::new("umount").args(["-l", mp]).status();
                    }
                }
            }
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// A busybox rootfs as a tarball, for `docker import`.
fn image_tarball(dir: &Path) -> PathBuf {
    let root = dir.join("image-rootfs");
    for d in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if a != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(a));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar");
    tar
}

/// The shim daemon serving containerd task `id` (argv `-id <id>`), if any.
fn shim_for(id: &str) -> Option<(u32, Vec<String>, PathBuf)> {
    shimgate::admin::host::processes()
        .into_iter()
        .find_map(|p| {
            let is_shim = p
                .args
                .first()
                .is_some_and(|a| a.contains("containerd-shim"));
            let serving = !matches!(p.args.last().map(String::as_str), Some("start" | "delete"));
            let ours = p.args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
            (is_shim && serving && ours).then_some((p.pid, p.args, p.exe?))
        })
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn docker_run_exec_logs_live_restore_stop() {
    if !docker_present() {
        return;
    }
    let Some(ctd) = Ctd::start() else {
        return;
    };
    let mut dockerd = Dockerd::start(&ctd);
    let tar = image_tarball(&ctd.dir);
    dockerd.ok(&[
        "import",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        IMAGE,
    ]);

    // Attached run: both streams and the exit code come back through shimgate.
    let r = dockerd.docker(&[
        "run",
        "--name",
        "sg-attached",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 3",
    ]);
    assert_eq!(r.code, 3, "{}\n{}", r.brief(), tail(&dockerd.log(), 30));
    assert!(r.text().contains("out-line"), "{}", r.brief());
    assert!(r.err().contains("err-line"), "{}", r.brief());
    dockerd.ok(&["rm", "sg-attached"]);

    // Detached run under shimgate's runc.v2.
    let id = dockerd
        .ok(&[
            "run",
            "-d",
            "--name",
            "sg-live",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 1; done",
        ])
        .trim()
        .to_string();
    let (shim_pid, shim_args, shim_exe) =
        shim_for(&id).unwrap_or_else(|| panic!("no shim for {id}"));
    assert!(
        shim_args[0].ends_with("containerd-shim-runc-v2"),
        "{shim_args:?}"
    );
    assert_eq!(
        std::fs::canonicalize(&shim_exe).unwrap(),
        std::fs::canonicalize(ctd.shimgate.as_ref().unwrap()).unwrap(),
        "the container's shim is shimgate"
    );
    let pid: u32 = dockerd
        .ok(&["inspect", "-f", "{{.State.Pid}}", "sg-live"])
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 0 && alive(pid));

    // exec and logs.
    assert_eq!(
        dockerd
            .ok(&["exec", "sg-live", "sh", "-c", "echo exec-$((6*7))"])
            .trim(),
        "exec-42"
    );
    let r = dockerd.docker(&["exec", "sg-live", "sh", "-c", "exit 5"]);
    assert_eq!(r.code, 5, "{}", r.brief());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dockerd.ok(&["logs", "sg-live"]).contains("started") {
        assert!(Instant::now() < deadline, "no 'started' in docker logs");
        std::thread::sleep(Duration::from_millis(100));
    }

    // dockerd restart with live-restore: same shim, same container process, still usable.
    dockerd.stop();
    assert!(alive(shim_pid) && alive(pid), "container survives dockerd");
    dockerd.launch();
    assert_eq!(
        dockerd
            .ok(&[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.Pid}}",
                "sg-live"
            ])
            .trim(),
        format!("true {pid}")
    );
    assert_eq!(shim_for(&id).map(|s| s.0), Some(shim_pid), "same shim");
    assert_eq!(
        dockerd
            .ok(&["exec", "sg-live", "echo", "after-restore"])
            .trim(),
        "after-restore"
    );

    // stop: SIGTERM reaches the trap, the exit comes back, the shim goes away.
    dockerd.ok(&["stop", "-t", "10", "sg-live"]);
    assert_eq!(
        dockerd
            .ok(&[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.ExitCode}}",
                "sg-live"
            ])
            .trim(),
        "false 0"
    );
    assert!(dockerd.ok(&["logs", "sg-live"]).contains("bye"));
    dockerd.ok(&["rm", "sg-live"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(shim_pid) {
        reap_orphans();
        assert!(Instant::now() < deadline, "shim {shim_pid} still alive");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "docker flow ok: shim pid {shim_pid} ({}), container pid {pid}, kept across a dockerd restart",
        shim_args.join(" ")
    );
    drop(dockerd);
    ctd.assert_clean();
}
