//! Drives a runc-compatible CLI. Every invocation carries the global flags containerd's shims
//! use (`--root <root>/<ns> --log <bundle>/log.json --log-format json [--criu P]
//! [--systemd-cgroup]`), runs through the [`Spawner`] (so its exit is never stolen), has a
//! deadline (a hung runtime cannot wedge the shim), and turns failures into errors whose text
//! comes from the last error entry runc wrote to `log.json` during this call.

mod log;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::error::{Error, Kind, Result};
use super::private_file::write_private;
use super::runtime::{CreateOpts, ExecOpts, OciRuntime, RestoreOpts, RuntimeStdio};
use super::types::CheckpointSpec;
use crate::reaper::{ChildIo, Cmd, Spawner};

pub use log::last_error_since;

/// Per-call deadlines. Long ones for calls that start processes or run CRIU (hooks, image
/// work), short ones for calls that only signal or read state.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub long: Duration,
    pub short: Duration,
}

impl Deadlines {
    /// The defaults, overridden by `SHIMGATE_RUNTIME_TIMEOUT` (seconds, for calls that start
    /// processes or run CRIU) and `SHIMGATE_RUNTIME_SHORT_TIMEOUT` (seconds, for calls that
    /// only signal or read state), read from the shim's environment (containerd's).
    pub fn from_env() -> Deadlines {
        let secs = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
        };
        let d = Deadlines::default();
        Deadlines {
            long: secs("SHIMGATE_RUNTIME_TIMEOUT").unwrap_or(d.long),
            short: secs("SHIMGATE_RUNTIME_SHORT_TIMEOUT").unwrap_or(d.short),
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            long: Duration::from_secs(120),
            short: Duration::from_secs(30),
        }
    }
}

/// Largest stdout/stderr we keep from one invocation (`ps` of a huge container fits easily).
const OUTPUT_CAP: usize = 4 << 20;

/// One container's view of the runtime binary.
pub struct Runc {
    pub binary: String,
    /// `<root>/<namespace>`.
    pub root: PathBuf,
    /// `<bundle>/log.json`.
    pub log: PathBuf,
    pub criu: Option<String>,
    pub systemd_cgroup: bool,
    pub deadlines: Deadlines,
    spawner: Spawner,
}

impl Runc {
    pub fn new(
        spawner: Spawner,
        binary: &str,
        root: PathBuf,
        bundle: &Path,
        criu: Option<String>,
        systemd_cgroup: bool,
    ) -> Self {
        Runc {
            binary: binary.to_string(),
            root,
            log: bundle.join("log.json"),
            criu,
            systemd_cgroup,
            deadlines: Deadlines::default(),
            spawner,
        }
    }

    fn command(&self, args: &[OsString]) -> Cmd {
        let mut c = Cmd::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if let Some(criu) = &self.criu {
            c.arg("--criu").arg(criu);
        }
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c.args(args);
        // runc would hand its own notify socket to the container; the shim's is not for it.
        c.env_remove("NOTIFY_SOCKET");
        c
    }

    /// Run one invocation with captured output.
    async fn run(
        &self,
        what: &str,
        args: Vec<OsString>,
        input: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Vec<u8>> {
        let log_offset = log::offset(&self.log);
        let out = self
            .spawner
            .output(self.command(&args), input, Some(deadline), OUTPUT_CAP)
            .await
            .map_err(|e| spawn_error(&self.binary, what, e))?;
        self.check(
            what,
            log_offset,
            out.status,
            out.timed_out,
            &out.stderr,
            deadline,
        )?;
        Ok(out.stdout)
    }

    /// Run one invocation whose stdio belongs to the container (create, exec, restore).
    async fn run_with_stdio(
        &self,
        what: &str,
        args: Vec<OsString>,
        stdio: RuntimeStdio,
        deadline: Duration,
    ) -> Result<()> {
        let log_offset = log::offset(&self.log);
        let mut c = self.command(&args);
        c.stdin(to_stdio(stdio.stdin))
            .stdout(to_stdio(stdio.stdout))
            .stderr(to_stdio(stdio.stderr))
            .pdeathsig(true);
        let mut child = self
            .spawner
            .spawn_cmd(c)
            .map_err(|e| spawn_error(&self.binary, what, e))?;
        let (status, timed_out) = match child.exited_within(deadline).await {
            Some(e) => (e.status, false),
            None => {
                // Killed only if not reaped yet (then the pid is still its own); the exit is
                // collected like any other. An exit that came just before the kill is the
                // call's real outcome, not a timeout.
                let killed = child
                    .kill_unless_exited(nix::sys::signal::SIGKILL)
                    .is_none();
                let status = child.wait().await.map_err(Error::from)?.status;
                (status, killed && status == 128 + libc::SIGKILL as u32)
            }
        };
        self.check(what, log_offset, status, timed_out, &[], deadline)
    }

    fn check(
        &self,
        what: &str,
        log_offset: u64,
        status: u32,
        timed_out: bool,
        stderr: &[u8],
        deadline: Duration,
    ) -> Result<()> {
        if timed_out {
            let detail = last_error_since(&self.log, log_offset)
                .map(cap_text)
                .or_else(|| nonempty_text(stderr))
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(Error::deadline_exceeded(format!(
                "OCI runtime {what} did not finish within {}s{detail}",
                deadline.as_secs()
            )));
        }
        if status == 0 {
            return Ok(());
        }
        let msg = last_error_since(&self.log, log_offset)
            .map(cap_text)
            .or_else(|| nonempty_text(stderr))
            .unwrap_or_else(|| {
                format!(
                    "{} did not terminate successfully: exit status {status}",
                    self.binary
                )
            });
        Err(Error::unknown(format!("OCI runtime {what} failed: {msg}")))
    }
}

/// Most of a runtime's own text that goes into an error message: enough for any real
/// diagnostic, small enough for a reply frame (a flooding runtime must not produce an error
/// that cannot be sent).
const MESSAGE_CAP: usize = 4096;

fn nonempty_text(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b).trim().to_string();
    (!s.is_empty()).then(|| cap_text(s))
}

