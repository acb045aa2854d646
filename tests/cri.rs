//! Kubernetes pods through CRI and `crictl` on every containerd series (1.6, 1.7, 2.2, 2.3),
//! with shimgate as the shim: a private containerd with CRI on (see `CriConfig`), images built
//! here (an OCI image-layout tarball of a busybox root written by this test, imported with
//! `ctr images import`, the pause image among them; nothing is pulled), a host-network pod,
//! a container in it, exec (streaming with stdin, `--sync`, exit codes, a timeout), logs, stop
//! and remove. Checked: one shim per pod for runc.v2 (one per container for runc.v1), the shim
//! is the parent of the pause process and of the container's process, on 2.3 the pod's
//! container is attached to the running shim without a `start` (containerd writes the
//! `sandbox` file only then), and nothing is left behind.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

const APP_IMAGE: &str = "docker.io/sgtest/busybox:1";
const PAUSE_IMAGE: &str = "docker.io/sgtest/pause:1";

/// A file's sha256 as an OCI digest.
fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// The OCI image-layout tarball holding [`APP_IMAGE`] and [`PAUSE_IMAGE`] (one busybox layer,
/// two configs), built once per build directory.
fn image_tarball() -> PathBuf {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cri-images.tar");
        if out.exists() {
            return out;
        }
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("rootfs");
        for d in ["bin", "dev", "proc", "sys", "tmp", "etc", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = run_cmd(
            Command::new("/bin/busybox").arg("--list"),
            None,
            Duration::from_secs(10),
        );
        for a in list.text().split_whitespace().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        let layout = work.path().join("layout");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let layer_path = work.path().join("layer.tar");
        let r = run_cmd(
            Command::new("tar")
                .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
                .args(["--mtime=@0", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&layer_path)
                .arg("."),
            None,
            Duration::from_secs(60),
        );
        assert_eq!(r.code, 0, "tar layer: {}", r.brief());
        let layer = std::fs::read(&layer_path).unwrap();
        let layer_digest = digest(&layer);
        let put = |data: &[u8]| -> (String, usize) {
            let d = digest(data);
            std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
            (d, data.len())
        };
        put(&layer);
        let platform = serde_json::json!({"architecture": "amd64", "os": "linux"});
        let mut manifests = Vec::new();
        // The pause container: pid 1 of the pod, sleeping until killed.
        let pause_cmd = serde_json::json!([
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
        ]);
        for (name, entry) in [
            (APP_IMAGE, serde_json::json!(null)),
            (PAUSE_IMAGE, pause_cmd),
        ] {
            let config = serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Entrypoint": entry},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            });
            let (cd, cl) = put(&serde_json::to_vec(&config).unwrap());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
            });
            let (md, ml) = put(&serde_json::to_vec(&manifest).unwrap());
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md,
                "size": ml,
                "platform": platform,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
                },
            }));
        }
        std::fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
                .unwrap(),
        )
        .unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let tmp = PathBuf::from(format!("{}.{}", out.display(), std::process::id()));
        let r = run_cmd(
            Command::new("tar")
                .arg("-C")
                .arg(&layout)
                .arg("-cf")
                .arg(&tmp)
                .arg("."),
            None,
            Duration::from_secs(60),
        );
        assert_eq!(r.code, 0, "tar image: {}", r.brief());
        // Another test binary may have raced us: either tarball is complete.
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
    .clone()
}

/// A CRI daemon of one series, its crictl, and the pods' cgroup parent (removed at the end).
struct Cri {
    c: Ctd,
    crictl: PathBuf,
    cgroup_parent: String,
}

