//! The cgroup of a container: where it is, its resource statistics, and its OOM events
//! (protocols.md 2.13).
//!
//! runc creates the cgroup; the shim only finds it from the init pid (`/proc/<pid>/cgroup` plus
//! the mount table), locates the files the `Stats` RPC reads, enables controllers for nested
//! cgroups on v2, and watches for OOM kills so that `/tasks/oom` can be published. Statistics are
//! read by `api::metrics` straight into containerd's messages (they are wire types, defined
//! once, in the proto), from the [`Cgroup`] found here and with the primitives of [`files`];
//! nothing here knows about protobuf. File parsing follows containerd/cgroups (the library the
//! Go shim uses), including its leniency: a missing file or controller leaves its part at
//! defaults.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::mount::{parse_mountinfo, MountInfo};

/// Where the cgroup hierarchies are mounted on a standard host.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors of cgroup lookup, statistics and OOM watching.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// The cgroup directory is gone (the API answers NOT_FOUND "cgroup does not exist").
    #[error("cgroup does not exist")]
    NotFound {
        /// The directory (or, for v1, one of the controller directories) looked at.
        path: PathBuf,
    },
    /// `/proc/<pid>/cgroup` is missing: the process has exited.
    #[error("process {pid} does not exist, cannot find its cgroup")]
    NoProcess {
        /// The pid.
        pid: u32,
    },
    /// The cgroup has no directory for a controller the operation needs.
    #[error("cgroup has no {0} controller")]
    MissingController(&'static str),
    /// A file could not be read or written.
    #[error("{op} {path:?}: {error}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A file had unexpected contents.
    #[error("parse {path:?}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{op}: {errno}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// Kernel error.
        errno: Errno,
    },
    /// The OOM watcher needs a tokio runtime to register its file descriptor with.
    #[error("OOM watching needs a tokio runtime")]
    NoRuntime,
}

/// A container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1 (also the hybrid layout): one directory per controller.
    V1 {
        /// Controller name (`memory`, `cpu`, `name=systemd`…) → the cgroup's directory in that
        /// controller's hierarchy.
        paths: BTreeMap<String, PathBuf>,
    },
    /// cgroup v2 (unified only).
    V2 {
        /// The cgroup's directory.
        path: PathBuf,
        /// Where the cgroup2 hierarchy is mounted (needed to enable controllers top-down).
        mount_point: PathBuf,
    },
}

/// Whether the host runs the unified (v2-only) hierarchy. Hybrid hosts, which mount a
/// controller-less cgroup2 at `/sys/fs/cgroup/unified`, count as v1.
pub fn is_v2_unified() -> bool {
    is_v2_unified_at(Path::new(DEFAULT_CGROUP_ROOT))
}

fn is_v2_unified_at(cgroup_root: &Path) -> bool {
    cgroup_root.join("cgroup.controllers").exists()
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controller,list:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroupEntry {
    /// Hierarchy ID (0 for the unified hierarchy).
    pub hierarchy_id: u32,
    /// Controllers bound to the hierarchy (empty for the unified one).
    pub controllers: Vec<String>,
    /// Cgroup path relative to the hierarchy root.
    pub path: PathBuf,
}

/// Parse the text of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroupEntry>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The path is last and may itself contain ':', so split at most twice.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("malformed line {line:?}"));
        };
        out.push(ProcCgroupEntry {
            hierarchy_id: id
                .parse()
                .map_err(|_| format!("bad hierarchy id in {line:?}"))?,
            controllers: ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

/// Join a cgroup path onto the mount that shows its hierarchy. The mount's root may be a
/// sub-cgroup (inside a container or with bind-mounted hierarchies); the path is then made
/// relative to it.
fn under_mount(mount: &MountInfo, cg_path: &Path) -> PathBuf {
    let rel = cg_path.strip_prefix(&mount.root).unwrap_or(cg_path);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mount.mount_point.join(rel)
}

/// Pick the mount for a cgroup path among candidates: the first one whose root contains it,
/// else the first candidate (cgroup namespaces can show paths outside the mount root).
fn best_mount<'a>(
    candidates: impl Iterator<Item = &'a MountInfo> + Clone,
    cg_path: &Path,
) -> Option<&'a MountInfo> {
    candidates
        .clone()
        .find(|m| cg_path.starts_with(&m.root))
        .or_else(|| candidates.clone().next())
}

