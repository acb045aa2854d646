//! OOM events of a container's cgroup: an eventfd on `memory.oom_control` (v1) or an inotify
//! watch on `memory.events` (v2), registered with the tokio reactor, so the shim publishes
//! `/tasks/oom` without timers or polling.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::files::{parse_kv, read_optional};
use super::CgroupError;

/// Async source of OOM notifications for one cgroup. It sleeps in the tokio reactor on a file
/// descriptor (no timers, no polling) until the kernel reports something.
#[derive(Debug)]
pub struct OomWatcher {
    inner: OomInner,
    done: bool,
}

#[derive(Debug)]
enum OomInner {
    V1 {
        efd: AsyncFd<EventFd>,
        memory_dir: PathBuf,
    },
    V2 {
        inotify: AsyncFd<InotifyFd>,
        events_file: PathBuf,
        last_oom_kill: u64,
    },
}

/// nix's `Inotify` exposes only `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Descriptor types that own their fd for their whole life, so registering them with the
/// reactor is sound. Implemented only for the two types the watcher uses.
trait OwnsFd: AsRawFd {}
impl OwnsFd for EventFd {}
impl OwnsFd for InotifyFd {}

/// Register an owned descriptor with the tokio reactor for readability.
fn register<T: OwnsFd>(fd: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `OwnsFd` types wrap an `OwnedFd`, so the descriptor stays open and unchanged
    // until the `AsyncFd` drops the value, and `as_raw_fd` always returns that same descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> CgroupError {
    move |errno| CgroupError::Sys { op, errno }
}

pub(super) fn oom_kill_count(text: &str) -> Option<u64> {
    parse_kv(text).get("oom_kill").copied()
}

impl OomWatcher {
    pub(super) fn v1(memory_dir: &Path) -> Result<OomWatcher, CgroupError> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(sys("eventfd"))?;
        let control_path = memory_dir.join("memory.oom_control");
        let control = File::open(&control_path).map_err(|error| CgroupError::Io {
            op: "open",
            path: control_path,
            error,
        })?;
        // "<eventfd> <fd of memory.oom_control>" arms the notification; the kernel keeps its own
        // reference, so the oom_control file can be closed right after.
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        let ctl_path = memory_dir.join("cgroup.event_control");
        std::fs::write(&ctl_path, line).map_err(|error| CgroupError::Io {
            op: "write",
            path: ctl_path,
            error,
        })?;
        drop(control);
        let efd = register(efd).map_err(|error| CgroupError::Io {
            op: "register eventfd of",
            path: memory_dir.to_owned(),
            error,
        })?;
        Ok(OomWatcher {
            inner: OomInner::V1 {
                efd,
                memory_dir: memory_dir.to_owned(),
            },
            done: false,
        })
    }

    pub(super) fn v2(dir: &Path) -> Result<OomWatcher, CgroupError> {
        let events_file = dir.join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys("inotify_init"))?;
        inotify
            .add_watch(&events_file, AddWatchFlags::IN_MODIFY)
            .map_err(|errno| CgroupError::Io {
                op: "watch",
                path: events_file.clone(),
                error: io::Error::from(errno),
            })?;
        // Counting starts now: kills that happened before the watch are not news.
        let last_oom_kill = read_optional(&events_file)?
            .as_deref()
            .and_then(oom_kill_count)
            .unwrap_or_default();
        let inotify = register(InotifyFd(inotify)).map_err(|error| CgroupError::Io {
            op: "register inotify for",
            path: events_file.clone(),
            error,
        })?;
        Ok(OomWatcher {
            inner: OomInner::V2 {
                inotify,
                events_file,
                last_oom_kill,
            },
            done: false,
        })
    }

    /// Wait for the next OOM kill. `None` once the cgroup is gone (or the watch broke); after
    /// that it keeps returning `None`. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<()> {
        loop {
            if self.done {
                return None;
            }
            match &mut self.inner {
                OomInner::V1 { efd, memory_dir } => {
                    let mut guard = match efd.readable().await {
                        Ok(g) => g,
                        Err(_) => {
                            self.done = true;
                            continue;
                        }
                    };
                    match guard.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                        // Would block: a spurious wakeup; readiness was cleared, wait again.
                        Err(_) => continue,
                        Ok(Err(_)) => {
                            self.done = true;
                        }
                        Ok(Ok(_)) => {
                            // The kernel also signals the eventfd when the cgroup is removed;
                            // telling the two apart needs a look at the directory.
                            if memory_dir.join("memory.oom_control").exists() {
                                return Some(());
                            }
                            self.done = true;
                        }
                    }
                }
                OomInner::V2 {
                    inotify,
                    events_file,
                    last_oom_kill,
                } => {
                    let mut guard = match inotify.readable().await {
                        Ok(g) => g,
                        Err(_) => {
                            self.done = true;
                            continue;
                        }
                    };
                    let events = match guard
                        .try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from))
                    {
                        Err(_) => continue,
                        Ok(Err(_)) => {
                            self.done = true;
                            continue;
                        }
                        Ok(Ok(events)) => events,
                    };
                    // IN_IGNORED: the watch went away with the file (cgroup removed).
                    let watch_gone = events.iter().any(|e| {
                        e.mask
                            .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                    });
                    let count = match read_optional(events_file) {
                        Ok(Some(text)) => oom_kill_count(&text),
                        Ok(None) | Err(_) => {
                            self.done = true;
                            None
                        }
                    };
                    if watch_gone {
                        self.done = true;
                    }
                    // A write seen half-way (truncated file) has no oom_kill key; ignore it.
                    if let Some(count) = count {
                        let increased = count > *last_oom_kill;
                        *last_oom_kill = count;
                        if increased {
                            return Some(());
                        }
                    }
                }
            }
        }
    }
}