impl Cri {
    fn start(s: Series) -> Option<Cri> {
        let crictl = series::crictl()?;
        let mut o = CtdOpts::new(s, Shims::Ours);
        let mut handlers = vec![
            ("runcv2".to_string(), RUNC_V2),
            ("runcv1".to_string(), RUNC_V1),
        ];
        if s.runtimes().contains(&V1_LINUX) {
            handlers.push(("v1linux".to_string(), V1_LINUX));
        }
        o.cri = Some(CriConfig {
            sandbox_image: PAUSE_IMAGE.into(),
            handlers,
        });
        let c = Ctd::start_opts(o)?;
        let tar = image_tarball();
        let r = c.ctr(&["images", "import", &tar.display().to_string()]);
        assert_eq!(r.code, 0, "import: {}", r.brief());
        std::fs::write(
            c.dir.join("crictl.yaml"),
            format!(
                "runtime-endpoint: unix://{a}\nimage-endpoint: unix://{a}\ntimeout: 60\n",
                a = c.addr.display()
            ),
        )
        .unwrap();
        let cgroup_parent = format!("/sgcri{}x{}", std::process::id(), c.id("cg"));
        let cri = Cri {
            c,
            crictl,
            cgroup_parent,
        };
        // CRI sees the imported images (it indexes containerd's image store).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = cri.crictl(&["images", "-o", "json"]);
            if r.code == 0 && r.text().contains(APP_IMAGE) && r.text().contains(PAUSE_IMAGE) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "crictl images: {}\n{}",
                r.brief(),
                cri.c.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(cri)
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.crictl);
        cmd.arg("--config").arg(self.c.dir.join("crictl.yaml"));
        cmd
    }

    fn crictl(&self, args: &[&str]) -> Out {
        run_cmd(self.cmd().args(args), None, Duration::from_secs(90))
    }

    fn crictl_input(&self, args: &[&str], input: &[u8]) -> Out {
        run_cmd(self.cmd().args(args), Some(input), Duration::from_secs(90))
    }

    /// `crictl ARGS` that must succeed; its trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.crictl(args);
        assert_eq!(
            r.code,
            0,
            "crictl {args:?}: {}\ncontainerd log:\n{}",
            r.brief(),
            self.c.log_tail(40)
        );
        r.text().trim().to_string()
    }

    /// A JSON file in the daemon's directory.
    fn json_file(&self, name: &str, v: &serde_json::Value) -> String {
        let p = self.c.dir.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        p.display().to_string()
    }

    /// `.info.pid` of `crictl inspect(p) -o json`.
    fn pid_of(&self, what: &str, id: &str) -> u32 {
        let j: serde_json::Value =
            serde_json::from_str(&self.ok(&[what, "-o", "json", id])).unwrap();
        j["info"]["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no info.pid in {j}")) as u32
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        let _ = self.c.cleanup(Duration::from_secs(3));
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ =
                    std::fs::remove_dir(e.path().join(self.cgroup_parent.trim_start_matches('/')));
            }
        }
    }
}

fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The whole pod flow under series `s` with the runtime handler of `rt`.
fn pod_flow(s: Series, rt: Runtime) {
    let Some(cri) = Cri::start(s) else { return };
    let c = &cri.c;
    let uid = c.id("poduid");
    let logs = c.dir.join("pods").join(&uid);
    std::fs::create_dir_all(&logs).unwrap();
    let pod = serde_json::json!({
        "metadata": {"name": format!("sg-{uid}"), "namespace": "sgtest", "uid": uid, "attempt": 0},
        "log_directory": logs.display().to_string(),
        "linux": {
            "cgroup_parent": cri.cgroup_parent,
            "security_context": {"namespace_options": {"network": 2}},
        },
    });
    let pod_json = cri.json_file("pod.json", &pod);
    let handler = rt.short;
    let before = c.shim_pids();
    let pod_id = cri.ok(&["runp", "--runtime", handler, &pod_json]);

    let ctr = serde_json::json!({
        "metadata": {"name": "app"},
        "image": {"image": APP_IMAGE},
        "command": ["sh", "-c", "echo app-started; echo app-err >&2; trap 'exit 0' TERM; while :; do sleep 1; done"],
        "log_path": "app.log",
        "linux": {},
    });
    let ctr_json = cri.json_file("app.json", &ctr);
    let cid = cri.ok(&["create", &pod_id, &ctr_json, &pod_json]);
    cri.ok(&["start", &cid]);

    // Exec, synchronous: output, and the exit code (crictl fails naming it, with the stderr).
    let r = cri.crictl(&["exec", "-s", &cid, "sh", "-c", "echo sync-out"]);
    assert!(
        r.code == 0 && r.text().trim_end() == "sync-out",
        "exec --sync: {}",
        r.brief()
    );
    let r = cri.crictl(&["exec", "-s", &cid, "sh", "-c", "echo sync-err >&2; exit 3"]);
    assert!(
        r.code != 0 && r.err().contains("exited with 3") && r.err().contains("sync-err"),
        "exec --sync exit 3: {}",
        r.brief()
    );
    // A synchronous exec past its timeout fails with DeadlineExceeded, and the process is gone.
    let t = Instant::now();
    let r = cri.crictl(&["exec", "-s", "--timeout", "2", &cid, "sleep", "37"]);
    assert_ne!(r.code, 0, "exec --timeout: {}", r.brief());
    assert!(
        r.err().to_lowercase().contains("deadline") || r.err().contains("timeout"),
        "exec --timeout: {}",
        r.brief()
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = cri.ok(&["exec", "-s", &cid, "ps", "-o", "args"]);
        if !ps.contains("sleep 37") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed-out exec still running:\n{ps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Exec, streaming (through containerd's stream server): stdin, output, exit code.
    let r = cri.crictl_input(
        &[
            "exec",
            "-i",
            &cid,
            "sh",
            "-c",
            "read l; echo got-$l; exit 5",
        ],
        b"line\n",
    );
    assert!(
        r.code != 0 && r.text() == "got-line\n" && r.err().contains("exit code 5"),
        "exec (streaming): {}",
        r.brief()
    );
    let r = cri.crictl(&["exec", &cid, "sh", "-c", "echo streamed"]);
    assert!(
        r.code == 0 && r.text() == "streamed\n",
        "exec (streaming): {}",
        r.brief()
    );

    // Logs, as CRI wrote them from the container's stdio.
    let r = cri.crictl(&["logs", &cid]);
    assert!(
        r.code == 0 && r.text().contains("app-started") && r.err().contains("app-err"),
        "logs: {}",
        r.brief()
    );

    // The shims: one per pod (runc.v2 groups by the sandbox id), the parent of the pause
    // process and of the container's process.
    let pause = cri.pid_of("inspectp", &pod_id);
    let app = cri.pid_of("inspect", &cid);
    let shims: Vec<u32> = c
        .shim_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if rt.groups {
        assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
        assert_eq!(
            (ppid(pause), ppid(app)),
            (shims[0], shims[0]),
            "shim {shims:?}"
        );
    } else {
        assert_eq!(shims.len(), 2, "one shim per container: {shims:?}");
        assert!(
            shims.contains(&ppid(pause)) && shims.contains(&ppid(app)) && ppid(pause) != ppid(app),
            "shims {shims:?}: pause's parent {}, app's parent {}",
            ppid(pause),
            ppid(app)
        );
    }
    // containerd 2.3 attaches a pod's container to the sandbox's running shim without `start`
    // when the shim answered with task API v3 (BootstrapResult): it then writes `sandbox`.
    let attached = c.bundle(&cid).join("sandbox").exists();
    assert_eq!(
        attached,
        s == Series::V2_3 && rt == RUNC_V2,
        "pod container attached without start"
    );

    cri.ok(&["stop", "--timeout", "10", &cid]);
    cri.ok(&["rm", &cid]);
    cri.ok(&["stopp", &pod_id]);
    cri.ok(&["rmp", &pod_id]);
    let listed = cri.ok(&["ps", "-a", "-q"]);
    assert!(listed.is_empty(), "containers left: {listed}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.shim_pids().iter().any(|p| !before.contains(p)) {
        reap_orphans();
        assert!(Instant::now() < deadline, "shims left: {:?}", c.shim_pids());
        std::thread::sleep(Duration::from_millis(100));
    }
    c.assert_clean();
}

macro_rules! cri_matrix {
    ($($m:ident: $s:ident [$($rm:ident $rt:ident),*]);* $(;)?) => {
        $(mod $m { $( #[test] fn $rm() { super::pod_flow(crate::common::Series::$s, crate::common::$rt) } )* })*
    };
}

cri_matrix!(
    ctd16: V1_6 [runcv2 RUNC_V2, runcv1 RUNC_V1, v1linux V1_LINUX];
    ctd17: V1_7 [runcv2 RUNC_V2, runcv1 RUNC_V1, v1linux V1_LINUX];
    ctd22: V2_2 [runcv2 RUNC_V2, runcv1 RUNC_V1];
    ctd23: V2_3 [runcv2 RUNC_V2, runcv1 RUNC_V1];
);