impl Cgroup {
    /// The cgroup of process `pid` on this host.
    pub fn for_pid(pid: u32) -> Result<Cgroup, CgroupError> {
        Cgroup::for_pid_in(Path::new("/proc"), Path::new(DEFAULT_CGROUP_ROOT), pid)
    }

    /// As [`Cgroup::for_pid`] with explicit roots: reads `<proc_root>/<pid>/cgroup` and
    /// `<proc_root>/self/mountinfo`, and decides the mode from `<cgroup_root>`.
    pub fn for_pid_in(
        proc_root: &Path,
        cgroup_root: &Path,
        pid: u32,
    ) -> Result<Cgroup, CgroupError> {
        let cg_file = proc_root.join(pid.to_string()).join("cgroup");
        let proc_cgroup = match std::fs::read_to_string(&cg_file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CgroupError::NoProcess { pid })
            }
            Err(error) => {
                return Err(CgroupError::Io {
                    op: "read",
                    path: cg_file,
                    error,
                })
            }
        };
        let mi_file = proc_root.join("self/mountinfo");
        let mountinfo = std::fs::read_to_string(&mi_file).map_err(|error| CgroupError::Io {
            op: "read",
            path: mi_file.clone(),
            error,
        })?;
        let table = parse_mountinfo(&mountinfo).map_err(|e| CgroupError::Parse {
            path: mi_file,
            reason: e.to_string(),
        })?;
        Cgroup::from_tables(&proc_cgroup, &table, is_v2_unified_at(cgroup_root))
    }

    /// Build from the text of `/proc/<pid>/cgroup` and a parsed mount table. `unified` selects
    /// v2; otherwise only the v1 hierarchies are used (the hybrid layout's controller-less
    /// cgroup2 carries no statistics).
    pub fn from_tables(
        proc_cgroup: &str,
        mounts: &[MountInfo],
        unified: bool,
    ) -> Result<Cgroup, CgroupError> {
        let entries = parse_proc_cgroup(proc_cgroup).map_err(|reason| CgroupError::Parse {
            path: PathBuf::from("/proc/<pid>/cgroup"),
            reason,
        })?;
        if unified {
            let entry = entries
                .iter()
                .find(|e| e.hierarchy_id == 0 && e.controllers.is_empty())
                .ok_or_else(|| CgroupError::Parse {
                    path: PathBuf::from("/proc/<pid>/cgroup"),
                    reason: "no unified (0::) entry on a cgroup v2 host".into(),
                })?;
            let mount = best_mount(
                mounts.iter().filter(|m| m.fs_type == "cgroup2"),
                &entry.path,
            )
            .ok_or_else(|| CgroupError::Parse {
                path: PathBuf::from("/proc/self/mountinfo"),
                reason: "no cgroup2 mount".into(),
            })?;
            return Ok(Cgroup::V2 {
                path: under_mount(mount, &entry.path),
                mount_point: mount.mount_point.clone(),
            });
        }
        let mut paths = BTreeMap::new();
        for entry in entries.iter().filter(|e| !e.controllers.is_empty()) {
            let candidates = mounts.iter().filter(|m| {
                m.fs_type == "cgroup" && {
                    let opts: Vec<&str> = m.super_options.split(',').collect();
                    entry.controllers.iter().all(|c| opts.contains(&c.as_str()))
                }
            });
            // A hierarchy that is not mounted here cannot be read; leave it out.
            if let Some(mount) = best_mount(candidates, &entry.path) {
                let dir = under_mount(mount, &entry.path);
                for c in &entry.controllers {
                    paths.insert(c.clone(), dir.clone());
                }
            }
        }
        Ok(Cgroup::V1 { paths })
    }

    /// Whether the cgroup still exists (v1: any of its controller directories).
    pub fn exists(&self) -> bool {
        match self {
            Cgroup::V1 { paths } => paths.values().any(|p| p.is_dir()),
            Cgroup::V2 { path, .. } => path.is_dir(),
        }
    }

    /// The memory limit file: `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub fn memory_limit_file(&self) -> Option<PathBuf> {
        match self {
            Cgroup::V1 { paths } => paths.get("memory").map(|p| p.join("memory.limit_in_bytes")),
            Cgroup::V2 { path, .. } => Some(path.join("memory.max")),
        }
    }

    /// How many processes the kernel OOM-killed in this cgroup so far (`oom_kill` in
    /// `memory.oom_control` on v1, `memory.events` on v2). `None` when the kernel does not
    /// count them (v1 before 4.13) or the cgroup is gone. The core compares readings to report
    /// each kill once, and before the exit it caused.
    pub fn oom_kill_count(&self) -> Option<u64> {
        let file = match self {
            Cgroup::V1 { paths } => paths.get("memory")?.join("memory.oom_control"),
            Cgroup::V2 { path, .. } => path.join("memory.events"),
        };
        let text = std::fs::read_to_string(file).ok()?;
        oom_kill_count(&text)
    }

    /// The error for a cgroup that is gone, naming the directory looked at (v1: the memory
    /// controller's, else any).
    pub fn not_found(&self) -> CgroupError {
        let path = match self {
            Cgroup::V1 { paths } => paths
                .get("memory")
                .or_else(|| paths.values().next())
                .cloned()
                .unwrap_or_default(),
            Cgroup::V2 { path, .. } => path.clone(),
        };
        CgroupError::NotFound { path }
    }

    /// v2: make every controller of the hierarchy available to this cgroup by enabling them in
    /// the `cgroup.subtree_control` of each ancestor, from the root down. The cgroup's own
    /// `subtree_control` is left alone: it holds the container's processes, and the kernel
    /// refuses to enable controllers below a cgroup with member processes. This is what the Go
    /// shim does at Start. As there, a failure on an upper level (e.g. EPERM in a user
    /// namespace) is forgiven when a lower level succeeds; the last error is returned for the
    /// caller to log. v1: nothing to do.
    pub fn enable_all_controllers(&self) -> Result<(), CgroupError> {
        let Cgroup::V2 { path, mount_point } = self else {
            return Ok(());
        };
        let root_file = mount_point.join("cgroup.controllers");
        let controllers = std::fs::read_to_string(&root_file).map_err(|error| CgroupError::Io {
            op: "read",
            path: root_file,
            error,
        })?;
        let line = controllers
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        if line.is_empty() {
            return Ok(());
        }
        let Ok(rel) = path.strip_prefix(mount_point) else {
            return Ok(());
        };
        let mut dir = mount_point.clone();
        let mut last_err = None;
        let mut levels = vec![dir.clone()];
        let comps: Vec<_> = rel.components().collect();
        for comp in comps.iter().take(comps.len().saturating_sub(1)) {
            dir.push(comp);
            levels.push(dir.clone());
        }
        if comps.is_empty() {
            // The cgroup is the root itself: nothing above it to write.
            return Ok(());
        }
        for level in levels {
            let file = level.join("cgroup.subtree_control");
            // No O_CREAT: on a real cgroupfs the file always exists; elsewhere it is an error.
            let res = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| io::Write::write_all(&mut f, line.as_bytes()));
            last_err = res.err().map(|error| CgroupError::Io {
                op: "enable controllers in",
                path: file,
                error,
            });
        }
        last_err.map_or(Ok(()), Err)
    }

    /// Start watching for OOM kills in this cgroup. Must be called inside a tokio runtime.
    /// v1: an eventfd registered for `memory.oom_control` through `cgroup.event_control`;
    /// v2: inotify on `memory.events`, reporting increases of `oom_kill`.
    pub fn watch_oom(&self) -> Result<OomWatcher, CgroupError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CgroupError::NoRuntime);
        }
        if !self.exists() {
            return Err(self.not_found());
        }
        match self {
            Cgroup::V1 { paths } => {
                let dir = paths
                    .get("memory")
                    .ok_or(CgroupError::MissingController("memory"))?;
                OomWatcher::v1(dir)
            }
            Cgroup::V2 { path, .. } => OomWatcher::v2(path),
        }
    }
}

