//! cgroup v2 statistics read straight into `io.containerd.cgroups.v2.Metrics`.
//!
//! Presence follows the Go shim: pids, cpu, memory, io and rdma are always set;
//! `memory_events` only when `memory.events` has content, and each pressure (PSI) part only
//! when its file (and, inside it, its `some`/`full` line) exists.

use std::collections::BTreeMap;
use std::path::Path;

use protobuf::MessageField;

use crate::engine::cgroup::files::{read_kv, read_optional, read_single};
use crate::engine::cgroup::CgroupError;
use crate::protos::cgroups_v2 as pb;

super::shared_readers!(pb);

/// Collect v2 statistics from the cgroup directory.
pub(super) fn read(dir: &Path) -> Result<pb::Metrics, CgroupError> {
    let cpu = read_kv(&dir.join("cpu.stat"))?.unwrap_or_default();
    let c = |k: &str| cpu.get(k).copied().unwrap_or_default();
    let mem = read_kv(&dir.join("memory.stat"))?.unwrap_or_default();
    let m = |k: &str| mem.get(k).copied().unwrap_or_default();
    let single = |name: &str| -> Result<u64, CgroupError> {
        Ok(read_single(&dir.join(name), u64::MAX)?.unwrap_or_default())
    };
    Ok(pb::Metrics {
        pids: MessageField::some(pids(dir)?),
        cpu: MessageField::some(pb::CPUStat {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
            nr_bursts: c("nr_bursts"),
            burst_usec: c("burst_usec"),
            psi: psi(&dir.join("cpu.pressure"))?,
            ..Default::default()
        }),
        memory: MessageField::some(pb::MemoryStat {
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
            ..Default::default()
        }),
        rdma: MessageField::some(rdma(dir)?),
        io: MessageField::some(pb::IOStat {
            usage: read_optional(&dir.join("io.stat"))?
                .map(|t| parse_io_stat(&t))
                .unwrap_or_default(),
            psi: psi(&dir.join("io.pressure"))?,
            ..Default::default()
        }),
        hugetlb: hugetlb(dir)?,
        memory_events: MessageField::from_option(
            read_kv(&dir.join("memory.events"))?
                .as_ref()
                .and_then(memory_events),
        ),
        ..Default::default()
    })
}

/// Parse a PSI file (`some avg10=… avg60=… avg300=… total=…`, optional `full` line).
pub(super) fn parse_psi(text: &str) -> pb::PSIStats {
    let mut out = pb::PSIStats::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let kind = it.next();
        let mut d = pb::PSIData::default();
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
            Some("some") => out.some = MessageField::some(d),
            Some("full") => out.full = MessageField::some(d),
            _ => {}
        }
    }
    out
}

fn psi(path: &Path) -> Result<MessageField<pb::PSIStats>, CgroupError> {
    Ok(MessageField::from_option(
        read_optional(path)?.map(|t| parse_psi(&t)),
    ))
}

/// `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per device.
pub(super) fn parse_io_stat(text: &str) -> Vec<pb::IOEntry> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let mut e = pb::IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
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

fn hugetlb(dir: &Path) -> Result<Vec<pb::HugeTlbStat>, CgroupError> {
    super::page_sizes(dir, ".current")
        .into_iter()
        .map(|size| {
            let events = read_kv(&dir.join(format!("hugetlb.{size}.events")))?;
            Ok(pb::HugeTlbStat {
                current: read_single(&dir.join(format!("hugetlb.{size}.current")), u64::MAX)?
                    .unwrap_or_default(),
                max: read_single(&dir.join(format!("hugetlb.{size}.max")), u64::MAX)?
                    .unwrap_or_default(),
                failcnt: events
                    .and_then(|e| e.get("max").copied())
                    .unwrap_or_default(),
                pagesize: size,
                ..Default::default()
            })
        })
        .collect()
}

/// `memory.events`; `None` when it has no content.
pub(super) fn memory_events(kv: &BTreeMap<String, u64>) -> Option<pb::MemoryEvents> {
    if kv.is_empty() {
        return None;
    }
    let g = |k: &str| kv.get(k).copied().unwrap_or_default();
    Some(pb::MemoryEvents {
        low: g("low"),
        high: g("high"),
        max: g("max"),
        oom: g("oom"),
        oom_kill: g("oom_kill"),
        oom_group_kill: g("oom_group_kill"),
        ..Default::default()
    })
}
