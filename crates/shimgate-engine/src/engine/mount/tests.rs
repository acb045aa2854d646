//! Unit tests of `engine/mount.rs`, kept beside it so the module reads as its job alone.

use super::*;

fn words(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::to_owned).collect()
    }
}

#[test]
fn option_table() {
    use MsFlags as F;
    let cases: &[(&str, MsFlags, MsFlags, &str, bool)] = &[
        ("", F::empty(), F::empty(), "", false),
        ("ro", F::MS_RDONLY, F::empty(), "", false),
        ("ro,rw", F::empty(), F::empty(), "", false),
        ("rw,ro", F::MS_RDONLY, F::empty(), "", false),
        (
            "rbind,ro",
            F::MS_BIND | F::MS_REC | F::MS_RDONLY,
            F::empty(),
            "",
            false,
        ),
        ("bind", F::MS_BIND, F::empty(), "", false),
        (
            "nosuid,nodev,noexec,relatime",
            F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC | F::MS_RELATIME,
            F::empty(),
            "",
            false,
        ),
        (
            "nosuid,suid,nodev,dev,noexec,exec",
            F::empty(),
            F::empty(),
            "",
            false,
        ),
        (
            "noatime,atime,nodiratime,diratime",
            F::empty(),
            F::empty(),
            "",
            false,
        ),
        ("sync,async,dirsync", F::MS_DIRSYNC, F::empty(), "", false),
        (
            "mand,nomand,strictatime",
            F::MS_STRICTATIME,
            F::empty(),
            "",
            false,
        ),
        (
            "relatime,norelatime,strictatime,nostrictatime",
            F::empty(),
            F::empty(),
            "",
            false,
        ),
        (
            "remount,ro",
            F::MS_REMOUNT | F::MS_RDONLY,
            F::empty(),
            "",
            false,
        ),
        (
            "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w",
            F::empty(),
            F::empty(),
            "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w",
            false,
        ),
        (
            "size=64k,mode=755,nosuid",
            F::MS_NOSUID,
            F::empty(),
            "size=64k,mode=755",
            false,
        ),
        (
            "rbind,rprivate",
            F::MS_BIND | F::MS_REC,
            F::MS_PRIVATE | F::MS_REC,
            "",
            false,
        ),
        ("bind,shared", F::MS_BIND, F::MS_SHARED, "", false),
        ("rslave", F::empty(), F::MS_SLAVE | F::MS_REC, "", false),
        ("slave", F::empty(), F::MS_SLAVE, "", false),
        ("rshared", F::empty(), F::MS_SHARED | F::MS_REC, "", false),
        (
            "private,unbindable",
            F::empty(),
            F::MS_UNBINDABLE,
            "",
            false,
        ),
        (
            "runbindable",
            F::empty(),
            F::MS_UNBINDABLE | F::MS_REC,
            "",
            false,
        ),
        ("loop,ro", F::MS_RDONLY, F::empty(), "", true),
        ("defaults,nosuid", F::MS_NOSUID, F::empty(), "", false),
    ];
    for (opts, flags, prop, data, lo) in cases {
        let got = parse_options(&words(opts));
        assert_eq!(got.flags, *flags, "{opts}: flags");
        assert_eq!(got.propagation, *prop, "{opts}: propagation");
        assert_eq!(got.data, *data, "{opts}: data");
        assert_eq!(got.loop_dev, *lo, "{opts}: loop");
    }
    let got = parse_options(&words("uidmap=0:1000:1,gidmap=0:1000:1"));
    assert_eq!(got.uidmap.as_deref(), Some("0:1000:1"));
    assert_eq!(got.gidmap.as_deref(), Some("0:1000:1"));
    assert!(got.data.is_empty());
}

#[test]
fn lowerdir_compaction() {
    let snap = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
    let opts = vec![
        "index=off".to_owned(),
        format!("lowerdir={snap}/12/fs:{snap}/13/fs:{snap}/1/fs"),
        format!("upperdir={snap}/14/fs"),
    ];
    let (dir, rewritten) = compact_lowerdir(&opts).unwrap();
    assert_eq!(dir, PathBuf::from(snap));
    assert_eq!(
        rewritten,
        vec![
            "index=off".to_owned(),
            format!("upperdir={snap}/14/fs"),
            "lowerdir=12/fs:13/fs:1/fs".to_owned(),
        ]
    );
    // One lower dir, or nothing in common below "/": left alone.
    assert!(compact_lowerdir(&["lowerdir=/a/b".to_owned()]).is_none());
    assert!(compact_lowerdir(&["lowerdir=/a/x:/b/x".to_owned()]).is_none());
    assert!(compact_lowerdir(&["upperdir=/a".to_owned()]).is_none());
}

#[test]
fn mountinfo_parsing() {
    let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    32 31 0:29 /docker/x /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 propagate_from:2 - cgroup cgroup rw,cpu,cpuacct\n";
    let got = parse_mountinfo(text).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].mount_point, PathBuf::from("/mnt two"));
    assert_eq!(got[0].root, PathBuf::from("/mnt1"));
    assert_eq!(got[0].fs_type, "ext3");
    assert_eq!(got[0].super_options, "rw,errors=continue");
    assert_eq!(got[2].root, PathBuf::from("/docker/x"));
    assert_eq!(got[2].super_options, "rw,cpu,cpuacct");
    assert!(parse_mountinfo("1 2 3").is_err());
}