/// Reading and parsing cgroup files, shared by the statistics readers (`api::metrics`) and
/// the OOM watcher: lenient the way containerd/cgroups is, so a missing or odd file leaves
/// its value at the default rather than failing the whole `Stats` call.
pub mod files {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::Path;

    use super::CgroupError;

    /// Read a cgroup file; `None` when it does not exist. `ENODEV` counts as missing too: a cgroup
    /// removed between open and read answers that instead of `ENOENT`.
    pub fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(error) => Err(CgroupError::Io {
                op: "read",
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Unsigned value the way containerd/cgroups parses it: negative numbers (e.g. `-1` for
    /// "unlimited" in some v1 files) become 0.
    pub fn parse_uint(s: &str) -> Option<u64> {
        let s = s.trim();
        s.parse::<u64>().ok().or_else(|| {
            s.strip_prefix('-')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .map(|_| 0)
        })
    }

    /// Single-value file: `None` if missing or unparsable; `max` maps to `max_value`.
    pub fn read_single(path: &Path, max_value: u64) -> Result<Option<u64>, CgroupError> {
        Ok(read_optional(path)?.and_then(|s| {
            let s = s.trim();
            if s == "max" {
                Some(max_value)
            } else {
                parse_uint(s)
            }
        }))
    }

    /// `key value` lines (memory.stat, cpu.stat, memory.events…). Lines that do not parse are
    /// skipped rather than failing the whole Stats call.
    pub fn parse_kv(text: &str) -> BTreeMap<String, u64> {
        text.lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let (k, v, None) = (it.next()?, it.next()?, it.next()) else {
                    return None;
                };
                Some((k.to_owned(), parse_uint(v)?))
            })
            .collect()
    }

    /// [`parse_kv`] of a file; `None` when it does not exist.
    pub fn read_kv(path: &Path) -> Result<Option<BTreeMap<String, u64>>, CgroupError> {
        Ok(read_optional(path)?.map(|t| parse_kv(&t)))
    }

    /// `rdma.current` / `rdma.max`: `<device> hca_handle=<n|max> hca_object=<n|max>` per line,
    /// as (device, hca_handles, hca_objects); `max` is `u32::MAX`.
    pub fn parse_rdma(text: &str) -> Vec<(String, u32, u32)> {
        text.lines()
            .filter_map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let [device, a, b] = parts[..] else {
                    return None;
                };
                let (mut handles, mut objects) = (0, 0);
                for kv in [a, b] {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let value = if v == "max" {
                        u32::MAX
                    } else {
                        match v.parse::<u32>() {
                            Ok(n) => n,
                            Err(_) => continue,
                        }
                    };
                    match k {
                        "hca_handle" => handles = value,
                        "hca_object" => objects = value,
                        _ => {}
                    }
                }
                Some((device.to_owned(), handles, objects))
            })
            .collect()
    }
}

