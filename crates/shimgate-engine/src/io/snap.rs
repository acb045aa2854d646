//! A process's IO across a live upgrade: the snapshot written before `execve` (descriptor
//! numbers kept open, bytes a pump had read but not written) and its adoption afterwards.

use super::*;

/// A process's IO in a form that survives `execve` (live upgrade): descriptor numbers, kept
/// open, and the bytes a pump had read but not yet written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IoSnap {
    pub outputs: Vec<PumpSnap>,
    pub stdin: Option<PumpSnap>,
    pub stdin_keepalive: Option<i32>,
    pub master: Option<i32>,
    /// A logging binary still running at the freeze, and a pidfd for exactly that process
    /// (only both together are adopted: a bare pid may have been recycled by then).
    pub logger_pid: Option<u32>,
    #[serde(default)]
    pub logger_pidfd: Option<i32>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PumpSnap {
    pub src: i32,
    pub sink: SinkSnap,
    pub pending: Vec<u8>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum SinkSnap {
    Poll { fd: i32, keep: Option<i32> },
    File { fd: i32 },
}

/// A frozen [`ProcessIo`]: the snapshot, and the objects that keep its descriptors open
/// until the `execve` (or until a failed upgrade thaws them again).
pub struct Frozen {
    pub snap: IoSnap,
    pub(super) _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Frozen {
    /// Every descriptor the snapshot names (to clear close-on-exec on).
    pub fn fds(&self) -> Vec<i32> {
        self.snap.fds()
    }
}

impl IoSnap {
    /// Every descriptor this snapshot names.
    pub fn fds(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for p in self.outputs.iter().chain(self.stdin.iter()) {
            v.push(p.src);
            match p.sink {
                SinkSnap::Poll { fd, keep } => {
                    v.push(fd);
                    v.extend(keep);
                }
                SinkSnap::File { fd } => v.push(fd),
            }
        }
        v.extend(self.stdin_keepalive);
        v.extend(self.master);
        v.extend(self.logger_pidfd);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The descriptors this snapshot names, checked to be shared only the way one process IO
    /// shares them (see [`Adopted`]): a poll-registered descriptor by several pumps, one file
    /// by stdout and stderr; everything else named once. Checked before anything is adopted,
    /// so a bad document is refused while a rollback can still use every descriptor.
    pub fn checked_fds(&self) -> Result<Vec<i32>, String> {
        #[derive(PartialEq)]
        enum Role {
            Poll,
            File,
            Once,
        }
        let mut seen: std::collections::HashMap<i32, Role> = Default::default();
        let mut add = |fd: i32, role: Role| -> Result<(), String> {
            if fd <= 2 {
                return Err(format!("hand-over names descriptor {fd} for process IO"));
            }
            match seen.get(&fd) {
                None => {
                    seen.insert(fd, role);
                    Ok(())
                }
                Some(r) if *r == role && role != Role::Once => Ok(()),
                Some(_) => Err(format!(
                    "hand-over names descriptor {fd} twice in one process's IO"
                )),
            }
        };
        for p in self.outputs.iter().chain(self.stdin.iter()) {
            add(p.src, Role::Poll)?;
            match p.sink {
                SinkSnap::Poll { fd, keep } => {
                    add(fd, Role::Poll)?;
                    if let Some(k) = keep {
                        add(k, Role::Once)?;
                    }
                }
                SinkSnap::File { fd } => add(fd, Role::File)?,
            }
        }
        if let Some(m) = self.master {
            add(m, Role::Poll)?;
        }
        for fd in self.stdin_keepalive.iter().chain(self.logger_pidfd.iter()) {
            add(*fd, Role::Once)?;
        }
        let mut v: Vec<i32> = seen.into_keys().collect();
        v.sort_unstable();
        Ok(v)
    }
}

pub(super) fn raw(fd: &impl std::os::fd::AsRawFd) -> i32 {
    fd.as_raw_fd()
}

pub(super) fn sink_snap(sink: &Sink) -> SinkSnap {
    match sink {
        Sink::Poll(p, keep) => SinkSnap::Poll {
            fd: p.raw(),
            keep: keep.as_ref().map(raw),
        },
        Sink::File(f) => SinkSnap::File { fd: raw(&**f) },
    }
}

/// Descriptors handed over across `execve`, each taken into ownership exactly once. The only
/// sharing a snapshot may express is the one a process IO really has: one poll-registered
/// descriptor (a pty master) as several pumps' source or sink, one file as stdout and stderr.
/// Any other repetition is refused (two owners would close one descriptor twice). Uniqueness
/// across the processes of a document is the document's check (`startup::upgrade`).
#[derive(Default)]
pub(super) struct Adopted {
    pub(super) taken: std::collections::HashSet<i32>,
    pub(super) polls: std::collections::HashMap<i32, Arc<PollFd>>,
    pub(super) files: std::collections::HashMap<i32, Arc<File>>,
}

impl Adopted {
    pub(super) fn owned(&mut self, fd: i32) -> Result<OwnedFd, IoError> {
        if fd <= 2 || !self.taken.insert(fd) {
            return Err(IoError::InvalidUri(format!(
                "hand-over names descriptor {fd} twice or as stdio"
            )));
        }
        // Is it open at all? (A hand-over naming a closed descriptor is refused, not trusted.)
        // SAFETY: F_GETFD on a plain number; no descriptor is borrowed or owned by it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(IoError::Os {
                what: format!("handed-over descriptor {fd}"),
                source: stdio::Error::last_os_error(),
            });
        }
        // SAFETY: the previous image passed `fd` across execve for us; it is open (checked
        // just above) and `taken` guarantees this is the only owner this image creates.
        let o = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            o.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Ok(o)
    }

    pub(super) fn poll(&mut self, fd: i32) -> Result<Arc<PollFd>, IoError> {
        if let Some(p) = self.polls.get(&fd) {
            return Ok(p.clone());
        }
        let p = Arc::new(PollFd::new(self.owned(fd)?).map_err(os("register handed-over fd"))?);
        self.polls.insert(fd, p.clone());
        Ok(p)
    }

    pub(super) fn sink(&mut self, s: &SinkSnap) -> Result<Sink, IoError> {
        Ok(match *s {
            SinkSnap::Poll { fd, keep } => {
                let keep = match keep {
                    Some(k) => Some(self.owned(k)?),
                    None => None,
                };
                Sink::Poll(self.poll(fd)?, keep)
            }
            SinkSnap::File { fd } => {
                if let Some(f) = self.files.get(&fd) {
                    Sink::File(f.clone())
                } else {
                    let f = Arc::new(File::from(self.owned(fd)?));
                    self.files.insert(fd, f.clone());
                    Sink::File(f)
                }
            }
        })
    }
}
