//! cgroup statistics as the `Any` containerd expects from `Stats`:
//! `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
//!
//! `core::cgroup` reads the statistics into plain structs shaped like these messages but
//! free of protobuf, so the engine does not depend on the wire format. This module is the one
//! place that turns them into the generated messages, field by field, and packs the result with
//! the bare type URL (`io.containerd.cgroups.v1.Metrics`) that containerd looks up by exact
//! string.
//!
//! Presence follows the Go shim (containerd/cgroups): a sub-message the plain struct holds as
//! `Option` is left unset when `None` (that controller or file is absent), and every other
//! sub-message is always set, even when all its values are zero, because containerd's clients
//! (`ctr task metrics`, cAdvisor, the CRI plugin) dereference them without nil checks in places.
//! The `network` and v1 `cgroup_stats` fields are never filled: the Go shim does not fill them
//! either.

use protobuf::MessageField;

use crate::core::cgroup::CgroupStats;
use crate::core::{Error, Result};
use crate::protos::{any_bare, Any};

/// Convert the statistics of a container's cgroup into the `Any` carried by `StatsResponse`.
pub fn to_any(stats: &CgroupStats) -> Result<Any> {
    let packed = match stats {
        CgroupStats::V1(m) => any_bare(&to_v1::metrics(m)),
        CgroupStats::V2(m) => any_bare(&to_v2::metrics(m)),
    };
    packed.map_err(|e| Error::unknown(format!("failed to marshal cgroup metrics: {e}")))
}

/// `Option<T>` → `MessageField`, converting the value when present.
fn optional<T, M>(value: Option<&T>, convert: impl FnOnce(&T) -> M) -> MessageField<M> {
    MessageField::from_option(value.map(convert))
}

/// Plain v1 structs → `io.containerd.cgroups.v1` messages.
mod to_v1 {
    use super::optional;
    use crate::core::cgroup::{v1, PidsStat, RdmaEntry, RdmaStat};
    use crate::protos::cgroups_v1 as pb;
    use protobuf::MessageField;

    pub(super) fn metrics(m: &v1::Metrics) -> pb::Metrics {
        pb::Metrics {
            hugetlb: m.hugetlb.iter().map(hugetlb).collect(),
            pids: optional(m.pids.as_ref(), pids),
            cpu: MessageField::some(cpu(&m.cpu)),
            memory: optional(m.memory.as_ref(), memory),
            blkio: optional(m.blkio.as_ref(), blkio),
            rdma: optional(m.rdma.as_ref(), rdma),
            memory_oom_control: optional(m.memory_oom_control.as_ref(), memory_oom_control),
            ..Default::default()
        }
    }

    fn hugetlb(h: &v1::HugetlbStat) -> pb::HugetlbStat {
        pb::HugetlbStat {
            usage: h.usage,
            max: h.max,
            failcnt: h.failcnt,
            pagesize: h.pagesize.clone(),
            ..Default::default()
        }
    }

    fn pids(p: &PidsStat) -> pb::PidsStat {
        pb::PidsStat {
            current: p.current,
            limit: p.limit,
            ..Default::default()
        }
    }

    fn cpu(c: &v1::CpuStat) -> pb::CPUStat {
        pb::CPUStat {
            usage: MessageField::some(cpu_usage(&c.usage)),
            throttling: MessageField::some(throttle(&c.throttling)),
            ..Default::default()
        }
    }

    fn cpu_usage(u: &v1::CpuUsage) -> pb::CPUUsage {
        pb::CPUUsage {
            total: u.total,
            kernel: u.kernel,
            user: u.user,
            per_cpu: u.per_cpu.clone(),
            ..Default::default()
        }
    }

    fn throttle(t: &v1::Throttle) -> pb::Throttle {
        pb::Throttle {
            periods: t.periods,
            throttled_periods: t.throttled_periods,
            throttled_time: t.throttled_time,
            ..Default::default()
        }
    }

