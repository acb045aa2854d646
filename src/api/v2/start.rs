//! The `start` action: leave a daemon listening on the socket containerd will dial, print that
//! socket's address, exit. stdout and stderr of this process are one pipe that containerd
//! reads to the end, so nothing but the address is written, and the daemon does not inherit
//! the pipe. Runs without an async runtime: it only binds, forks and writes files.

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use protobuf::Message;

use super::bootstrap::{self, StartInput};
use super::Flavor;
use crate::cli::ShimV2Args;
use crate::reaper::{Reaper, Spawner};

/// Write `data` to `dir/name` atomically (temp file `.name`, then rename), as the Go shim does
/// for `address` and `shim.pid`.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// Is something serving on this socket? Checked a few times: a concurrent `start` for the same
/// group may have bound but not yet listened.
fn socket_is_live(path: &Path) -> bool {
    for _ in 0..3 {
        if UnixStream::connect(path).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

enum Bound {
    /// We own a new listening socket.
    New(UnixListener),
    /// A live shim already serves this group (runc.v2).
    Existing,
}

/// Why `start` (or `-info`) failed: printed after the runtime's name, so the texts are kept.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shim id cannot be empty")]
    EmptyId,
    /// The id or namespace is not a containerd identifier (the engine's text).
    #[error(transparent)]
    Identifier(crate::engine::Error),
    #[error("read options from stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("getcwd: {0}")]
    Getcwd(std::io::Error),
    /// The error with its causes (`engine::error::chain`).
    #[error("open config.json: {0}")]
    OpenConfig(String),
    #[error("create socket directory {dir}: {source}")]
    SocketDirectory { dir: String, source: std::io::Error },
    #[error("listen on {path}: {source}")]
    Listen {
        path: String,
        source: std::io::Error,
    },
    #[error("remove stale socket {path}: {source}")]
    RemoveStale {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket")]
    NotASocket { path: String },
    #[error("chmod {path}: {source}")]
    Chmod {
        path: String,
        source: std::io::Error,
    },
    #[error("write address: {0}")]
    WriteAddress(std::io::Error),
    #[error("write shim.pid: {0}")]
    WriteShimPid(std::io::Error),
    #[error("start shim daemon {argv0}: {source}")]
    Spawn {
        argv0: String,
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    ReadCgroups {
        path: String,
        source: std::io::Error,
    },
    #[error("add shim {pid} to cgroup {dir}: {source}")]
    JoinCgroup {
        pid: u32,
        dir: String,
        source: std::io::Error,
    },
    #[error("shim cgroup {0} does not exist")]
    NoCgroup(String),
    #[error("encode start reply: {0}")]
    EncodeReply(serde_json::Error),
    #[error("encode bootstrap result: {0}")]
    EncodeBootstrapResult(protobuf::Error),
    #[error("encode runtime info: {0}")]
    EncodeInfo(protobuf::Error),
}

fn bind(path: &Path, reuse: bool) -> Result<Bound, StartError> {
    let listen = |source| StartError::Listen {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        // Only the shim's user may look inside (Go uses 0600, which only root can traverse).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StartError::SocketDirectory {
                dir: dir.display().to_string(),
                source,
            })?;
    }
    match UnixListener::bind(path) {
        Ok(l) => return Ok(Bound::New(l)),
        Err(e) if e.kind() == ErrorKind::AddrInUse => {}
        Err(e) => return Err(listen(e)),
    }
    if reuse && socket_is_live(path) {
        return Ok(Bound::Existing);
    }
    // A socket left by a dead shim must not block a new one; only ever remove a socket file.
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(|source| StartError::RemoveStale {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(StartError::NotASocket {
                path: path.display().to_string(),
            })
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map(Bound::New).map_err(listen)
}

/// Join `cgroup` (a path relative to each hierarchy root) with `pid`.
fn join_shim_cgroup(cgroup: &str, pid: u32) -> Result<(), StartError> {
    let rel = cgroup.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut joined = false;
    let targets: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.join(rel)]
    } else {
        std::fs::read_dir(root)
            .map_err(|source| StartError::ReadCgroups {
                path: root.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(rel))
            .filter(|p| p.is_dir())
            .collect()
    };
    for dir in targets {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|source| {
            StartError::JoinCgroup {
                pid,
                dir: dir.display().to_string(),
                source,
            }
        })?;
        joined = true;
    }
    if !joined {
        return Err(StartError::NoCgroup(cgroup.to_string()));
    }
    Ok(())
}

/// The daemon runs just above containerd's OOM priority, so the kernel picks it before
/// containerd but after ordinary processes.
fn adjust_oom_score(pid: u32) {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let v = (own + 1).min(1000);
    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), v.to_string());
}

