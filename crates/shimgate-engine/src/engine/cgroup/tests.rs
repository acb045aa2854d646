//! Location of cgroups from fake and real tables, controller enabling, the OOM watchers.

use super::*;
use std::time::Duration;

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), content).unwrap();
}

const HYBRID_PROC: &str = "12:hugetlb:/kubepods/pod1/abc\n\
    11:memory:/kubepods/pod1/abc\n\
    10:cpu,cpuacct:/kubepods/pod1/abc\n\
    9:name=systemd:/kubepods/pod1/abc\n\
    8:pids:/kubepods/pod1/abc\n\
    7:blkio:/kubepods/pod1/abc\n\
    1:net_cls,net_prio:/\n\
    0::/kubepods/pod1/abc\n";

const HYBRID_MOUNTS: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:31 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,blkio
34 25 0:32 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,hugetlb
";

const V2_MOUNTS: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn proc_cgroup_parsing() {
    let e = parse_proc_cgroup(HYBRID_PROC).unwrap();
    assert_eq!(e.len(), 8);
    assert_eq!(e[2].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(e[3].controllers, vec!["name=systemd"]);
    assert_eq!(e[7].hierarchy_id, 0);
    assert!(e[7].controllers.is_empty());
    // A path containing ':' stays whole.
    let e = parse_proc_cgroup("0::/a:b/c\n").unwrap();
    assert_eq!(e[0].path, PathBuf::from("/a:b/c"));
    assert!(parse_proc_cgroup("garbage").is_err());
}

#[test]
fn hybrid_layout() {
    let mounts = parse_mountinfo(HYBRID_MOUNTS).unwrap();
    let Cgroup::V1 { paths } = Cgroup::from_tables(HYBRID_PROC, &mounts, false).unwrap() else {
        panic!("expected v1");
    };
    let p = |c: &str| paths.get(c).cloned();
    let sub = "kubepods/pod1/abc";
    assert_eq!(
        p("memory"),
        Some(Path::new("/sys/fs/cgroup/memory").join(sub))
    );
    assert_eq!(
        p("cpu"),
        Some(Path::new("/sys/fs/cgroup/cpu,cpuacct").join(sub))
    );
    assert_eq!(p("cpuacct"), p("cpu"));
    assert_eq!(
        p("name=systemd"),
        Some(Path::new("/sys/fs/cgroup/systemd").join(sub))
    );
    assert_eq!(
        p("hugetlb"),
        Some(Path::new("/sys/fs/cgroup/hugetlb").join(sub))
    );
    // Not mounted, hence absent; the unified hierarchy is ignored in hybrid mode.
    assert_eq!(p("net_cls"), None);
    assert_eq!(paths.len(), 7);
    let cg = Cgroup::V1 { paths };
    assert_eq!(
        cg.memory_limit_file(),
        Some(
            Path::new("/sys/fs/cgroup/memory")
                .join(sub)
                .join("memory.limit_in_bytes")
        )
    );
}

#[test]
fn mount_root_below_hierarchy_root() {
    // Inside a container the hierarchy is mounted from the container's own cgroup.
    let mounts = parse_mountinfo(
        "40 30 0:29 /docker/xyz /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n",
    )
    .unwrap();
    let cg = Cgroup::from_tables("4:memory:/docker/xyz/sub\n", &mounts, false).unwrap();
    assert_eq!(
        cg,
        Cgroup::V1 {
            paths: BTreeMap::from([(
                "memory".to_owned(),
                PathBuf::from("/sys/fs/cgroup/memory/sub")
            )])
        }
    );
}

#[test]
fn unified_layout() {
    let mounts = parse_mountinfo(V2_MOUNTS).unwrap();
    let cg =
        Cgroup::from_tables("0::/system.slice/containerd.service/abc\n", &mounts, true).unwrap();
    assert_eq!(
        cg,
        Cgroup::V2 {
            path: PathBuf::from("/sys/fs/cgroup/system.slice/containerd.service/abc"),
            mount_point: PathBuf::from("/sys/fs/cgroup"),
        }
    );
    assert!(Cgroup::from_tables("0::/x\n", &[], true).is_err());
    assert!(Cgroup::from_tables("1:memory:/x\n", &mounts, true).is_err());
}

#[test]
fn for_pid_in_fake_proc() {
    let tmp = tempfile::tempdir().unwrap();
    let proc_root = tmp.path().join("proc");
    let cg_root = tmp.path().join("cg");
    write(&proc_root.join("123"), "cgroup", "0::/a/b\n");
    write(&proc_root.join("self"), "mountinfo", V2_MOUNTS);
    write(&cg_root, "cgroup.controllers", "cpu memory\n");
    let cg = Cgroup::for_pid_in(&proc_root, &cg_root, 123).unwrap();
    assert_eq!(
        cg,
        Cgroup::V2 {
            path: PathBuf::from("/sys/fs/cgroup/a/b"),
            mount_point: PathBuf::from("/sys/fs/cgroup")
        }
    );
    assert!(matches!(
        Cgroup::for_pid_in(&proc_root, &cg_root, 999),
        Err(CgroupError::NoProcess { pid: 999 })
    ));
    // Without cgroup.controllers at the root the host is v1/hybrid.
    std::fs::remove_file(cg_root.join("cgroup.controllers")).unwrap();
    write(&proc_root.join("124"), "cgroup", HYBRID_PROC);
    write(&proc_root.join("self"), "mountinfo", HYBRID_MOUNTS);
    assert!(matches!(
        Cgroup::for_pid_in(&proc_root, &cg_root, 124),
        Ok(Cgroup::V1 { .. })
    ));
}

#[test]
fn enable_controllers_writes_ancestors_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "cgroup.controllers", "cpuset cpu io memory pids\n");
    let levels = [
        root.to_owned(),
        root.join("a"),
        root.join("a/b"),
        root.join("a/b/c"),
    ];
    for l in &levels {
        write(l, "cgroup.subtree_control", "");
    }
    let cg = Cgroup::V2 {
        path: levels[3].clone(),
        mount_point: root.to_owned(),
    };
    cg.enable_all_controllers().unwrap();
    let read = |p: &Path| std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap();
    for l in &levels[..3] {
        assert_eq!(read(l), "+cpuset +cpu +io +memory +pids", "{}", l.display());
    }
    assert_eq!(
        read(&levels[3]),
        "",
        "the cgroup's own subtree_control is not touched"
    );

    // An error high up is forgiven when a lower level succeeds; the last one is not.
    std::fs::remove_file(root.join("cgroup.subtree_control")).unwrap();
    cg.enable_all_controllers().unwrap();
    std::fs::remove_file(levels[2].join("cgroup.subtree_control")).unwrap();
    let err = cg.enable_all_controllers().unwrap_err();
    assert!(
        err.to_string().contains("a/b/cgroup.subtree_control"),
        "{err}"
    );

    // v1: nothing to do.
    assert!(Cgroup::V1 {
        paths: BTreeMap::new()
    }
    .enable_all_controllers()
    .is_ok());
}

