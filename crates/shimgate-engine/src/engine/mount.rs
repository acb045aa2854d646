//! Rootfs mounts of a container (protocols.md 2.8) and the `/proc/self/mountinfo` reader.
//!
//! containerd hands the shim the snapshot as a list of mounts (`containerd.types.Mount`); the
//! shim mounts them on `<bundle>/rootfs` before `runc create` and unmounts them when the
//! container is deleted or cleaned up. The option words follow containerd's
//! `mount/mount_linux.go` so that every mount containerd's own snapshotters produce behaves the
//! same under this shim. Mount-table parsing lives here too because both unmounting and the
//! cgroup module (finding cgroup hierarchies) need it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;

/// One rootfs mount as containerd sends it (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// Filesystem type (`overlay`, `bind`, `tmpfs`, …).
    pub kind: String,
    /// Device or source directory.
    pub source: String,
    /// Path inside the rootfs (containerd 2.x); empty = the rootfs itself (1.6 ignores it).
    pub target: String,
    /// fstab-style option words.
    pub options: Vec<String>,
}

/// Mount options split into what the `mount(2)` calls need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    /// Flags for the main mount call (and the read-only bind remount).
    pub flags: MsFlags,
    /// Propagation change applied by a separate call (`MS_SHARED`/`MS_PRIVATE`/`MS_SLAVE`/
    /// `MS_UNBINDABLE`, with `MS_REC` for the `r…` spellings); empty = leave as is.
    pub propagation: MsFlags,
    /// Filesystem-specific data: every word that is not a flag, joined with `,`.
    pub data: String,
    /// The `loop` word: the source is a file to attach to a loop device.
    pub loop_dev: bool,
    /// `uidmap=` (containerd 2.x idmapped mounts).
    pub uidmap: Option<String>,
    /// `gidmap=` (containerd 2.x idmapped mounts).
    pub gidmap: Option<String>,
}

/// Errors of mounting and unmounting. Messages name the mount and the errno so that the
/// containerd log line is enough to diagnose a failed Create.
#[derive(Debug, Error)]
pub enum MountError {
    /// The main `mount(2)` call failed.
    #[error("mount {kind} {mount_source:?} on {target:?} (data {data:?}): {errno}")]
    Mount {
        /// Filesystem type.
        kind: String,
        /// Mount source.
        mount_source: String,
        /// Where it was to be mounted.
        target: PathBuf,
        /// Data string passed.
        data: String,
        /// Kernel error.
        errno: Errno,
    },
    /// Changing the propagation type failed.
    #[error("set mount propagation of {target:?}: {errno}")]
    Propagation {
        /// Mount point.
        target: PathBuf,
        /// Kernel error.
        errno: Errno,
    },
    /// The read-only remount of a bind mount failed.
    #[error("remount bind mount {target:?} read-only: {errno}")]
    RemountReadOnly {
        /// Mount point.
        target: PathBuf,
        /// Kernel error.
        errno: Errno,
    },
    /// `umount2(2)` failed (after the `MNT_DETACH` fallback where applicable).
    #[error("unmount {target:?}: {errno}")]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// Kernel error.
        errno: Errno,
    },
    /// Mount points under the rootfs survived repeated unmount rounds.
    #[error("mounts under {root:?} remain after unmounting: {remaining:?}")]
    StillMounted {
        /// The rootfs.
        root: PathBuf,
        /// Mount points still present.
        remaining: Vec<PathBuf>,
    },
    /// The data string does not fit the kernel's one-page limit even after compaction.
    #[error("mount {kind} on {target:?}: options are {len} bytes, the limit is {limit}")]
    OptionsTooLong {
        /// Filesystem type.
        kind: String,
        /// Mount point.
        target: PathBuf,
        /// Data length.
        len: usize,
        /// Page size.
        limit: usize,
    },
    /// A feature containerd supports that this shim does not implement yet.
    #[error("mount {kind} on {target:?}: {what} is not supported by this shim")]
    Unsupported {
        /// Filesystem type.
        kind: String,
        /// Mount point.
        target: PathBuf,
        /// The unsupported feature.
        what: &'static str,
    },
    /// The rootfs or target path could not be resolved.
    #[error("resolve {path:?}: {error}")]
    Path {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// `/proc/self/mountinfo` could not be read or parsed.
    #[error("mountinfo: {0}")]
    MountInfo(String),
}