#[test]
fn unmount_order() {
    let line = |id: u32, p: &str| MountInfo {
        id,
        parent_id: 1,
        root: PathBuf::from("/"),
        mount_point: PathBuf::from(p),
        mount_options: String::new(),
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        super_options: String::new(),
    };
    let table = vec![
        line(1, "/r"),
        line(2, "/r/a"),
        line(3, "/r/a/b"),
        line(4, "/r"),
        line(5, "/rx"),
        line(6, "/other"),
    ];
    assert_eq!(
        mounts_below(&table, Path::new("/r")),
        vec![
            PathBuf::from("/r/a/b"),
            PathBuf::from("/r/a"),
            PathBuf::from("/r"),
            PathBuf::from("/r")
        ]
    );
}

#[test]
fn resolve_stays_in_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("real/sub")).unwrap();
    std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../..", root.join("real/up")).unwrap();
    let r = |p: &str| resolve_in_root(root, Path::new(p)).unwrap();
    assert_eq!(r("/abs/sub"), root.join("real/sub"));
    assert_eq!(r("real/up/etc"), root.join("etc"));
    assert_eq!(r("/../../etc"), root.join("etc"));
    assert_eq!(r("/missing/x"), root.join("missing/x"));
    assert_eq!(r(""), root.to_owned());
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    assert!(resolve_in_root(root, Path::new("/loop")).is_err());
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn mounted_below(p: &Path) -> Vec<PathBuf> {
    let root = std::fs::canonicalize(p).unwrap();
    mounts_below(&read_mountinfo().unwrap(), &root)
}

#[test]
fn unmount_all_tolerates_missing_and_unmounted() {
    let dir = tempfile::tempdir().unwrap();
    unmount_all(&dir.path().join("nope")).unwrap();
    unmount_all(dir.path()).unwrap();
    unmount_all(dir.path()).unwrap();
}

#[test]
fn real_mounts_and_unmount_all() {
    if !is_root() {
        eprintln!("skipping real_mounts_and_unmount_all: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("file"), b"x").unwrap();
    let mounts = [
        // 1.6 style: empty target = the rootfs itself.
        MountSpec {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: String::new(),
            options: words("size=1m,mode=755,nosuid,defaults"),
        },
        // 2.x style: target inside the rootfs (created on the tmpfs by the test below).
        MountSpec {
            kind: "bind".into(),
            source: src.to_string_lossy().into_owned(),
            target: "/data".into(),
            options: words("rbind,ro,rprivate"),
        },
    ];
    // The second target must exist on the tmpfs, which does not exist before mounting;
    // mount the tmpfs first, create the directory, then the rest.
    mount_all(&mounts[..1], &rootfs).unwrap();
    std::fs::create_dir(rootfs.join("data")).unwrap();
    mount_all(&mounts[1..], &rootfs).unwrap();
    assert_eq!(std::fs::read(rootfs.join("data/file")).unwrap(), b"x");
    let err = std::fs::write(rootfs.join("data/new"), b"y").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "bind+ro must be read-only"
    );
    let table = read_mountinfo().unwrap();
    let data = table
        .iter()
        .find(|m| m.mount_point == std::fs::canonicalize(rootfs.join("data")).unwrap())
        .unwrap();
    assert!(data.mount_options.split(',').any(|o| o == "ro"));
    assert_eq!(mounted_below(&rootfs).len(), 2);

    // A busy mount point (open directory fd) still goes thanks to the detach fallback.
    let busy = std::fs::File::open(rootfs.join("data/sub")).unwrap();
    unmount_all(&rootfs).unwrap();
    drop(busy);
    assert!(mounted_below(&rootfs).is_empty());
    unmount_all(&rootfs).unwrap();
}

#[test]
fn failed_mount_rolls_back() {
    if !is_root() {
        eprintln!("skipping failed_mount_rolls_back: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mounts = vec![
        MountSpec {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            target: String::new(),
            options: words("size=1m"),
        },
        MountSpec {
            kind: "bind".into(),
            source: dir.path().join("missing").to_string_lossy().into_owned(),
            target: String::new(),
            options: words("bind"),
        },
    ];
    let err = mount_all(&mounts, &rootfs).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::ENOENT), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("missing") && msg.contains("ENOENT"), "{msg}");
    assert!(
        mounted_below(&rootfs).is_empty(),
        "tmpfs must be rolled back"
    );

    let err = mount_all(
        &[MountSpec {
            kind: "ext4".into(),
            source: "/img".into(),
            target: String::new(),
            options: words("loop"),
        }],
        &rootfs,
    )
    .unwrap_err();
    assert!(matches!(err, MountError::Unsupported { .. }), "{err}");
}

#[test]
fn overlay_with_long_lowerdir_list() {
    if !is_root() {
        eprintln!("skipping overlay_with_long_lowerdir_list: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Long directory names so that the lowerdir list exceeds a page.
    let snaps = dir
        .path()
        .join("snapshots-with-a-rather-long-name-to-fill-the-page");
    let mut lowers = Vec::new();
    for i in 0..60 {
        let d = snaps.join(format!("{i}/fs-padding-padding-padding-padding-padding"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), b"").unwrap();
        lowers.push(d.to_string_lossy().into_owned());
    }
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    let rootfs = dir.path().join("rootfs");
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).unwrap();
    }
    let options = vec![
        format!("lowerdir={}", lowers.join(":")),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    assert!(
        options_size(&options) > page_size(),
        "test must exceed a page"
    );
    let spec = MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    };
    match mount_all(&[spec], &rootfs) {
        Ok(()) => {}
        // Some kernels or sandboxes lack overlayfs; the compaction logic is unit-tested.
        Err(MountError::Mount {
            errno: Errno::ENODEV,
            ..
        }) => {
            eprintln!("skipping overlay mount: overlayfs unavailable");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    assert!(rootfs.join("f0").exists() && rootfs.join("f59").exists());
    unmount_all(&rootfs).unwrap();
    assert!(mounted_below(&rootfs).is_empty());
}
