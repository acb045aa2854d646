//! Wire goldens of the `Stats` answer: fake cgroup trees where every file the reader knows
//! holds a distinct value, read and packed as containerd receives them, compared byte for byte
//! with the encodings in `testdata/` (recorded before the statistics were redefined, so any
//! change of field, presence or order on the wire fails here). `SHIMGATE_BLESS=1` rewrites
//! them; only do that for an intended wire change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protobuf::Message;

use super::*;

/// `/proc/partitions` naming two of the fake devices (8:16 stays unnamed).
pub(super) const PARTITIONS: &str =
    "major minor  #blocks  name\n\n   8        0  10485760 sda\n 253        1  1048576 dm-1\n";

pub(super) fn write(dir: &Path, name: &str, content: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), content).unwrap();
}

/// `key value` lines, the n-th key holding `base + n`.
fn kv(keys: &[&str], base: u64) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, k)| format!("{k} {}\n", base + i as u64))
        .collect()
}

pub(super) const V1_MEMORY_KEYS: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "shmem",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_shmem",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
];

/// Every v1 controller the reader knows, every file filled, the CFQ blkio statistics present.
pub(super) fn full_v1_tree(root: &Path) -> BTreeMap<String, PathBuf> {
    let mem = root.join("memory/c");
    write(&mem, "memory.stat", &kv(V1_MEMORY_KEYS, 1000));
    for (i, module) in ["", "memsw.", "kmem.", "kmem.tcp."].iter().enumerate() {
        let base = 2000 + 10 * i as u64;
        write(
            &mem,
            &format!("memory.{module}limit_in_bytes"),
            &format!("{base}\n"),
        );
        write(
            &mem,
            &format!("memory.{module}usage_in_bytes"),
            &format!("{}\n", base + 1),
        );
        write(
            &mem,
            &format!("memory.{module}max_usage_in_bytes"),
            &format!("{}\n", base + 2),
        );
        write(
            &mem,
            &format!("memory.{module}failcnt"),
            &format!("{}\n", base + 3),
        );
    }
    // A negative value is reported as 0.
    write(&mem, "memory.kmem.tcp.limit_in_bytes", "-1\n");
    write(
        &mem,
        "memory.oom_control",
        "oom_kill_disable 1\nunder_oom 2\noom_kill 3\n",
    );
    let cpu = root.join("cpu,cpuacct/c");
    write(
        &cpu,
        "cpu.stat",
        "nr_periods 31\nnr_throttled 32\nthrottled_time 33\n",
    );
    write(&cpu, "cpuacct.usage", "9000000000\n");
    write(&cpu, "cpuacct.usage_percpu", "4000000000 5000000000 0 \n");
    write(&cpu, "cpuacct.stat", "user 700\nsystem 200\n");
    let pids = root.join("pids/c");
    write(&pids, "pids.current", "7\n");
    write(&pids, "pids.max", "4096\n");
    let blkio = root.join("blkio/c");
    let ops = |base: u64| {
        format!(
            "8:0 Read {}\n8:0 Write {}\n8:16 Sync {}\n8:16 Async {}\n253:1 Discard {}\n\
             253:1 Total {}\nTotal {}\n",
            base,
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6
        )
    };
    for (i, name) in [
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queued_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
    ]
    .iter()
    .enumerate()
    {
        write(&blkio, &format!("blkio.{name}"), &ops(100 * (i as u64 + 1)));
    }
    write(&blkio, "blkio.time_recursive", "8:0 701\n253:1 702\n");
    write(&blkio, "blkio.sectors_recursive", "8:0 801\n8:16 802\n");
    write(&blkio, "blkio.throttle.io_serviced", "8:0 Read 9\n");
    let huge = root.join("hugetlb/c");
    for (size, base) in [("2MB", 11), ("1GB", 21)] {
        write(
            &huge,
            &format!("hugetlb.{size}.usage_in_bytes"),
            &format!("{base}\n"),
        );
        write(
            &huge,
            &format!("hugetlb.{size}.max_usage_in_bytes"),
            &format!("{}\n", base + 1),
        );
        write(
            &huge,
            &format!("hugetlb.{size}.failcnt"),
            &format!("{}\n", base + 2),
        );
    }
    let rdma = root.join("rdma/c");
    write(
        &rdma,
        "rdma.current",
        "mlx4_0 hca_handle=2 hca_object=2000\nmlx4_1 hca_handle=3 hca_object=3000\n",
    );
    write(&rdma, "rdma.max", "mlx4_0 hca_handle=max hca_object=max\n");
    BTreeMap::from([
        ("memory".to_owned(), mem),
        ("cpu".to_owned(), cpu.clone()),
        ("cpuacct".to_owned(), cpu),
        ("pids".to_owned(), pids),
        ("blkio".to_owned(), blkio),
        ("hugetlb".to_owned(), huge),
        ("rdma".to_owned(), rdma),
    ])
}