impl MountError {
    /// The kernel errno behind the error, if any (callers map e.g. `EPERM` differently).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MountError::Mount { errno, .. }
            | MountError::Propagation { errno, .. }
            | MountError::RemountReadOnly { errno, .. }
            | MountError::Unmount { errno, .. } => Some(*errno),
            MountError::Path { error, .. } => error.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

/// Flag words: (word, clears the flag?, flag). Same table as containerd's `parseMountOptions`.
const FLAG_WORDS: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// Propagation words. containerd itself passes these through as data (where the kernel rejects
/// them for most filesystems); runc and mount(8) understand them, so we apply them properly.
const PROPAGATION_WORDS: &[(&str, MsFlags)] = &[
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Split option words into flags, propagation, data and the special words. Pure.
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
        loop_dev: false,
        uidmap: None,
        gidmap: None,
    };
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_str();
        if let Some(&(_, clear, flag)) = FLAG_WORDS.iter().find(|(w, _, _)| *w == opt) {
            if clear {
                parsed.flags.remove(flag);
            } else {
                parsed.flags.insert(flag);
            }
        } else if let Some(&(_, p)) = PROPAGATION_WORDS.iter().find(|(w, _)| *w == opt) {
            // The last propagation word wins, as with mount(8).
            parsed.propagation = p;
        } else if opt == "defaults" {
            // containerd leaves "defaults" in the data string, where filesystems such as tmpfs
            // reject it; mount(8) treats it as "no options", which is what the user meant.
        } else if opt == "loop" {
            parsed.loop_dev = true;
        } else if let Some(v) = opt.strip_prefix("uidmap=") {
            parsed.uidmap = Some(v.to_owned());
        } else if let Some(v) = opt.strip_prefix("gidmap=") {
            parsed.gidmap = Some(v.to_owned());
        } else {
            data.push(opt);
        }
    }
    parsed.data = data.join(",");
    parsed
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value; it takes no pointers and is thread-safe.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

fn options_size(options: &[String]) -> usize {
    options.iter().map(String::len).sum()
}

/// Byte-wise longest common prefix of `strs`.
fn longest_common_prefix(strs: &[&str]) -> String {
    let Some(first) = strs.first() else {
        return String::new();
    };
    let mut len = first.len();
    for s in &strs[1..] {
        len = first
            .bytes()
            .zip(s.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    String::from_utf8_lossy(&first.as_bytes()[..len]).into_owned()
}

/// Overlay `lowerdir=` lists of deep image stacks exceed the one-page limit of the mount data.
/// When all lower dirs share a parent directory, mounting from a process whose cwd is that
/// parent lets the lower dirs be written relative to it. Returns the directory to mount from and
/// the rewritten options, or `None` when nothing can be factored out.
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    const PREFIX: &str = "lowerdir=";
    let idx = options.iter().position(|o| o.starts_with(PREFIX))?;
    let dirs: Vec<&str> = options[idx][PREFIX.len()..].split(':').collect();
    if dirs.len() < 2 {
        return None;
    }
    let common = longest_common_prefix(&dirs);
    if common.is_empty() {
        return None;
    }
    // The common prefix can end in the middle of a name (snapshots/12 and snapshots/13 share
    // "snapshots/1"); cut it back to its last '/', which is the directory holding them all.
    let parent = &common[..common.rfind('/')?];
    if parent.is_empty() || !parent.starts_with('/') {
        return None;
    }
    let base = format!("{parent}/");
    let relative: Vec<&str> = dirs.iter().map(|d| &d[base.len()..]).collect();
    let mut rewritten: Vec<String> = options
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != idx)
        .map(|(_, o)| o.clone())
        .collect();
    rewritten.push(format!("{PREFIX}{}", relative.join(":")));
    Some((PathBuf::from(parent), rewritten))
}

/// `mount(2)` with empty strings mapped to NULL, as the kernel expects for unused arguments.
fn sys_mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), Errno> {
    let opt = |s: &str| -> Option<String> { (!s.is_empty()).then(|| s.to_owned()) };
    nix::mount::mount(
        opt(source).as_deref(),
        target,
        opt(fstype).as_deref(),
        flags,
        opt(data).as_deref(),
    )
}

/// Run `sys_mount` with `dir` as the working directory. The cwd is shared by all threads of the
/// process, so the mount runs on a short-lived thread that first unshares its filesystem
/// attributes (`CLONE_FS`): the chdir then affects only that thread.
fn sys_mount_from(
    dir: &Path,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), Errno> {
    let (dir, source, target, fstype, data) = (
        dir.to_owned(),
        source.to_owned(),
        target.to_owned(),
        fstype.to_owned(),
        data.to_owned(),
    );
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        nix::unistd::chdir(&dir)?;
        sys_mount(&source, &target, &fstype, flags, &data)
    })
    .join()
    // A panic on that thread is impossible short of an allocation failure; report it as an
    // errno rather than unwinding through the caller.
    .unwrap_or(Err(Errno::EIO))
}

