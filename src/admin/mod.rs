//! `shimgate`, the operator's tool: `install` / `uninstall` switch a host's shims to shimgate
//! and back, `doctor` reports what a migrating operator needs to know about the host,
//! `upgrade` moves running shimgate shims onto a new binary, `version` prints the version. Unlike the shim personalities (Go `flag` syntax, fixed by containerd),
//! this is an ordinary clap command line.

pub mod doctor;
pub mod exit;
pub mod host;
pub mod inspect;
pub mod install;
pub mod upgrade;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shimgate",
    version = crate::VERSION,
    about = "One containerd shim for every containerd version: operator tool",
    long_about = "One containerd shim for every containerd version.\n\n\
        Installed (symlinked) as containerd-shim, containerd-shim-runc-v1 or \
        containerd-shim-runc-v2 the same binary is the containerd shim of that name; \
        as `shimgate` it is this operator tool.",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// The exit-code table under `--help` (the same as [`exit::TABLE`]; a unit test keeps them
/// equal).
const EXIT_CODES_HELP: &str = "Exit codes:
  0   done; doctor: nothing needs doing
  1   doctor: warnings; install/uninstall/upgrade: done in part (something left as it was, a shim not moved)
  2   doctor: problems
  3   nothing changed: refused (unrecognised file, unusable --binary, unreadable manifest) or could not run
  4   failed partway: something changed first (recorded in the install manifest)
  64  bad command line";

#[derive(Debug, clap::Args)]
struct Where {
    /// Directory for the shimgate binary and the shim names (default: the directory of
    /// `containerd` in $PATH)
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
    /// Treat DIR as the filesystem root (paths, manifest, dpkg database)
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Where install manifests are kept (default: <root>/var/lib/shimgate)
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Show what would change and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Replace (keeping them) files shimgate does not recognise; on uninstall, restore even
    /// names changed since install
    #[arg(long)]
    force: bool,
    /// Machine-readable output: one JSON object per prefix (schema/install.schema.json)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make containerd-shim, containerd-shim-runc-v1 and -v2 symlinks to shimgate, keeping the
    /// originals (renamed, or dpkg-diverted when a package owns them)
    Install {
        #[command(flatten)]
        at: Where,
        /// Binary to install (default: this one)
        #[arg(long, value_name = "FILE")]
        binary: Option<PathBuf>,
    },
    /// Undo `shimgate install`: restore the original shims exactly
    Uninstall {
        #[command(flatten)]
        at: Where,
        /// Every prefix recorded in the state directory (what the package's prerm runs)
        #[arg(long, conflicts_with = "prefix")]
        all: bool,
    },
    /// Report containerd versions, runtimes, running shims, installs, stale state and kernel
    /// features, with findings and a verdict (exit 0 ok, 1 warnings, 2 problems)
    Doctor {
        /// Machine-readable output (schema/doctor.schema.json; finding ids in MIGRATION.md)
        #[arg(long)]
        json: bool,
        /// Read the compatibility matrix from FILE instead of the built-in one
        #[arg(long, value_name = "FILE")]
        matrix: Option<PathBuf>,
        /// Where `shimgate install` keeps its manifests
        #[arg(long, value_name = "DIR", default_value = install::STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Move running shimgate shims onto a new binary without stopping their containers (live
    /// upgrade: same pid, same children, same sockets)
    Upgrade(upgrade::Options),
    /// Print the version
    Version,
    /// Which live-upgrade hand-over formats this binary adopts (asked by a running shim
    /// before it hands over to this binary)
    #[command(name = "handover-formats", hide = true)]
    HandoverFormats,
}

fn options(at: Where, binary: Option<PathBuf>) -> install::Options {
    install::Options {
        prefix: at.prefix,
        root: at.root,
        state_dir: at.state_dir,
        dry_run: at.dry_run,
        force: at.force,
        json: at.json,
        source: binary,
    }
}

/// The operator tool's command line, for generators of man pages and completions (they live
/// outside this binary: `examples/gen-docs.rs`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// Entry point; `args` excludes argv[0]. Returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    // `-v` is what every shim personality answers; keep it working here too.
    if matches!(args.first().map(String::as_str), Some("-v")) {
        print!("{}", crate::version_block("shimgate"));
        return 0;
    }
    let cli = match Cli::try_parse_from(std::iter::once("shimgate".to_string()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Some(Cmd::Install { at, binary }) => install::install(&options(at, binary)),
        Some(Cmd::Uninstall { at, all }) => {
            let o = options(at, None);
            if all {
                install::uninstall_all(&o)
            } else {
                install::uninstall(&o)
            }
        }
        Some(Cmd::Doctor {
            json,
            matrix,
            state_dir,
        }) => doctor::main(json, matrix.as_deref(), &state_dir),
        Some(Cmd::Upgrade(opts)) => upgrade::main(&opts),
        Some(Cmd::HandoverFormats) => {
            println!("{}", crate::startup::upgrade::formats_answer());
            0
        }
        Some(Cmd::Version) => {
            print!("{}", crate::version_block("shimgate"));
            0
        }
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            0
        }
    }
}