/// Start the daemon with the listener as fd 3, in a new session, stdio on /dev/null.
fn spawn_daemon(
    argv0: &OsString,
    args: &ShimV2Args,
    address: &str,
    listener: &OwnedFd,
    input: &StartInput,
) -> Result<u32, StartError> {
    let mut cmd = Command::new(argv0);
    cmd.arg("-namespace")
        .arg(&args.namespace)
        .arg("-id")
        .arg(&args.id)
        .arg("-address")
        .arg(&args.address);
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(b) = &input.bootstrap {
        // 2.3+: the daemon finds containerd's event socket here even if the environment lacks it.
        if !b.containerd_ttrpc_address.is_empty() {
            cmd.env("TTRPC_ADDRESS", &b.containerd_ttrpc_address);
        }
    }
    let _ = address;
    let fd = listener.as_raw_fd();
    // SAFETY: runs in the child between fork and exec; setsid, dup2 and fcntl are
    // async-signal-safe and only touch the child's own descriptors.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                // dup2(3, 3) would keep close-on-exec; clear it instead.
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Spawned through the spawner like every child; nobody waits for it (it outlives us).
    let spawner = Spawner::new(Reaper::new());
    let child = spawner
        .spawn(cmd, false)
        .map_err(|source| StartError::Spawn {
            argv0: argv0.to_string_lossy().into_owned(),
            source,
        })?;
    Ok(child.pid)
}

/// The bytes `start` prints for `address`, in the form the compatibility matrix picks for the
/// containerd that called us (`compat::start_reply_for`): the plain address unless containerd
/// announced a version (2.3+, BootstrapParams) whose series answers otherwise.
pub fn reply(input: &StartInput, address: &str) -> Result<Vec<u8>, StartError> {
    use crate::compat::StartReply;
    let announced = input
        .bootstrap
        .as_ref()
        .map(|b| b.containerd_version.as_str());
    let json = |version: u32| {
        serde_json::to_vec(&serde_json::json!({
            "version": version,
            "address": address,
            "protocol": "ttrpc",
        }))
        .map_err(StartError::EncodeReply)
    };
    match crate::compat::start_reply_for(announced) {
        StartReply::Plain => Ok(address.as_bytes().to_vec()),
        StartReply::JsonV2 => json(2),
        StartReply::JsonV3 => json(3),
        StartReply::BootstrapResult => crate::protos::bootstrap::BootstrapResult {
            version: 3,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }
        .write_to_bytes()
        .map_err(StartError::EncodeBootstrapResult),
    }
}

/// containerd 2.3+ with a `socket_dir`: the bundle gets a symlink `s` to that directory, as the
/// Go shim of 2.3 leaves it. Best effort: nothing reads it back on our side.
fn link_socket_dir(bundle: &Path, input: &StartInput) {
    if input
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.socket_dir.as_deref().is_some_and(|d| !d.is_empty()))
    {
        let link = bundle.join("s");
        let _ = std::fs::remove_file(&link);
        let _ = std::os::unix::fs::symlink(input.socket_dir(), link);
    }
}