/// cpu and cpuacct in separate hierarchies, blkio with only the throttle counters, no
/// memory, pids, hugetlb or rdma.
pub(super) fn sparse_v1_tree(root: &Path) -> BTreeMap<String, PathBuf> {
    let cpu = root.join("cpu/c");
    write(
        &cpu,
        "cpu.stat",
        "nr_periods 1\nnr_throttled 0\nthrottled_time 0\n",
    );
    let acct = root.join("cpuacct/c");
    write(&acct, "cpuacct.usage", "5\n");
    let blkio = root.join("blkio/c");
    write(&blkio, "blkio.io_serviced_recursive", "Total 0\n");
    write(
        &blkio,
        "blkio.throttle.io_serviced",
        "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
    );
    write(
        &blkio,
        "blkio.throttle.io_service_bytes",
        "8:0 Read 40960\nTotal 40960\n",
    );
    BTreeMap::from([
        ("cpu".to_owned(), cpu),
        ("cpuacct".to_owned(), acct),
        ("blkio".to_owned(), blkio),
        ("memory".to_owned(), root.join("memory/gone")),
    ])
}

pub(super) const V2_MEMORY_KEYS: &[&str] = &[
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
];

/// Every v2 file the reader knows, filled.
pub(super) fn full_v2_dir(dir: &Path) {
    write(
        dir,
        "cpu.stat",
        &kv(
            &[
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
                "nr_bursts",
                "burst_usec",
            ],
            100,
        ),
    );
    write(dir, "memory.stat", &kv(V2_MEMORY_KEYS, 200));
    write(dir, "memory.current", "3145728\n");
    write(dir, "memory.max", "max\n");
    write(dir, "memory.swap.current", "4096\n");
    write(dir, "memory.swap.max", "1073741824\n");
    write(dir, "memory.peak", "4194304\n");
    write(dir, "memory.swap.peak", "8192\n");
    write(
        dir,
        "memory.events",
        "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n",
    );
    write(dir, "pids.current", "3\n");
    write(dir, "pids.max", "512\n");
    write(
        dir,
        "io.stat",
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
         253:3 rbytes=10 wbytes=20 rios=30 wios=40 dbytes=5 dios=6\n",
    );
    write(
        dir,
        "cpu.pressure",
        "some avg10=1.50 avg60=1.75 avg300=2.00 total=12345\n\
         full avg10=0.50 avg60=0.75 avg300=1.00 total=100\n",
    );
    write(
        dir,
        "memory.pressure",
        "some avg10=2.00 avg60=2.25 avg300=2.50 total=777\n",
    );
    write(
        dir,
        "io.pressure",
        "some avg10=3.00 avg60=3.25 avg300=3.50 total=999\n\
         full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    for (size, base) in [("2MB", 11), ("1GB", 21)] {
        write(
            dir,
            &format!("hugetlb.{size}.current"),
            &format!("{base}\n"),
        );
        write(
            dir,
            &format!("hugetlb.{size}.max"),
            &format!("{}\n", base + 1),
        );
        write(
            dir,
            &format!("hugetlb.{size}.events"),
            &format!("max {}\n", base + 2),
        );
    }
    write(dir, "hugetlb.1GB.max", "max\n");
    write(dir, "rdma.current", "mlx5_1 hca_handle=4 hca_object=40\n");
    write(dir, "rdma.max", "mlx5_1 hca_handle=max hca_object=400\n");
}

/// The bytes containerd receives: the whole `Any` (type URL and value).
fn wire(any: &Any) -> String {
    any.write_to_bytes()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check(name: &str, any: &Any) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/api/metrics/testdata")
        .join(format!("{name}.hex"));
    let got = wire(any);
    if std::env::var_os("SHIMGATE_BLESS").is_some() {
        std::fs::write(&path, format!("{got}\n")).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got,
        want.trim(),
        "{name}: the Stats answer changed on the wire"
    );
}

#[test]
fn v1_full_tree_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = full_v1_tree(tmp.path());
    check("v1_full", &read_v1_any(&paths));
}

#[test]
fn v1_sparse_tree_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = sparse_v1_tree(tmp.path());
    check("v1_sparse", &read_v1_any(&paths));
    check("v1_empty", &read_v1_any(&BTreeMap::new()));
}

#[test]
fn v2_full_dir_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    full_v2_dir(tmp.path());
    check("v2_full", &read_v2_any(tmp.path()));
}

#[test]
fn v2_empty_dir_on_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    check("v2_empty", &read_v2_any(tmp.path()));
}

// The reader's entry points.

fn read_v1_any(paths: &BTreeMap<String, PathBuf>) -> Any {
    let m = v1::read(paths, Some(PARTITIONS)).unwrap();
    to_any(&Metrics::V1(Box::new(m))).unwrap()
}

fn read_v2_any(dir: &Path) -> Any {
    let cg = Cgroup::V2 {
        path: dir.to_owned(),
        mount_point: dir.to_owned(),
    };
    to_any(&read(&cg).unwrap()).unwrap()
}
