//! containerd 2.x start-up, through the real daemons (containerd 2.2.7 and 2.3.4 from the
//! peers, next to their Go runc.v2 shim in the same run): 2.3's `BootstrapParams` exchange
//! (socket in the configured socket_dir, a version 3 ttrpc bootstrap, runc.v1 still started
//! the old way) and `-info` as containerd's introspection runs it (`ctr plugins
//! inspect-runtime`). Pod containers attached to a running shim without `start` (2.3 CRI) are
//! proven in tests/cri.rs.
//!
//! One exchange stays spoken to the binary directly, because containerd accepts either answer
//! and so cannot show which one it got: after `BootstrapParams`, `start` prints a protobuf
//! `BootstrapResult`, not the JSON form.
//!
//! Needs root, runc and /bin/busybox (fails loudly without them unless
//! `SHIMGATE_SKIP_INTEGRATION=1`); the containerd tests skip without the peers (see
//! tests/common/peers.rs).

mod common;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use shimgate::protos::bootstrap::{BootstrapParams, BootstrapResult, Extension};
use shimgate::protos::runc_options::Options;
use shimgate::protos::task::*;

fn prerequisites() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root");
    }
    if Command::new("runc").arg("--version").output().is_err() {
        missing.push("runc");
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("SHIMGATE_SKIP_INTEGRATION").is_some() {
        eprintln!("SKIP: missing {missing:?}");
        return false;
    }
    panic!("these tests need {missing:?} (set SHIMGATE_SKIP_INTEGRATION=1 to skip)");
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A scratch area: the shim name as a symlink to shimgate, a runc root, a socket dir, bundles.
struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    shim: PathBuf,
    ns: String,
    /// The containerd address the shim is told about (nothing listens: events just queue).
    address: String,
    daemons: Vec<u32>,
}

impl Scratch {
    fn new() -> Scratch {
        // Daemons that `start` leaves behind are re-parented to us, so we can reap them.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let tmp = tempfile::Builder::new()
            .prefix("sg2x.")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let shim = dir.join("bin/containerd-shim-runc-v2");
        symlink(env!("CARGO_BIN_EXE_shimgate"), &shim).unwrap();
        Scratch {
            address: dir.join("containerd.sock").display().to_string(),
            ns: format!("sg2x{}", std::process::id()),
            _tmp: tmp,
            dir,
            shim,
            daemons: Vec::new(),
        }
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    fn options(&self) -> Options {
        Options {
            root: self.runc_root().display().to_string(),
            ..Default::default()
        }
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// A bundle running `sleep 300` on a private busybox rootfs, in the given group.
    fn bundle(&self, id: &str, group: Option<&str>) -> PathBuf {
        // Laid out as containerd lays out task bundles (the shim checks the shape).
        let b = self.bundle_path(id);
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in ["sh", "sleep"] {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&b)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec: {out:?}");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["sleep", "300"]);
        spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
        spec["linux"]["cgroupsPath"] = format!("/{}/{id}", self.ns).into();
        if let Some(g) = group {
            spec["annotations"] = serde_json::json!({ "io.kubernetes.cri.sandbox-id": g });
        }
        std::fs::write(b.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        b
    }

    /// Run `<shim> … -id <id> start` in `bundle` with `stdin`; returns (exit code, stdout+stderr).
    fn start(&mut self, id: &str, bundle: &Path, stdin: &[u8]) -> (i32, Vec<u8>) {
        let mut c = Command::new(&self.shim)
            .args(["-namespace", &self.ns, "-address", &self.address])
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id, "start"])
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", self.address))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = c.wait_with_output().unwrap();
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        let pid = std::fs::read_to_string(bundle.join("address"))
            .ok()
            .and_then(|_| find_daemon(id));
        if let Some(p) = pid {
            self.daemons.push(p);
        }
        (out.status.code().unwrap_or(-1), all)
    }
}

/// The serving daemon for `-id id` (our namespace), if any.
fn find_daemon(id: &str) -> Option<u32> {
    shimgate::admin::host::processes()
        .into_iter()
        .find(|p| {
            p.args
                .first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && p.args.iter().any(|a| a == id)
                && !p.args.iter().any(|a| a == "start")
                && p.args.iter().any(|a| a.starts_with("sg2x"))
        })
        .map(|p| p.pid)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for pid in &self.daemons {
            // SAFETY: signalling and reaping a shim daemon this test started.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
                libc::waitpid(*pid as i32, std::ptr::null_mut(), 0);
            }
        }
        let root = self.runc_root().join(&self.ns);
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path().join(&self.ns));
            }
        }
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{}", self.ns));
    }
}

/// Task API v3 calls on one connection.
struct Client(common::raw_ttrpc::Raw);