    fn memory(m: &v1::MemoryStat) -> pb::MemoryStat {
        pb::MemoryStat {
            cache: m.cache,
            rss: m.rss,
            rss_huge: m.rss_huge,
            mapped_file: m.mapped_file,
            dirty: m.dirty,
            writeback: m.writeback,
            pg_pg_in: m.pg_pg_in,
            pg_pg_out: m.pg_pg_out,
            pg_fault: m.pg_fault,
            pg_maj_fault: m.pg_maj_fault,
            inactive_anon: m.inactive_anon,
            active_anon: m.active_anon,
            inactive_file: m.inactive_file,
            active_file: m.active_file,
            unevictable: m.unevictable,
            hierarchical_memory_limit: m.hierarchical_memory_limit,
            hierarchical_swap_limit: m.hierarchical_swap_limit,
            total_cache: m.total_cache,
            total_rss: m.total_rss,
            total_rss_huge: m.total_rss_huge,
            total_mapped_file: m.total_mapped_file,
            total_dirty: m.total_dirty,
            total_writeback: m.total_writeback,
            total_pg_pg_in: m.total_pg_pg_in,
            total_pg_pg_out: m.total_pg_pg_out,
            total_pg_fault: m.total_pg_fault,
            total_pg_maj_fault: m.total_pg_maj_fault,
            total_inactive_anon: m.total_inactive_anon,
            total_active_anon: m.total_active_anon,
            total_inactive_file: m.total_inactive_file,
            total_active_file: m.total_active_file,
            total_unevictable: m.total_unevictable,
            usage: MessageField::some(memory_entry(&m.usage)),
            swap: MessageField::some(memory_entry(&m.swap)),
            kernel: MessageField::some(memory_entry(&m.kernel)),
            kernel_tcp: MessageField::some(memory_entry(&m.kernel_tcp)),
            ..Default::default()
        }
    }

    fn memory_entry(e: &v1::MemoryEntry) -> pb::MemoryEntry {
        pb::MemoryEntry {
            limit: e.limit,
            usage: e.usage,
            max: e.max,
            failcnt: e.failcnt,
            ..Default::default()
        }
    }

    fn memory_oom_control(o: &v1::MemoryOomControl) -> pb::MemoryOomControl {
        pb::MemoryOomControl {
            oom_kill_disable: o.oom_kill_disable,
            under_oom: o.under_oom,
            oom_kill: o.oom_kill,
            ..Default::default()
        }
    }

    fn blkio(b: &v1::BlkioStat) -> pb::BlkIOStat {
        let entries = |list: &[v1::BlkioEntry]| list.iter().map(blkio_entry).collect();
        pb::BlkIOStat {
            io_service_bytes_recursive: entries(&b.io_service_bytes_recursive),
            io_serviced_recursive: entries(&b.io_serviced_recursive),
            io_queued_recursive: entries(&b.io_queued_recursive),
            io_service_time_recursive: entries(&b.io_service_time_recursive),
            io_wait_time_recursive: entries(&b.io_wait_time_recursive),
            io_merged_recursive: entries(&b.io_merged_recursive),
            io_time_recursive: entries(&b.io_time_recursive),
            sectors_recursive: entries(&b.sectors_recursive),
            ..Default::default()
        }
    }

    fn blkio_entry(e: &v1::BlkioEntry) -> pb::BlkIOEntry {
        pb::BlkIOEntry {
            op: e.op.clone(),
            device: e.device.clone(),
            major: e.major,
            minor: e.minor,
            value: e.value,
            ..Default::default()
        }
    }

    fn rdma(r: &RdmaStat) -> pb::RdmaStat {
        pb::RdmaStat {
            current: r.current.iter().map(rdma_entry).collect(),
            limit: r.limit.iter().map(rdma_entry).collect(),
            ..Default::default()
        }
    }

