//! containerd 2.x start-up exchanges, spoken to the binary directly (no containerd 2.x is
//! installed here, so the test plays containerd): `start` with 2.3+'s BootstrapParams on stdin
//! (socket in its socket_dir, BootstrapResult on stdout), `start` with a plain options Any (the
//! plain address, as for 1.x and 2.0-2.2), `-info` (RuntimeInfo), and pod containers attached
//! to a running group shim with `Create` alone, over task API v3, as 2.x CRI does.
//!
//! Needs root, runc and /bin/busybox (fails loudly without them unless
//! `SHIMGATE_SKIP_INTEGRATION=1`).

mod common;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use shimgate::protos::bootstrap::{BootstrapParams, BootstrapResult, Extension};
use shimgate::protos::introspection::RuntimeInfo;
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
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
            && args.iter().any(|a| a == id)
            && !args.iter().any(|a| a == "start")
            && args.iter().any(|a| a.starts_with("sg2x"))
        {
            return Some(pid);
        }
    }
    None
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

fn create(s: &Scratch, id: &str, bundle: &Path) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.display().to_string(),
        options: Some(shimgate::protos::any_bare(&s.options()).unwrap()).into(),
        ..Default::default()
    }
}

#[test]
fn start_with_bootstrap_params_and_pod_containers_without_start() {
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

    // containerd 2.3 announced itself: the answer is a BootstrapResult (v3, ttrpc).
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

    // containerd opens one connection per container; Connect over v3.
    let mut sb = Client::connect(&want_socket);
    let c: ConnectResponse = sb.ok(
        "Connect",
        &ConnectRequest {
            id: "sandbox".into(),
            ..Default::default()
        },
    );
    assert_eq!(c.shim_pid, daemon);
    let _: CreateTaskResponse = sb.ok("Create", &create(&s, "sandbox", &sandbox));
    let _: StartResponse = sb.ok(
        "Start",
        &StartRequest {
            id: "sandbox".into(),
            ..Default::default()
        },
    );

    // A pod container: 2.x CRI copies the sandbox's bootstrap into the new bundle and sends
    // Create to the running shim, on a new connection, with no `start` run for it.
    let app = s.bundle("app", Some("sandbox"));
    std::fs::copy(sandbox.join("address"), app.join("address")).unwrap();
    let mut ac = Client::connect(&want_socket);
    let created: CreateTaskResponse = ac.ok("Create", &create(&s, "app", &app));
    assert!(created.pid > 0);
    let _: StartResponse = ac.ok(
        "Start",
        &StartRequest {
            id: "app".into(),
            ..Default::default()
        },
    );
    for id in ["sandbox", "app"] {
        let st: StateResponse = ac.ok(
            "State",
            &StateRequest {
                id: id.into(),
                ..Default::default()
            },
        );
        assert_eq!(st.status.value(), 2, "{id} RUNNING: {st:?}");
        // Each container's files live in its own bundle.
        let bundle = s.bundle_path(id);
        assert_eq!(
            std::fs::read_to_string(bundle.join("init.pid")).unwrap(),
            st.pid.to_string()
        );
        assert!(bundle.join("options.json").exists());
    }
    let pids: PidsResponse = ac.ok(
        "Pids",
        &PidsRequest {
            id: "app".into(),
            ..Default::default()
        },
    );
    assert_eq!(pids.processes.len(), 1);
    assert_eq!(find_daemon("app"), None, "no second daemon");

    // Tear down as containerd would: kill, wait, delete each; then Shutdown ends the shim.
    for (client, id) in [(&mut ac, "app"), (&mut sb, "sandbox")] {
        let _: shimgate::protos::Empty = client.ok(
            "Kill",
            &KillRequest {
                id: id.into(),
                signal: 9,
                all: true,
                ..Default::default()
            },
        );
        let w: WaitResponse = client.ok(
            "Wait",
            &WaitRequest {
                id: id.into(),
                ..Default::default()
            },
        );
        assert_eq!(w.exit_status, 137, "{id}");
        let _: DeleteResponse = client.ok(
            "Delete",
            &DeleteRequest {
                id: id.into(),
                ..Default::default()
            },
        );
    }
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

#[test]
fn start_with_a_plain_options_any_prints_the_plain_address() {
    if !prerequisites() {
        return;
    }
    let mut s = Scratch::new();
    let b = s.bundle("plain", None);
    let any = shimgate::protos::any_bare(&s.options())
        .unwrap()
        .write_to_bytes()
        .unwrap();
    let (code, out) = s.start("plain", &b, &any);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    // Exactly the address, as 1.x and 2.0-2.2 expect (they do not announce a version).
    let want = format!(
        "unix:///run/containerd/s/{}",
        sha256_hex(&format!("{}/{}/plain", s.address, s.ns))
    );
    assert_eq!(String::from_utf8_lossy(&out), want);
    assert!(
        !b.join("s").exists(),
        "no socket_dir link without BootstrapParams"
    );
    let path = want.strip_prefix("unix://").unwrap();
    let mut c = Client::connect(Path::new(path));
    let r: ConnectResponse = c.ok(
        "Connect",
        &ConnectRequest {
            id: "plain".into(),
            ..Default::default()
        },
    );
    assert_eq!(Some(r.shim_pid), s.daemons.first().copied());
    drop(c);
    drop(s);
    let _ = std::fs::remove_file(path);
}

#[test]
fn info_prints_runtime_info() {
    if !prerequisites() {
        return;
    }
    let s = Scratch::new();
    let opts = Options {
        binary_name: "runc".into(),
        ..Default::default()
    };
    // containerd 2.x may send a prefixed type URL; the echo is re-marshalled bare, as Go does.
    let any = shimgate::protos::Any {
        type_url: "type.googleapis.com/containerd.runc.v1.Options".into(),
        value: opts.write_to_bytes().unwrap(),
        ..Default::default()
    };
    let mut c = Command::new(&s.shim)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&any.write_to_bytes().unwrap())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.runc.v2");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    assert_eq!(
        Options::parse_from_bytes(&info.options.value)
            .unwrap()
            .binary_name,
        "runc"
    );
    assert_eq!(
        info.features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
    assert!(features["ociVersionMax"].is_string(), "{features}");
}
