//! Test support: a private containerd wired to shimgate, per test.
//!
//! Each [`Ctd`] has its own root, state, sockets and namespace under a temp dir, `PATH`
//! leading to symlinks of the shimgate binary (`containerd-shim-runc-v1/-v2`) and the v1
//! runtime's `shim` set to our `containerd-shim` symlink. It is torn down on drop: tasks
//! killed and deleted, containerd stopped, leftover shims of *this* containerd killed, sockets
//! of our ids removed, runc state and cgroups of our namespace removed, mounts under the dir
//! lazily unmounted, and zombie children reaped (the machine's PID 1 does not reap).
//!
//! Integration tests need root, containerd, ctr, runc and a static busybox; without them they
//! fail loudly (set `SHIMGATE_SKIP_INTEGRATION=1` to skip on a developer machine).

#![allow(dead_code)]

/// `personalities!(a, b)` makes test modules `runcv1`, `runcv2` and `v1linux`, each with tests
/// `a` and `b` calling `super::a(RUNTIME)`. Needs `RUNC_V1`, `RUNC_V2`, `V1_LINUX` in scope.
#[allow(unused_macros)]
macro_rules! personalities {
    ($($scenario:ident),* $(,)?) => {
        mod runcv1 { $( #[test] fn $scenario() { super::$scenario(super::RUNC_V1) } )* }
        mod runcv2 { $( #[test] fn $scenario() { super::$scenario(super::RUNC_V2) } )* }
        mod v1linux { $( #[test] fn $scenario() { super::$scenario(super::V1_LINUX) } )* }
    };
}

/// `series_matrix!(a, b)` makes a test module per containerd series (`ctd16`, `ctd17`,
/// `ctd22`, `ctd23`), each with a module per runtime type that series starts (`runcv1`,
/// `runcv2`, and `v1linux` on 1.x) holding tests `a` and `b` that call
/// `super::super::a(series, runtime)`. One scenario body, run per series x runtime:
/// `cargo test --test containerd ctd23::` runs everything on 2.3.
#[allow(unused_macros)]
macro_rules! series_matrix {
    ($($scenario:ident),* $(,)?) => {
        series_matrix!(@series ctd16, V1_6, [runcv1 RUNC_V1, runcv2 RUNC_V2, v1linux V1_LINUX], [$($scenario),*]);
        series_matrix!(@series ctd17, V1_7, [runcv1 RUNC_V1, runcv2 RUNC_V2, v1linux V1_LINUX], [$($scenario),*]);
        series_matrix!(@series ctd22, V2_2, [runcv1 RUNC_V1, runcv2 RUNC_V2], [$($scenario),*]);
        series_matrix!(@series ctd23, V2_3, [runcv1 RUNC_V1, runcv2 RUNC_V2], [$($scenario),*]);
    };
    (@series $m:ident, $s:ident, [$($rm:ident $rt:ident),*], $scenarios:tt) => {
        mod $m {
            $( series_matrix!(@runtime $rm, $s, $rt, $scenarios); )*
        }
    };
    (@runtime $rm:ident, $s:ident, $rt:ident, [$($scenario:ident),*]) => {
        mod $rm {
            $(
                #[test]
                fn $scenario() {
                    super::super::$scenario(crate::common::Series::$s, crate::common::$rt)
                }
            )*
        }
    };
}

pub mod events;
pub mod grpc;
pub mod next;
pub mod peers;
pub mod pty;
pub mod raw_ttrpc;
pub mod series;

#[allow(unused_imports)]
pub use series::{ConfigParams, CriConfig, CtdOpts, Series};

#[allow(unused_imports)]
pub use pty::pty_run;

#[allow(unused_imports)]
pub use events::{Ev, Events};

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shimgate binary under test: `SHIMGATE_BIN` when set (the cgroup v2 guest runs the
/// release build), else the one cargo built for this test run.
pub fn shimgate_bin() -> PathBuf {
    match std::env::var_os("SHIMGATE_BIN") {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_shimgate")),
    }
}

/// `bin` placed at `dir/name` where only root could have written it, for what a live upgrade
/// will run: the shim refuses a binary that others than root could have replaced, including
/// through any directory above it, and a checkout owned by the user who runs
/// `sudo scripts/test.sh` is such a place. A hard link when `bin` itself is root's and closed
/// to others (no bytes copied), else a copy owned by root with mode 0755. `dir` must be
/// root's (a test's private directory under the sticky `/tmp` is).
pub fn root_safe(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let to = dir.join(name);
    let _ = std::fs::remove_file(&to);
    let md = std::fs::metadata(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let closed = md.uid() == 0 && md.mode() & 0o022 == 0;
    if !(closed && std::fs::hard_link(bin, &to).is_ok()) {
        std::fs::copy(bin, &to).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    to
}

/// A runtime type containerd can run a task with, and the shim binary name behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub name: &'static str,
    pub short: &'static str,
    pub groups: bool,
}

pub const RUNC_V1: Runtime = Runtime {
    name: "io.containerd.runc.v1",
    short: "runcv1",
    groups: false,
};
pub const RUNC_V2: Runtime = Runtime {
    name: "io.containerd.runc.v2",
    short: "runcv2",
    groups: true,
};
/// The legacy runtime: containerd 1.x execs our `containerd-shim` symlink itself.
pub const V1_LINUX: Runtime = Runtime {
    name: "io.containerd.runtime.v1.linux",
    short: "v1linux",
    groups: false,
};

/// Pids this test process spawned and waits for itself; the zombie sweep leaves them alone.
fn own_children() -> &'static Mutex<HashSet<u32>> {
    static S: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashSet::new()))
}

fn register(pid: u32) {
    own_children().lock().unwrap().insert(pid);
}
fn unregister(pid: u32) {
    own_children().lock().unwrap().remove(&pid);
}

/// Become a subreaper (so shims that containerd's `start` orphaned come to us, not to a PID 1
/// that never reaps) and reap zombie children nobody else waits for.
pub fn reap_orphans() {
    let _g = spawn_lock().lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    for pid in zombie_children(std::process::id()) {
        if own_children().lock().unwrap().contains(&pid) {
            continue;
        }
        // SAFETY: waitpid on a specific zombie child of ours.
        unsafe {
            libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// Zombie processes whose parent is `parent`.
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = parent.to_string();
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] == "Z" && f[1] == parent {
            out.push(pid);
        }
    }
    out
}

/// Outcome of a command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn brief(&self) -> String {
        format!(
            "rc={}{} stdout={:?} stderr={:?}",
            self.code,
            if self.timed_out { " TIMEOUT" } else { "" },
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(300)]),
            String::from_utf8_lossy(&self.stderr[..self.stderr.len().min(300)])
        )
    }
}

/// Held while spawning and while sweeping zombies, so a child is always registered before the
/// sweep could see it.
fn spawn_lock() -> &'static Mutex<()> {
    static L: OnceLock<Mutex<()>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(()))
}

