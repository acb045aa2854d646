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
fn check_binary(binary: &Path) -> Result<FormatsAnswer, String> {
    let mut cmd = std::process::Command::new(binary);
    std::os::unix::process::CommandExt::arg0(&mut cmd, "shimgate");
    cmd.arg(FORMATS_COMMAND);
    let out = super::run_tool(cmd).map_err(|e| format!("run {}: {e}", binary.display()))?;
    serde_json::from_str(&out.stdout).map_err(|_| {
        format!(
            "{} is not a shimgate that can take over a running shim",
            binary.display()
        )
    })
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

async fn connect(socket: &str) -> Result<AdminClient, String> {
    ttrpc::r#async::Client::connect(&format!("unix://{socket}"))
        .await
        .map(AdminClient::new)
        .map_err(|e| format!("connect {socket}: {e}"))
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
            o.error = Some(e);
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
            o.error = Some(
                "this shim predates live upgrade; it keeps its binary until its containers \
                 are restarted"
                    .into(),
            );
        }
        Err(e) => o.error = Some(format!("info: {e}")),
    }
    o
}

async fn upgrade_one(
    t: &Target,
    mut o: Outcome,
    binary: Option<&Path>,
    timeout_ms: u32,
) -> Outcome {
    let client = match connect(&t.socket).await {
        Ok(c) => c,
        Err(e) => {
            o.error = Some(e);
            return o;
        }
    };
    // The quiesce, the hand-over and the new image's start-up, with room to spare.
    let limit = Duration::from_millis(u64::from(timeout_ms)) + Duration::from_secs(60);
    let req = UpgradeRequest {
        binary: binary.map(|b| b.display().to_string()).unwrap_or_default(),
        quiesce_timeout_ms: timeout_ms,
        ..Default::default()
    };
    match client
        .upgrade(ttrpc::context::with_timeout(limit.as_nanos() as i64), &req)
        .await
    {
        Ok(r) => {
            o.from = r.old_version;
            o.to = Some(r.new_version);
            o.handover_micros = Some(r.handover_micros);
        }
        Err(ttrpc::Error::RpcStatus(s)) => o.error = Some(s.message().to_string()),
        Err(e) => o.error = Some(e.to_string()),
    }
    o
}