use files::{parse_kv, read_optional};

// ---------------------------------------------------------------------------------------------
// OOM watching.

/// Async source of OOM notifications for one cgroup. It sleeps in the tokio reactor on a file
/// descriptor (no timers, no polling) until the kernel reports something.
#[derive(Debug)]
pub struct OomWatcher {
    inner: OomInner,
    done: bool,
}

#[derive(Debug)]
enum OomInner {
    V1 {
        efd: AsyncFd<EventFd>,
        memory_dir: PathBuf,
    },
    V2 {
        inotify: AsyncFd<InotifyFd>,
        events_file: PathBuf,
        last_oom_kill: u64,
    },
}

/// nix's `Inotify` exposes only `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Descriptor types that own their fd for their whole life, so registering them with the
/// reactor is sound. Implemented only for the two types the watcher uses.
trait OwnsFd: AsRawFd {}
impl OwnsFd for EventFd {}
impl OwnsFd for InotifyFd {}

/// Register an owned descriptor with the tokio reactor for readability.
fn register<T: OwnsFd>(fd: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `OwnsFd` types wrap an `OwnedFd`, so the descriptor stays open and unchanged
    // until the `AsyncFd` drops the value, and `as_raw_fd` always returns that same descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> CgroupError {
    move |errno| CgroupError::Sys { op, errno }
}

fn oom_kill_count(text: &str) -> Option<u64> {
    parse_kv(text).get("oom_kill").copied()
}