/// Resolve `unsafe_path` inside `root` the way containerd's `fs.RootPath` does: symlinks are
/// followed but interpreted with `root` as `/`, and `..` never climbs above `root`, so an image
/// cannot redirect a mount onto the host. Missing components are kept lexically.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> Result<PathBuf, MountError> {
    const MAX_LINKS: usize = 255;
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_components = |pending: &mut VecDeque<OsString>, p: &Path, front: bool| {
        let parts: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        if front {
            for part in parts.into_iter().rev() {
                pending.push_front(part);
            }
        } else {
            pending.extend(parts);
        }
    };
    push_components(&mut pending, unsafe_path, false);
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(MountError::Path {
                        path: unsafe_path.to_owned(),
                        error: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let link = std::fs::read_link(&candidate).map_err(|error| MountError::Path {
                    path: candidate.clone(),
                    error,
                })?;
                if link.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_components(&mut pending, &link, true);
            }
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved))
}

/// Mount one spec on `target` (already resolved). Returns whether something was mounted on
/// `target` before the error, so the caller can roll it back.
fn mount_one(spec: &MountSpec, target: &Path) -> Result<(), (bool, MountError)> {
    let unsupported = |what| {
        (
            false,
            MountError::Unsupported {
                kind: spec.kind.clone(),
                target: target.to_owned(),
                what,
            },
        )
    };
    if spec.kind.starts_with("fuse.") || spec.kind.starts_with("fuse3.") {
        // containerd runs mount.fuse helpers here; spawning helpers must go through the
        // reaper-aware spawner, which this module does not have.
        return Err(unsupported("a FUSE mount (mount.fuse helper)"));
    }
    let page = page_size();
    let mut options = spec.options.clone();
    let mut chdir = None;
    // Same threshold as containerd: leave 512 bytes of headroom for the other options.
    if spec.kind == "overlay" && options_size(&options) >= page.saturating_sub(512) {
        if let Some((dir, rewritten)) = compact_lowerdir(&options) {
            chdir = Some(dir);
            options = rewritten;
        }
    }
    let parsed = parse_options(&options);
    if parsed.loop_dev {
        return Err(unsupported("the \"loop\" option (loop device setup)"));
    }
    if parsed.uidmap.is_some() || parsed.gidmap.is_some() {
        return Err(unsupported("an idmapped mount (uidmap=/gidmap=)"));
    }
    if parsed.data.len() > page {
        return Err((
            false,
            MountError::OptionsTooLong {
                kind: spec.kind.clone(),
                target: target.to_owned(),
                len: parsed.data.len(),
                limit: page,
            },
        ));
    }
    let flags = parsed.flags;
    let mut mounted = false;
    // A pure remount without new data only changes flags; that happens in the last step.
    if !flags.contains(MsFlags::MS_REMOUNT) || !parsed.data.is_empty() {
        let res = match &chdir {
            Some(dir) => sys_mount_from(dir, &spec.source, target, &spec.kind, flags, &parsed.data),
            None => sys_mount(&spec.source, target, &spec.kind, flags, &parsed.data),
        };
        res.map_err(|errno| {
            (
                false,
                MountError::Mount {
                    kind: spec.kind.clone(),
                    mount_source: spec.source.clone(),
                    target: target.to_owned(),
                    data: parsed.data.clone(),
                    errno,
                },
            )
        })?;
        mounted = !flags.contains(MsFlags::MS_REMOUNT);
    }
    if !parsed.propagation.is_empty() {
        // The kernel refuses propagation flags mixed with anything else, hence its own call.
        sys_mount("", target, "", parsed.propagation, "").map_err(|errno| {
            (
                mounted,
                MountError::Propagation {
                    target: target.to_owned(),
                    errno,
                },
            )
        })?;
    }
    let bind_ro = MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if flags.contains(bind_ro) {
        // A bind mount ignores MS_RDONLY on creation; read-only needs a remount of the bind.
        sys_mount("", target, "", flags | MsFlags::MS_REMOUNT, "").map_err(|errno| {
            (
                mounted,
                MountError::RemountReadOnly {
                    target: target.to_owned(),
                    errno,
                },
            )
        })?;
    }
    Ok(())
}

/// Unmount one mount point; `EBUSY` falls back to a lazy detach (a process may still hold a
/// file there; the rootfs must go regardless). `EINVAL` (no longer a mount point) and `ENOENT`
/// count as done.
fn unmount_one(target: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(MountError::Unmount {
                target: target.to_owned(),
                errno,
            }),
        },
        Err(errno) => Err(MountError::Unmount {
            target: target.to_owned(),
            errno,
        }),
    }
}

