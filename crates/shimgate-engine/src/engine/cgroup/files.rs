//! Reading and parsing cgroup files, shared by the statistics readers (`api::metrics`) and
//! the OOM watcher: lenient the way containerd/cgroups is, so a missing or odd file leaves
//! its value at the default rather than failing the whole `Stats` call.
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::CgroupError;

/// Read a cgroup file; `None` when it does not exist. `ENODEV` counts as missing too: a cgroup
/// removed between open and read answers that instead of `ENOENT`.
pub fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
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
