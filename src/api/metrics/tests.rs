//! The readers against fake cgroup trees (every field decoded from the wire and compared),
//! presence as the Go shim sets it, a vanished cgroup, and this process's live cgroup.

use std::collections::BTreeMap;

use protobuf::reflect::{RuntimeFieldType, RuntimeType};
use protobuf::{Message, MessageFull};

use super::golden::{
    full_v1_tree, full_v2_dir, sparse_v1_tree, PARTITIONS, V1_MEMORY_KEYS, V2_MEMORY_KEYS,
};
use super::*;

fn wire_v1(m: cgroups_v1::Metrics) -> cgroups_v1::Metrics {
    let any = to_any(&Metrics::V1(Box::new(m))).unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    cgroups_v1::Metrics::parse_from_bytes(&any.value).unwrap()
}

fn wire_v2(m: &Metrics) -> cgroups_v2::Metrics {
    let any = to_any(m).unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    cgroups_v2::Metrics::parse_from_bytes(&any.value).unwrap()
}

/// Checks that the n-th key of `keys` (a `memory.stat` key) landed in its field as `base + n`
/// and that these plus `others` are all the u64 fields of the message.
fn every_u64_field<M: MessageFull>(
    m: &M,
    keys: &[&str],
    base: u64,
    field: impl Fn(&str) -> Option<String>,
    others: usize,
) {
    let d = M::descriptor();
    let mut seen = 0;
    for (i, key) in keys.iter().enumerate() {
        let Some(name) = field(key) else { continue };
        let f = d
            .field_by_name(&name)
            .unwrap_or_else(|| panic!("no field {name}"));
        assert_eq!(
            f.get_singular_field_or_default(m).to_u64(),
            Some(base + i as u64),
            "{key} -> {name}"
        );
        seen += 1;
    }
    let u64_fields = d
        .fields()
        .filter(|f| {
            matches!(
                f.runtime_field_type(),
                RuntimeFieldType::Singular(RuntimeType::U64)
            )
        })
        .count();
    assert_eq!(seen + others, u64_fields, "every u64 field is read");
}

#[test]
fn v1_every_field_from_a_full_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = full_v1_tree(tmp.path());
    let m = wire_v1(v1::read(&paths, Some(PARTITIONS)).unwrap());

    let mem = &m.memory;
    every_u64_field(
        &**mem,
        V1_MEMORY_KEYS,
        1000,
        |key| {
            let (total, k) = match key.strip_prefix("total_") {
                Some(k) => ("total_", k),
                None => ("", key),
            };
            let name = match k {
                "shmem" => return None,
                "pgpgin" => "pg_pg_in",
                "pgpgout" => "pg_pg_out",
                "pgfault" => "pg_fault",
                "pgmajfault" => "pg_maj_fault",
                "hierarchical_memsw_limit" => "hierarchical_swap_limit",
                k => k,
            };
            Some(format!("{total}{name}"))
        },
        0,
    );
    let entry = |e: &cgroups_v1::MemoryEntry| (e.limit, e.usage, e.max, e.failcnt);
    assert_eq!(entry(&mem.usage), (2000, 2001, 2002, 2003));
    assert_eq!(entry(&mem.swap), (2010, 2011, 2012, 2013));
    assert_eq!(entry(&mem.kernel), (2020, 2021, 2022, 2023));
    // "-1" is reported as 0 like containerd/cgroups does.
    assert_eq!(entry(&mem.kernel_tcp), (0, 2031, 2032, 2033));
    let oom = &m.memory_oom_control;
    assert_eq!(
        (oom.oom_kill_disable, oom.under_oom, oom.oom_kill),
        (1, 2, 3)
    );

    let ticks = v1::clock_ticks();
    let usage = &m.cpu.usage;
    assert_eq!(usage.total, 9_000_000_000);
    assert_eq!(usage.per_cpu, vec![4_000_000_000, 5_000_000_000, 0]);
    assert_eq!(usage.user, 700 * 1_000_000_000 / ticks);
    assert_eq!(usage.kernel, 200 * 1_000_000_000 / ticks);
    let t = &m.cpu.throttling;
    assert_eq!(
        (t.periods, t.throttled_periods, t.throttled_time),
        (31, 32, 33)
    );

    assert_eq!((m.pids.current, m.pids.limit), (7, 4096));

    let blk = |list: &[cgroups_v1::BlkIOEntry]| -> Vec<(String, String, u64, u64, u64)> {
        list.iter()
            .map(|e| (e.op.clone(), e.device.clone(), e.major, e.minor, e.value))
            .collect()
    };
    let ops = |base: u64| {
        let e = |op: &str, dev: &str, major, minor, value| {
            (op.to_owned(), dev.to_owned(), major, minor, value)
        };
        vec![
            e("Read", "/dev/sda", 8, 0, base),
            e("Write", "/dev/sda", 8, 0, base + 1),
            e("Sync", "", 8, 16, base + 2),
            e("Async", "", 8, 16, base + 3),
            e("Discard", "/dev/dm-1", 253, 1, base + 4),
            e("Total", "/dev/dm-1", 253, 1, base + 5),
        ]
    };
    let b = &m.blkio;
    assert_eq!(blk(&b.io_service_bytes_recursive), ops(100));
    assert_eq!(blk(&b.io_serviced_recursive), ops(200));
    assert_eq!(blk(&b.io_queued_recursive), ops(300));
    assert_eq!(blk(&b.io_service_time_recursive), ops(400));
    assert_eq!(blk(&b.io_wait_time_recursive), ops(500));
    assert_eq!(blk(&b.io_merged_recursive), ops(600));
    assert_eq!(
        blk(&b.io_time_recursive),
        vec![
            ("".into(), "/dev/sda".into(), 8, 0, 701),
            ("".into(), "/dev/dm-1".into(), 253, 1, 702)
        ]
    );
    assert_eq!(
        blk(&b.sectors_recursive),
        vec![
            ("".into(), "/dev/sda".into(), 8, 0, 801),
            ("".into(), "".into(), 8, 16, 802)
        ]
    );

    let huge: Vec<_> = m
        .hugetlb
        .iter()
        .map(|h| (h.pagesize.as_str(), h.usage, h.max, h.failcnt))
        .collect();
    assert_eq!(huge, vec![("1GB", 21, 22, 23), ("2MB", 11, 12, 13)]);

    let rdma = |list: &[cgroups_v1::RdmaEntry]| -> Vec<(String, u32, u32)> {
        list.iter()
            .map(|e| (e.device.clone(), e.hca_handles, e.hca_objects))
            .collect()
    };
    assert_eq!(
        rdma(&m.rdma.current),
        vec![("mlx4_0".into(), 2, 2000), ("mlx4_1".into(), 3, 3000)]
    );
    assert_eq!(
        rdma(&m.rdma.limit),
        vec![("mlx4_0".into(), u32::MAX, u32::MAX)]
    );

    // Never filled, as in the Go shim.
    assert!(m.network.is_empty());
    assert!(m.cgroup_stats.is_none());
}