/// Spawn and register a child (so the zombie sweep does not steal its status).
pub fn spawn(cmd: &mut Command) -> Child {
    let _g = spawn_lock().lock().unwrap_or_else(|p| p.into_inner());
    let c = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    register(c.id());
    c
}

/// Reap orphans continuously from a background thread (started once). A shim that outlived a
/// containerd restart is re-parented to us (we are a subreaper); when the new containerd kills
/// it (legacy v1 runtime) it waits for the pid to vanish, which a zombie never does.
pub fn keep_reaping() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| loop {
            reap_orphans();
            std::thread::sleep(Duration::from_millis(50));
        });
    });
}

/// Wait for a registered child, killing it after `timeout`.
pub fn finish(mut c: Child, timeout: Duration) -> (i32, bool) {
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match c.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                timed_out = true;
                let _ = c.kill();
                break c.wait().expect("wait after kill");
            }
            Err(e) => panic!("wait: {e}"),
        }
    };
    unregister(c.id());
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    (code, timed_out)
}

/// Run a command to completion with `input` on stdin.
pub fn run_cmd(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut c = spawn(cmd);
    let stdin = c.stdin.take();
    let data = input.map(|d| d.to_vec());
    let feeder = std::thread::spawn(move || {
        if let (Some(mut s), Some(d)) = (stdin, data) {
            let _ = s.write_all(&d);
        }
    });
    let mut so = c.stdout.take().unwrap();
    let mut se = c.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let (code, timed_out) = finish(c, timeout);
    let _ = feeder.join();
    Out {
        code,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        timed_out,
    }
}

