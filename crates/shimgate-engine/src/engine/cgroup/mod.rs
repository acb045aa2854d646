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
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use thiserror::Error;

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

pub mod files;
mod oom;

use oom::oom_kill_count;
pub use oom::OomWatcher;

#[cfg(test)]
mod tests;
