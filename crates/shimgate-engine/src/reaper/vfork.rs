//! Starting a runtime child without copying the shim's address space.
//!
//! `fork()` duplicates the page tables of the whole shim and then takes copy-on-write faults in
//! both processes until the child has exec'd: most of what a shim spends per `runc` call. Here
//! the child is created with `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)` on a stack of its own: it
//! shares our memory, the calling thread is suspended by the kernel until the child has exec'd
//! or exited, and nothing is copied. (std's `Command` does the same through `posix_spawn` when no
//! `pre_exec` step is set; the runtime's `PR_SET_PDEATHSIG` is such a step, hence this module.)
//!
//! Rules for the child side (`child_main`), which runs on memory the parent still uses:
//! * only raw system calls through `libc::syscall`: no allocation, no lock, no TLS except the
//!   suspended parent thread's `errno`, which that thread does not read across the clone;
//! * everything it reads (paths, argv, envp, descriptors) is prepared by the parent beforehand
//!   and stays alive and unchanged until `clone` returns;
//! * the only thing it writes is the error slot: the errno of the step that failed, which the
//!   parent reads once it is running again (the kernel's vfork wake-up orders the accesses).
//!
//! Signals: the parent blocks all of them in the calling thread around the clone, so none can be
//! handled in the child on the shared memory; the child resets every caught signal to its
//! default (and SIGPIPE, which Rust ignores, as std does) before it unblocks them, then execs
//! with an empty mask, as std's `Command` leaves a child.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

/// Bytes of the child's own stack. It runs a handful of system calls with small frames;
/// glibc's `posix_spawn` uses about as much.
const CHILD_STACK: usize = 64 << 10;

/// What one of the child's descriptors 0, 1 and 2 becomes.
#[derive(Debug, Default)]
pub enum ChildIo {
    /// The shim's own descriptor of that number.
    Inherit,
    /// `/dev/null`.
    #[default]
    Null,
    /// A new pipe; the shim's end is returned in the [`super::Child`].
    Piped,
    /// This descriptor (the shim's copy is closed once the child is started).
    Fd(OwnedFd),
}

/// A program for [`super::Spawner::spawn_cmd`]: the subset of `std::process::Command` the shim's
/// runtime calls use, and what they need beyond it (the parent-death signal) without a
/// `pre_exec` closure, so the child can be started vfork-style.
#[derive(Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// Changes to the shim's environment: `None` removes the variable.
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdio: [ChildIo; 3],
    pdeathsig: bool,
    /// Tests: how long the child waits before asking for the parent-death signal (the window
    /// in which a dying shim cannot send it).
    #[cfg(test)]
    pub(super) delay_before_pdeathsig: std::time::Duration,
}

impl Cmd {
    /// `program` is looked up in `PATH` (the child's) unless it contains a `/`. Stdio defaults
    /// to `/dev/null`; the parent-death signal is off.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdio: [ChildIo::Null, ChildIo::Null, ChildIo::Null],
            pdeathsig: false,
            #[cfg(test)]
            delay_before_pdeathsig: std::time::Duration::ZERO,
        }
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(&mut self, k: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(&mut self, io: ChildIo) -> &mut Self {
        self.stdio[0] = io;
        self
    }

    pub fn stdout(&mut self, io: ChildIo) -> &mut Self {
        self.stdio[1] = io;
        self
    }

    pub fn stderr(&mut self, io: ChildIo) -> &mut Self {
        self.stdio[2] = io;
        self
    }

    /// Kill the child (SIGKILL) when the spawning thread ends; a child whose parent is already
    /// gone by the time it asks refuses to run (see the spawner's module docs).
    pub fn pdeathsig(&mut self, on: bool) -> &mut Self {
        self.pdeathsig = on;
        self
    }

    /// The environment the child gets: ours with the changes applied.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (k, v) in &self.env {
            vars.retain(|(name, _)| name != k);
            if let Some(v) = v {
                vars.push((k.clone(), v.clone()));
            }
        }
        vars
    }
}

/// The shim's ends of a started child's pipes.
pub(super) struct Started {
    pub pid: u32,
    pub stdio: [Option<OwnedFd>; 3],
}