    fn rdma_entry(e: &RdmaEntry) -> pb::RdmaEntry {
        pb::RdmaEntry {
            device: e.device.clone(),
            hca_handles: e.hca_handles,
            hca_objects: e.hca_objects,
            ..Default::default()
        }
    }
}

/// Plain v2 structs → `io.containerd.cgroups.v2` messages.
mod to_v2 {
    use super::optional;
    use crate::core::cgroup::{v2, PidsStat, RdmaEntry, RdmaStat};
    use crate::protos::cgroups_v2 as pb;
    use protobuf::MessageField;

    pub(super) fn metrics(m: &v2::Metrics) -> pb::Metrics {
        pb::Metrics {
            pids: MessageField::some(pids(&m.pids)),
            cpu: MessageField::some(cpu(&m.cpu)),
            memory: MessageField::some(memory(&m.memory)),
            rdma: MessageField::some(rdma(&m.rdma)),
            io: MessageField::some(io(&m.io)),
            hugetlb: m.hugetlb.iter().map(hugetlb).collect(),
            memory_events: optional(m.memory_events.as_ref(), memory_events),
            ..Default::default()
        }
    }

    fn pids(p: &PidsStat) -> pb::PidsStat {
        pb::PidsStat {
            current: p.current,
            limit: p.limit,
            ..Default::default()
        }
    }

    fn psi_stats(p: &v2::PsiStats) -> pb::PSIStats {
        pb::PSIStats {
            some: optional(p.some.as_ref(), psi_data),
            full: optional(p.full.as_ref(), psi_data),
            ..Default::default()
        }
    }

    fn psi_data(d: &v2::PsiData) -> pb::PSIData {
        pb::PSIData {
            avg10: d.avg10,
            avg60: d.avg60,
            avg300: d.avg300,
            total: d.total,
            ..Default::default()
        }
    }

    fn cpu(c: &v2::CpuStat) -> pb::CPUStat {
        pb::CPUStat {
            usage_usec: c.usage_usec,
            user_usec: c.user_usec,
            system_usec: c.system_usec,
            nr_periods: c.nr_periods,
            nr_throttled: c.nr_throttled,
            throttled_usec: c.throttled_usec,
            psi: optional(c.psi.as_ref(), psi_stats),
            nr_bursts: c.nr_bursts,
            burst_usec: c.burst_usec,
            ..Default::default()
        }
    }

    fn memory(m: &v2::MemoryStat) -> pb::MemoryStat {
        pb::MemoryStat {
            anon: m.anon,
            file: m.file,
            kernel_stack: m.kernel_stack,
            slab: m.slab,
            sock: m.sock,
            shmem: m.shmem,
            file_mapped: m.file_mapped,
            file_dirty: m.file_dirty,
            file_writeback: m.file_writeback,
            anon_thp: m.anon_thp,
            inactive_anon: m.inactive_anon,
            active_anon: m.active_anon,
            inactive_file: m.inactive_file,
            active_file: m.active_file,
            unevictable: m.unevictable,
            slab_reclaimable: m.slab_reclaimable,
            slab_unreclaimable: m.slab_unreclaimable,
            pgfault: m.pgfault,
            pgmajfault: m.pgmajfault,
            workingset_refault: m.workingset_refault,
            workingset_activate: m.workingset_activate,
            workingset_nodereclaim: m.workingset_nodereclaim,
            pgrefill: m.pgrefill,
            pgscan: m.pgscan,
            pgsteal: m.pgsteal,
            pgactivate: m.pgactivate,
            pgdeactivate: m.pgdeactivate,
            pglazyfree: m.pglazyfree,
            pglazyfreed: m.pglazyfreed,
            thp_fault_alloc: m.thp_fault_alloc,
            thp_collapse_alloc: m.thp_collapse_alloc,
            usage: m.usage,
            usage_limit: m.usage_limit,
            swap_usage: m.swap_usage,
            swap_limit: m.swap_limit,
            max_usage: m.max_usage,
            swap_max_usage: m.swap_max_usage,
            psi: optional(m.psi.as_ref(), psi_stats),
            ..Default::default()
        }
    }