pub fn start(flavor: &Flavor, argv0: &OsString, args: &ShimV2Args) -> Result<Vec<u8>, StartError> {
    let _ = crate::reaper::set_subreaper();
    if args.id.is_empty() {
        return Err(StartError::EmptyId);
    }
    crate::engine::types::validate_identifier("container id", &args.id)
        .map_err(StartError::Identifier)?;
    crate::engine::types::validate_identifier("namespace", &args.namespace)
        .map_err(StartError::Identifier)?;

    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(StartError::Stdin)?;
    let input = bootstrap::decode_stdin(&stdin)?;

    let bundle = std::env::current_dir().map_err(StartError::Getcwd)?;
    let group = if flavor.groups {
        let config = std::fs::read(bundle.join("config.json"))
            .map_err(|e| StartError::OpenConfig(crate::engine::error::chain(&e)))?;
        bootstrap::group_id(&config, &args.id)?
    } else {
        args.id.clone()
    };
    // The group is any annotation value (a `/`, a space, `..`): like the Go shim it is only
    // ever hashed into the socket name, never used as a path.
    let address =
        bootstrap::socket_address(&input.socket_dir(), &args.address, &args.namespace, &group);
    let path = socket_path(&address);

    let listener = match bind(path, flavor.groups)? {
        Bound::Existing => {
            write_atomic(&bundle, "address", address.as_bytes())
                .map_err(StartError::WriteAddress)?;
            link_socket_dir(&bundle, &input);
            return reply(&input, &address);
        }
        Bound::New(l) => l,
    };
    let cleanup = |e: StartError| {
        let _ = std::fs::remove_file(path);
        e
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        cleanup(StartError::Chmod {
            path: path.display().to_string(),
            source,
        })
    })?;
    write_atomic(&bundle, "address", address.as_bytes())
        .map_err(|e| cleanup(StartError::WriteAddress(e)))?;
    let fd = OwnedFd::from(listener);
    let pid = spawn_daemon(argv0, args, &address, &fd, &input).map_err(cleanup)?;
    drop(fd);
    if flavor.writes_shim_pid {
        write_atomic(&bundle, "shim.pid", pid.to_string().as_bytes())
            .map_err(StartError::WriteShimPid)?;
    }
    if let Some(o) = &input.options {
        if !o.shim_cgroup.is_empty() {
            join_shim_cgroup(&o.shim_cgroup, pid)?;
        }
    }
    adjust_oom_score(pid);
    link_socket_dir(&bundle, &input);
    reply(&input, &address)
}

/// `-info` (containerd 2.x introspection): a `RuntimeInfo` with our name and version, the
/// options echoed, and the runtime's `features` JSON when it can tell.
pub fn info(flavor: &Flavor) -> Result<Vec<u8>, StartError> {
    use crate::protos::introspection::{RuntimeInfo, RuntimeVersion};
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let input = bootstrap::decode_stdin(&stdin).unwrap_or_default();
    let binary = input
        .options
        .as_ref()
        .map(|o| o.binary_name.clone())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "runc".to_string());
    let mut cmd = Command::new(&binary);
    cmd.arg("features");
    let features = Spawner::new(Reaper::new())
        .output_blocking(cmd)
        .ok()
        .filter(|o| o.status == 0)
        .map(|o| crate::protos::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into(),
            value: o.stdout,
            ..Default::default()
        });
    let info = RuntimeInfo {
        name: flavor.runtime_name.to_string(),
        version: Some(RuntimeVersion {
            version: crate::VERSION.to_string(),
            revision: crate::REVISION.to_string(),
            ..Default::default()
        })
        .into(),
        // Echoed as Go does (re-marshalled, bare type URL) when they are runc options; any
        // other options message is echoed as received.
        options: input
            .options
            .as_ref()
            .and_then(|o| crate::protos::any_bare(o).ok())
            .or(input.options_any)
            .into(),
        features: features.into(),
        ..Default::default()
    };
    info.write_to_bytes().map_err(StartError::EncodeInfo)
}
