//! The cgroup of a container: where it is, its resource statistics, and its OOM events
//! (protocols.md 2.13).
//!
//! runc creates the cgroup; the shim only finds it from the init pid (`/proc/<pid>/cgroup` plus
//! the mount table), reads statistics for the `Stats` RPC, enables controllers for nested
//! cgroups on v2, and watches for OOM kills so that `/tasks/oom` can be published. Statistics are
//! plain data shaped like containerd's `io.containerd.cgroups.v1.Metrics` and
//! `io.containerd.cgroups.v2.Metrics` so the protobuf conversion elsewhere is field-for-field;
//! nothing here knows about protobuf. File parsing follows containerd/cgroups (the library the Go
//! shim uses), including its leniency: a missing file or controller leaves its part at defaults.

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

    fn not_found(&self) -> CgroupError {
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

    /// Current statistics. A missing controller or file leaves that part at its defaults; a
    /// cgroup that no longer exists at all is [`CgroupError::NotFound`].
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        if !self.exists() {
            return Err(self.not_found());
        }
        match self {
            Cgroup::V1 { paths } => {
                let partitions = read_optional(Path::new("/proc/partitions"))?;
                Ok(CgroupStats::V1(v1::stats(paths, partitions.as_deref())?))
            }
            Cgroup::V2 { path, .. } => Ok(CgroupStats::V2(v2::stats(path)?)),
        }
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

/// Statistics of a cgroup, in the shape of the metrics message containerd expects for the
/// host's cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub enum CgroupStats {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(v1::Metrics),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(v2::Metrics),
}

/// `PidsStat` (identical in v1 and v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsStat {
    /// `pids.current`.
    pub current: u64,
    /// `pids.max` (0 = unlimited, as containerd/cgroups reports it).
    pub limit: u64,
}

/// `RdmaStat` (identical in v1 and v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaStat {
    /// From `rdma.current`.
    pub current: Vec<RdmaEntry>,
    /// From `rdma.max`.
    pub limit: Vec<RdmaEntry>,
}

/// One device line of `rdma.current` / `rdma.max`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaEntry {
    /// Device name.
    pub device: String,
    /// `hca_handle` (`max` = u32::MAX).
    pub hca_handles: u32,
    /// `hca_object` (`max` = u32::MAX).
    pub hca_objects: u32,
}

// ---------------------------------------------------------------------------------------------
// File helpers shared by both versions.

/// Read a cgroup file; `None` when it does not exist. `ENODEV` counts as missing too: a cgroup
/// removed between open and read answers that instead of `ENOENT`.
fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
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
fn parse_uint(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse::<u64>().ok().or_else(|| {
        s.strip_prefix('-')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| 0)
    })
}

