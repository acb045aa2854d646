//! `shimgate upgrade`: move running shimgate shims onto a new binary without stopping their
//! containers (live upgrade, see `startup::upgrade`). Each shim is asked over its own socket
//! (`shimgate.admin.v1.Admin/Upgrade`); the answer comes from the new image once it serves,
//! or from the old one when the upgrade was refused or rolled back. Shims are upgraded one at
//! a time, and the first failure stops the run unless `--keep-going`: an operator rolling out
//! a new build wants to hear about a bad one after one shim, not after all of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::exit;
use super::host::{self, is_serving_shim};
use super::inspect::{self, BinaryKind};
use crate::protos::admin::{InfoRequest, UpgradeRequest};
use crate::protos::admin_ttrpc::AdminClient;
use crate::startup::upgrade::{FormatsAnswer, FORMATS_COMMAND};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true)))]
pub struct Options {
    /// Every shimgate shim on the host
    #[arg(long, group = "which")]
    pub all: bool,
    /// The shim with this pid (repeatable)
    #[arg(long = "pid", value_name = "PID", group = "which")]
    pub pids: Vec<u32>,
    /// The shim serving this container (repeatable)
    #[arg(long = "id", value_name = "ID", group = "which")]
    pub ids: Vec<String>,
    /// The binary to move to (default: each shim re-executes the binary now installed
    /// under its own name)
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// How long each shim may take to finish the requests it is running, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout_ms: u32,
    /// Carry on after a shim fails to upgrade
    #[arg(long)]
    pub keep_going: bool,
    /// List the shims that would be upgraded
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// One shim's outcome: with `--json`, one line each, printed as soon as it is known
/// (schema/upgrade.schema.json).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `upgraded`, `failed`, `would-upgrade` (dry run) or `not-attempted` (after the first
    /// failure without `--keep-going`).
    pub result: &'static str,
    pub pid: u32,
    pub personality: String,
    pub socket: String,
    pub from: String,
    pub to: Option<String>,
    pub containers: Vec<String>,
    pub handover_micros: Option<u64>,
    pub error: Option<String>,
}

/// Why `--binary` is unusable (nothing is touched then: exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("run {path}: {source}")]
    Run {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a shimgate that can take over a running shim")]
    NotShimgate { path: String },
}

/// Why one shim did not move. The cases matter to an operator: after [`Refused`] and
/// [`RolledBack`] the shim serves on with its old binary; after [`NoAnswer`] to an `Upgrade`
/// it may be lost (past the point of no return neither binary could run it). The texts are
/// the `error` of the outcome, as the shim or the transport gave them. The exit code and the
/// `--json` `result` are the same for every case (MIGRATION.md and schema/upgrade.schema.json
/// pin them: 1, `failed`).
///
/// [`Refused`]: ShimFailure::Refused
/// [`RolledBack`]: ShimFailure::RolledBack
/// [`NoAnswer`]: ShimFailure::NoAnswer
#[derive(Debug, thiserror::Error)]
pub enum ShimFailure {
    #[error("connect {socket}: {source}")]
    Connect {
        socket: String,
        source: ttrpc::Error,
    },
    #[error(
        "this shim predates live upgrade; it keeps its binary until its containers are \
         restarted"
    )]
    NoLiveUpgrade,
    #[error("info: {0}")]
    Info(ttrpc::Error),
    /// Refused before anything stopped (FAILED_PRECONDITION): the shim serves on untouched.
    #[error("{0}")]
    Refused(String),
    /// The new binary failed and the old one was executed again (ABORTED): it serves on.
    #[error("{0}")]
    RolledBack(String),
    /// Any other status the shim answered with (PERMISSION_DENIED on an abstract socket).
    #[error("{message}")]
    Status { code: ttrpc::Code, message: String },
    /// No answer: the connection closed or the request timed out.
    #[error("{0}")]
    NoAnswer(ttrpc::Error),
}

impl ShimFailure {
    /// Classify the `Admin.Upgrade` error. Shims from before rollbacks had their own code
    /// answered a rollback with FAILED_PRECONDITION too; their rollback text (which
    /// `startup::upgrade::UpgradeError::RolledBack` still writes) tells it from a refusal.
    fn of_upgrade(e: ttrpc::Error) -> ShimFailure {
        let ttrpc::Error::RpcStatus(s) = e else {
            return ShimFailure::NoAnswer(e);
        };
        let message = s.message().to_string();
        match s.code() {
            ttrpc::Code::ABORTED => ShimFailure::RolledBack(message),
            ttrpc::Code::FAILED_PRECONDITION if !message.starts_with("upgrade refused: ") => {
                ShimFailure::RolledBack(message)
            }
            ttrpc::Code::FAILED_PRECONDITION => ShimFailure::Refused(message),
            code => ShimFailure::Status { code, message },
        }
    }
}

