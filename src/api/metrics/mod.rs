//! cgroup statistics as the `Any` containerd expects from `Stats`:
//! `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
//!
//! One definition of each statistic: the generated messages (from `protos/`). The readers in
//! [`v1`] and [`v2`] parse the cgroup files straight into them, so a kernel statistic is
//! added in two places only, the proto and the line of the reader that fills it. They live
//! here, on the wire side, because they build wire types; `engine::cgroup` keeps what is not
//! protocol (where the cgroup is, the file primitives, the OOM watcher), and the engine hands
//! the container's [`Cgroup`] to [`read`] through `Engine::stats` so that it stays wire-free.
//! The result is packed with the bare type URL (`io.containerd.cgroups.v1.Metrics`) that
//! containerd looks up by exact string.
//!
//! Presence follows the Go shim (containerd/cgroups): a sub-message whose controller or file
//! is absent is left unset, and every other sub-message is always set, even when all its
//! values are zero, because containerd's clients (`ctr task metrics`, cAdvisor, the CRI
//! plugin) dereference them without nil checks in places. File parsing follows
//! containerd/cgroups too, including its leniency: a missing file leaves its part at
//! defaults. The `network` and v1 `cgroup_stats` fields are never filled: the Go shim does
//! not fill them either.

use std::path::Path;

use crate::engine::cgroup::files::read_optional;
use crate::engine::cgroup::{Cgroup, CgroupError};
use crate::engine::{Error, Result};
use crate::protos::{any_bare, cgroups_v1, cgroups_v2, Any};

mod v1;
mod v2;

/// The statistics of a cgroup in the message of the host's cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(Box<cgroups_v1::Metrics>),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(Box<cgroups_v2::Metrics>),
}

/// Current statistics of `cg`. A missing controller or file leaves that part at its
/// defaults; a cgroup that no longer exists at all is [`CgroupError::NotFound`].
pub fn read(cg: &Cgroup) -> std::result::Result<Metrics, CgroupError> {
    if !cg.exists() {
        return Err(cg.not_found());
    }
    match cg {
        Cgroup::V1 { paths } => {
            let partitions = read_optional(Path::new("/proc/partitions"))?;
            Ok(Metrics::V1(Box::new(v1::read(
                paths,
                partitions.as_deref(),
            )?)))
        }
        Cgroup::V2 { path, .. } => Ok(Metrics::V2(Box::new(v2::read(path)?))),
    }
}

/// Pack the statistics into the `Any` carried by `StatsResponse`.
pub fn to_any(metrics: &Metrics) -> Result<Any> {
    let packed = match metrics {
        Metrics::V1(m) => any_bare(m.as_ref()),
        Metrics::V2(m) => any_bare(m.as_ref()),
    };
    packed.map_err(|e| Error::unknown(format!("failed to marshal cgroup metrics: {e}")))
}

/// The huge page sizes of a hugetlb directory, from the names of its `hugetlb.<size><suffix>`
/// files (exactly the sizes the kernel supports), sorted for a stable order.
fn page_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("hugetlb.")?
                .strip_suffix(suffix)
                .map(str::to_owned)
        })
        .collect();
    sizes.sort();
    sizes
}

/// The readers of the controllers that v1 and v2 share file for file (`pids`, `rdma`), for
/// the message module `$pb` of either version: the two packages define `PidsStat`,
/// `RdmaStat` and `RdmaEntry` alike but as distinct types.
macro_rules! shared_readers {
    ($pb:ident) => {
        /// `pids.current` and `pids.max`; `max` means "no limit" and is reported as 0.
        fn pids(dir: &Path) -> Result<$pb::PidsStat, CgroupError> {
            let value = |name: &str| read_single(&dir.join(name), 0).map(Option::unwrap_or_default);
            Ok($pb::PidsStat {
                current: value("pids.current")?,
                limit: value("pids.max")?,
                ..Default::default()
            })
        }

        /// `rdma.current` and `rdma.max`.
        fn rdma(dir: &Path) -> Result<$pb::RdmaStat, CgroupError> {
            let entries = |name: &str| -> Result<Vec<$pb::RdmaEntry>, CgroupError> {
                Ok(read_optional(&dir.join(name))?
                    .as_deref()
                    .map(crate::engine::cgroup::files::parse_rdma)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(device, hca_handles, hca_objects)| $pb::RdmaEntry {
                        device,
                        hca_handles,
                        hca_objects,
                        ..Default::default()
                    })
                    .collect())
            };
            Ok($pb::RdmaStat {
                current: entries("rdma.current")?,
                limit: entries("rdma.max")?,
                ..Default::default()
            })
        }
    };
}
use shared_readers;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