#[test]
fn v1_throttle_counters_without_cfq() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = sparse_v1_tree(tmp.path());
    let m = wire_v1(v1::read(&paths, Some(PARTITIONS)).unwrap());
    let serviced = &m.blkio.io_serviced_recursive;
    assert_eq!(serviced.len(), 2);
    assert_eq!(
        (
            serviced[1].op.as_str(),
            serviced[1].device.as_str(),
            serviced[1].value
        ),
        ("Write", "/dev/sda", 20)
    );
    assert_eq!(m.blkio.io_service_bytes_recursive[0].value, 40960);
    assert!(m.blkio.sectors_recursive.is_empty());
}

#[test]
fn v1_absent_controllers_stay_unset() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = tmp.path().join("memory/ctr");
    std::fs::create_dir_all(&mem).unwrap();
    let cg = Cgroup::V1 {
        paths: BTreeMap::from([
            ("memory".to_owned(), mem.clone()),
            // Listed in /proc/<pid>/cgroup but its directory is gone: treated as absent.
            ("pids".to_owned(), tmp.path().join("pids/gone")),
        ]),
    };
    let Metrics::V1(m) = read(&cg).unwrap() else {
        panic!("expected v1 metrics");
    };
    let m = wire_v1(*m);
    assert!(m.pids.is_none());
    assert!(m.blkio.is_none());
    assert!(m.rdma.is_none());
    assert!(m.hugetlb.is_empty());
    // cpu and its two parts are always present, even at zero.
    assert!(m.cpu.is_some());
    assert!(m.cpu.usage.is_some());
    assert!(m.cpu.throttling.is_some());
    // A present memory controller carries all four entries and the OOM control even when
    // its files are missing.
    assert!(m.memory.usage.is_some());
    assert!(m.memory.swap.is_some());
    assert!(m.memory.kernel.is_some());
    assert!(m.memory.kernel_tcp.is_some());
    assert!(m.memory_oom_control.is_some());
    assert_eq!(m.memory.cache, 0);

    std::fs::remove_dir(&mem).unwrap();
    let err = read(&cg).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }));
    assert_eq!(err.to_string(), "cgroup does not exist");
}