impl OomWatcher {
    fn v1(memory_dir: &Path) -> Result<OomWatcher, CgroupError> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(sys("eventfd"))?;
        let control_path = memory_dir.join("memory.oom_control");
        let control = File::open(&control_path).map_err(|error| CgroupError::Io {
            op: "open",
            path: control_path,
            error,
        })?;
        // "<eventfd> <fd of memory.oom_control>" arms the notification; the kernel keeps its own
        // reference, so the oom_control file can be closed right after.
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        let ctl_path = memory_dir.join("cgroup.event_control");
        std::fs::write(&ctl_path, line).map_err(|error| CgroupError::Io {
            op: "write",
            path: ctl_path,
            error,
        })?;
        drop(control);
        let efd = register(efd).map_err(|error| CgroupError::Io {
            op: "register eventfd of",
            path: memory_dir.to_owned(),
            error,
        })?;
        Ok(OomWatcher {
            inner: OomInner::V1 {
                efd,
                memory_dir: memory_dir.to_owned(),
            },
            done: false,
        })
    }

    fn v2(dir: &Path) -> Result<OomWatcher, CgroupError> {
        let events_file = dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys("inotify_init"))?;
        inotify
            .add_watch(&events_file, AddWatchFlags::IN_MODIFY)
            .map_err(|errno| CgroupError::Io {
                op: "watch",
                path: events_file.clone(),
                error: io::Error::from(errno),
            })?;
        // Counting starts now: kills that happened before the watch are not news.
        let last_oom_kill = read_optional(&events_file)?
            .as_deref()
            .and_then(oom_kill_count)
            .unwrap_or_default();
        let inotify = register(InotifyFd(inotify)).map_err(|error| CgroupError::Io {
            op: "register inotify for",
            path: events_file.clone(),
            error,
        })?;
        Ok(OomWatcher {
            inner: OomInner::V2 {
                inotify,
                events_file,
                last_oom_kill,
            },
            done: false,
        })
    }

    /// Wait for the next OOM kill. `None` once the cgroup is gone (or the watch broke); after
    /// that it keeps returning `None`. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<()> {
        loop {
            if self.done {
                return None;
            }
            match &mut self.inner {
                OomInner::V1 { efd, memory_dir } => {
                    let mut guard = match efd.readable().await {
                        Ok(g) => g,
                        Err(_) => {
                            self.done = true;
                            continue;
                        }
                    };
                    match guard.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                        // Would block: a spurious wakeup; readiness was cleared, wait again.
                        Err(_) => continue,
                        Ok(Err(_)) => {
                            self.done = true;
                        }
                        Ok(Ok(_)) => {
                            // The kernel also signals the eventfd when the cgroup is removed;
                            // telling the two apart needs a look at the directory.
                            if memory_dir.join("memory.oom_control").exists() {
                                return Some(());
                            }
                            self.done = true;
                        }
                    }
                }
                OomInner::V2 {
                    inotify,
                    events_file,
                    last_oom_kill,
                } => {
                    let mut guard = match inotify.readable().await {
                        Ok(g) => g,
                        Err(_) => {
                            self.done = true;
                            continue;
                        }
                    };
                    let events = match guard
                        .try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from))
                    {
                        Err(_) => continue,
                        Ok(Err(_)) => {
                            self.done = true;
                            continue;
                        }
                        Ok(Ok(events)) => events,
                    };
                    // IN_IGNORED: the watch went away with the file (cgroup removed).
                    let watch_gone = events.iter().any(|e| {
                        e.mask
                            .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                    });
                    let count = match read_optional(events_file) {
                        Ok(Some(text)) => oom_kill_count(&text),
                        Ok(None) | Err(_) => {
                            self.done = true;
                            None
                        }
                    };
                    if watch_gone {
                        self.done = true;
                    }
                    // A write seen half-way (truncated file) has no oom_kill key; ignore it.
                    if let Some(count) = count {
                        let increased = count > *last_oom_kill;
                        *last_oom_kill = count;
                        if increased {
                            return Some(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        let cg = Cgroup::from_tables("0::/system.slice/containerd.service/abc\n", &mounts, true)
            .unwrap();
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
}