    fn memory_events(e: &v2::MemoryEvents) -> pb::MemoryEvents {
        pb::MemoryEvents {
            low: e.low,
            high: e.high,
            max: e.max,
            oom: e.oom,
            oom_kill: e.oom_kill,
            oom_group_kill: e.oom_group_kill,
            ..Default::default()
        }
    }

    fn rdma(r: &RdmaStat) -> pb::RdmaStat {
        pb::RdmaStat {
            current: r.current.iter().map(rdma_entry).collect(),
            limit: r.limit.iter().map(rdma_entry).collect(),
            ..Default::default()
        }
    }

    fn rdma_entry(e: &RdmaEntry) -> pb::RdmaEntry {
        pb::RdmaEntry {
            device: e.device.clone(),
            hca_handles: e.hca_handles,
            hca_objects: e.hca_objects,
            ..Default::default()
        }
    }

    fn io(i: &v2::IoStat) -> pb::IOStat {
        pb::IOStat {
            usage: i.usage.iter().map(io_entry).collect(),
            psi: optional(i.psi.as_ref(), psi_stats),
            ..Default::default()
        }
    }

    fn io_entry(e: &v2::IoEntry) -> pb::IOEntry {
        pb::IOEntry {
            major: e.major,
            minor: e.minor,
            rbytes: e.rbytes,
            wbytes: e.wbytes,
            rios: e.rios,
            wios: e.wios,
            ..Default::default()
        }
    }