/// Whether integration prerequisites are present; panics (loudly) when not, unless skipping
/// was asked for. Returns false when the test should return early.
pub fn prerequisites() -> bool {
    let skip = std::env::var_os("SHIMGATE_SKIP_INTEGRATION").is_some();
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for tool in ["containerd", "ctr", "runc"] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox (busybox-static)".into());
    }
    if missing.is_empty() {
        return true;
    }
    if skip {
        eprintln!("SKIP: integration prerequisites missing: {missing:?}");
        return false;
    }
    panic!("integration tests need {missing:?} (set SHIMGATE_SKIP_INTEGRATION=1 to skip)");
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The busybox rootfs shared by every test (built once; read-only use). Contains a 16 MiB
/// random blob at /data/blob and its sha256 in /data/blob.sha256 for output checks.
pub fn rootfs() -> PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs-busybox");
        let marker = base.join(".complete");
        if marker.exists() {
            return base;
        }
        let tmp = PathBuf::from(format!("{}.{}", base.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in ["bin", "dev", "proc", "sys", "run", "tmp", "etc", "data"] {
            std::fs::create_dir_all(tmp.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", tmp.join("bin/busybox")).unwrap();
        let list = run_cmd(
            Command::new("/bin/busybox").arg("--list"),
            None,
            Duration::from_secs(10),
        );
        for a in list.text().split_whitespace() {
            if a != "busybox" {
                let _ = symlink("busybox", tmp.join("bin").join(a));
            }
        }
        std::fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(tmp.join("etc/group"), "root:x:0:\n").unwrap();
        let mut blob = vec![0u8; 16 << 20];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut blob)
            .unwrap();
        std::fs::write(tmp.join("data/blob"), &blob).unwrap();
        std::fs::write(tmp.join("data/blob.sha256"), sha256_hex(&blob)).unwrap();
        std::fs::write(tmp.join(".complete"), "").unwrap();
        // Another test binary may have raced us; either result is complete.
        if std::fs::rename(&tmp, &base).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        base
    })
    .clone()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private containerd.
pub struct Ctd {
    pub dir: PathBuf,
    pub addr: PathBuf,
    pub ns: String,
    pub shims: PathBuf,
    pub series: Series,
    /// The file the shim names lead to when they are ours: the daemon's own root-safe link of
    /// the binary under test (see [`root_safe`]); `None` for the Go shims.
    pub shimgate: Option<PathBuf>,
    /// The namespace is shared with other daemons (CRI's `k8s.io`): cleanup and leak checks
    /// cover only this daemon's containers.
    shared_ns: bool,
    containerd_bin: PathBuf,
    ctr_bin: PathBuf,
    proc: Option<Child>,
    ids: Mutex<HashSet<String>>,
    env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

/// Which shim binaries a [`Ctd`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shims {
    /// shimgate under the three shim names.
    Ours,
    /// The Go shims installed with containerd, for side-by-side comparisons.
    Go,
}

/// Whether the Go peers must be there: CI sets `SHIMGATE_REQUIRE_PEERS=1` (`.ci/run`), so a
/// comparison with the Go shims cannot pass there without having compared anything.
pub fn peers_required() -> bool {
    std::env::var("SHIMGATE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// A Go peer (`what`) is not installed: a failure where peers are required, a note otherwise
/// (the caller then checks shimgate alone).
pub fn peer_missing(what: &str) {
    assert!(
        !peers_required(),
        "{what} is not installed, and SHIMGATE_REQUIRE_PEERS=1 requires the Go peers"
    );
    eprintln!("{what} not installed; checked against shimgate only");
}

/// The Go shim installed as `name`, if any.
pub fn go_shim(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl Ctd {
    /// Start one running shimgate. Returns None when prerequisites are missing and skipping is
    /// allowed.
    pub fn start() -> Option<Ctd> {
        Self::start_with(Shims::Ours)
    }

    /// Start one running the given shims (None also when the Go shims are not installed).
    pub fn start_with(which: Shims) -> Option<Ctd> {
        Self::start_env(which, &[])
    }

    /// As [`Ctd::start_with`], with extra environment for containerd (and so its shims).
    pub fn start_env(which: Shims, env: &[(&str, &str)]) -> Option<Ctd> {
        let mut o = CtdOpts::new(Series::V1_6, which);
        o.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_opts(o)
    }

    /// A private containerd as `o` says (series, shims, environment, CRI).
    pub fn start_opts(o: CtdOpts) -> Option<Ctd> {
        if !prerequisites() {
            return None;
        }
        let containerd_bin = o.series.containerd()?;
        let ctr_bin = o.series.ctr()?;
        let targets = Self::shim_targets(o.series, o.shims)?;
        reap_orphans();
        keep_reaping();
        let tmp = tempfile::Builder::new()
            .prefix("sg-ctd.")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let shims = dir.join("bin");
        std::fs::create_dir_all(&shims).unwrap();
        // Our binary is linked into the daemon's own directory first: a default live upgrade
        // re-executes what the shim's name resolves to, and only a root-safe path is accepted.
        let ours = (o.shims == Shims::Ours).then(|| root_safe(&shimgate_bin(), &dir, "shimgate"));
        for (n, target) in targets {
            symlink(ours.clone().unwrap_or(target), shims.join(n)).unwrap();
        }
        std::fs::create_dir_all(dir.join("fifo")).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // CRI works in its own namespace, which every CRI daemon on the machine shares: such a
        // daemon's cleanup touches only its own containers (see `shared_ns`).
        let ns = if o.cri.is_some() {
            "k8s.io".to_string()
        } else {
            format!("sgt{}x{n}", std::process::id())
        };
        let addr = dir.join("c.sock");
        let socket_dir = o.socket_dir.as_ref().map(|s| dir.join(s));
        if o.cri.is_some() {
            for d in ["cni/bin", "cni/conf"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
        }
        let cfg = o.series.config(&ConfigParams {
            dir: &dir,
            addr: &addr,
            shims: &shims,
            cri: o.cri.as_ref(),
            socket_dir,
        });
        std::fs::write(dir.join("containerd.toml"), cfg).unwrap();
        let mut c = Ctd {
            dir,
            addr,
            shared_ns: o.cri.is_some(),
            ns,
            shims,
            series: o.series,
            shimgate: ours,
            containerd_bin,
            ctr_bin,
            proc: None,
            ids: Mutex::new(HashSet::new()),
            env: o.env,
            _tmp: tmp,
        };
        c.launch();
        // The daemon is the series asked for (not whatever `containerd` PATH finds).
        let v = c.ctr(&["version"]).text();
        let server = v.split("Server:").nth(1).unwrap_or_default();
        assert!(
            server
                .lines()
                .any(|l| l.trim().strip_prefix("Version:").is_some_and(|x| x
                    .trim()
                    .trim_start_matches('v')
                    .starts_with(o.series.version()))),
            "containerd {} expected, `ctr version` says:\n{v}",
            o.series
        );
        Some(c)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let path = format!(
            "{}:{}",
            self.shims.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let child = spawn(
            Command::new(&self.containerd_bin)
                .arg("--config")
                .arg(self.dir.join("containerd.toml"))
                .env("PATH", path)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        self.proc = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.addr.exists() && self.ctr(&["version"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stop containerd with `sig` and start it again with the same config.
    pub fn restart(&mut self, sig: i32) {
        self.stop(sig);
        self.launch();
    }

    fn stop(&mut self, sig: i32) {
        if let Some(c) = self.proc.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
            let (_, timed_out) = finish(c, Duration::from_secs(15));
            assert!(!timed_out, "containerd did not stop");
        }
    }

    /// This series' `ctr` for our address and namespace (ctr 2.x's deprecation warnings off:
    /// stderr carries only what the container wrote).
    pub fn ctr_cmd(&self) -> Command {
        let mut c = Command::new(&self.ctr_bin);
        c.arg("-a").arg(&self.addr).arg("-n").arg(&self.ns);
        c.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1");
        c
    }

    /// This series' `containerd` binary (for `containerd publish` and the like).
    pub fn containerd_bin(&self) -> &Path {
        &self.containerd_bin
    }

    pub fn ctr(&self, args: &[&str]) -> Out {
        self.ctr_timeout(args, Duration::from_secs(60))
    }

    pub fn ctr_timeout(&self, args: &[&str], t: Duration) -> Out {
        run_cmd(self.ctr_cmd().args(args), None, t)
    }

    pub fn ctr_input(&self, args: &[&str], input: &[u8]) -> Out {
        run_cmd(
            self.ctr_cmd().args(args),
            Some(input),
            Duration::from_secs(120),
        )
    }

    /// A fresh container id, remembered for cleanup.
    pub fn id(&self, tag: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{tag}-{n}");
        self.ids.lock().unwrap().insert(id.clone());
        id
    }

    /// Arguments for `ctr run` of `cmd` in container `id` on the busybox rootfs.
    pub fn run_args(&self, rt: Runtime, id: &str, flags: &[&str], cmd: &[&str]) -> Vec<String> {
        self.ids.lock().unwrap().insert(id.to_string());
        let mut a: Vec<String> = vec![
            "run".into(),
            "--runtime".into(),
            rt.name.into(),
            "--fifo-dir".into(),
            self.dir.join("fifo").display().to_string(),
            "--env".into(),
            "PATH=/bin".into(),
        ];
        a.extend(flags.iter().map(|s| s.to_string()));
        a.push("--rootfs".into());
        a.push(rootfs().display().to_string());
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    pub fn run(&self, rt: Runtime, id: &str, flags: &[&str], cmd: &[&str]) -> Out {
        let a = self.run_args(rt, id, flags, cmd);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ctr(&a)
    }

    pub fn run_input(
        &self,
        rt: Runtime,
        id: &str,
        flags: &[&str],
        cmd: &[&str],
        input: &[u8],
    ) -> Out {
        let a = self.run_args(rt, id, flags, cmd);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ctr_input(&a, input)
    }

    /// `ctr run -d` and wait until RUNNING.
    pub fn run_detached(&self, rt: Runtime, id: &str, flags: &[&str], cmd: &[&str]) {
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        let r = self.run(rt, id, &f, cmd);
        assert_eq!(r.code, 0, "run -d {id}: {}", r.brief());
        assert!(
            self.wait_status(id, "RUNNING", Duration::from_secs(10)),
            "{id} never RUNNING: {:?}",
            self.tasks()
        );
    }

    /// `ctr task ls` as id -> (pid, STATUS).
    pub fn tasks(&self) -> std::collections::HashMap<String, (u32, String)> {
        let r = self.ctr(&["task", "ls"]);
        r.text()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| {
                    (
                        f[0].to_string(),
                        (f[1].parse().unwrap_or(0), f[2].to_string()),
                    )
                })
            })
            .collect()
    }

    /// `ctr run` with `args` (task `id`), its stdin and stdout piped: once the task is
    /// RUNNING (within `running_within`; ctr 1.6 installs its CloseIO hook only after the task
    /// is created, so input written earlier could miss the EOF) `input` is written and stdin
    /// closed, while stdout is read to its end. Returns ctr's exit code, whether it outlived
    /// `finish_within`, and its stdout.
    pub fn run_with_stdin(
        &self,
        id: &str,
        args: &[String],
        input: Vec<u8>,
        running_within: Duration,
        finish_within: Duration,
    ) -> (i32, bool, Vec<u8>) {
        let mut child = spawn(
            self.ctr_cmd()
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null()),
        );
        assert!(self.wait_status(id, "RUNNING", running_within));
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).unwrap();
        });
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut v).unwrap();
            v
        });
        feeder.join().unwrap();
        let (code, timed_out) = finish(child, finish_within);
        (code, timed_out, reader.join().unwrap())
    }

    pub fn wait_status(&self, id: &str, status: &str, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if self.tasks().get(id).map(|x| x.1.as_str()) == Some(status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Wait until `id` is no longer a task (reaping orphans meanwhile).
    pub fn wait_gone(&self, id: &str, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            reap_orphans();
            if !self.tasks().contains_key(id) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Shim daemons serving this containerd (our address in their argv; not start/delete).
    pub fn shim_pids(&self) -> Vec<u32> {
        let key = self.addr.display().to_string();
        shimgate::admin::host::processes()
            .into_iter()
            .filter(|p| p.pid != self.pid() && p.args.contains(&key))
            .filter(|p| {
                !p.args
                    .first()
                    .is_some_and(|a| a.ends_with("ctr") || a.ends_with("containerd"))
            })
            .filter(|p| !matches!(p.args.last().map(String::as_str), Some("start" | "delete")))
            .map(|p| p.pid)
            .collect()
    }

    /// The bundle directory of a v2 task.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// The bundle directory of a task of the legacy runtime (`io.containerd.runtime.v1.linux`).
    pub fn bundle_v1(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v1.linux")
            .join(&self.ns)
            .join(id)
    }

    /// The work directory containerd gives a legacy-runtime task (`-workdir`).
    pub fn workdir_v1(&self, id: &str) -> PathBuf {
        self.dir
            .join("root/io.containerd.runtime.v1.linux")
            .join(&self.ns)
            .join(id)
    }

    /// Socket path of a v2 shim for `group`.
    pub fn socket_for(&self, group: &str) -> PathBuf {
        PathBuf::from("/run/containerd/s").join(sha256_hex(
            format!("{}/{}/{}", self.addr.display(), self.ns, group).as_bytes(),
        ))
    }

    /// runc state dirs and bundles left in our namespace (of our containers only, when the
    /// namespace is shared).
    pub fn residue(&self) -> Vec<String> {
        let mut res = Vec::new();
        let ids = self.ids.lock().unwrap().clone();
        for (i, d) in [
            PathBuf::from("/run/containerd/runc").join(&self.ns),
            self.dir
                .join("state/io.containerd.runtime.v2.task")
                .join(&self.ns),
            self.dir
                .join("state/io.containerd.runtime.v1.linux")
                .join(&self.ns),
        ]
        .iter()
        .enumerate()
        {
            if let Ok(rd) = std::fs::read_dir(d) {
                res.extend(
                    rd.flatten()
                        .filter(|e| {
                            !(i == 0 && self.shared_ns)
                                || ids.contains(e.file_name().to_string_lossy().as_ref())
                        })
                        .map(|e| e.path().display().to_string()),
                );
            }
        }
        res
    }

    /// Remove every task and container of our namespace; then report what did not go away by
    /// itself within `grace` (shims still alive, runc state, bundles).
    pub fn cleanup(&self, grace: Duration) -> Vec<String> {
        if self.proc.is_some() {
            // Remember every container this daemon has (CRI's too) for the scoped checks.
            let listed = self.ctr(&["c", "ls", "-q"]).text();
            self.ids
                .lock()
                .unwrap()
                .extend(listed.split_whitespace().map(String::from));
            for (id, (_, st)) in self.tasks() {
                if st != "STOPPED" {
                    self.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
                    self.wait_status(&id, "STOPPED", Duration::from_secs(5));
                }
                self.ctr(&["task", "rm", "-f", &id]);
            }
            for id in self.ctr(&["c", "ls", "-q"]).text().split_whitespace() {
                self.ctr(&["c", "rm", id]);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && (!self.shim_pids().is_empty() || !self.residue().is_empty())
        {
            std::thread::sleep(Duration::from_millis(50));
            reap_orphans();
        }
        let mut leaks: Vec<String> = self
            .shim_pids()
            .iter()
            .map(|p| format!("shim pid {p} still alive"))
            .collect();
        leaks.extend(self.residue().into_iter().map(|r| format!("residue {r}")));
        leaks
    }

    /// What the test left behind that nobody will remove, looked at *before* anything is
    /// cleaned up (so a test whose own teardown failed does not pass): tasks that exited but
    /// were never deleted, runc state and bundles of ids that are no task, and shims once no
    /// task is left. Waits up to `grace` for what goes away by itself (a shim exiting after
    /// its last Delete). Tasks still running are not leaks: a test may leave them to
    /// [`Ctd::cleanup`], whose own leftovers are checked afterwards.
    pub fn leftovers(&self, grace: Duration) -> Vec<String> {
        let deadline = Instant::now() + grace;
        loop {
            reap_orphans();
            let tasks = self.tasks();
            let mut left: Vec<String> = tasks
                .iter()
                .filter(|(_, (_, st))| st == "STOPPED")
                .map(|(id, _)| format!("task {id} exited but was never deleted"))
                .collect();
            left.extend(
                self.residue()
                    .into_iter()
                    .filter(|r| {
                        let id = Path::new(r).file_name().map(|n| n.to_string_lossy());
                        !id.is_some_and(|id| tasks.contains_key(id.as_ref()))
                    })
                    .map(|r| format!("residue {r} of no task")),
            );
            if tasks.is_empty() {
                left.extend(
                    self.shim_pids()
                        .iter()
                        .map(|p| format!("shim pid {p} alive with no task")),
                );
            }
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Assert that the test cleaned up after itself ([`Ctd::leftovers`]), then remove what it
    /// left running and assert that nothing leaked from that either.
    pub fn assert_clean(&self) {
        let left = self.leftovers(Duration::from_secs(5));
        let leaks = self.cleanup(Duration::from_secs(5));
        assert!(
            left.is_empty() && leaks.is_empty(),
            "left behind by the test: {left:?}\nleaked by the clean-up: {leaks:?}\n\
             containerd log tail:\n{}",
            self.log_tail(40)
        );
    }

    pub fn log_tail(&self, n: usize) -> String {
        let l = self.log();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Ctd {
    fn drop(&mut self) {
        let _ = self.cleanup(Duration::from_secs(3));
        self.stop(libc::SIGTERM);
        for pid in self.shim_pids() {
            // SAFETY: killing a leftover shim of this test's containerd.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        for id in self.ids.lock().unwrap().iter() {
            let _ = std::fs::remove_file(self.socket_for(id));
        }
        let runc_root = PathBuf::from("/run/containerd/runc").join(&self.ns);
        let ids = self.ids.lock().unwrap().clone();
        if let Ok(rd) = std::fs::read_dir(&runc_root) {
            for e in rd.flatten() {
                if self.shared_ns && !ids.contains(e.file_name().to_string_lossy().as_ref()) {
                    continue;
                }
                let _ = run_cmd(
                    Command::new("runc")
                        .arg("--root")
                        .arg(&runc_root)
                        .args(["delete", "--force"])
                        .arg(e.file_name()),
                    None,
                    Duration::from_secs(10),
                );
            }
        }
        // A shared namespace's directories belong to every daemon using it.
        if !self.shared_ns {
            let _ = std::fs::remove_dir(&runc_root);
            if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir(e.path().join(&self.ns));
                }
            }
        }
        // cgroup v2: the namespace's own directory directly under the root.
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.ns));
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.display().to_string();
            for line in mi.lines().rev() {
                if let Some(mp) = line.split_whitespace().nth(4) {
                    if mp.starts_with(&prefix) {
                        let _ = run_cmd(
                            Command::new("umount").args(["-l", mp]),
                            None,
                            Duration::from_secs(10),
                        );
                    }
                }
            }
        }
        reap_orphans();
    }
}