/// A shimgate shim found on the host.
struct Target {
    pid: u32,
    personality: String,
    socket: String,
    version: String,
}

/// Serving shimgate shims (by their executable, whatever name they run under).
fn targets() -> Vec<Target> {
    host::processes()
        .into_iter()
        .filter(is_serving_shim)
        .filter_map(|p| {
            let BinaryKind::Shimgate { version } =
                inspect::classify(Path::new(&format!("/proc/{}/exe", p.pid)))
            else {
                return None;
            };
            let socket = host::listening_sockets(p.pid).into_iter().next()?;
            Some(Target {
                pid: p.pid,
                personality: p.argv0_base().to_string(),
                socket,
                version,
            })
        })
        .collect()
}

/// What the new binary says it is; refuses a binary that cannot adopt a shim.
fn check_binary(binary: &Path) -> Result<FormatsAnswer, BinaryError> {
    let mut cmd = std::process::Command::new(binary);
    std::os::unix::process::CommandExt::arg0(&mut cmd, "shimgate");
    cmd.arg(FORMATS_COMMAND);
    let path = || binary.display().to_string();
    let out = super::run_tool(cmd).map_err(|source| BinaryError::Run {
        path: path(),
        source,
    })?;
    serde_json::from_str(&out.stdout).map_err(|_| BinaryError::NotShimgate { path: path() })
}

