//! What the operator tool reads from the running system, for `doctor` and for `upgrade`
//! (which finds the serving shims here too): processes (`/proc/<pid>/{cmdline,exe,environ,fd,
//! net/unix,smaps_rollup,stat}`) and which of them are serving shims, unix sockets, the cgroup
//! mode and the kernel features shimgate relies on. Read-only, except probes that create and
//! close their own descriptors.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::Personality;

/// One process, as much as /proc tells about it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub args: Vec<String>,
    /// `/proc/<pid>/exe` target (may end in " (deleted)").
    pub exe: Option<PathBuf>,
}

impl Proc {
    /// Basename of argv[0].
    pub fn argv0_base(&self) -> &str {
        self.args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// Basename of the executable.
    pub fn exe_base(&self) -> String {
        self.exe
            .as_ref()
            .and_then(|e| e.file_name())
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// Value of a Go-style flag (`-name v`, `--name v`, `-name=v`, `--name=v`).
    pub fn flag(&self, names: &[&str]) -> Option<String> {
        flag_value(&self.args, names)
    }
}

/// Value of a flag in an argv (`-name v`, `--name v`, `-name=v`, `--name=v`).
pub fn flag_value(args: &[String], names: &[&str]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let bare = a.trim_start_matches('-');
        if bare.len() == a.len() {
            continue;
        }
        for n in names {
            if bare == *n {
                return it.next().cloned();
            }
            if let Some(v) = bare.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
        }
    }
    None
}

fn read_proc(pid: u32) -> Option<Proc> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmd
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        // Kernel threads and zombies have no command line.
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state, ppid, ...
    let rest = stat.rsplit_once(')')?.1;
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    Some(Proc {
        pid,
        ppid,
        args,
        exe,
    })
}

/// Every process with a command line.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<Proc> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(read_proc)
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// One entry of `/proc/<pid>/net/unix`.
#[derive(Debug, Clone)]
pub struct UnixEntry {
    pub inode: u64,
    pub listening: bool,
    /// Bound name: a path, `@name` for abstract sockets, empty when unbound.
    pub name: String,
}

/// Parse `/proc/net/unix` text.
pub fn parse_net_unix(text: &str) -> Vec<UnixEntry> {
    // Num RefCount Protocol Flags Type St Inode Path
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u64::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(6)?.parse().ok()?;
            Some(UnixEntry {
                inode,
                // __SO_ACCEPTCON: the socket is listening.
                listening: flags & 0x10000 != 0,
                name: f.get(7..).map(|p| p.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// The socket inodes a process holds.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_string_lossy()
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Listening unix sockets held by `pid` (read in its own network namespace, where abstract
/// names live).
pub fn listening_sockets(pid: u32) -> Vec<String> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    parse_net_unix(&table)
        .into_iter()
        .filter(|e| e.listening && inodes.contains(&e.inode) && !e.name.is_empty())
        .map(|e| e.name)
        .collect()
}

/// Listening socket paths in the doctor's network namespace.
pub fn listening_paths() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    parse_net_unix(&table)
        .into_iter()
        .filter(|e| e.listening && e.name.starts_with('/'))
        .map(|e| e.name)
        .collect()
}

/// Does anyone serve the socket file `path`? Looked up in the listening table first (no side
/// effects); only a socket missing there is tried with a connect.
pub fn socket_live(path: &Path, listening: &[String]) -> bool {
    let s = path.to_string_lossy();
    listening.iter().any(|l| *l == s) || UnixStream::connect(path).is_ok()
}

/// Proportional set size in KiB (`Pss:` of smaps_rollup).
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The PATH a process runs with (containerd looks its shims up in it).
pub fn env_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{name}=");
    env.split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|kv| kv.strip_prefix(&key).map(str::to_string))
}

pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Children of `pid` among `procs`.
pub fn children(procs: &[Proc], pid: u32) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// The host's cgroup layout.
pub fn cgroup_mode() -> String {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let is_v2 = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if is_v2("/sys/fs/cgroup") {
        "v2 (unified)".to_string()
    } else if is_v2("/sys/fs/cgroup/unified") {
        "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)".to_string()
    } else if Path::new("/sys/fs/cgroup/memory").exists() {
        "v1 (legacy)".to_string()
    } else {
        "unknown (no cgroup filesystem found)".to_string()
    }
}

/// A kernel feature shimgate uses.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: String,
    pub available: bool,
    pub used_for: String,
    pub without: String,
}

fn pipe() -> Option<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe().ok()
}

fn probe_pidfd() -> bool {
    // SAFETY: pidfd_open with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the kernel just returned this descriptor; wrapping it closes it on drop.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    true
}

fn probe_splice() -> bool {
    let (Some((r1, w1)), Some((r2, w2))) = (pipe(), pipe()) else {
        return false;
    };
    if nix::unistd::write(&w1, b"x").ok() != Some(1) {
        return false;
    }
    // SAFETY: splice between two pipes we own, no offsets.
    let n = unsafe {
        libc::splice(
            r1.as_raw_fd(),
            std::ptr::null_mut(),
            w2.as_raw_fd(),
            std::ptr::null_mut(),
            1,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    drop((r2, w1));
    n == 1
}

fn probe_subreaper() -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer we pass; it only reads
    // the flag and changes nothing.
    let rc = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut v as *mut libc::c_int,
            0,
            0,
            0,
        )
    };
    rc == 0
}