impl Client {
    fn connect(path: &Path) -> Client {
        Client(common::raw_ttrpc::Raw::connect(
            path,
            Duration::from_secs(30),
        ))
    }

    /// Call `method` of task API v3; returns (status code, message, payload).
    fn v3(&mut self, method: &str, msg: &dyn protobuf::MessageDyn) -> (i32, String, Vec<u8>) {
        let r = self.0.call("containerd.task.v3.Task", method, msg);
        (r.code, r.message, r.payload)
    }

    fn ok<M: Message>(&mut self, method: &str, msg: &dyn protobuf::MessageDyn) -> M {
        let (code, message, payload) = self.v3(method, msg);
        assert_eq!(code, 0, "{method}: {message}");
        M::parse_from_bytes(&payload).unwrap()
    }
}

fn bootstrap_params(s: &Scratch, id: &str, socket_dir: &Path) -> Vec<u8> {
    BootstrapParams {
        instance_id: id.into(),
        namespace: s.ns.clone(),
        containerd_version: "2.3.0".into(),
        containerd_ttrpc_address: format!("{}.ttrpc", s.address),
        containerd_grpc_address: s.address.clone(),
        containerd_binary: "/usr/bin/containerd".into(),
        extensions: vec![Extension {
            value: Some(shimgate::protos::any_bare(&s.options()).unwrap()).into(),
            ..Default::default()
        }],
        socket_dir: Some(socket_dir.display().to_string()),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap()
}

/// After `BootstrapParams` (containerd 2.3+), `start` answers with a protobuf
/// `BootstrapResult` (version 3, ttrpc) naming a socket in `socket_dir`, writes `address` and
/// the `s` link, and the daemon it started serves there until `Shutdown`.
#[test]
fn start_with_bootstrap_params_prints_a_bootstrap_result() {
    if !prerequisites() {
        return;
    }
    let mut s = Scratch::new();
    let socket_dir = s.dir.join("s");
    let sandbox = s.bundle("sandbox", Some("sandbox"));
    let (code, out) = s.start(
        "sandbox",
        &sandbox,
        &bootstrap_params(&s, "sandbox", &socket_dir),
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    let want_socket = socket_dir.join(sha256_hex(&format!("{}/{}/sandbox", s.address, s.ns)));
    let want_address = format!("unix://{}", want_socket.display());
    let r = BootstrapResult::parse_from_bytes(&out).expect("stdout is a BootstrapResult");
    assert_eq!(
        (r.version, r.address.as_str(), r.protocol.as_str()),
        (3, want_address.as_str(), "ttrpc")
    );
    assert!(want_socket.exists(), "socket in BootstrapParams.socket_dir");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("address")).unwrap(),
        want_address
    );
    assert_eq!(std::fs::read_link(sandbox.join("s")).unwrap(), socket_dir);
    let daemon = *s.daemons.first().expect("a daemon serves the sandbox");

    let mut sb = Client::connect(&want_socket);
    let c: ConnectResponse = sb.ok(
        "Connect",
        &ConnectRequest {
            id: "sandbox".into(),
            ..Default::default()
        },
    );
    assert_eq!(c.shim_pid, daemon);
    let _: shimgate::protos::Empty = sb.ok(
        "Shutdown",
        &ShutdownRequest {
            id: "sandbox".into(),
            ..Default::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut status = 0;
    // SAFETY: reaping the daemon, our (re-parented) child.
    while unsafe { libc::waitpid(daemon as i32, &mut status, libc::WNOHANG) } == 0 {
        assert!(
            Instant::now() < deadline,
            "shim did not exit after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.daemons.clear();
    assert!(!want_socket.exists(), "socket removed at exit");
}

/// What a containerd 2.3 start-up left in the bundle of `id`: bootstrap.json (containerd's
/// record of the shim's answer), the `s` link, and the `address` file if any (the Go shim of
/// 2.3 no longer writes it; shimgate still does, which 2.3 ignores when bootstrap.json exists).
fn startup_artefacts(
    c: &common::Ctd,
    id: &str,
) -> (serde_json::Value, Option<PathBuf>, Option<String>) {
    let b = c.bundle(id);
    let boot = std::fs::read(b.join("bootstrap.json"))
        .ok()
        .and_then(|j| serde_json::from_slice(&j).ok())
        .unwrap_or(serde_json::Value::Null);
    let link = std::fs::read_link(b.join("s")).ok();
    let address = std::fs::read_to_string(b.join("address")).ok();
    (boot, link, address)
}

/// The real exchange through containerd 2.3.4 (the proof for the start-up above): with a
/// private `socket_dir` configured (a setting only `BootstrapParams` carries to the shim), a
/// runc.v2 container's shim listens in that directory, containerd records a version 3 ttrpc
/// bootstrap (task API v3, as with the Go shim of 2.3) and serves the task through it; runc.v1
/// is still started the old way (options Any on stdin, plain address, version 2 in
/// /run/containerd/s). The 2.3.4 Go runc.v2 shim is held to the same in the same run.
#[test]
fn containerd_2_3_bootstrap_params_exchange() {
    for shims in [common::Shims::Go, common::Shims::Ours] {
        let mut o = common::CtdOpts::new(common::Series::V2_3, shims);
        o.socket_dir = Some("s".into());
        let Some(c) = common::Ctd::start_opts(o) else {
            return;
        };
        let socket_dir = c.dir.join("s");
        let key = |id: &str| sha256_hex(&format!("{}/{}/{id}", c.addr.display(), c.ns));

        let id = c.id("boot");
        c.run_detached(common::RUNC_V2, &id, &[], &["sleep", "300"]);
        let (boot, link, address) = startup_artefacts(&c, &id);
        let want = format!("unix://{}/{}", socket_dir.display(), key(&id));
        assert_eq!(
            (
                &boot["version"],
                &boot["protocol"],
                boot["address"].as_str()
            ),
            (&3.into(), &"ttrpc".into(), Some(want.as_str())),
            "{shims:?}: bootstrap.json {boot} (socket in the configured socket_dir)"
        );
        assert!(socket_dir.join(key(&id)).exists(), "{shims:?}: {want}");
        assert_eq!(
            link.as_deref(),
            Some(socket_dir.as_path()),
            "{shims:?}: bundle/s"
        );
        if let Some(a) = address {
            assert_eq!(a, want, "{shims:?}: address file");
        }
        let e = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "b1",
            &id,
            "sh",
            "-c",
            "echo v3; exit 2",
        ]);
        assert_eq!(
            (e.code, e.text().as_str()),
            (2, "v3\n"),
            "{shims:?}: {}",
            e.brief()
        );

        if shims == common::Shims::Ours {
            // runc.v1 (2.3 hands it the options Any, not BootstrapParams): the old form.
            let v1 = c.id("bootv1");
            c.run_detached(common::RUNC_V1, &v1, &[], &["sleep", "300"]);
            let (boot, link, address) = startup_artefacts(&c, &v1);
            let want = format!("unix:///run/containerd/s/{}", key(&v1));
            assert_eq!(
                (&boot["version"], boot["address"].as_str()),
                (&2.into(), Some(want.as_str())),
                "{boot}"
            );
            assert_eq!(address.as_deref(), Some(want.as_str()));
            assert!(link.is_none(), "{link:?}");
        }
        c.assert_clean();
        let left: Vec<_> = std::fs::read_dir(&socket_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{shims:?}: sockets left in socket_dir: {left:?}"
        );
    }
}

/// `RuntimeInfo` for `ctr plugins inspect-runtime` (containerd 2.x runs `<shim> -info` with the
/// runtime options on stdin; 2.3 also runs it on task create for runtimes other than runc.v2):
/// the same name, echoed options and runtime features as the Go shim of that series, with
/// shimgate's own version. runc.v1 (not shipped by 2.x) answers under its own name.
#[test]
fn runtime_info_through_containerd_2x() {
    for s in [common::Series::V2_2, common::Series::V2_3] {
        let mut infos = Vec::new();
        for shims in [common::Shims::Go, common::Shims::Ours] {
            let Some(c) = common::Ctd::start_series(s, shims) else {
                return;
            };
            let info = |rt: &str, extra: &[&str]| -> serde_json::Value {
                let mut a = vec!["plugins", "inspect-runtime", "--runtime", rt];
                a.extend_from_slice(extra);
                let r = c.ctr(&a);
                assert_eq!(r.code, 0, "{s} {shims:?} {rt}: {}", r.brief());
                serde_json::from_str(&r.text()).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
            };
            infos.push(info("io.containerd.runc.v2", &["--runc-binary", "runc"]));
            if shims == common::Shims::Ours {
                let v1 = info("io.containerd.runc.v1", &[]);
                assert_eq!(v1["Name"], "io.containerd.runc.v1", "{v1}");
                assert_eq!(v1["Version"]["Version"], env!("CARGO_PKG_VERSION"), "{v1}");
            }
        }
        let (go, ours) = (&infos[0], &infos[1]);
        for key in ["Name", "Options", "Features"] {
            assert_eq!(ours[key], go[key], "{s}: {key}\nGo: {go}\nshimgate: {ours}");
        }
        assert_eq!(ours["Version"]["Version"], env!("CARGO_PKG_VERSION"));
        assert!(ours["Features"]["ociVersionMax"].is_string(), "{ours}");
    }
}