pub fn main(opts: &Options) -> i32 {
    let binary = match &opts.binary {
        None => None,
        Some(b) => {
            let b = b.canonicalize().unwrap_or_else(|_| b.clone());
            match check_binary(&b) {
                Ok(a) => Some((b, a.version)),
                Err(e) => {
                    eprintln!("shimgate upgrade: {e}");
                    return exit::REFUSED;
                }
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shimgate upgrade: {e}");
            return exit::REFUSED;
        }
    };
    // Ask every shimgate shim what it is (its containers select it for --id).
    let mut chosen = Vec::new();
    for t in targets() {
        if !opts.all && !opts.pids.contains(&t.pid) && opts.ids.is_empty() {
            continue;
        }
        let o = rt.block_on(describe(&t));
        let wanted = opts.all
            || opts.pids.contains(&t.pid)
            || o.containers.iter().any(|c| opts.ids.contains(c));
        if wanted {
            chosen.push((t, o));
        }
    }
    // A named shim that is not there is a failure: the operator meant something else.
    let mut missing = false;
    for pid in &opts.pids {
        if !chosen.iter().any(|(t, _)| t.pid == *pid) {
            eprintln!("shimgate upgrade: pid {pid} is not a serving shimgate shim");
            missing = true;
        }
    }
    for id in &opts.ids {
        if !chosen.iter().any(|(_, o)| o.containers.contains(id)) {
            eprintln!("shimgate upgrade: no shimgate shim serves container {id}");
            missing = true;
        }
    }
    if !opts.json {
        let to = match &binary {
            Some((b, v)) => format!("{} ({v})", b.display()),
            None => "the binary installed under each shim's name".to_string(),
        };
        println!("{} shimgate shim(s) to move to {to}", chosen.len());
    }
    let partial = if missing { exit::PARTIAL } else { exit::OK };
    if opts.dry_run {
        for (t, mut o) in chosen {
            if opts.json {
                o.result = "would-upgrade";
                json_line(&o);
            } else {
                println!(
                    "would upgrade pid {} {} {} on {} ({} container(s))",
                    t.pid,
                    t.personality,
                    o.from,
                    t.socket,
                    o.containers.len()
                );
            }
        }
        return partial;
    }
    let target = binary.as_ref().map(|(b, _)| b.as_path());
    let mut failed = false;
    for (t, o) in chosen {
        if failed && !opts.keep_going {
            // Tools following the run learn which shims stay where they are.
            if opts.json {
                json_line(&Outcome {
                    result: "not-attempted",
                    ..o
                });
            }
            continue;
        }
        let mut o = if o.error.is_some() {
            o
        } else {
            rt.block_on(upgrade_one(&t, o, target, opts.timeout_ms))
        };
        o.result = if o.error.is_some() {
            "failed"
        } else {
            "upgraded"
        };
        if opts.json {
            json_line(&o);
        } else {
            print_outcome(&o);
        }
        failed |= o.error.is_some();
        if failed && !opts.keep_going && !opts.json {
            println!("stopping at the first failure (--keep-going to continue)");
        }
    }
    if failed {
        exit::PARTIAL
    } else {
        partial
    }
}

/// One compact JSON line, flushed at once (a long `--all` is followed line by line).
fn json_line(o: &Outcome) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(o) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn print_outcome(o: &Outcome) {
    match (&o.error, &o.to, o.handover_micros) {
        (None, Some(to), Some(us)) => println!(
            "pid {} {}: {} -> {}, {} container(s), handed over in {:.1} ms",
            o.pid,
            o.personality,
            o.from,
            to,
            o.containers.len(),
            us as f64 / 1000.0
        ),
        (e, _, _) => println!(
            "pid {} {}: not upgraded, still {}: {}",
            o.pid,
            o.personality,
            o.from,
            e.as_deref().unwrap_or("no answer")
        ),
    }
}

async fn connect(socket: &str) -> Result<AdminClient, ShimFailure> {
    ttrpc::r#async::Client::connect(&format!("unix://{socket}"))
        .await
        .map(AdminClient::new)
        .map_err(|source| ShimFailure::Connect {
            socket: socket.to_string(),
            source,
        })
}

/// The shim's own account of itself (`Admin/Info`).
async fn describe(t: &Target) -> Outcome {
    let mut o = Outcome {
        result: "failed",
        pid: t.pid,
        personality: t.personality.clone(),
        socket: t.socket.clone(),
        from: t.version.clone(),
        to: None,
        containers: Vec::new(),
        handover_micros: None,
        error: None,
    };
    let client = match connect(&t.socket).await {
        Ok(c) => c,
        Err(e) => {
            o.error = Some(e.to_string());
            return o;
        }
    };
    let short = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    match client.info(short, &InfoRequest::default()).await {
        Ok(info) => {
            o.from = info.version;
            o.containers = info.containers;
        }
        Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::UNIMPLEMENTED => {
            o.error = Some(ShimFailure::NoLiveUpgrade.to_string());
        }
        Err(e) => o.error = Some(ShimFailure::Info(e).to_string()),
    }
    o
}

async fn upgrade_one(
    t: &Target,
    mut o: Outcome,
    binary: Option<&Path>,
    timeout_ms: u32,
) -> Outcome {
    match ask_upgrade(t, binary, timeout_ms).await {
        Ok(r) => {
            o.from = r.old_version;
            o.to = Some(r.new_version);
            o.handover_micros = Some(r.handover_micros);
        }
        // The outcome's text is the same for every case (see `ShimFailure`).
        Err(e) => o.error = Some(e.to_string()),
    }
    o
}

/// Ask one shim to upgrade: its new image's answer, or why it did not move.
async fn ask_upgrade(
    t: &Target,
    binary: Option<&Path>,
    timeout_ms: u32,
) -> Result<crate::protos::admin::UpgradeResponse, ShimFailure> {
    let client = connect(&t.socket).await?;
    // The quiesce, the hand-over and the new image's start-up, with room to spare.
    let limit = Duration::from_millis(u64::from(timeout_ms)) + Duration::from_secs(60);
    let req = UpgradeRequest {
        binary: binary.map(|b| b.display().to_string()).unwrap_or_default(),
        quiesce_timeout_ms: timeout_ms,
        ..Default::default()
    };
    client
        .upgrade(ttrpc::context::with_timeout(limit.as_nanos() as i64), &req)
        .await
        .map_err(ShimFailure::of_upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: ttrpc::Code, message: &str) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.to_string()))
    }

    /// A refusal, a rollback (by its code, or by its text from a shim that predates the
    /// code) and a missing answer are told apart; the text shown stays the shim's own.
    #[test]
    fn upgrade_failures_are_classified_by_code() {
        let refused = "upgrade refused: the shim is shutting down";
        let rolled = "upgrade to /x failed, 0.1.0 serves on: execve: ENOEXEC";
        let f = ShimFailure::of_upgrade(status(ttrpc::Code::FAILED_PRECONDITION, refused));
        assert!(matches!(f, ShimFailure::Refused(_)), "{f:?}");
        assert_eq!(f.to_string(), refused);
        let f = ShimFailure::of_upgrade(status(ttrpc::Code::ABORTED, rolled));
        assert!(matches!(f, ShimFailure::RolledBack(_)), "{f:?}");
        assert_eq!(f.to_string(), rolled);
        let f = ShimFailure::of_upgrade(status(ttrpc::Code::FAILED_PRECONDITION, rolled));
        assert!(matches!(f, ShimFailure::RolledBack(_)), "{f:?}");
        let f = ShimFailure::of_upgrade(status(ttrpc::Code::PERMISSION_DENIED, "no"));
        assert!(matches!(f, ShimFailure::Status { .. }), "{f:?}");
        assert_eq!(f.to_string(), "no");
        let f = ShimFailure::of_upgrade(ttrpc::Error::LocalClosed);
        assert!(
            matches!(f, ShimFailure::NoAnswer(_)) && !f.to_string().is_empty(),
            "{f:?}"
        );
    }
}