#[test]
fn watcher_is_send() {
    // The engine moves watchers into spawned tasks; keep them (and `next`) Send.
    fn is_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn next_is_send(w: &mut OomWatcher) {
        is_send(&w.next());
    }
    fn type_is_send<T: Send>() {}
    type_is_send::<OomWatcher>();
}

#[test]
fn watch_needs_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::V2 {
        path: tmp.path().to_owned(),
        mount_point: tmp.path().to_owned(),
    };
    assert!(matches!(cg.watch_oom(), Err(CgroupError::NoRuntime)));
}

#[tokio::test]
async fn oom_v2_on_fake_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctr");
    let events = |kill: u64, max: u64| {
        format!("low 0\nhigh 0\nmax {max}\noom {kill}\noom_kill {kill}\noom_group_kill 0\n")
    };
    write(&dir, "memory.events", &events(0, 0));
    let cg = Cgroup::V2 {
        path: dir.clone(),
        mount_point: tmp.path().to_owned(),
    };
    let mut w = cg.watch_oom().unwrap();

    write(&dir, "memory.events", &events(1, 1));
    let got = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
    assert_eq!(got, Ok(Some(())));

    // A change that is not an OOM kill produces nothing.
    write(&dir, "memory.events", &events(1, 7));
    let got = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
    assert!(got.is_err(), "no event expected, got {got:?}");

    // Two kills between reads are one notification, like the Go watcher.
    write(&dir, "memory.events", &events(3, 7));
    let got = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
    assert_eq!(got, Ok(Some(())));

    // The cgroup disappears: the stream ends, and stays ended.
    std::fs::remove_file(dir.join("memory.events")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
    assert_eq!(got, Ok(None));
    assert_eq!(w.next().await, None);
}

#[test]
fn live_cgroup_of_this_process() {
    let cg = match Cgroup::for_pid(std::process::id()) {
        Ok(cg) => cg,
        Err(e) => panic!("cgroup of the test process: {e}"),
    };
    assert!(cg.exists());
    // The statistics read from it are tested in api::metrics.
    assert!(
        matches!(
            (is_v2_unified(), &cg),
            (false, Cgroup::V1 { .. }) | (true, Cgroup::V2 { .. })
        ),
        "{cg:?}"
    );
}

/// Removes the test cgroup (killing anything left in it) even when the test fails.
struct TestCgroup {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn oom_v1_real_cgroup() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping oom_v1_real_cgroup: needs root");
        return;
    }
    let base = Path::new(DEFAULT_CGROUP_ROOT).join("memory");
    if is_v2_unified() || !base.join("cgroup.event_control").exists() {
        eprintln!("skipping oom_v1_real_cgroup: no cgroup v1 memory hierarchy");
        return;
    }
    let dir = base.join(format!("shimgate-test-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir).unwrap();
    let mut guard = TestCgroup {
        dir: dir.clone(),
        child: None,
    };
    let limit: u64 = 32 * 1024 * 1024;
    std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
    // With swap the process would page out instead of being killed; bound swap too.
    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
    let _ = std::fs::write(dir.join("memory.swappiness"), "0");

    let cg = Cgroup::V1 {
        paths: BTreeMap::from([("memory".to_owned(), dir.clone())]),
    };
    assert_eq!(
        cg.memory_limit_file(),
        Some(dir.join("memory.limit_in_bytes"))
    );
    let mut w = cg.watch_oom().unwrap();

    // The shell moves itself into the cgroup, then `tail` buffers /dev/zero (which has no
    // newline) until the limit is hit and the OOM killer takes it.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec tail /dev/zero",
        dir.display()
    );
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    guard.child = Some(child);

    let got = tokio::time::timeout(Duration::from_secs(30), w.next()).await;
    assert_eq!(got, Ok(Some(())), "expected one OOM event");

    let status = guard.child.take().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(cg.oom_kill_count().unwrap_or_default() >= 1);
    // failcnt is not maintained by every kernel for v1; the peak always shows the limit.
    let single = |name: &str| files::read_single(&dir.join(name), u64::MAX).unwrap();
    assert_eq!(single("memory.max_usage_in_bytes"), Some(limit));
    assert_eq!(single("memory.limit_in_bytes"), Some(limit));

    // Removing the cgroup fires the eventfd once more; the watcher reports the end.
    drop(guard);
    assert!(!dir.exists(), "test cgroup must be removable");
    let got = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
    assert_eq!(got, Ok(None));
}