    fn hugetlb(h: &v2::HugeTlbStat) -> pb::HugeTlbStat {
        pb::HugeTlbStat {
            current: h.current,
            max: h.max,
            pagesize: h.pagesize.clone(),
            failcnt: h.failcnt,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cgroup::{v1, v2, Cgroup, PidsStat, RdmaEntry, RdmaStat};
    use crate::protos::{cgroups_v1, cgroups_v2};
    use protobuf::Message;

    fn blk(op: &str, major: u64, minor: u64, value: u64) -> v1::BlkioEntry {
        v1::BlkioEntry {
            op: op.into(),
            device: format!("/dev/d{major}x{minor}"),
            major,
            minor,
            value,
        }
    }

    fn entry(base: u64) -> v1::MemoryEntry {
        v1::MemoryEntry {
            limit: base + 1,
            usage: base + 2,
            max: base + 3,
            failcnt: base + 4,
        }
    }

    fn sample_v1() -> v1::Metrics {
        v1::Metrics {
            hugetlb: vec![
                v1::HugetlbStat {
                    usage: 11,
                    max: 12,
                    failcnt: 13,
                    pagesize: "2MB".into(),
                },
                v1::HugetlbStat {
                    usage: 21,
                    max: 22,
                    failcnt: 23,
                    pagesize: "1GB".into(),
                },
            ],
            pids: Some(PidsStat {
                current: 7,
                limit: 4096,
            }),
            cpu: v1::CpuStat {
                usage: v1::CpuUsage {
                    total: 9_000_000,
                    kernel: 2_000_000,
                    user: 7_000_000,
                    per_cpu: vec![4_000_000, 5_000_000, 0],
                },
                throttling: v1::Throttle {
                    periods: 31,
                    throttled_periods: 32,
                    throttled_time: 33,
                },
            },
            memory: Some(v1::MemoryStat {
                cache: 101,
                rss: 102,
                rss_huge: 103,
                mapped_file: 104,
                dirty: 105,
                writeback: 106,
                pg_pg_in: 107,
                pg_pg_out: 108,
                pg_fault: 109,
                pg_maj_fault: 110,
                inactive_anon: 111,
                active_anon: 112,
                inactive_file: 113,
                active_file: 114,
                unevictable: 115,
                hierarchical_memory_limit: 116,
                hierarchical_swap_limit: 117,
                total_cache: 118,
                total_rss: 119,
                total_rss_huge: 120,
                total_mapped_file: 121,
                total_dirty: 122,
                total_writeback: 123,
                total_pg_pg_in: 124,
                total_pg_pg_out: 125,
                total_pg_fault: 126,
                total_pg_maj_fault: 127,
                total_inactive_anon: 128,
                total_active_anon: 129,
                total_inactive_file: 130,
                total_active_file: 131,
                total_unevictable: 132,
                usage: entry(1000),
                swap: entry(2000),
                kernel: entry(3000),
                kernel_tcp: entry(4000),
            }),
            blkio: Some(v1::BlkioStat {
                io_service_bytes_recursive: vec![blk("Read", 8, 0, 4096), blk("Write", 8, 0, 8192)],
                io_serviced_recursive: vec![blk("Read", 8, 16, 3)],
                io_queued_recursive: vec![blk("Sync", 8, 0, 41)],
                io_service_time_recursive: vec![blk("Async", 8, 0, 42)],
                io_wait_time_recursive: vec![blk("Total", 8, 0, 43)],
                io_merged_recursive: vec![blk("Discard", 8, 0, 44)],
                io_time_recursive: vec![blk("", 8, 0, 45)],
                sectors_recursive: vec![blk("", 253, 1, 46)],
            }),
            rdma: Some(RdmaStat {
                current: vec![RdmaEntry {
                    device: "mlx4_0".into(),
                    hca_handles: 2,
                    hca_objects: 2000,
                }],
                limit: vec![RdmaEntry {
                    device: "mlx4_0".into(),
                    hca_handles: u32::MAX,
                    hca_objects: 5000,
                }],
            }),
            memory_oom_control: Some(v1::MemoryOomControl {
                oom_kill_disable: 1,
                under_oom: 0,
                oom_kill: 5,
            }),
        }
    }

    #[test]
    fn v1_every_sub_message() {
        let any = to_any(&CgroupStats::V1(sample_v1())).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = cgroups_v1::Metrics::parse_from_bytes(&any.value).unwrap();

        assert_eq!(m.hugetlb.len(), 2);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(
            (m.hugetlb[0].usage, m.hugetlb[0].max, m.hugetlb[0].failcnt),
            (11, 12, 13)
        );
        assert_eq!(m.hugetlb[1].pagesize, "1GB");
        assert_eq!(m.hugetlb[1].failcnt, 23);

        assert_eq!(m.pids.current, 7);
        assert_eq!(m.pids.limit, 4096);

        assert_eq!(m.cpu.usage.total, 9_000_000);
        assert_eq!(m.cpu.usage.kernel, 2_000_000);
        assert_eq!(m.cpu.usage.user, 7_000_000);
        assert_eq!(m.cpu.usage.per_cpu, vec![4_000_000, 5_000_000, 0]);
        assert_eq!(m.cpu.throttling.periods, 31);
        assert_eq!(m.cpu.throttling.throttled_periods, 32);
        assert_eq!(m.cpu.throttling.throttled_time, 33);

        let mem = &m.memory;
        assert_eq!(mem.cache, 101);
        assert_eq!(mem.rss, 102);
        assert_eq!(mem.pg_pg_in, 107);
        assert_eq!(mem.pg_maj_fault, 110);
        assert_eq!(mem.unevictable, 115);
        assert_eq!(mem.hierarchical_memory_limit, 116);
        assert_eq!(mem.hierarchical_swap_limit, 117);
        assert_eq!(mem.total_cache, 118);
        assert_eq!(mem.total_rss, 119);
        assert_eq!(mem.total_pg_pg_out, 125);
        assert_eq!(mem.total_active_file, 131);
        assert_eq!(mem.total_unevictable, 132);
        assert_eq!(
            (
                mem.usage.limit,
                mem.usage.usage,
                mem.usage.max,
                mem.usage.failcnt
            ),
            (1001, 1002, 1003, 1004)
        );
        assert_eq!(mem.swap.usage, 2002);
        assert_eq!(mem.kernel.max, 3003);
        assert_eq!(mem.kernel_tcp.failcnt, 4004);

        let blkio = &m.blkio;
        let read = &blkio.io_service_bytes_recursive[0];
        assert_eq!(
            (
                read.op.as_str(),
                read.device.as_str(),
                read.major,
                read.minor,
                read.value
            ),
            ("Read", "/dev/d8x0", 8, 0, 4096)
        );
        assert_eq!(blkio.io_service_bytes_recursive[1].op, "Write");
        assert_eq!(blkio.io_service_bytes_recursive[1].value, 8192);
        assert_eq!(blkio.io_serviced_recursive[0].minor, 16);
        assert_eq!(blkio.io_queued_recursive[0].value, 41);
        assert_eq!(blkio.io_service_time_recursive[0].op, "Async");
        assert_eq!(blkio.io_wait_time_recursive[0].value, 43);
        assert_eq!(blkio.io_merged_recursive[0].op, "Discard");
        assert_eq!(blkio.io_time_recursive[0].op, "");
        assert_eq!(blkio.io_time_recursive[0].value, 45);
        assert_eq!(blkio.sectors_recursive[0].major, 253);
        assert_eq!(blkio.sectors_recursive[0].minor, 1);

        assert_eq!(m.rdma.current[0].device, "mlx4_0");
        assert_eq!(m.rdma.current[0].hca_objects, 2000);
        assert_eq!(m.rdma.limit[0].hca_handles, u32::MAX);

        assert_eq!(m.memory_oom_control.oom_kill_disable, 1);
        assert_eq!(m.memory_oom_control.under_oom, 0);
        assert_eq!(m.memory_oom_control.oom_kill, 5);

        // Never filled, as in the Go shim.
        assert!(m.network.is_empty());
        assert!(m.cgroup_stats.is_none());
    }

    #[test]
    fn v1_absent_controllers_stay_unset() {
        let any = to_any(&CgroupStats::V1(v1::Metrics::default())).unwrap();
        let m = cgroups_v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.pids.is_none());
        assert!(m.memory.is_none());
        assert!(m.blkio.is_none());
        assert!(m.rdma.is_none());
        assert!(m.memory_oom_control.is_none());
        assert!(m.hugetlb.is_empty());
        // cpu and its two parts are always present, even at zero.
        assert!(m.cpu.is_some());
        assert!(m.cpu.usage.is_some());
        assert!(m.cpu.throttling.is_some());

        // A present memory controller carries all four entries even when they are zero.
        let with_memory = v1::Metrics {
            memory: Some(v1::MemoryStat::default()),
            ..Default::default()
        };
        let any = to_any(&CgroupStats::V1(with_memory)).unwrap();
        let m = cgroups_v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.memory.usage.is_some());
        assert!(m.memory.swap.is_some());
        assert!(m.memory.kernel.is_some());
        assert!(m.memory.kernel_tcp.is_some());
    }

