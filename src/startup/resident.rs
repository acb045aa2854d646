//! What a serving shim keeps resident while it waits.
//!
//! A shim spends nearly all its life waiting for a container to exit. Its own code and
//! read-only data are mapped from the binary, and the kernel maps file pages in 64 KiB windows
//! around every page touched (fault-around, not tunable per process), so start-up and the
//! one-off work of a Create leave almost the whole binary mapped in every shim (~3 MiB of a
//! one-container shim's ~4 MiB PSS), although a waiting shim runs a small part of it.
//!
//! So once the server has been quiet for a while (no request running for [`quiet_after`]),
//! the shim drops its page-table entries for the binary's read-only segments
//! (`MADV_DONTNEED`) and hands free heap pages back to the kernel (`malloc_trim`). This
//! changes no data: those segments are clean private file mappings, so the page cache keeps
//! the file's pages (shared with every other shim) and the next touch maps them again, without
//! I/O, costing a minor fault per 64 KiB window. Writable segments, including the relocated
//! read-only-after-relocation one, are never touched: dropping them would lose what was
//! written. One trim per quiet spell: after it the watcher sleeps until a request arrives, so
//! an idle shim keeps using no CPU.

use std::time::Duration;

use tokio::sync::watch;

/// How long no request may have been running before the shim trims (default 1 s;
/// `SHIMGATE_TRIM_AFTER_MS` overrides, 0 turns trimming off). Long enough that a burst of
/// requests (containerd's create, start and the first waits come within milliseconds) is not
/// trimmed halfway; short enough that a settled shim is small before anyone measures it.
pub fn quiet_after() -> Option<Duration> {
    let ms = std::env::var("SHIMGATE_TRIM_AFTER_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1000);
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Trim after every quiet spell of the server whose running-request count is `busy`.
/// Call inside the daemon's runtime; the task ends with the server (the count's sender).
pub fn trim_when_quiet(mut busy: watch::Receiver<usize>) {
    let Some(quiet) = quiet_after() else {
        return;
    };
    tokio::spawn(async move {
        // Wait for work (any change of the count), then for `quiet` with nothing running.
        while busy.changed().await.is_ok() {
            loop {
                if busy.wait_for(|n| *n == 0).await.is_err() {
                    return;
                }
                match tokio::time::timeout(quiet, busy.changed()).await {
                    Err(_elapsed) => break,
                    Ok(Ok(())) => continue,
                    Ok(Err(_closed)) => return,
                }
            }
            let trimmed = trim();
            tracing::debug!(
                unmapped_kib = trimmed.unmapped / 1024,
                heap_released = trimmed.heap_released,
                "quiet: released resident pages"
            );
        }
    });
}

/// What one [`trim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Bytes of the binary's read-only segments whose mappings were dropped (their extent,
    /// not how many of their pages had been mapped).
    pub unmapped: usize,
    /// Whether `malloc_trim` gave memory back.
    pub heap_released: bool,
}

/// Drop the mappings of the binary's read-only segments and return free heap pages.
pub fn trim() -> Trimmed {
    let mut out = Trimmed::default();
    for (start, len) in read_only_ranges(&own_segments(), page_size()) {
        // SAFETY: `start..start+len` lies inside a loaded, never-writable segment of this
        // program (computed from its own program headers, rounded inwards to whole pages), a
        // private file mapping: MADV_DONTNEED only drops page-table entries there, and the
        // next access maps the same file contents again. No Rust reference is invalidated,
        // because the memory's contents do not change.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc == 0 {
            out.unmapped += len;
        }
    }
    out.heap_released = release_heap();
    out
}

#[cfg(target_env = "gnu")]
fn release_heap() -> bool {
    // SAFETY: malloc_trim only takes glibc's own allocator locks; it is safe to call at any
    // time from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(target_env = "gnu"))]
fn release_heap() -> bool {
    false
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// One program header of this program, where it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    /// Load address (load bias + `p_vaddr`).
    pub start: usize,
    pub mem_size: usize,
}

/// This program's (not a library's) program headers.
fn own_segments() -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` glibc passes (valid during the call)
    // and writes to the Vec behind `data`, which outlives the call; it returns 1 after the
    // first object, which is the main program.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<Segment>).cast());
    }
    out
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid `info` for the duration of the call, and `data` is the
    // `&mut Vec<Segment>` given to `dl_iterate_phdr` above.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Segment>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of this object.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    for h in headers {
        out.push(Segment {
            kind: h.p_type,
            flags: h.p_flags,
            start: (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize),
            mem_size: h.p_memsz as usize,
        });
    }
    1
}

/// The page-aligned ranges of `segments` that may be dropped: loaded, never writable, not
/// touching the relocation-protected range, rounded inwards to whole pages.
pub fn read_only_ranges(segments: &[Segment], page: usize) -> Vec<(usize, usize)> {
    let relro: Vec<(usize, usize)> = segments
        .iter()
        .filter(|s| s.kind == libc::PT_GNU_RELRO)
        .map(|s| (s.start, s.start.saturating_add(s.mem_size)))
        .collect();
    segments
        .iter()
        .filter(|s| s.kind == libc::PT_LOAD && s.flags & libc::PF_W == 0)
        .filter_map(|s| {
            let start = s.start.checked_add(page - 1)? / page * page;
            let end = s.start.checked_add(s.mem_size)? / page * page;
            let overlaps = relro.iter().any(|&(a, b)| start < b && a < end);
            (end > start && !overlaps).then_some((start, end - start))
        })
        .collect()
}

#[cfg(test)]
mod tests;