/// Mount every spec on `rootfs` in order: at `rootfs` itself when the target is empty
/// (containerd 1.6 semantics), else at `rootfs/<target>` resolved inside the rootfs (2.x).
/// On failure everything this call mounted is unmounted again, newest first.
pub fn mount_all(mounts: &[MountSpec], rootfs: &Path) -> Result<(), MountError> {
    // The overlay compaction mounts from another cwd, so the target must not be relative.
    let rootfs = std::path::absolute(rootfs).map_err(|error| MountError::Path {
        path: rootfs.to_owned(),
        error,
    })?;
    let mut done: Vec<PathBuf> = Vec::new();
    for spec in mounts {
        let target = if spec.target.is_empty() {
            Ok(rootfs.clone())
        } else {
            resolve_in_root(&rootfs, Path::new(&spec.target))
        };
        let result = target.and_then(|target| match mount_one(spec, &target) {
            Ok(()) => {
                done.push(target);
                Ok(())
            }
            Err((mounted, err)) => {
                if mounted {
                    done.push(target);
                }
                Err(err)
            }
        });
        if let Err(err) = result {
            for target in done.iter().rev() {
                if let Err(cleanup) = unmount_one(target) {
                    tracing::warn!(error = %cleanup, "rolling back rootfs mounts");
                }
            }
            return Err(err);
        }
    }
    Ok(())
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount ID.
    pub id: u32,
    /// Parent mount ID.
    pub parent_id: u32,
    /// Root of the mount within its filesystem (for cgroup mounts: the cgroup path).
    pub root: PathBuf,
    /// Mount point, relative to the reading process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type (`cgroup`, `cgroup2`, `overlay`…).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options (for cgroup v1: includes the controller names).
    pub super_options: String,
}

/// Undo the kernel's octal escaping of space, tab, newline and backslash in mountinfo paths.
fn unescape_mountinfo(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let v =
                u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0');
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Parse the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, MountError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| MountError::MountInfo(format!("line {}: {what}: {line:?}", n + 1));
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| bad("no \"-\" separator"))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(bad("too few fields"));
        }
        out.push(MountInfo {
            id: fields[0].parse().map_err(|_| bad("mount id"))?,
            parent_id: fields[1].parse().map_err(|_| bad("parent id"))?,
            root: PathBuf::from(unescape_mountinfo(fields[3])),
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            mount_options: fields[5].to_owned(),
            fs_type: fields[sep + 1].to_owned(),
            source: unescape_mountinfo(fields[sep + 2])
                .to_string_lossy()
                .into_owned(),
            super_options: fields.get(sep + 3).copied().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

/// Read and parse `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Result<Vec<MountInfo>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| MountError::MountInfo(format!("read /proc/self/mountinfo: {e}")))?;
    parse_mountinfo(&text)
}

/// Mount points at or below `root` in `table`, in the order they must be unmounted: deepest
/// first, and for mounts stacked on one point, the most recent first.
fn mounts_below(table: &[MountInfo], root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, usize, &Path)> = table
        .iter()
        .enumerate()
        .filter(|(_, m)| m.mount_point.starts_with(root))
        .map(|(i, m)| {
            (
                m.mount_point.components().count(),
                i,
                m.mount_point.as_path(),
            )
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, _, p)| p.to_owned()).collect()
}

/// Unmount everything mounted at or below `rootfs`. A missing path or nothing mounted is
/// success, so this is safe to call repeatedly (Delete, then the `delete` helper).
pub fn unmount_all(rootfs: &Path) -> Result<(), MountError> {
    // mountinfo lists canonical paths; a symlinked bundle path would otherwise match nothing.
    let root = match std::fs::canonicalize(rootfs) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(MountError::Path {
                path: rootfs.to_owned(),
                error,
            })
        }
    };
    // Unmounting can reveal mounts that were hidden underneath (stacked mounts), so repeat until
    // the table is clean; bounded so a mount that keeps coming back cannot spin forever.
    const MAX_ROUNDS: usize = 16;
    let mut remaining = Vec::new();
    for _ in 0..MAX_ROUNDS {
        remaining = mounts_below(&read_mountinfo()?, &root);
        if remaining.is_empty() {
            return Ok(());
        }
        for target in &remaining {
            unmount_one(target)?;
        }
    }
    Err(MountError::StillMounted { root, remaining })
}

#[cfg(test)]
mod tests;