    fn psi(base: f64, total: u64) -> v2::PsiData {
        v2::PsiData {
            avg10: base,
            avg60: base + 0.25,
            avg300: base + 0.5,
            total,
        }
    }

    fn sample_v2() -> v2::Metrics {
        v2::Metrics {
            pids: PidsStat {
                current: 3,
                limit: 512,
            },
            cpu: v2::CpuStat {
                usage_usec: 123_456,
                user_usec: 100_000,
                system_usec: 23_456,
                nr_periods: 50,
                nr_throttled: 5,
                throttled_usec: 789,
                nr_bursts: 2,
                burst_usec: 300,
                psi: Some(v2::PsiStats {
                    some: Some(psi(1.5, 12_345)),
                    full: Some(psi(0.5, 100)),
                }),
            },
            memory: v2::MemoryStat {
                anon: 201,
                file: 202,
                kernel_stack: 203,
                slab: 204,
                sock: 205,
                shmem: 206,
                file_mapped: 207,
                file_dirty: 208,
                file_writeback: 209,
                anon_thp: 210,
                inactive_anon: 211,
                active_anon: 212,
                inactive_file: 213,
                active_file: 214,
                unevictable: 215,
                slab_reclaimable: 216,
                slab_unreclaimable: 217,
                pgfault: 218,
                pgmajfault: 219,
                workingset_refault: 220,
                workingset_activate: 221,
                workingset_nodereclaim: 222,
                pgrefill: 223,
                pgscan: 224,
                pgsteal: 225,
                pgactivate: 226,
                pgdeactivate: 227,
                pglazyfree: 228,
                pglazyfreed: 229,
                thp_fault_alloc: 230,
                thp_collapse_alloc: 231,
                usage: 3_145_728,
                usage_limit: u64::MAX,
                swap_usage: 4096,
                swap_limit: 1 << 30,
                max_usage: 4_194_304,
                swap_max_usage: 8192,
                psi: Some(v2::PsiStats {
                    some: Some(psi(2.0, 777)),
                    full: None,
                }),
            },
            rdma: RdmaStat {
                current: vec![RdmaEntry {
                    device: "mlx5_1".into(),
                    hca_handles: 4,
                    hca_objects: 40,
                }],
                limit: vec![],
            },
            io: v2::IoStat {
                usage: vec![
                    v2::IoEntry {
                        major: 8,
                        minor: 0,
                        rbytes: 4096,
                        wbytes: 8192,
                        rios: 1,
                        wios: 2,
                    },
                    v2::IoEntry {
                        major: 253,
                        minor: 3,
                        rbytes: 10,
                        wbytes: 20,
                        rios: 30,
                        wios: 40,
                    },
                ],
                psi: Some(v2::PsiStats {
                    some: Some(psi(3.0, 999)),
                    full: Some(psi(0.0, 0)),
                }),
            },
            hugetlb: vec![v2::HugeTlbStat {
                current: 2_097_152,
                max: u64::MAX,
                pagesize: "2MB".into(),
                failcnt: 6,
            }],
            memory_events: Some(v2::MemoryEvents {
                low: 1,
                high: 2,
                max: 3,
                oom: 4,
                oom_kill: 5,
                oom_group_kill: 6,
            }),
        }
    }

