use super::*;

const PAGE: usize = 0x1000;

fn seg(kind: u32, flags: u32, start: usize, mem_size: usize) -> Segment {
    Segment {
        kind,
        flags,
        start,
        mem_size,
    }
}

#[test]
fn only_whole_pages_of_loaded_read_only_segments_are_dropped() {
    let segments = [
        seg(libc::PT_PHDR, libc::PF_R, 0x40, 0x2a0),
        seg(libc::PT_LOAD, libc::PF_R, 0x0, 0x2500),
        seg(libc::PT_LOAD, libc::PF_R | libc::PF_X, 0x2800, 0x2900),
        seg(libc::PT_LOAD, libc::PF_R | libc::PF_W, 0x6000, 0x3000),
        seg(libc::PT_GNU_RELRO, libc::PF_R, 0x6000, 0x2000),
    ];
    assert_eq!(
        read_only_ranges(&segments, PAGE),
        vec![(0x0, 0x2000), (0x3000, 0x2000)],
        "rounded inwards; the writable segment never"
    );
}

#[test]
fn a_read_only_segment_touching_relro_is_left_alone() {
    let segments = [
        seg(libc::PT_LOAD, libc::PF_R, 0x10000, 0x8000),
        seg(libc::PT_GNU_RELRO, libc::PF_R, 0x17000, 0x2000),
        seg(libc::PT_LOAD, libc::PF_R, 0x20000, 0x800),
    ];
    assert_eq!(
        read_only_ranges(&segments, PAGE),
        Vec::<(usize, usize)>::new(),
        "one overlaps RELRO, the other holds no whole page"
    );
}

/// Resident KiB of this test binary's executable mapping.
fn text_rss_kib() -> u64 {
    let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = f.next().unwrap_or("");
            inside = perms.starts_with("r-x") && line.ends_with(&*exe.to_string_lossy());
        } else if inside && first == "Rss:" {
            total += f.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

#[test]
fn trimming_unmaps_the_running_binarys_code_and_it_runs_on() {
    let segments = own_segments();
    assert!(
        segments
            .iter()
            .any(|s| s.kind == libc::PT_LOAD && s.flags & libc::PF_X != 0),
        "the main program's headers were found: {segments:?}"
    );
    let before = text_rss_kib();
    let trimmed = trim();
    let after = text_rss_kib();
    assert!(trimmed.unmapped > 0, "{trimmed:?}");
    assert!(
        after < before,
        "code resident before {before} KiB, after {after} KiB"
    );
    // Code and read-only data come back on use, unchanged.
    let s = format!("{:?}", read_only_ranges(&segments, PAGE));
    assert!(s.starts_with('['));
}