fn probe_oom_notification(cgroup_mode: &str) -> (bool, String) {
    if cgroup_mode.starts_with("v2") {
        // memory.events (+ inotify) exists in every non-root cgroup with the memory controller.
        let controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let inotify =
            nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_CLOEXEC).is_ok();
        (
            controllers.split_whitespace().any(|c| c == "memory") && inotify,
            "cgroup v2 memory.events watched with inotify".into(),
        )
    } else {
        let mem = Path::new("/sys/fs/cgroup/memory");
        let eventfd = nix::sys::eventfd::EventFd::new().is_ok();
        (
            mem.join("cgroup.event_control").exists()
                && mem.join("memory.oom_control").exists()
                && eventfd,
            "cgroup v1 memory.oom_control eventfd via cgroup.event_control".into(),
        )
    }
}

/// Probe each kernel feature shimgate uses.
pub fn kernel_features(cgroup_mode: &str) -> Vec<Feature> {
    let (oom, oom_how) = probe_oom_notification(cgroup_mode);
    vec![
        Feature {
            name: "PR_SET_CHILD_SUBREAPER".into(),
            available: probe_subreaper(),
            used_for: "collecting container exits (shims are subreapers)".into(),
            without: "shims cannot see their containers' exits (Linux 3.4+ needed)".into(),
        },
        Feature {
            name: "pidfd_open".into(),
            available: probe_pidfd(),
            used_for: "race-free signalling of processes".into(),
            without: "falls back to kill(2) by pid".into(),
        },
        Feature {
            name: "splice".into(),
            available: probe_splice(),
            used_for: "zero-copy container stdio".into(),
            without: "falls back to read/write copies".into(),
        },
        Feature {
            name: "OOM notification".into(),
            available: oom,
            used_for: oom_how,
            without: "/tasks/oom events are not published".into(),
        },
    ]
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Map of pid -> Proc for lookups.
pub fn by_pid(procs: &[Proc]) -> HashMap<u32, &Proc> {
    procs.iter().map(|p| (p.pid, p)).collect()
}

/// SELinux's mode when it is enabled (`enforcing` or `permissive`), else None.
pub fn selinux_mode() -> Option<String> {
    let v = std::fs::read_to_string("/sys/fs/selinux/enforce").ok()?;
    Some(
        if v.trim() == "1" {
            "enforcing"
        } else {
            "permissive"
        }
        .to_string(),
    )
}

/// The SELinux label of the file at `path` (symlinks followed; `/proc/<pid>/exe` works).
pub fn selinux_label(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = c"security.selinux";
    let mut buf = [0u8; 256];
    // SAFETY: both names are NUL-terminated C strings that outlive the call, and the kernel
    // writes at most `buf.len()` bytes into `buf`, which we own.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    let label = String::from_utf8_lossy(buf.get(..n)?);
    let label = label.trim_end_matches('\0').trim();
    (!label.is_empty()).then(|| label.to_string())
}

/// The type field of an SELinux label (`system_u:object_r:bin_t:s0` -> `bin_t`).
pub fn selinux_type(label: &str) -> Option<&str> {
    label.split(':').nth(2)
}

/// The personality a running process's argv[0] names, as doctor reports it (`other` for a
/// shim of another runtime); `None` for a process that is no shim.
pub fn shim_personality(argv0: &str) -> Option<&'static str> {
    match Personality::from_argv0(std::ffi::OsStr::new(argv0)) {
        Some(Personality::Admin) => None,
        Some(p) => Some(p.report_name()),
        None => argv0.starts_with("containerd-shim-").then_some("other"),
    }
}

/// Whether `p` is a shim serving containers (not a `start`/`delete`/`-info` one-shot).
pub fn is_serving_shim(p: &Proc) -> bool {
    // The `start`/`delete` helpers end with their action word; `-info`/`-v` runs are
    // one-shot too. Everything else named like a shim is a serving daemon.
    shim_personality(p.argv0_base()).is_some()
        && !matches!(p.args.last().map(String::as_str), Some("start" | "delete"))
        && !p.args.iter().skip(1).any(|a| {
            matches!(
                a.as_str(),
                "-info" | "--info" | "-v" | "--v" | "-version" | "--version"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_unix_lines() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 23456 /run/containerd/s/abc\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 23457 @/containerd-shim/x.sock\n\
                 0000000000000000: 00000003 00000000 00000000 0001 03 23458\n";
        let e = parse_net_unix(t);
        assert_eq!(e.len(), 3);
        assert!(e[0].listening && e[0].name == "/run/containerd/s/abc" && e[0].inode == 23456);
        assert!(e[1].name.starts_with('@'));
        assert!(!e[2].listening && e[2].name.is_empty());
    }

    #[test]
    fn flags_in_every_go_form() {
        let a: Vec<String> = ["containerd", "--config", "/c.toml", "-a=/s", "--root=/r"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&a, &["config", "c"]).as_deref(), Some("/c.toml"));
        assert_eq!(flag_value(&a, &["address", "a"]).as_deref(), Some("/s"));
        assert_eq!(flag_value(&a, &["root"]).as_deref(), Some("/r"));
        assert_eq!(flag_value(&a, &["state"]), None);
    }

    #[test]
    fn probes_run_here() {
        let f = kernel_features(&cgroup_mode());
        assert_eq!(f.len(), 4);
        // This kernel runs the integration tests, so the essentials are there.
        assert!(
            f.iter()
                .find(|x| x.name == "PR_SET_CHILD_SUBREAPER")
                .unwrap()
                .available
        );
        assert!(f.iter().find(|x| x.name == "splice").unwrap().available);
        assert!(pss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