    #[test]
    fn v2_every_sub_message() {
        let any = to_any(&CgroupStats::V2(sample_v2())).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = cgroups_v2::Metrics::parse_from_bytes(&any.value).unwrap();

        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 512);

        assert_eq!(m.cpu.usage_usec, 123_456);
        assert_eq!(m.cpu.user_usec, 100_000);
        assert_eq!(m.cpu.system_usec, 23_456);
        assert_eq!(m.cpu.nr_periods, 50);
        assert_eq!(m.cpu.nr_throttled, 5);
        assert_eq!(m.cpu.throttled_usec, 789);
        assert_eq!(m.cpu.nr_bursts, 2);
        assert_eq!(m.cpu.burst_usec, 300);
        assert_eq!(m.cpu.psi.some.avg10, 1.5);
        assert_eq!(m.cpu.psi.some.avg60, 1.75);
        assert_eq!(m.cpu.psi.some.avg300, 2.0);
        assert_eq!(m.cpu.psi.some.total, 12_345);
        assert_eq!(m.cpu.psi.full.total, 100);

        let mem = &m.memory;
        assert_eq!(mem.anon, 201);
        assert_eq!(mem.file, 202);
        assert_eq!(mem.kernel_stack, 203);
        assert_eq!(mem.slab, 204);
        assert_eq!(mem.anon_thp, 210);
        assert_eq!(mem.slab_unreclaimable, 217);
        assert_eq!(mem.pgmajfault, 219);
        assert_eq!(mem.workingset_nodereclaim, 222);
        assert_eq!(mem.pglazyfreed, 229);
        assert_eq!(mem.thp_collapse_alloc, 231);
        assert_eq!(mem.usage, 3_145_728);
        assert_eq!(mem.usage_limit, u64::MAX);
        assert_eq!(mem.swap_usage, 4096);
        assert_eq!(mem.swap_limit, 1 << 30);
        assert_eq!(mem.max_usage, 4_194_304);
        assert_eq!(mem.swap_max_usage, 8192);
        assert_eq!(mem.psi.some.total, 777);
        assert!(mem.psi.full.is_none(), "a missing `full` line stays unset");