/// Everything the child reads, built before the clone. The pointers in `argv`/`envp` point
/// into the `CString`s held beside them.
struct Plan {
    /// Paths to try in order (the `PATH` search, or the one path given).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
}

/// What `child_main` gets: raw views of a [`Plan`] plus the error slot.
struct ChildArgs {
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// Source descriptor for 0, 1, 2 (-1: leave as is). Never below 3 (see `spawn`).
    fds: [RawFd; 3],
    pdeathsig: bool,
    parent: libc::pid_t,
    #[cfg(test)]
    delay: libc::timespec,
    /// The errno of the failed step; 0 while none failed.
    err: AtomicI32,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nul byte in {:?}", s.to_string_lossy()),
        )
    })
}

impl Plan {
    fn new(cmd: &Cmd) -> io::Result<Plan> {
        let env = cmd.environment();
        let program = cmd.program.as_bytes();
        let candidates = if program.contains(&b'/') {
            vec![cstring(&cmd.program)?]
        } else {
            if program.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            // execvp's search: the child's PATH, glibc's default without one; an empty
            // element is the current directory.
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_bytes().to_vec())
                .unwrap_or_else(|| b"/bin:/usr/bin".to_vec());
            let mut v = Vec::new();
            for dir in path.split(|b| *b == b':') {
                let mut p = if dir.is_empty() {
                    b".".to_vec()
                } else {
                    dir.to_vec()
                };
                p.push(b'/');
                p.extend_from_slice(program);
                v.push(cstring(OsStr::from_bytes(&p))?);
            }
            v
        };
        let mut argv = vec![cstring(&cmd.program)?];
        for a in &cmd.args {
            argv.push(cstring(a)?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in env {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(&OsString::from_vec(kv))?);
        }
        let cwd = match &cmd.cwd {
            Some(d) => Some(cstring(d.as_os_str())?),
            None => None,
        };
        Ok(Plan {
            candidates,
            argv,
            envp,
            cwd,
        })
    }
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A descriptor numbered 3 or above for `fd` (a `dup2` onto 0..2 must not overwrite the
/// source of another of them).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            .map(|n| unsafe { OwnedFd::from_raw_fd(n) })?,
    )
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Start `cmd`. The caller holds the reaper's spawn lock: a child that fails before its exec is
/// reaped here, and no other `waitpid` may run meanwhile.
pub(super) fn spawn(cmd: Cmd) -> io::Result<Started> {
    let plan = Plan::new(&cmd)?;
    // The child's source descriptors (kept open until the clone returns) and our pipe ends.
    let mut sources: [Option<OwnedFd>; 3] = [None, None, None];
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, io) in cmd.stdio.into_iter().enumerate() {
        sources[i] = match io {
            ChildIo::Inherit => None,
            ChildIo::Null => Some(dev_null()?),
            ChildIo::Fd(fd) => Some(above_stdio(fd)?),
            ChildIo::Piped => {
                let (r, w) = pipe()?;
                let (mine, theirs) = if i == 0 { (w, r) } else { (r, w) };
                ours[i] = Some(mine);
                Some(theirs)
            }
        };
    }
    let candidates = ptrs(&plan.candidates);
    let argv = ptrs(&plan.argv);
    let envp = ptrs(&plan.envp);
    let args = ChildArgs {
        candidates: candidates.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        fds: [0, 1, 2].map(|i| sources[i].as_ref().map_or(-1, |fd| fd.as_raw_fd())),
        pdeathsig: cmd.pdeathsig,
        parent: std::process::id() as libc::pid_t,
        #[cfg(test)]
        delay: libc::timespec {
            tv_sec: cmd.delay_before_pdeathsig.as_secs() as libc::time_t,
            tv_nsec: cmd.delay_before_pdeathsig.subsec_nanos() as libc::c_long,
        },
        err: AtomicI32::new(0),
    };
    let mut stack = Box::<[u8]>::new_uninit_slice(CHILD_STACK);
    // The stack grows down: the child starts at the (16-byte aligned) top.
    let top = {
        let end = stack.as_mut_ptr_range().end as usize;
        (end & !15) as *mut libc::c_void
    };