/// Single-value file: `None` if missing or unparsable; `max` maps to `max_value`.
fn read_single(path: &Path, max_value: u64) -> Result<Option<u64>, CgroupError> {
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
fn parse_kv(text: &str) -> BTreeMap<String, u64> {
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

fn read_kv(path: &Path) -> Result<Option<BTreeMap<String, u64>>, CgroupError> {
    Ok(read_optional(path)?.map(|t| parse_kv(&t)))
}

/// `rdma.current` / `rdma.max`: `<device> hca_handle=<n|max> hca_object=<n|max>` per line.
fn parse_rdma(text: &str) -> Vec<RdmaEntry> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [device, a, b] = parts[..] else {
                return None;
            };
            let mut entry = RdmaEntry {
                device: device.to_owned(),
                ..RdmaEntry::default()
            };
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
                    "hca_handle" => entry.hca_handles = value,
                    "hca_object" => entry.hca_objects = value,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

fn read_rdma(dir: &Path) -> Result<RdmaStat, CgroupError> {
    let current = read_optional(&dir.join("rdma.current"))?;
    let limit = read_optional(&dir.join("rdma.max"))?;
    Ok(RdmaStat {
        current: current.as_deref().map(parse_rdma).unwrap_or_default(),
        limit: limit.as_deref().map(parse_rdma).unwrap_or_default(),
    })
}

/// Pids the same way in both versions; `max` means "no limit" and is reported as 0.
fn read_pids(dir: &Path) -> Result<PidsStat, CgroupError> {
    Ok(PidsStat {
        current: read_single(&dir.join("pids.current"), 0)?.unwrap_or_default(),
        limit: read_single(&dir.join("pids.max"), 0)?.unwrap_or_default(),
    })
}

/// Statistics of cgroup v1 (`io.containerd.cgroups.v1.Metrics`).
pub mod v1 {
    use super::*;

    /// `io.containerd.cgroups.v1.Metrics`. `None` = that controller is absent, so the field is
    /// left unset on the wire exactly as the Go shim leaves it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Metrics {
        /// One entry per huge page size (field 1).
        pub hugetlb: Vec<HugetlbStat>,
        /// Field 2.
        pub pids: Option<PidsStat>,
        /// Field 3; always present, as containerd/cgroups always allocates it.
        pub cpu: CpuStat,
        /// Field 4.
        pub memory: Option<MemoryStat>,
        /// Field 5.
        pub blkio: Option<BlkioStat>,
        /// Field 6.
        pub rdma: Option<RdmaStat>,
        /// Field 9.
        pub memory_oom_control: Option<MemoryOomControl>,
    }

    /// `HugetlbStat`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct HugetlbStat {
        /// `usage_in_bytes`.
        pub usage: u64,
        /// `max_usage_in_bytes`.
        pub max: u64,
        /// `failcnt`.
        pub failcnt: u64,
        /// Page size as in the file names, e.g. `2MB`.
        pub pagesize: String,
    }

    /// `CPUStat`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct CpuStat {
        /// From cpuacct.
        pub usage: CpuUsage,
        /// From cpu.stat.
        pub throttling: Throttle,
    }

    /// `CPUUsage` (nanoseconds).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct CpuUsage {
        /// `cpuacct.usage`.
        pub total: u64,
        /// `system` of `cpuacct.stat`, converted from clock ticks.
        pub kernel: u64,
        /// `user` of `cpuacct.stat`, converted from clock ticks.
        pub user: u64,
        /// `cpuacct.usage_percpu`.
        pub per_cpu: Vec<u64>,
    }

    /// `Throttle`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Throttle {
        /// `nr_periods`.
        pub periods: u64,
        /// `nr_throttled`.
        pub throttled_periods: u64,
        /// `throttled_time`.
        pub throttled_time: u64,
    }

    /// `MemoryStat`: `memory.stat` keys plus the usage/limit files.
    #[allow(missing_docs)] // one field per memory.stat key, named like the protobuf fields
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct MemoryStat {
        pub cache: u64,
        pub rss: u64,
        pub rss_huge: u64,
        pub mapped_file: u64,
        pub dirty: u64,
        pub writeback: u64,
        pub pg_pg_in: u64,
        pub pg_pg_out: u64,
        pub pg_fault: u64,
        pub pg_maj_fault: u64,
        pub inactive_anon: u64,
        pub active_anon: u64,
        pub inactive_file: u64,
        pub active_file: u64,
        pub unevictable: u64,
        pub hierarchical_memory_limit: u64,
        /// From `hierarchical_memsw_limit`.
        pub hierarchical_swap_limit: u64,
        pub total_cache: u64,
        pub total_rss: u64,
        pub total_rss_huge: u64,
        pub total_mapped_file: u64,
        pub total_dirty: u64,
        pub total_writeback: u64,
        pub total_pg_pg_in: u64,
        pub total_pg_pg_out: u64,
        pub total_pg_fault: u64,
        pub total_pg_maj_fault: u64,
        pub total_inactive_anon: u64,
        pub total_active_anon: u64,
        pub total_inactive_file: u64,
        pub total_active_file: u64,
        pub total_unevictable: u64,
        /// `memory.*`.
        pub usage: MemoryEntry,
        /// `memory.memsw.*`.
        pub swap: MemoryEntry,
        /// `memory.kmem.*`.
        pub kernel: MemoryEntry,
        /// `memory.kmem.tcp.*`.
        pub kernel_tcp: MemoryEntry,
    }

    /// `MemoryEntry`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct MemoryEntry {
        /// `limit_in_bytes`.
        pub limit: u64,
        /// `usage_in_bytes`.
        pub usage: u64,
        /// `max_usage_in_bytes`.
        pub max: u64,
        /// `failcnt`.
        pub failcnt: u64,
    }

    /// `MemoryOomControl` (`memory.oom_control`).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct MemoryOomControl {
        /// `oom_kill_disable`.
        pub oom_kill_disable: u64,
        /// `under_oom`.
        pub under_oom: u64,
        /// `oom_kill`.
        pub oom_kill: u64,
    }

    /// `BlkIOStat`.
    #[allow(missing_docs)] // one field per blkio file, named like the protobuf fields
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BlkioStat {
        pub io_service_bytes_recursive: Vec<BlkioEntry>,
        pub io_serviced_recursive: Vec<BlkioEntry>,
        pub io_queued_recursive: Vec<BlkioEntry>,
        pub io_service_time_recursive: Vec<BlkioEntry>,
        pub io_wait_time_recursive: Vec<BlkioEntry>,
        pub io_merged_recursive: Vec<BlkioEntry>,
        /// From `blkio.time_recursive`.
        pub io_time_recursive: Vec<BlkioEntry>,
        pub sectors_recursive: Vec<BlkioEntry>,
    }

    /// `BlkIOEntry`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct BlkioEntry {
        /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total` or empty.
        pub op: String,
        /// `/dev/<name>` from `/proc/partitions`, empty if unknown.
        pub device: String,
        /// Device major.
        pub major: u64,
        /// Device minor.
        pub minor: u64,
        /// Counter value.
        pub value: u64,
    }

    pub(super) fn clock_ticks() -> u64 {
        // SAFETY: sysconf only reads a configuration value; it takes no pointers and is
        // thread-safe.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // USER_HZ is 100 on every Linux ABI; the fallback only guards a failing sysconf.
        u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
    }

    fn memory(dir: &Path) -> Result<(MemoryStat, MemoryOomControl), CgroupError> {
        let raw = read_kv(&dir.join("memory.stat"))?.unwrap_or_default();
        let g = |k: &str| raw.get(k).copied().unwrap_or_default();
        let entry = |module: &str| -> Result<MemoryEntry, CgroupError> {
            let file = |name: &str| {
                let f = if module.is_empty() {
                    format!("memory.{name}")
                } else {
                    format!("memory.{module}.{name}")
                };
                read_single(&dir.join(f), u64::MAX).map(Option::unwrap_or_default)
            };
            Ok(MemoryEntry {
                limit: file("limit_in_bytes")?,
                usage: file("usage_in_bytes")?,
                max: file("max_usage_in_bytes")?,
                failcnt: file("failcnt")?,
            })
        };
        let stat = MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            usage: entry("")?,
            swap: entry("memsw")?,
            kernel: entry("kmem")?,
            kernel_tcp: entry("kmem.tcp")?,
        };
        let oom = read_kv(&dir.join("memory.oom_control"))?.unwrap_or_default();
        let o = |k: &str| oom.get(k).copied().unwrap_or_default();
        let oom = MemoryOomControl {
            oom_kill_disable: o("oom_kill_disable"),
            under_oom: o("under_oom"),
            oom_kill: o("oom_kill"),
        };
        Ok((stat, oom))
    }

    fn cpu(cpu_dir: Option<&PathBuf>, acct_dir: Option<&PathBuf>) -> Result<CpuStat, CgroupError> {
        let mut out = CpuStat::default();
        if let Some(dir) = cpu_dir {
            if let Some(kv) = read_kv(&dir.join("cpu.stat"))? {
                let g = |k: &str| kv.get(k).copied().unwrap_or_default();
                out.throttling = Throttle {
                    periods: g("nr_periods"),
                    throttled_periods: g("nr_throttled"),
                    throttled_time: g("throttled_time"),
                };
            }
        }
        if let Some(dir) = acct_dir {
            out.usage.total = read_single(&dir.join("cpuacct.usage"), 0)?.unwrap_or_default();
            if let Some(text) = read_optional(&dir.join("cpuacct.usage_percpu"))? {
                out.usage.per_cpu = text.split_whitespace().filter_map(parse_uint).collect();
            }
            if let Some(kv) = read_kv(&dir.join("cpuacct.stat"))? {
                // cpuacct.stat counts USER_HZ ticks; the metrics are in nanoseconds.
                let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / clock_ticks();
                out.usage.user = ns(kv.get("user").copied().unwrap_or_default());
                out.usage.kernel = ns(kv.get("system").copied().unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// `/proc/partitions` → (major, minor) → `/dev/<name>`.
    fn devices(partitions: &str) -> BTreeMap<(u64, u64), String> {
        let mut out = BTreeMap::new();
        // Two header lines ("major minor #blocks name" and a blank one).
        for line in partitions.lines().skip(2) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [major, minor, _, name, ..] = f[..] {
                if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
                    out.entry((major, minor))
                        .or_insert_with(|| format!("/dev/{name}"));
                }
            }
        }
        out
    }

    /// One blkio file: `major:minor [op] value` lines plus a `Total n` line that is skipped.
    fn blkio_entries(
        text: &str,
        devices: &BTreeMap<(u64, u64), String>,
        path: &Path,
    ) -> Result<Vec<BlkioEntry>, CgroupError> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split([' ', ':']).filter(|s| !s.is_empty()).collect();
            let bad = || CgroupError::Parse {
                path: path.to_owned(),
                reason: format!("invalid line {line:?}"),
            };
            if f.len() == 2 && f[0] == "Total" {
                continue;
            }
            if f.len() < 3 {
                return Err(bad());
            }
            let major = f[0].parse().map_err(|_| bad())?;
            let minor = f[1].parse().map_err(|_| bad())?;
            let (op, value) = if f.len() >= 4 {
                (f[2], f[3])
            } else {
                ("", f[2])
            };
            out.push(BlkioEntry {
                op: op.to_owned(),
                device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
                major,
                minor,
                value: value.parse().map_err(|_| bad())?,
            });
        }
        Ok(out)
    }

    fn blkio(dir: &Path, partitions: Option<&str>) -> Result<BlkioStat, CgroupError> {
        let devices = partitions.map(devices).unwrap_or_default();
        let mut out = BlkioStat::default();
        let read = |name: &str, entry: &mut Vec<BlkioEntry>| -> Result<(), CgroupError> {
            let path = dir.join(format!("blkio.{name}"));
            if let Some(text) = read_optional(&path)? {
                *entry = blkio_entries(&text, &devices, &path)?;
            }
            Ok(())
        };
        // Same preference as containerd/cgroups: the CFQ statistics when the kernel has them
        // and they are non-empty, else the throttle counters every kernel keeps.
        if dir.join("blkio.io_serviced_recursive").exists() {
            read("sectors_recursive", &mut out.sectors_recursive)?;
            read(
                "io_service_bytes_recursive",
                &mut out.io_service_bytes_recursive,
            )?;
            read("io_serviced_recursive", &mut out.io_serviced_recursive)?;
            read("io_queued_recursive", &mut out.io_queued_recursive)?;
            read(
                "io_service_time_recursive",
                &mut out.io_service_time_recursive,
            )?;
            read("io_wait_time_recursive", &mut out.io_wait_time_recursive)?;
            read("io_merged_recursive", &mut out.io_merged_recursive)?;
            read("time_recursive", &mut out.io_time_recursive)?;
            if out != BlkioStat::default() {
                return Ok(out);
            }
        }
        read("throttle.io_serviced", &mut out.io_serviced_recursive)?;
        read(
            "throttle.io_service_bytes",
            &mut out.io_service_bytes_recursive,
        )?;
        Ok(out)
    }

    fn hugetlb(dir: &Path) -> Result<Vec<HugetlbStat>, CgroupError> {
        // Page sizes come from the file names (hugetlb.<size>.usage_in_bytes), which are
        // exactly the sizes the kernel supports; sorted for a stable order.
        let mut sizes: Vec<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("hugetlb.")?
                        .strip_suffix(".usage_in_bytes")
                        .map(str::to_owned)
                })
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        sizes.sort();
        sizes
            .into_iter()
            .map(|size| {
                let f = |n: &str| {
                    read_single(&dir.join(format!("hugetlb.{size}.{n}")), u64::MAX)
                        .map(Option::unwrap_or_default)
                };
                Ok(HugetlbStat {
                    usage: f("usage_in_bytes")?,
                    max: f("max_usage_in_bytes")?,
                    failcnt: f("failcnt")?,
                    pagesize: size.clone(),
                })
            })
            .collect()
    }

    /// Collect v1 statistics from per-controller directories. `partitions` is the text of
    /// `/proc/partitions`, used to name block devices.
    pub(crate) fn stats(
        paths: &BTreeMap<String, PathBuf>,
        partitions: Option<&str>,
    ) -> Result<Metrics, CgroupError> {
        // A controller whose directory is gone is treated like an absent controller.
        let dir = |c: &str| paths.get(c).filter(|p| p.is_dir());
        let mut m = Metrics {
            cpu: cpu(dir("cpu"), dir("cpuacct"))?,
            ..Metrics::default()
        };
        if let Some(d) = dir("memory") {
            let (stat, oom) = memory(d)?;
            m.memory = Some(stat);
            m.memory_oom_control = Some(oom);
        }
        if let Some(d) = dir("pids") {
            m.pids = Some(read_pids(d)?);
        }
        if let Some(d) = dir("blkio") {
            m.blkio = Some(blkio(d, partitions)?);
        }
        if let Some(d) = dir("hugetlb") {
            m.hugetlb = hugetlb(d)?;
        }
        if let Some(d) = dir("rdma") {
            m.rdma = Some(read_rdma(d)?);
        }
        Ok(m)
    }
}

/// Statistics of cgroup v2 (`io.containerd.cgroups.v2.Metrics`).
pub mod v2 {
    use super::*;

    /// `io.containerd.cgroups.v2.Metrics`. The Go shim always sets pids, cpu, memory, io and
    /// rdma, and memory_events only when `memory.events` has content.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Metrics {
        /// Field 1.
        pub pids: PidsStat,
        /// Field 2.
        pub cpu: CpuStat,
        /// Field 4.
        pub memory: MemoryStat,
        /// Field 5.
        pub rdma: RdmaStat,
        /// Field 6.
        pub io: IoStat,
        /// Field 7.
        pub hugetlb: Vec<HugeTlbStat>,
        /// Field 8.
        pub memory_events: Option<MemoryEvents>,
    }

    /// `PSIData`: one line of a `*.pressure` file.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct PsiData {
        /// `avg10`.
        pub avg10: f64,
        /// `avg60`.
        pub avg60: f64,
        /// `avg300`.
        pub avg300: f64,
        /// `total` (microseconds).
        pub total: u64,
    }

    /// `PSIStats`.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct PsiStats {
        /// `some` line.
        pub some: Option<PsiData>,
        /// `full` line.
        pub full: Option<PsiData>,
    }

    /// `CPUStat` (`cpu.stat`, microseconds).
    #[allow(missing_docs)] // one field per cpu.stat key
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct CpuStat {
        pub usage_usec: u64,
        pub user_usec: u64,
        pub system_usec: u64,
        pub nr_periods: u64,
        pub nr_throttled: u64,
        pub throttled_usec: u64,
        pub nr_bursts: u64,
        pub burst_usec: u64,
        /// `cpu.pressure`.
        pub psi: Option<PsiStats>,
    }

    /// `MemoryStat`: `memory.stat` keys plus the single-value files.
    #[allow(missing_docs)] // one field per memory.stat key, named like the protobuf fields
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct MemoryStat {
        pub anon: u64,
        pub file: u64,
        pub kernel_stack: u64,
        pub slab: u64,
        pub sock: u64,
        pub shmem: u64,
        pub file_mapped: u64,
        pub file_dirty: u64,
        pub file_writeback: u64,
        pub anon_thp: u64,
        pub inactive_anon: u64,
        pub active_anon: u64,
        pub inactive_file: u64,
        pub active_file: u64,
        pub unevictable: u64,
        pub slab_reclaimable: u64,
        pub slab_unreclaimable: u64,
        pub pgfault: u64,
        pub pgmajfault: u64,
        pub workingset_refault: u64,
        pub workingset_activate: u64,
        pub workingset_nodereclaim: u64,
        pub pgrefill: u64,
        pub pgscan: u64,
        pub pgsteal: u64,
        pub pgactivate: u64,
        pub pgdeactivate: u64,
        pub pglazyfree: u64,
        pub pglazyfreed: u64,
        pub thp_fault_alloc: u64,
        pub thp_collapse_alloc: u64,
        /// `memory.current`.
        pub usage: u64,
        /// `memory.max` (`max` = u64::MAX).
        pub usage_limit: u64,
        /// `memory.swap.current`.
        pub swap_usage: u64,
        /// `memory.swap.max` (`max` = u64::MAX).
        pub swap_limit: u64,
        /// `memory.peak` (newer kernels).
        pub max_usage: u64,
        /// `memory.swap.peak` (newer kernels).
        pub swap_max_usage: u64,
        /// `memory.pressure`.
        pub psi: Option<PsiStats>,
    }

    /// `MemoryEvents` (`memory.events`).
    #[allow(missing_docs)] // one field per memory.events key
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct MemoryEvents {
        pub low: u64,
        pub high: u64,
        pub max: u64,
        pub oom: u64,
        pub oom_kill: u64,
        pub oom_group_kill: u64,
    }

    /// `IOStat`.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct IoStat {
        /// One entry per device line of `io.stat`.
        pub usage: Vec<IoEntry>,
        /// `io.pressure`.
        pub psi: Option<PsiStats>,
    }

    /// `IOEntry`.
    #[allow(missing_docs)] // one field per io.stat key
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct IoEntry {
        pub major: u64,
        pub minor: u64,
        pub rbytes: u64,
        pub wbytes: u64,
        pub rios: u64,
        pub wios: u64,
    }

    /// `HugeTlbStat`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct HugeTlbStat {
        /// `hugetlb.<size>.current`.
        pub current: u64,
        /// `hugetlb.<size>.max` (`max` = u64::MAX).
        pub max: u64,
        /// Page size as in the file names, e.g. `2MB`.
        pub pagesize: String,
        /// `max` count of `hugetlb.<size>.events`.
        pub failcnt: u64,
    }

    /// Parse a PSI file (`some avg10=… avg60=… avg300=… total=…`, optional `full` line).
    pub(super) fn parse_psi(text: &str) -> PsiStats {
        let mut out = PsiStats::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let kind = it.next();
            let mut d = PsiData::default();
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                match k {
                    "avg10" => d.avg10 = v.parse().unwrap_or_default(),
                    "avg60" => d.avg60 = v.parse().unwrap_or_default(),
                    "avg300" => d.avg300 = v.parse().unwrap_or_default(),
                    "total" => d.total = v.parse().unwrap_or_default(),
                    _ => {}
                }
            }
            match kind {
                Some("some") => out.some = Some(d),
                Some("full") => out.full = Some(d),
                _ => {}
            }
        }
        out
    }

    fn psi(path: &Path) -> Result<Option<PsiStats>, CgroupError> {
        Ok(read_optional(path)?.map(|t| parse_psi(&t)))
    }

    /// `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per device.
    pub(super) fn parse_io_stat(text: &str) -> Vec<IoEntry> {
        text.lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let (major, minor) = it.next()?.split_once(':')?;
                let mut e = IoEntry {
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                    ..IoEntry::default()
                };
                for kv in it {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let Ok(v) = v.parse::<u64>() else {
                        continue;
                    };
                    match k {
                        "rbytes" => e.rbytes = v,
                        "wbytes" => e.wbytes = v,
                        "rios" => e.rios = v,
                        "wios" => e.wios = v,
                        _ => {}
                    }
                }
                Some(e)
            })
            .collect()
    }

    fn hugetlb(dir: &Path) -> Result<Vec<HugeTlbStat>, CgroupError> {
        let mut sizes: Vec<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("hugetlb.")?
                        .strip_suffix(".current")
                        .map(str::to_owned)
                })
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        sizes.sort();
        sizes
            .into_iter()
            .map(|size| {
                let events = read_kv(&dir.join(format!("hugetlb.{size}.events")))?;
                Ok(HugeTlbStat {
                    current: read_single(&dir.join(format!("hugetlb.{size}.current")), u64::MAX)?
                        .unwrap_or_default(),
                    max: read_single(&dir.join(format!("hugetlb.{size}.max")), u64::MAX)?
                        .unwrap_or_default(),
                    failcnt: events
                        .and_then(|e| e.get("max").copied())
                        .unwrap_or_default(),
                    pagesize: size,
                })
            })
            .collect()
    }

    /// Parse `memory.events` into [`MemoryEvents`]; `None` when it has no content.
    pub(super) fn memory_events(kv: &BTreeMap<String, u64>) -> Option<MemoryEvents> {
        if kv.is_empty() {
            return None;
        }
        let g = |k: &str| kv.get(k).copied().unwrap_or_default();
        Some(MemoryEvents {
            low: g("low"),
            high: g("high"),
            max: g("max"),
            oom: g("oom"),
            oom_kill: g("oom_kill"),
            oom_group_kill: g("oom_group_kill"),
        })
    }

    /// Collect v2 statistics from the cgroup directory.
    pub(super) fn stats(dir: &Path) -> Result<Metrics, CgroupError> {
        let cpu = read_kv(&dir.join("cpu.stat"))?.unwrap_or_default();
        let c = |k: &str| cpu.get(k).copied().unwrap_or_default();
        let mem = read_kv(&dir.join("memory.stat"))?.unwrap_or_default();
        let m = |k: &str| mem.get(k).copied().unwrap_or_default();
        let single = |name: &str| -> Result<u64, CgroupError> {
            Ok(read_single(&dir.join(name), u64::MAX)?.unwrap_or_default())
        };
        Ok(Metrics {
            pids: read_pids(dir)?,
            cpu: CpuStat {
                usage_usec: c("usage_usec"),
                user_usec: c("user_usec"),
                system_usec: c("system_usec"),
                nr_periods: c("nr_periods"),
                nr_throttled: c("nr_throttled"),
                throttled_usec: c("throttled_usec"),
                nr_bursts: c("nr_bursts"),
                burst_usec: c("burst_usec"),
                psi: psi(&dir.join("cpu.pressure"))?,
            },
            memory: MemoryStat {
                anon: m("anon"),
                file: m("file"),
                kernel_stack: m("kernel_stack"),
                slab: m("slab"),
                sock: m("sock"),
                shmem: m("shmem"),
                file_mapped: m("file_mapped"),
                file_dirty: m("file_dirty"),
                file_writeback: m("file_writeback"),
                anon_thp: m("anon_thp"),
                inactive_anon: m("inactive_anon"),
                active_anon: m("active_anon"),
                inactive_file: m("inactive_file"),
                active_file: m("active_file"),
                unevictable: m("unevictable"),
                slab_reclaimable: m("slab_reclaimable"),
                slab_unreclaimable: m("slab_unreclaimable"),
                pgfault: m("pgfault"),
                pgmajfault: m("pgmajfault"),
                workingset_refault: m("workingset_refault"),
                workingset_activate: m("workingset_activate"),
                workingset_nodereclaim: m("workingset_nodereclaim"),
                pgrefill: m("pgrefill"),
                pgscan: m("pgscan"),
                pgsteal: m("pgsteal"),
                pgactivate: m("pgactivate"),
                pgdeactivate: m("pgdeactivate"),
                pglazyfree: m("pglazyfree"),
                pglazyfreed: m("pglazyfreed"),
                thp_fault_alloc: m("thp_fault_alloc"),
                thp_collapse_alloc: m("thp_collapse_alloc"),
                usage: single("memory.current")?,
                usage_limit: single("memory.max")?,
                swap_usage: single("memory.swap.current")?,
                swap_limit: single("memory.swap.max")?,
                max_usage: single("memory.peak")?,
                swap_max_usage: single("memory.swap.peak")?,
                psi: psi(&dir.join("memory.pressure"))?,
            },
            rdma: read_rdma(dir)?,
            io: IoStat {
                usage: read_optional(&dir.join("io.stat"))?
                    .map(|t| parse_io_stat(&t))
                    .unwrap_or_default(),
                psi: psi(&dir.join("io.pressure"))?,
            },
            hugetlb: hugetlb(dir)?,
            memory_events: read_kv(&dir.join("memory.events"))?
                .as_ref()
                .and_then(memory_events),
        })
    }
}

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

    fn fake_v1_tree(root: &Path) -> BTreeMap<String, PathBuf> {
        let mem = root.join("memory/ctr");
        write(
            &mem,
            "memory.stat",
            "cache 1048576\nrss 2097152\nrss_huge 0\nshmem 0\nmapped_file 524288\ndirty 4096\n\
             writeback 0\npgpgin 1200\npgpgout 500\npgfault 3000\npgmajfault 7\ninactive_anon 0\n\
             active_anon 2097152\ninactive_file 786432\nactive_file 262144\nunevictable 0\n\
             hierarchical_memory_limit 67108864\nhierarchical_memsw_limit 9223372036854771712\n\
             total_cache 1048576\ntotal_rss 2097152\ntotal_rss_huge 0\ntotal_shmem 0\n\
             total_mapped_file 524288\ntotal_dirty 4096\ntotal_writeback 0\ntotal_pgpgin 1200\n\
             total_pgpgout 500\ntotal_pgfault 3000\ntotal_pgmajfault 7\ntotal_inactive_anon 0\n\
             total_active_anon 2097152\ntotal_inactive_file 786432\ntotal_active_file 262144\n\
             total_unevictable 0\n",
        );
        write(&mem, "memory.usage_in_bytes", "3145728\n");
        write(&mem, "memory.max_usage_in_bytes", "4194304\n");
        write(&mem, "memory.limit_in_bytes", "67108864\n");
        write(&mem, "memory.failcnt", "2\n");
        write(&mem, "memory.memsw.usage_in_bytes", "3145728\n");
        write(&mem, "memory.memsw.max_usage_in_bytes", "4194304\n");
        write(&mem, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
        write(&mem, "memory.memsw.failcnt", "0\n");
        write(&mem, "memory.kmem.usage_in_bytes", "65536\n");
        write(&mem, "memory.kmem.limit_in_bytes", "-1\n");
        write(
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let cpu = root.join("cpu,cpuacct/ctr");
        write(
            &cpu,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 123456\n",
        );
        write(&cpu, "cpuacct.usage", "5000000000\n");
        write(&cpu, "cpuacct.usage_percpu", "3000000000 2000000000 \n");
        write(&cpu, "cpuacct.stat", "user 300\nsystem 100\n");
        let pids = root.join("pids/ctr");
        write(&pids, "pids.current", "3\n");
        write(&pids, "pids.max", "max\n");
        let blkio = root.join("blkio/ctr");
        write(
            &blkio,
            "blkio.throttle.io_serviced",
            "8:0 Read 10\n8:0 Write 20\n8:0 Sync 25\n8:0 Async 5\n8:0 Discard 0\n8:0 Total 30\nTotal 30\n",
        );
        write(
            &blkio,
            "blkio.throttle.io_service_bytes",
            "8:0 Read 40960\n8:0 Write 81920\n8:0 Total 122880\nTotal 122880\n",
        );
        let huge = root.join("hugetlb/ctr");
        write(&huge, "hugetlb.2MB.usage_in_bytes", "2097152\n");
        write(&huge, "hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        write(&huge, "hugetlb.2MB.failcnt", "1\n");
        write(&huge, "hugetlb.1GB.usage_in_bytes", "0\n");
        write(&huge, "hugetlb.1GB.max_usage_in_bytes", "0\n");
        write(&huge, "hugetlb.1GB.failcnt", "0\n");
        BTreeMap::from([
            ("memory".to_owned(), mem),
            ("cpu".to_owned(), cpu.clone()),
            ("cpuacct".to_owned(), cpu),
            ("pids".to_owned(), pids),
            ("blkio".to_owned(), blkio),
            ("hugetlb".to_owned(), huge),
            // Listed in /proc/<pid>/cgroup but its directory is gone: treated as absent.
            ("rdma".to_owned(), root.join("rdma/ctr")),
        ])
    }

    #[test]
    fn v1_stats_from_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = fake_v1_tree(tmp.path());
        let partitions = "major minor  #blocks  name\n\n   8        0  10485760 sda\n   8        1  1048576 sda1\n";
        let m = v1::stats(&paths, Some(partitions)).unwrap();

        let mem = m.memory.as_ref().unwrap();
        assert_eq!(mem.cache, 1048576);
        assert_eq!(mem.rss, 2097152);
        assert_eq!(mem.mapped_file, 524288);
        assert_eq!(mem.pg_pg_in, 1200);
        assert_eq!(mem.pg_maj_fault, 7);
        assert_eq!(mem.hierarchical_memory_limit, 67108864);
        assert_eq!(mem.hierarchical_swap_limit, 9223372036854771712);
        assert_eq!(mem.total_active_file, 262144);
        assert_eq!(
            mem.usage,
            v1::MemoryEntry {
                limit: 67108864,
                usage: 3145728,
                max: 4194304,
                failcnt: 2
            }
        );
        assert_eq!(mem.swap.limit, 9223372036854771712);
        // "-1" is reported as 0 like containerd/cgroups does.
        assert_eq!(
            mem.kernel,
            v1::MemoryEntry {
                usage: 65536,
                ..Default::default()
            }
        );
        assert_eq!(mem.kernel_tcp, v1::MemoryEntry::default());
        assert_eq!(m.memory_oom_control.as_ref().unwrap().oom_kill, 1);

        let ticks = v1::clock_ticks();
        assert_eq!(m.cpu.usage.total, 5_000_000_000);
        assert_eq!(m.cpu.usage.per_cpu, vec![3_000_000_000, 2_000_000_000]);
        assert_eq!(m.cpu.usage.user, 300 * 1_000_000_000 / ticks);
        assert_eq!(m.cpu.usage.kernel, 100 * 1_000_000_000 / ticks);
        assert_eq!(
            m.cpu.throttling,
            v1::Throttle {
                periods: 10,
                throttled_periods: 2,
                throttled_time: 123456
            }
        );

        assert_eq!(
            m.pids,
            Some(PidsStat {
                current: 3,
                limit: 0
            })
        );

        let blkio = m.blkio.as_ref().unwrap();
        assert_eq!(blkio.io_serviced_recursive.len(), 6);
        assert_eq!(
            blkio.io_serviced_recursive[0],
            v1::BlkioEntry {
                op: "Read".into(),
                device: "/dev/sda".into(),
                major: 8,
                minor: 0,
                value: 10
            }
        );
        assert_eq!(blkio.io_service_bytes_recursive[1].value, 81920);
        assert!(blkio.sectors_recursive.is_empty());

        assert_eq!(m.hugetlb.len(), 2);
        assert_eq!(m.hugetlb[0].pagesize, "1GB");
        assert_eq!(
            m.hugetlb[1],
            v1::HugetlbStat {
                usage: 2097152,
                max: 4194304,
                failcnt: 1,
                pagesize: "2MB".into()
            }
        );
        assert_eq!(m.rdma, None);

        // Through the public API as well (real /proc/partitions, so no device check).
        let cg = Cgroup::V1 { paths };
        let CgroupStats::V1(m2) = cg.stats().unwrap() else {
            panic!("expected v1 stats");
        };
        assert_eq!(m2.memory, m.memory);
    }

    #[test]
    fn v1_missing_controllers_are_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let mem = tmp.path().join("memory/ctr");
        std::fs::create_dir_all(&mem).unwrap();
        let cg = Cgroup::V1 {
            paths: BTreeMap::from([("memory".to_owned(), mem.clone())]),
        };
        let CgroupStats::V1(m) = cg.stats().unwrap() else {
            panic!("expected v1 stats");
        };
        assert_eq!(m.memory, Some(v1::MemoryStat::default()));
        assert_eq!(m.pids, None);
        assert_eq!(m.cpu, v1::CpuStat::default());

        std::fs::remove_dir(&mem).unwrap();
        let err = cg.stats().unwrap_err();
        assert!(matches!(err, CgroupError::NotFound { .. }));
        assert_eq!(err.to_string(), "cgroup does not exist");
    }

    fn fake_v2_dir(dir: &Path) {
        write(
            dir,
            "cpu.stat",
            "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 5\n\
             nr_throttled 1\nthrottled_usec 789\nnr_bursts 0\nburst_usec 0\n",
        );
        write(
            dir,
            "memory.stat",
            "anon 1048576\nfile 2097152\nkernel 200000\nkernel_stack 16384\npagetables 8192\n\
             sec_pagetables 0\npercpu 1024\nsock 0\nvmalloc 0\nshmem 4096\nfile_mapped 8192\n\
             file_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\n\
             inactive_anon 1052672\nactive_anon 0\ninactive_file 1048576\nactive_file 1048576\n\
             unevictable 0\nslab_reclaimable 40000\nslab_unreclaimable 25536\nslab 65536\n\
             workingset_refault_anon 0\nworkingset_refault_file 3\nworkingset_activate_anon 0\n\
             workingset_activate_file 1\nworkingset_restore_anon 0\nworkingset_restore_file 0\n\
             workingset_nodereclaim 0\npgscan 10\npgsteal 9\npgscan_kswapd 0\npgscan_direct 10\n\
             pgsteal_kswapd 0\npgsteal_direct 9\npgfault 1000\npgmajfault 3\npgrefill 2\n\
             pgactivate 4\npgdeactivate 1\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\n\
             thp_collapse_alloc 0\n",
        );
        write(dir, "memory.current", "3145728\n");
        write(dir, "memory.max", "max\n");
        write(dir, "memory.swap.current", "0\n");
        write(dir, "memory.swap.max", "max\n");
        write(dir, "memory.peak", "4194304\n");
        write(
            dir,
            "memory.events",
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(dir, "pids.current", "2\n");
        write(dir, "pids.max", "100\n");
        write(
            dir,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
             253:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n",
        );
        write(
            dir,
            "cpu.pressure",
            "some avg10=0.50 avg60=0.10 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=100\n",
        );
        write(dir, "hugetlb.2MB.current", "0\n");
        write(dir, "hugetlb.2MB.max", "max\n");
        write(dir, "hugetlb.2MB.events", "max 3\n");
        write(dir, "rdma.current", "mlx4_0 hca_handle=2 hca_object=2000\n");
        write(dir, "rdma.max", "mlx4_0 hca_handle=max hca_object=max\n");
    }

    #[test]
    fn v2_stats_from_fake_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctr");
        fake_v2_dir(&dir);
        let cg = Cgroup::V2 {
            path: dir,
            mount_point: tmp.path().to_owned(),
        };
        let CgroupStats::V2(m) = cg.stats().unwrap() else {
            panic!("expected v2 stats");
        };
        assert_eq!(
            m.pids,
            PidsStat {
                current: 2,
                limit: 100
            }
        );
        assert_eq!(m.cpu.usage_usec, 123456);
        assert_eq!(m.cpu.user_usec, 100000);
        assert_eq!(m.cpu.system_usec, 23456);
        assert_eq!(m.cpu.nr_throttled, 1);
        assert_eq!(m.cpu.throttled_usec, 789);
        let psi = m.cpu.psi.unwrap();
        assert_eq!(psi.some.unwrap().avg10, 0.5);
        assert_eq!(psi.some.unwrap().total, 12345);
        assert_eq!(psi.full.unwrap().total, 100);
        assert_eq!(m.memory.anon, 1048576);
        assert_eq!(m.memory.file, 2097152);
        assert_eq!(m.memory.kernel_stack, 16384);
        assert_eq!(m.memory.slab, 65536);
        assert_eq!(m.memory.shmem, 4096);
        assert_eq!(m.memory.pgfault, 1000);
        assert_eq!(m.memory.pgscan, 10);
        assert_eq!(m.memory.usage, 3145728);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory.swap_limit, u64::MAX);
        assert_eq!(m.memory.max_usage, 4194304);
        assert_eq!(m.memory.swap_max_usage, 0);
        assert_eq!(m.memory.psi, None);
        assert_eq!(
            m.memory_events,
            Some(v2::MemoryEvents {
                max: 5,
                oom: 1,
                oom_kill: 1,
                ..Default::default()
            })
        );
        assert_eq!(
            m.io.usage,
            vec![
                v2::IoEntry {
                    major: 8,
                    minor: 0,
                    rbytes: 4096,
                    wbytes: 8192,
                    rios: 1,
                    wios: 2
                },
                v2::IoEntry {
                    major: 253,
                    ..Default::default()
                }
            ]
        );
        assert_eq!(
            m.hugetlb,
            vec![v2::HugeTlbStat {
                current: 0,
                max: u64::MAX,
                pagesize: "2MB".into(),
                failcnt: 3
            }]
        );
        assert_eq!(
            m.rdma,
            RdmaStat {
                current: vec![RdmaEntry {
                    device: "mlx4_0".into(),
                    hca_handles: 2,
                    hca_objects: 2000
                }],
                limit: vec![RdmaEntry {
                    device: "mlx4_0".into(),
                    hca_handles: u32::MAX,
                    hca_objects: u32::MAX
                }],
            }
        );

        let gone = Cgroup::V2 {
            path: tmp.path().join("missing"),
            mount_point: tmp.path().to_owned(),
        };
        assert!(matches!(gone.stats(), Err(CgroupError::NotFound { .. })));
    }

    #[test]
    fn v2_empty_dir_gives_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroup::V2 {
            path: tmp.path().to_owned(),
            mount_point: tmp.path().to_owned(),
        };
        assert_eq!(cg.stats().unwrap(), CgroupStats::V2(v2::Metrics::default()));
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
        match (is_v2_unified(), cg.stats().unwrap()) {
            (false, CgroupStats::V1(m)) => {
                let mem = m.memory.expect("memory controller is mounted on this host");
                assert!(mem.usage.usage > 0, "{mem:?}");
                assert!(m.cpu.usage.total > 0, "{:?}", m.cpu);
                assert!(!m.cpu.usage.per_cpu.is_empty());
            }
            (true, CgroupStats::V2(m)) => {
                assert!(m.cpu.usage_usec > 0);
            }
            (v2, stats) => panic!("host unified={v2} but got {stats:?}"),
        }
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
        let CgroupStats::V1(m) = cg.stats().unwrap() else {
            panic!("expected v1 stats");
        };
        assert!(m.memory_oom_control.unwrap().oom_kill >= 1);
        // failcnt is not maintained by every kernel for v1; the peak always shows the limit.
        let mem = m.memory.unwrap();
        assert_eq!(mem.usage.max, limit, "{mem:?}");
        assert_eq!(mem.usage.limit, limit);

        // Removing the cgroup fires the eventfd once more; the watcher reports the end.
        drop(guard);
        assert!(!dir.exists(), "test cgroup must be removable");
        let got = tokio::time::timeout(Duration::from_secs(10), w.next()).await;
        assert_eq!(got, Ok(None));
    }
}