fn cap_text(s: String) -> String {
    if s.len() <= MESSAGE_CAP {
        return s;
    }
    let cut = (0..=MESSAGE_CAP)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}… ({} more bytes)", &s[..cut], s.len() - cut)
}

fn to_stdio(fd: Option<OwnedFd>) -> ChildIo {
    match fd {
        Some(fd) => ChildIo::Fd(fd),
        None => ChildIo::Null,
    }
}

fn spawn_error(binary: &str, what: &str, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        Kind::FailedPrecondition
    } else {
        Kind::Unknown
    };
    Error::new(
        kind,
        format!("OCI runtime {what} failed: cannot run {binary:?}: {e}"),
    )
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Classify a kill failure the way the Go shims do (`checkKillError`): a process that is
/// already gone is NotFound, so containerd and CRI treat the kill as done.
pub fn classify_kill_error(e: Error) -> Error {
    let text = e.message().to_ascii_lowercase();
    if text.contains("os: process already finished")
        || text.contains("container not running")
        || text.contains("no such process")
    {
        return Error::not_found("process already finished");
    }
    if text.contains("does not exist") {
        return Error::not_found("no such container");
    }
    Error::new(
        e.kind(),
        format!("unknown error after kill: {}", e.message()),
    )
}

fn checkpoint_args(spec: &CheckpointSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    a.push("--image-path".into());
    a.push(spec.image_path.clone().into());
    if let Some(w) = &spec.work_path {
        a.push("--work-path".into());
        a.push(w.clone().into());
    }
    if let Some(p) = &spec.parent_path {
        a.push("--parent-path".into());
        a.push(p.clone().into());
    }
    if spec.open_tcp {
        a.push("--tcp-established".into());
    }
    if spec.external_unix_sockets {
        a.push("--ext-unix-sk".into());
    }
    if spec.terminal {
        a.push("--shell-job".into());
    }
    if spec.file_locks {
        a.push("--file-locks".into());
    }
    if !spec.cgroups_mode.is_empty() {
        a.push("--manage-cgroups-mode".into());
        a.push(spec.cgroups_mode.clone().into());
    }
    for ns in &spec.empty_namespaces {
        a.push("--empty-ns".into());
        a.push(ns.into());
    }
    a
}

#[async_trait]
impl OciRuntime for Runc {
    async fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> Result<()> {
        let mut a = os(&["create", "--bundle"]);
        a.push(bundle.into());
        a.push("--pid-file".into());
        a.push(opts.pid_file.clone().into());
        if let Some(s) = &opts.console_socket {
            a.push("--console-socket".into());
            a.push(s.clone().into());
        }
        if opts.no_pivot {
            a.push("--no-pivot".into());
        }
        if opts.no_new_keyring {
            a.push("--no-new-keyring".into());
        }
        a.push(id.into());
        self.run_with_stdio("create", a, opts.stdio, self.deadlines.long)
            .await
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.run("start", os(&["start", id]), None, self.deadlines.long)
            .await
            .map(drop)
    }

