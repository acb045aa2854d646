//! cgroup v1 statistics read straight into `io.containerd.cgroups.v1.Metrics`.
//!
//! Presence follows containerd/cgroups: a controller whose directory is absent leaves its
//! field unset; `cpu` (with both parts) is always set, and a present memory controller sets
//! all four memory entries and `memory_oom_control`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protobuf::MessageField;

use crate::engine::cgroup::files::{read_kv, read_optional, read_single};
use crate::engine::cgroup::CgroupError;
use crate::protos::cgroups_v1 as pb;

super::shared_readers!(pb);

/// Collect v1 statistics from per-controller directories. `partitions` is the text of
/// `/proc/partitions`, used to name block devices.
pub(super) fn read(
    paths: &BTreeMap<String, PathBuf>,
    partitions: Option<&str>,
) -> Result<pb::Metrics, CgroupError> {
    // A controller whose directory is gone is treated like an absent controller.
    let dir = |c: &str| paths.get(c).filter(|p| p.is_dir());
    let mut m = pb::Metrics {
        cpu: MessageField::some(cpu(dir("cpu"), dir("cpuacct"))?),
        ..Default::default()
    };
    if let Some(d) = dir("memory") {
        let (stat, oom) = memory(d)?;
        m.memory = MessageField::some(stat);
        m.memory_oom_control = MessageField::some(oom);
    }
    if let Some(d) = dir("pids") {
        m.pids = MessageField::some(pids(d)?);
    }
    if let Some(d) = dir("blkio") {
        m.blkio = MessageField::some(blkio(d, partitions)?);
    }
    if let Some(d) = dir("hugetlb") {
        m.hugetlb = hugetlb(d)?;
    }
    if let Some(d) = dir("rdma") {
        m.rdma = MessageField::some(rdma(d)?);
    }
    Ok(m)
}

pub(super) fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it takes no pointers and is
    // thread-safe.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every Linux ABI; the fallback only guards a failing sysconf.
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// `memory.stat` plus the usage files of `memory.`, `memory.memsw.`, `memory.kmem.` and
/// `memory.kmem.tcp.`, and `memory.oom_control`.
fn memory(dir: &Path) -> Result<(pb::MemoryStat, pb::MemoryOomControl), CgroupError> {
    let raw = read_kv(&dir.join("memory.stat"))?.unwrap_or_default();
    let g = |k: &str| raw.get(k).copied().unwrap_or_default();
    let entry = |module: &str| -> Result<MessageField<pb::MemoryEntry>, CgroupError> {
        let file = |name: &str| {
            read_single(&dir.join(format!("memory.{module}{name}")), u64::MAX)
                .map(Option::unwrap_or_default)
        };
        Ok(MessageField::some(pb::MemoryEntry {
            limit: file("limit_in_bytes")?,
            usage: file("usage_in_bytes")?,
            max: file("max_usage_in_bytes")?,
            failcnt: file("failcnt")?,
            ..Default::default()
        }))
    };
    let stat = pb::MemoryStat {
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
        swap: entry("memsw.")?,
        kernel: entry("kmem.")?,
        kernel_tcp: entry("kmem.tcp.")?,
        ..Default::default()
    };
    let oom = read_kv(&dir.join("memory.oom_control"))?.unwrap_or_default();
    let o = |k: &str| oom.get(k).copied().unwrap_or_default();
    let oom = pb::MemoryOomControl {
        oom_kill_disable: o("oom_kill_disable"),
        under_oom: o("under_oom"),
        oom_kill: o("oom_kill"),
        ..Default::default()
    };
    Ok((stat, oom))
}

/// Throttling from the cpu controller, usage from cpuacct (either may be absent).
fn cpu(cpu_dir: Option<&PathBuf>, acct_dir: Option<&PathBuf>) -> Result<pb::CPUStat, CgroupError> {
    let mut throttling = pb::Throttle::default();
    if let Some(kv) = cpu_dir
        .map(|d| read_kv(&d.join("cpu.stat")))
        .transpose()?
        .flatten()
    {
        let g = |k: &str| kv.get(k).copied().unwrap_or_default();
        throttling.periods = g("nr_periods");
        throttling.throttled_periods = g("nr_throttled");
        throttling.throttled_time = g("throttled_time");
    }
    let mut usage = pb::CPUUsage::default();
    if let Some(dir) = acct_dir {
        usage.total = read_single(&dir.join("cpuacct.usage"), 0)?.unwrap_or_default();
        if let Some(text) = read_optional(&dir.join("cpuacct.usage_percpu"))? {
            usage.per_cpu = text
                .split_whitespace()
                .filter_map(crate::engine::cgroup::files::parse_uint)
                .collect();
        }
        if let Some(kv) = read_kv(&dir.join("cpuacct.stat"))? {
            // cpuacct.stat counts USER_HZ ticks; the metrics are in nanoseconds.
            let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / clock_ticks();
            usage.user = ns(kv.get("user").copied().unwrap_or_default());
            usage.kernel = ns(kv.get("system").copied().unwrap_or_default());
        }
    }
    Ok(pb::CPUStat {
        usage: MessageField::some(usage),
        throttling: MessageField::some(throttling),
        ..Default::default()
    })
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
) -> Result<Vec<pb::BlkIOEntry>, CgroupError> {
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
        out.push(pb::BlkIOEntry {
            op: op.to_owned(),
            device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
            major,
            minor,
            value: value.parse().map_err(|_| bad())?,
            ..Default::default()
        });
    }
    Ok(out)
}

fn blkio(dir: &Path, partitions: Option<&str>) -> Result<pb::BlkIOStat, CgroupError> {
    let devices = partitions.map(devices).unwrap_or_default();
    let mut out = pb::BlkIOStat::default();
    let read = |name: &str, entry: &mut Vec<pb::BlkIOEntry>| -> Result<(), CgroupError> {
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
        if out != pb::BlkIOStat::default() {
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

fn hugetlb(dir: &Path) -> Result<Vec<pb::HugetlbStat>, CgroupError> {
    super::page_sizes(dir, ".usage_in_bytes")
        .into_iter()
        .map(|size| {
            let f = |n: &str| {
                read_single(&dir.join(format!("hugetlb.{size}.{n}")), u64::MAX)
                    .map(Option::unwrap_or_default)
            };
            Ok(pb::HugetlbStat {
                usage: f("usage_in_bytes")?,
                max: f("max_usage_in_bytes")?,
                failcnt: f("failcnt")?,
                pagesize: size.clone(),
                ..Default::default()
            })
        })
        .collect()
}