    let pid = with_signals_blocked(|| {
        // SAFETY: clone with CLONE_VM | CLONE_VFORK suspends this thread until the child has
        // exec'd or exited, so `args`, the plan, the source descriptors and the stack (all
        // owned by this frame) outlive every access the child makes. `child_main` keeps to the
        // rules of the module docs (raw syscalls, no allocation, writes only `args.err`).
        // All signals are blocked in this thread, so no handler runs in the child.
        unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const ChildArgs as *mut libc::c_void,
            )
        }
    })?;
    drop(stack);
    drop(sources);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let err = args.err.load(Ordering::SeqCst);
    if err != 0 {
        // The child exited without exec'ing: collect it here (we hold the spawn lock, so no
        // other waitpid can take it) and report why.
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own just-exited child with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(Started {
        pid: pid as u32,
        stdio: ours,
    })
}

/// Run `f` with every signal blocked in the calling thread, then restore its mask.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and fills `old`; both
    // pointers are valid for the call.
    let rc = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let out = f();
    // SAFETY: `old` was filled by the successful call above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    Ok(out)
}

/// The kernel's `struct sigaction` as `rt_sigaction(2)` takes it, large enough for every
/// architecture's layout. Only the handler (first field everywhere) is read; all-zero is
/// `SIG_DFL` with no flags and an empty mask.
type KernelSigaction = [u64; 8];

/// Size of the kernel's signal set, as `rt_sigaction` and `rt_sigprocmask` want it.
const KERNEL_SIGSET: libc::c_long = 8;

/// The child: prepare the process, exec, or record the errno and exit 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn`, alive while the parent is suspended.
    let a = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: only raw system calls on data prepared by the parent (see the module docs).
    let errno = unsafe { prepare_and_exec(a) };
    a.err.store(errno.max(1), Ordering::SeqCst);
    // SAFETY: raw exit of this child only (exit_group of its own thread group); no
    // destructors or atexit handlers of the shared image run.
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    127
}

/// The child's steps; returns the errno of the one that failed (execve returns only then).
///
/// # Safety
/// Must run only in the vfork child of [`spawn`], on the `ChildArgs` it prepared.
unsafe fn prepare_and_exec(a: &ChildArgs) -> i32 {
    let errno = || *libc::__errno_location();
    // Signals: no handler of the shim may run here; restore defaults before unblocking.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old: KernelSigaction = [0; 8];
        if libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KernelSigaction>(),
            &mut old as *mut KernelSigaction,
            KERNEL_SIGSET,
        ) != 0
        {
            continue;
        }
        let handler = old[0] as libc::sighandler_t;
        let caught = handler != libc::SIG_DFL && handler != libc::SIG_IGN;
        if caught || sig == libc::SIGPIPE {
            let dfl: KernelSigaction = [0; 8];
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET,
            );
        }
    }
    let empty: u64 = 0;
    if libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        std::ptr::null_mut::<u64>(),
        KERNEL_SIGSET,
    ) != 0
    {
        return errno();
    }
    if a.pdeathsig {
        #[cfg(test)]
        libc::syscall(
            libc::SYS_nanosleep,
            &a.delay as *const libc::timespec,
            std::ptr::null_mut::<libc::timespec>(),
        );
        if libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0,
        ) != 0
        {
            return errno();
        }
        // A shim that died before the prctl never sends the signal: the child has been
        // re-parented already and must not run on unowned.
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != a.parent {
            return libc::ESRCH;
        }
    }
    for (target, src) in a.fds.iter().enumerate() {
        // dup3 onto 0..2 without flags clears close-on-exec there; sources are all 3 or
        // above, so never equal to the target (which dup3 would refuse).
        if *src >= 0 && libc::syscall(libc::SYS_dup3, *src, target as libc::c_int, 0) < 0 {
            return errno();
        }
    }
    if !a.cwd.is_null() && libc::syscall(libc::SYS_chdir, a.cwd) != 0 {
        return errno();
    }
    // execvp's rules: go on past entries that do not hold the program, remember a permission
    // error, stop at any other failure.
    let mut found_denied = false;
    let mut last = libc::ENOENT;
    let mut p = a.candidates;
    while !(*p).is_null() {
        libc::syscall(libc::SYS_execve, *p, a.argv, a.envp);
        last = errno();
        match last {
            libc::EACCES => found_denied = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return last,
        }
        p = p.add(1);
    }
    if found_denied {
        libc::EACCES
    } else {
        last
    }
}