        let ev = &m.memory_events;
        assert_eq!(
            (
                ev.low,
                ev.high,
                ev.max,
                ev.oom,
                ev.oom_kill,
                ev.oom_group_kill
            ),
            (1, 2, 3, 4, 5, 6)
        );

        assert_eq!(m.io.usage.len(), 2);
        let sda = &m.io.usage[0];
        assert_eq!(
            (sda.major, sda.minor, sda.rbytes, sda.wbytes, sda.rios, sda.wios),
            (8, 0, 4096, 8192, 1, 2)
        );
        assert_eq!(m.io.usage[1].major, 253);
        assert_eq!(m.io.usage[1].minor, 3);
        assert_eq!(m.io.usage[1].wios, 40);
        assert_eq!(m.io.psi.some.avg10, 3.0);
        assert_eq!(m.io.psi.some.total, 999);
        assert!(m.io.psi.full.is_some());

        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(m.hugetlb[0].current, 2_097_152);
        assert_eq!(m.hugetlb[0].max, u64::MAX);
        assert_eq!(m.hugetlb[0].failcnt, 6);

        assert_eq!(m.rdma.current[0].device, "mlx5_1");
        assert_eq!(m.rdma.current[0].hca_handles, 4);
        assert_eq!(m.rdma.current[0].hca_objects, 40);
        assert!(m.rdma.limit.is_empty());

        assert!(m.network.is_empty());
    }

    #[test]
    fn v2_defaults_keep_go_presence() {
        let any = to_any(&CgroupStats::V2(v2::Metrics::default())).unwrap();
        let m = cgroups_v2::Metrics::parse_from_bytes(&any.value).unwrap();
        // Always set by the Go shim, even when empty.
        assert!(m.pids.is_some());
        assert!(m.cpu.is_some());
        assert!(m.memory.is_some());
        assert!(m.io.is_some());
        assert!(m.rdma.is_some());
        // Set only when there is something to report.
        assert!(m.memory_events.is_none());
        assert!(m.cpu.psi.is_none());
        assert!(m.memory.psi.is_none());
        assert!(m.io.psi.is_none());
    }

    #[test]
    fn live_stats_of_this_process() {
        let cg = match Cgroup::for_pid(std::process::id()) {
            Ok(cg) => cg,
            Err(e) => panic!("cgroup of the test process: {e}"),
        };
        let stats = cg.stats().unwrap();
        let any = to_any(&stats).unwrap();
        match stats {
            CgroupStats::V1(_) => {
                assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
                let m = cgroups_v1::Metrics::parse_from_bytes(&any.value).unwrap();
                assert!(
                    m.memory.is_some(),
                    "memory controller is mounted on this host"
                );
                assert!(m.memory.usage.usage > 0, "{:?}", m.memory);
                assert!(m.cpu.usage.total > 0);
                assert!(!m.cpu.usage.per_cpu.is_empty());
            }
            CgroupStats::V2(_) => {
                assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
                let m = cgroups_v2::Metrics::parse_from_bytes(&any.value).unwrap();
                assert!(m.memory.usage > 0, "{:?}", m.memory);
                assert!(m.cpu.usage_usec > 0);
            }
        }
    }
}