#[test]
fn v2_every_field_from_a_full_dir() {
    let tmp = tempfile::tempdir().unwrap();
    full_v2_dir(tmp.path());
    let m = wire_v2(&Metrics::V2(Box::new(v2::read(tmp.path()).unwrap())));

    assert_eq!((m.pids.current, m.pids.limit), (3, 512));

    let c = &m.cpu;
    assert_eq!(
        (
            c.usage_usec,
            c.user_usec,
            c.system_usec,
            c.nr_periods,
            c.nr_throttled,
            c.throttled_usec,
            c.nr_bursts,
            c.burst_usec
        ),
        (100, 101, 102, 103, 104, 105, 106, 107)
    );
    let psi = |d: &cgroups_v2::PSIData| (d.avg10, d.avg60, d.avg300, d.total);
    assert_eq!(psi(&c.psi.some), (1.5, 1.75, 2.0, 12345));
    assert_eq!(psi(&c.psi.full), (0.5, 0.75, 1.0, 100));

    let mem = &m.memory;
    every_u64_field(
        &**mem,
        V2_MEMORY_KEYS,
        200,
        |key| (!matches!(key, "kernel" | "pagetables")).then(|| key.to_owned()),
        6,
    );
    assert_eq!(
        (
            mem.usage,
            mem.usage_limit,
            mem.swap_usage,
            mem.swap_limit,
            mem.max_usage,
            mem.swap_max_usage
        ),
        (3_145_728, u64::MAX, 4096, 1 << 30, 4_194_304, 8192)
    );
    assert_eq!(psi(&mem.psi.some), (2.0, 2.25, 2.5, 777));
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

    let io: Vec<_> =
        m.io.usage
            .iter()
            .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
            .collect();
    assert_eq!(io, vec![(8, 0, 4096, 8192, 1, 2), (253, 3, 10, 20, 30, 40)]);
    assert_eq!(psi(&m.io.psi.some), (3.0, 3.25, 3.5, 999));
    assert!(
        m.io.psi.full.is_some(),
        "an all-zero `full` line is still set"
    );

    let huge: Vec<_> = m
        .hugetlb
        .iter()
        .map(|h| (h.pagesize.as_str(), h.current, h.max, h.failcnt))
        .collect();
    assert_eq!(huge, vec![("1GB", 21, u64::MAX, 23), ("2MB", 11, 12, 13)]);

    let rdma = |list: &[cgroups_v2::RdmaEntry]| -> Vec<(String, u32, u32)> {
        list.iter()
            .map(|e| (e.device.clone(), e.hca_handles, e.hca_objects))
            .collect()
    };
    assert_eq!(rdma(&m.rdma.current), vec![("mlx5_1".into(), 4, 40)]);
    assert_eq!(rdma(&m.rdma.limit), vec![("mlx5_1".into(), u32::MAX, 400)]);

    assert!(m.network.is_empty());
}

#[test]
fn v2_empty_dir_keeps_go_presence() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::V2 {
        path: tmp.path().to_owned(),
        mount_point: tmp.path().to_owned(),
    };
    let m = wire_v2(&read(&cg).unwrap());
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
    assert!(m.hugetlb.is_empty());

    let gone = Cgroup::V2 {
        path: tmp.path().join("missing"),
        mount_point: tmp.path().to_owned(),
    };
    assert!(matches!(read(&gone), Err(CgroupError::NotFound { .. })));
}

#[test]
fn psi_and_io_stat_lines() {
    let p = v2::parse_psi("some avg10=0.50 avg60=0.10 avg300=0.00 total=12345\ngarbage\n");
    assert_eq!(p.some.avg10, 0.5);
    assert_eq!(p.some.total, 12345);
    assert!(p.full.is_none());
    let io = v2::parse_io_stat("8:0 rbytes=1 wbytes=x rios=3\nbad line\n9:1\n");
    assert_eq!(io.len(), 2);
    assert_eq!((io[0].rbytes, io[0].wbytes, io[0].rios), (1, 0, 3));
    assert_eq!((io[1].major, io[1].minor), (9, 1));
    assert!(v2::memory_events(&BTreeMap::new()).is_none());
}

#[test]
fn live_stats_of_this_process() {
    let cg = match Cgroup::for_pid(std::process::id()) {
        Ok(cg) => cg,
        Err(e) => panic!("cgroup of the test process: {e}"),
    };
    match read(&cg).unwrap() {
        Metrics::V1(m) => {
            let m = wire_v1(*m);
            assert!(
                m.memory.is_some(),
                "memory controller is mounted on this host"
            );
            assert!(m.memory.usage.usage > 0, "{:?}", m.memory);
            assert!(m.cpu.usage.total > 0);
            assert!(!m.cpu.usage.per_cpu.is_empty());
        }
        m @ Metrics::V2(_) => {
            let m = wire_v2(&m);
            assert!(m.memory.usage > 0, "{:?}", m.memory);
            assert!(m.cpu.usage_usec > 0);
        }
    }
}