    async fn exec(&self, id: &str, bundle: &Path, process: &[u8], opts: ExecOpts) -> Result<()> {
        // The process spec goes through a private file in the bundle (not /tmp): only the
        // shim's user can read it, and it cannot outlive the bundle.
        let spec_file = process_file_path(bundle, &opts.pid_file);
        write_private(&spec_file, process)?;
        let mut a = os(&["exec", "--process"]);
        a.push(spec_file.clone().into());
        a.push("--detach".into());
        a.push("--pid-file".into());
        a.push(opts.pid_file.clone().into());
        if let Some(s) = &opts.console_socket {
            a.push("--console-socket".into());
            a.push(s.clone().into());
        }
        a.push(id.into());
        let r = self
            .run_with_stdio("exec", a, opts.stdio, self.deadlines.long)
            .await;
        let _ = std::fs::remove_file(&spec_file);
        r
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut a = os(&["kill"]);
        if all {
            a.push("--all".into());
        }
        a.push(id.into());
        a.push(signal.to_string().into());
        self.run("kill", a, None, self.deadlines.short)
            .await
            .map(drop)
            .map_err(classify_kill_error)
    }

    async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut a = os(&["delete"]);
        if force {
            a.push("--force".into());
        }
        a.push(id.into());
        match self.run("delete", a, None, self.deadlines.short).await {
            Err(e) if e.message().contains("does not exist") => Ok(()),
            r => r.map(drop),
        }
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.run("pause", os(&["pause", id]), None, self.deadlines.short)
            .await
            .map(drop)
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.run("resume", os(&["resume", id]), None, self.deadlines.short)
            .await
            .map(drop)
    }

    async fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self
            .run(
                "ps",
                os(&["ps", "--format", "json", id]),
                None,
                self.deadlines.short,
            )
            .await?;
        let pids: Option<Vec<u32>> = serde_json::from_slice(&out).map_err(|e| {
            Error::unknown(format!("OCI runtime ps returned unreadable output: {e}"))
        })?;
        Ok(pids.unwrap_or_default())
    }

    async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        self.run(
            "update",
            os(&["update", "--resources", "-", id]),
            Some(resources.to_vec()),
            self.deadlines.short,
        )
        .await
        .map(drop)
    }

    async fn checkpoint(&self, id: &str, _bundle: &Path, spec: &CheckpointSpec) -> Result<()> {
        let mut a = os(&["checkpoint"]);
        a.extend(checkpoint_args(spec));
        if !spec.exit {
            a.push("--leave-running".into());
        }
        a.push(id.into());
        self.run("checkpoint", a, None, self.deadlines.long)
            .await
            .map(drop)
    }

    async fn restore(&self, id: &str, bundle: &Path, opts: RestoreOpts) -> Result<()> {
        let mut a = os(&["restore"]);
        a.extend(checkpoint_args(&opts.checkpoint));
        a.push("--detach".into());
        a.push("--pid-file".into());
        a.push(opts.create.pid_file.clone().into());
        if let Some(s) = &opts.create.console_socket {
            a.push("--console-socket".into());
            a.push(s.clone().into());
        }
        if opts.create.no_pivot {
            a.push("--no-pivot".into());
        }
        // runc's flag parser takes this one with a single dash.
        a.push("-no-subreaper".into());
        a.push("--bundle".into());
        a.push(bundle.into());
        a.push(id.into());
        self.run_with_stdio("restore", a, opts.create.stdio, self.deadlines.long)
            .await
    }
}

fn process_file_path(bundle: &Path, pid_file: &Path) -> PathBuf {
    let stem = pid_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    bundle.join(format!(".{stem}.process.json"))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod classify_tests {
    use super::*;

    #[test]
    fn kill_errors_are_classified_like_go() {
        let e = classify_kill_error(Error::unknown(
            "OCI runtime kill failed: container not running",
        ));
        assert_eq!(e.to_string(), "process already finished: not found");
        let e = classify_kill_error(Error::unknown("OCI runtime kill failed: No such process"));
        assert_eq!(e.kind(), Kind::NotFound);
        let e = classify_kill_error(Error::unknown(
            "OCI runtime kill failed: container \"x\" does not exist",
        ));
        assert_eq!(e.to_string(), "no such container: not found");
        let e = classify_kill_error(Error::unknown("OCI runtime kill failed: boom"));
        assert_eq!(e.kind(), Kind::Unknown);
        assert!(e.message().starts_with("unknown error after kill"));
    }

    #[test]
    fn checkpoint_flags() {
        let spec = CheckpointSpec {
            image_path: "/img".into(),
            work_path: Some("/w".into()),
            open_tcp: true,
            terminal: true,
            empty_namespaces: vec!["network".into()],
            ..Default::default()
        };
        let a: Vec<String> = checkpoint_args(&spec)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--tcp-established",
                "--shell-job",
                "--empty-ns",
                "network"
            ]
        );
    }
}