/// Output of a helper tool (dpkg, runc, containerd, ctr).
#[derive(Debug)]
pub struct ToolOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How long a helper tool may take. They all answer at once; a hung one (a wedged containerd
/// behind `ctr version`) must not hang the doctor.
const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// Run a helper tool with a deadline. The operator tool has no reaper (it is not a shim and
/// has no children of its own to collect), so it waits for its own child directly.
pub fn run_tool(mut cmd: Command) -> std::io::Result<ToolOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pump = |s: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut v);
            }
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = pump(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pump(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TOOL_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", TOOL_DEADLINE.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(ToolOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_every_command() {
        let p =
            |a: &[&str]| Cli::try_parse_from(std::iter::once("shimgate").chain(a.iter().copied()));
        assert!(matches!(
            p(&["install", "--prefix", "/x", "--dry-run", "--force"])
                .unwrap()
                .command,
            Some(Cmd::Install {
                at: Where {
                    dry_run: true,
                    force: true,
                    ..
                },
                ..
            })
        ));
        assert!(matches!(
            p(&["uninstall"]).unwrap().command,
            Some(Cmd::Uninstall { .. })
        ));
        assert!(matches!(
            p(&["doctor", "--json"]).unwrap().command,
            Some(Cmd::Doctor { json: true, .. })
        ));
        assert!(p(&["frobnicate"]).is_err());
        assert!(matches!(
            p(&["uninstall", "--all", "--json"]).unwrap().command,
            Some(Cmd::Uninstall {
                all: true,
                at: Where { json: true, .. }
            })
        ));
        assert!(p(&["uninstall", "--all", "--prefix", "/x"]).is_err());
    }

    #[test]
    fn usage_errors_have_their_own_exit_code() {
        assert_eq!(main(vec!["frobnicate".into()]), exit::USAGE);
        assert_eq!(main(vec!["doctor".into(), "--nope".into()]), exit::USAGE);
        assert_eq!(main(vec!["--help".into()]), exit::OK);
        // --help's table is exit::TABLE.
        let mut want = String::from("Exit codes:");
        for (code, what) in exit::TABLE {
            want.push_str(&format!("\n  {code:<3} {what}"));
        }
        assert_eq!(EXIT_CODES_HELP, want);
        let codes: Vec<i32> = exit::TABLE.iter().map(|(c, _)| *c).collect();
        let mut unique = codes.clone();
        unique.dedup();
        assert_eq!(codes, unique);
    }

    #[test]
    fn run_tool_collects_output_and_status() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let o = run_tool(c).unwrap();
        assert_eq!(
            (o.status, o.stdout.as_str(), o.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }
}
